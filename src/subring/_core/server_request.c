/*
 * server_request.c -- Request: one operation handed to a Python handler; how a
 * handler's outcome becomes the op's CQE; validation of copied SQEs (see
 * server.h for the whole server half).
 */
#define _GNU_SOURCE
#include "server.h"

PyObject *SR_PENDING;

/* ------------------------------------------------------------------------ */
/* Request                                                                   */
/* ------------------------------------------------------------------------ */

static SRequest *req_freelist[256];
static int req_nfree;

SRequest *srv_request_new(SQueue *q)
{
    SRequest *r;
    if (req_nfree) {
        r = req_freelist[--req_nfree];
        _Py_NewReference((PyObject *)r);
    } else {
        r = PyObject_New(SRequest, &SR_RequestType);
        if (!r)
            return NULL;
    }
    r->q = (SQueue *)Py_NewRef((PyObject *)q);
    r->done = 0;
    r->exports = 0;
    return r;
}

static void request_dealloc(SRequest *r)
{
    if (!r->done && r->q) {
        /* A handler returned PENDING and dropped the request without ever
         * completing it: complete it now so the client is not left waiting
         * forever (invariant 4). */
        r->done = 1;
        sq_post(r->q, r->user_data, -ECANCELED, 0);
        sq_flush(r->q);
    }
    Py_CLEAR(r->q);
    if (req_nfree < 256)
        req_freelist[req_nfree++] = r;
    else
        PyObject_Free(r);
}

/* A handler raised an exception that is not a result (it maps to EIO): let
 * the Python layer log it (rate-limited there).  Never raises. */
void srv_report_handler_error(SQueue *q, int op, PyObject *ev, PyObject *tb)
{
    if (!q->error_hook || q->error_hook == Py_None || !ev)
        return;
    PyObject *et2, *ev2, *tb2;
    PyErr_Fetch(&et2, &ev2, &tb2);        /* keep whatever is pending */
    if (tb && PyExceptionInstance_Check(ev))
        PyException_SetTraceback(ev, tb);
    PyObject *r = PyObject_CallFunction(q->error_hook, "iO", op, ev);
    if (!r)
        PyErr_Clear();
    Py_XDECREF(r);
    PyErr_Restore(et2, ev2, tb2);
}

/* Turn a handler's outcome into the CQE.  `result` may be NULL with an
 * exception set (the handler raised).  Returns -1 only for BaseExceptions
 * that must stop the loop (KeyboardInterrupt, SystemExit). */
int srv_request_finish(SRequest *r, PyObject *result)
{
    SQueue *q = r->q;
    if (result == SR_PENDING)
        return 0;
    r->done = 1;
    if (!result) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_NormalizeException(&et, &ev, &tb);
        int stop = !PyErr_GivenExceptionMatches(et, PyExc_Exception);
        int err = EIO;
        if (PyErr_GivenExceptionMatches(et, PyExc_OSError) && ev) {
            PyObject *e = PyObject_GetAttrString(ev, "errno");
            if (e && PyLong_Check(e)) {
                long v = PyLong_AsLong(e);
                if (v > 0 && v < 4096) err = (int)v;
            } else {
                /* OSError subclass raised without an errno: map the class */
                static PyObject **const cls[] = {
                    &PyExc_TimeoutError, &PyExc_PermissionError, &PyExc_FileNotFoundError,
                    &PyExc_FileExistsError, &PyExc_IsADirectoryError,
                    &PyExc_NotADirectoryError, &PyExc_ConnectionResetError,
                    &PyExc_ConnectionRefusedError, &PyExc_ConnectionAbortedError,
                    &PyExc_BrokenPipeError, &PyExc_BlockingIOError, &PyExc_InterruptedError,
                    &PyExc_ProcessLookupError, &PyExc_ChildProcessError};
                static const int errs[] = {
                    ETIMEDOUT, EPERM, ENOENT, EEXIST, EISDIR, ENOTDIR, ECONNRESET,
                    ECONNREFUSED, ECONNABORTED, EPIPE, EAGAIN, EINTR, ESRCH, ECHILD};
                for (size_t k = 0; k < sizeof(errs) / sizeof(errs[0]); k++)
                    if (PyErr_GivenExceptionMatches(et, *cls[k])) {
                        err = errs[k];
                        break;
                    }
            }
            Py_XDECREF(e);
            PyErr_Clear();
        } else if (PyErr_GivenExceptionMatches(et, PyExc_NotImplementedError)) {
            err = ENOSYS;
        } else if (PyErr_GivenExceptionMatches(et, PyExc_KeyError) ||
                   PyErr_GivenExceptionMatches(et, PyExc_LookupError)) {
            err = ENOENT;
        } else if (PyErr_GivenExceptionMatches(et, PyExc_MemoryError)) {
            err = ENOMEM;
        } else if (PyErr_GivenExceptionMatches(et, PyExc_TypeError) ||
                   PyErr_GivenExceptionMatches(et, PyExc_ValueError)) {
            err = EINVAL;
        } else if (stop) {
            err = ECANCELED;
        }
        if (err == EIO && !stop)
            srv_report_handler_error(q, r->op, ev, tb);
        uint32_t flags = 0;
        if (r->want_result && !q->dead) {
            /* "TypeName: message" into the result slot for the client. */
            PyObject *s = ev ? PyObject_Str(ev) : NULL;
            if (!s)   /* str(exc) itself raised (or there is no value) */
                PyErr_Clear();
            PyObject *txt = s ? PyUnicode_FromFormat("%s: %U",
                                                     ((PyTypeObject *)et)->tp_name, s)
                              : PyUnicode_FromFormat("%s: <str() of the exception failed>",
                                                     ((PyTypeObject *)et)->tp_name);
            Py_XDECREF(s);
            Py_ssize_t n = 0;
            const char *u = txt ? PyUnicode_AsUTF8AndSize(txt, &n) : NULL;
            if (u) {
                uint8_t *p = q->result_area + (size_t)r->slot * q->slot_size;
                if ((size_t)n > q->slot_size - 2) n = q->slot_size - 2;
                if (n > 0xffff) n = 0xffff;
                uint16_t n16 = (uint16_t)n;
                memcpy(p, &n16, 2);
                memcpy(p + 2, u, (size_t)n);
                flags = SR_CQE_F_ERRTEXT | (r->slot << IORING_CQE_BUFFER_SHIFT);
            }
            Py_XDECREF(txt);
            PyErr_Clear();
        }
        sq_post(q, r->user_data, -err, flags);
        if (stop) {
            PyErr_Restore(et, ev, tb);
            return -1;
        }
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return 0;
    }
    if (result == Py_None) {
        sq_post(q, r->user_data, 0, 0);
    } else if (PyLong_Check(result)) {
        long long v = PyLong_AsLongLong(result);
        if ((v == -1 && PyErr_Occurred()) || v < INT32_MIN || v > INT32_MAX) {
            PyErr_Clear();
            sq_post(q, r->user_data, -ERANGE, 0);
        } else {
            sq_post(q, r->user_data, (int32_t)v, 0);
        }
    } else if (PyObject_CheckBuffer(result)) {
        Py_buffer v;
        if (PyObject_GetBuffer(result, &v, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            sq_post(q, r->user_data, -EINVAL, 0);
        } else {
            if (!r->want_result)
                sq_post(q, r->user_data, -ENOBUFS, 0);
            else if ((size_t)v.len > q->slot_size)
                sq_post(q, r->user_data, -EMSGSIZE, 0);
            else {
                if (!q->dead)
                    memcpy(q->result_area + (size_t)r->slot * q->slot_size, v.buf,
                           (size_t)v.len);
                sq_post(q, r->user_data, (int32_t)v.len,
                        IORING_CQE_F_BUFFER | (r->slot << IORING_CQE_BUFFER_SHIFT));
            }
            PyBuffer_Release(&v);
        }
    } else {
        sq_post(q, r->user_data, -EINVAL, 0);
    }
    return 0;
}

/* complete(result=None): finish a request whose handler returned PENDING.
 * Returns True if the completion was posted, False if the client is gone. */
static PyObject *request_complete(SRequest *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "complete(result=None)");
        return NULL;
    }
    if (r->done) {
        PyErr_SetString(PyExc_RuntimeError, "request already completed");
        return NULL;
    }
    PyObject *res = nargs ? args[0] : Py_None;
    if (res == SR_PENDING) {
        PyErr_SetString(PyExc_ValueError, "cannot complete with PENDING");
        return NULL;
    }
    int alive = !r->q->dead;
    srv_request_finish(r, res);
    sq_flush(r->q);
    return PyBool_FromLong(alive);
}

/* fail(errno, text=None) */
static PyObject *request_fail(SRequest *r, PyObject *args)
{
    int err;
    const char *text = NULL;
    if (!PyArg_ParseTuple(args, "i|z:fail", &err, &text))
        return NULL;
    if (r->done) {
        PyErr_SetString(PyExc_RuntimeError, "request already completed");
        return NULL;
    }
    if (err <= 0 || err >= 4096) {
        PyErr_SetString(PyExc_ValueError, "errno must be a positive errno value");
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "(is)", err, text ? text : strerror(err));
    if (!exc)
        return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    int alive = !r->q->dead;
    srv_request_finish(r, NULL);
    sq_flush(r->q);
    return PyBool_FromLong(alive);
}

/* fail_with(exc): finish with an exception, mapped exactly like one a
 * handler raised (errno and "Type: message" text). */
static PyObject *request_fail_with(SRequest *r, PyObject *exc)
{
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "fail_with() takes an exception instance");
        return NULL;
    }
    if (r->done) {
        PyErr_SetString(PyExc_RuntimeError, "request already completed");
        return NULL;
    }
    int alive = !r->q->dead;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    if (srv_request_finish(r, NULL) < 0)      /* a BaseException: completed -ECANCELED */
        PyErr_Clear();
    sq_flush(r->q);
    return PyBool_FromLong(alive);
}

static int request_getbuffer(SRequest *r, Py_buffer *view, int flags)
{
    int readonly = r->where != SR_PAYLOAD_POOL;
    if (PyBuffer_FillInfo(view, (PyObject *)r, r->data ? r->data : r->inl,
                          (Py_ssize_t)r->len, readonly, flags) < 0)
        return -1;
    r->exports++;
    return 0;
}

static void request_releasebuffer(SRequest *r, Py_buffer *view)
{
    r->exports--;
}

static PyBufferProcs request_as_buffer = {
    (getbufferproc)request_getbuffer, (releasebufferproc)request_releasebuffer};

static PyObject *request_get_data(SRequest *r, void *c)
{
    return PyMemoryView_FromObject((PyObject *)r);
}
static PyObject *request_get_op(SRequest *r, void *c) { return PyLong_FromLong(r->op); }
static PyObject *request_get_arg0(SRequest *r, void *c) { return PyLong_FromLongLong(r->arg0); }
static PyObject *request_get_arg1(SRequest *r, void *c) { return PyLong_FromLongLong(r->arg1); }
static PyObject *request_get_user_data(SRequest *r, void *c)
{
    return PyLong_FromUnsignedLongLong(r->user_data);
}
static PyObject *request_get_done(SRequest *r, void *c) { return PyBool_FromLong(r->done); }
static PyObject *request_get_client(SRequest *r, void *c)
{
    return Py_NewRef(r->q ? r->q->info : Py_None);
}
static PyObject *request_get_client_alive(SRequest *r, void *c)
{
    return PyBool_FromLong(r->q && !r->q->dead);
}

static PyGetSetDef request_getset[] = {
    {"data", (getter)request_get_data, NULL,
     "memoryview of the payload (zero-copy; writable for pool payloads).  Valid\n"
     "until the request is completed: copy what you keep."},
    {"op", (getter)request_get_op, NULL, "Op index."},
    {"arg0", (getter)request_get_arg0, NULL, "First integer argument."},
    {"arg1", (getter)request_get_arg1, NULL, "Second integer argument."},
    {"user_data", (getter)request_get_user_data, NULL, "The client's token (opaque)."},
    {"done", (getter)request_get_done, NULL, "True once completed."},
    {"client", (getter)request_get_client, NULL, "Who asked (peer credentials)."},
    {"client_alive", (getter)request_get_client_alive, NULL, NULL},
    {NULL}
};

static PyMethodDef request_methods[] = {
    {"complete", (PyCFunction)(void (*)(void))request_complete, METH_FASTCALL,
     "complete($self, result=None, /)\n--\n\nFinish a request whose handler returned PENDING "
     "with `result`.  Returns False if the client is gone."},
    {"fail", (PyCFunction)request_fail, METH_VARARGS,
     "fail($self, errno, text=None, /)\n--\n\nFinish it with OSError(errno, text) (text "
     "defaults to strerror(errno)).  Returns False if the client is gone."},
    {"fail_with", (PyCFunction)request_fail_with, METH_O,
     "fail_with($self, exc, /)\n--\n\nFinish with exception `exc`, mapped like one a handler "
     "raised (OSError keeps its errno, KeyError -> ENOENT, ...).  Returns False if the client "
     "is gone."},
    {NULL}
};

PyTypeObject SR_RequestType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring.Request",
    .tp_basicsize = sizeof(SRequest),
    .tp_dealloc = (destructor)request_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One operation sent by a client to a subsystem handler.",
    .tp_getset = request_getset,
    .tp_methods = request_methods,
    .tp_as_buffer = &request_as_buffer,
};

/* Validate a copied SQE's payload reference; 0 or -errno. */
int srv_sqe_check(const SQueue *q, const struct io_uring_sqe *sqe)
{
    uint32_t of = sqe->op_flags, len = sqe->len;
    if (of & ~SR_OPF_KNOWN || (uint32_t)sqe->fd >= q->nslots)
        return -EINVAL;
    /* Packed records: a whole number of records of a non-zero size (the
     * caller, srv_call_vector, divides by it). */
    if ((of & SR_OPF_RECORDS) &&
        (!sqe->personality || len % sqe->personality || len / sqe->personality > SR_RECORDS_MAX ||
         (of & SR_PAYLOAD_MASK) == SR_PAYLOAD_NONE))
        return -EINVAL;
    switch (of & SR_PAYLOAD_MASK) {
    case SR_PAYLOAD_INLINE:
        return len > SR_INLINE_MAX ? -EINVAL : 0;
    case SR_PAYLOAD_SLOT:
        return len > q->slot_size ? -EINVAL : 0;
    case SR_PAYLOAD_POOL:
        return (!q->pool || sqe->buf_index >= q->pool_count ||
                (uint64_t)sqe->file_index + len > q->pool_size) ? -EFAULT : 0;
    }
    return 0;
}

/* Fill a Request from a copied SQE; returns 0, or -errno for a bad SQE. */
int srv_request_fill(SRequest *r, SQueue *q, const struct io_uring_sqe *sqe)
{
    r->user_data = sqe->user_data;
    r->op = sqe->opcode;
    r->arg0 = (int64_t)sqe->off;
    r->arg1 = (int64_t)sqe->addr;
    r->len = 0;
    r->data = NULL;
    r->where = SR_PAYLOAD_NONE;
    r->want_result = 0;
    r->slot = 0;
    uint32_t of = sqe->op_flags;
    if (of & ~SR_OPF_KNOWN || of & SR_OPF_RECORDS)   /* records: vector ops only */
        return -EINVAL;
    uint32_t slot = (uint32_t)sqe->fd;
    if (slot >= q->nslots)
        return -EINVAL;
    r->slot = slot;
    r->want_result = (of & SR_OPF_RESULT) != 0;
    uint32_t len = sqe->len;
    switch (of & SR_PAYLOAD_MASK) {
    case SR_PAYLOAD_NONE:
        break;
    case SR_PAYLOAD_INLINE:
        if (len > SR_INLINE_MAX)
            return -EINVAL;
        memcpy(r->inl, sqe->cmd, len);
        r->data = r->inl;
        r->len = len;
        break;
    case SR_PAYLOAD_SLOT:
        if (len > q->slot_size)
            return -EINVAL;
        r->data = q->send_area + (size_t)slot * q->slot_size;
        r->len = len;
        break;
    case SR_PAYLOAD_POOL:
        if (!q->pool || sqe->buf_index >= q->pool_count ||
            (uint64_t)sqe->file_index + len > q->pool_size)
            return -EFAULT;
        r->data = q->pool + (size_t)sqe->buf_index * q->pool_size + sqe->file_index;
        r->len = len;
        break;
    }
    r->where = (uint8_t)(of & SR_PAYLOAD_MASK);
    return 0;
}

