/*
 * objects.c -- small Python objects of the C core: Completion, Pin, the op
 * table, and argument helpers.
 */
#include <errno.h>
#include <string.h>
#include "core.h"
#include "structmember.h"
#include "optable.h"

/* ------------------------------------------------------------------------ */
/* opcode names                                                              */
/* ------------------------------------------------------------------------ */

static const char *const opnames[IORING_OP_LAST_KNOWN] = {
    "nop", "readv", "writev", "fsync", "read_fixed", "write_fixed", "poll_add",
    "poll_remove", "sync_file_range", "sendmsg", "recvmsg", "timeout",
    "timeout_remove", "accept", "async_cancel", "link_timeout", "connect",
    "fallocate", "openat", "close", "files_update", "statx", "read", "write",
    "fadvise", "madvise", "send", "recv", "openat2", "epoll_ctl", "splice",
    "provide_buffers", "remove_buffers", "tee", "shutdown", "renameat",
    "unlinkat", "mkdirat", "symlinkat", "linkat", "msg_ring", "fsetxattr",
    "setxattr", "fgetxattr", "getxattr", "socket", "uring_cmd", "send_zc",
    "sendmsg_zc", "read_multishot", "waitid", "futex_wait", "futex_wake",
    "futex_waitv", "fixed_fd_install", "ftruncate", "bind", "listen",
    "recv_zc", "epoll_wait", "readv_fixed", "writev_fixed", "pipe",
};

const char *sr_opcode_name(unsigned opcode)
{
    return opcode < IORING_OP_LAST_KNOWN ? opnames[opcode] : "op";
}

PyObject *sr_raise_errno(int err, const char *what)
{
    /* OSError(errno, msg) picks the matching subclass (FileNotFoundError,
     * ConnectionResetError, ...) by itself. */
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "(iN)", err,
                                          PyUnicode_FromFormat("%s: %s", what,
                                                               strerror(err)));
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* interrupt-plane modes                                                     */
/* ------------------------------------------------------------------------ */

static const char *const mode_names[] = {"hybrid", "interrupt", "poll"};

PyObject *sr_mode_name(int mode)
{
    return PyUnicode_FromString(mode_names[mode]);
}

int sr_mode_parse(PyObject *v, int *mode)
{
    for (int k = 0; v && PyUnicode_Check(v) && k < 3; k++) {
        if (PyUnicode_CompareWithASCIIString(v, mode_names[k]) == 0) {
            *mode = k;
            return 0;
        }
    }
    PyErr_SetString(PyExc_ValueError, "mode must be 'hybrid', 'interrupt' or 'poll'");
    return -1;
}

int sr_spin_us_parse(PyObject *v, int64_t *spin_ns)
{
    double us = v ? PyFloat_AsDouble(v) : -1;
    if (us == -1 && PyErr_Occurred())
        return -1;
    if (!(us >= 0 && us <= 1e7)) {
        PyErr_SetString(PyExc_ValueError, "spin_us must be in [0, 1e7]");
        return -1;
    }
    *spin_ns = (int64_t)(us * 1000);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* argument helpers                                                          */
/* ------------------------------------------------------------------------ */

int sr_parse(const char *fname, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames, const char *const *names, int n, int nreq,
             PyObject **out)
{
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)",
                     fname, n, nargs);
        return -1;
    }
    for (int i = 0; i < n; i++)
        out[i] = i < nargs ? args[i] : NULL;
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nk; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int found = -1;
            for (int i = 0; i < n; i++) {
                if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                    found = i;
                    break;
                }
            }
            if (found < 0) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got an unexpected keyword argument '%U'", fname, key);
                return -1;
            }
            if (out[found]) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got multiple values for argument '%s'", fname,
                             names[found]);
                return -1;
            }
            out[found] = args[nargs + k];
        }
    }
    for (int i = 0; i < nreq; i++) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'",
                         fname, names[i]);
            return -1;
        }
    }
    return 0;
}

static int not_int(PyObject *o, const char *what)
{
    PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what,
                 Py_TYPE(o)->tp_name);
    return -1;
}

/* NULL means "argument omitted": the default.  None is *not* an int (callers
 * that document None handle it before calling these). */
int sr_as_i64(PyObject *o, int64_t dflt, int64_t *out, const char *what)
{
    if (!o) { *out = dflt; return 0; }
    if (!PyLong_Check(o)) return not_int(o, what);
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

int sr_as_u64(PyObject *o, uint64_t dflt, uint64_t *out, const char *what)
{
    if (!o) { *out = dflt; return 0; }
    if (!PyLong_Check(o)) return not_int(o, what);
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_OverflowError, "%s must be in [0, 2**64)", what);
        return -1;
    }
    *out = v;
    return 0;
}

int sr_as_int(PyObject *o, int dflt, int *out, const char *what)
{
    int64_t v;
    if (sr_as_i64(o, dflt, &v, what) < 0) return -1;
    if (v < INT32_MIN || v > INT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s out of range for a 32-bit int", what);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int sr_as_u32(PyObject *o, uint32_t dflt, uint32_t *out, const char *what)
{
    int64_t v;
    if (sr_as_i64(o, dflt, &v, what) < 0) return -1;
    if (v < 0 || v > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s must be in [0, 2**32), got %lld", what,
                     (long long)v);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* ---- argument helpers of the ring methods (ring_*.c, kernel_*.c, user_*.c) */

/* timeout argument: None or math.inf -> -1 (no timeout), a number of
 * seconds -> ns.  inf is "no timeout" for every purpose, in particular a
 * wait that could never be satisfied is refused at once instead of blocking
 * for ever (submit_and_wait). */
int sr_parse_timeout(PyObject *o, int64_t *ns)
{
    if (!o || o == Py_None) { *ns = -1; return 0; }
    double t = PyFloat_AsDouble(o);
    if (t == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "timeout must be a number of seconds or None, "
                     "not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    if (!(t >= 0)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be >= 0 (or None)");
        return -1;
    }
    if (t == Py_HUGE_VAL) {
        *ns = -1;
        return 0;
    }
    *ns = t > 9e9 ? (int64_t)9e18 : (int64_t)(t * 1e9);
    return 0;
}


int sr_i64_array_get(PyObject *o, sr_i64_array *arr, const char *what)
{
    memset(arr, 0, sizeof(*arr));
    if (PyObject_CheckBuffer(o)) {
        if (PyObject_GetBuffer(o, &arr->view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
            return -1;
        const char *f = arr->view.format ? arr->view.format : "B";
        if (*f == '<' || *f == '=' || *f == '@') f++;
        if (arr->view.itemsize != 8 || !strchr("qQlL", *f) || f[1]) {
            PyErr_Format(PyExc_TypeError, "%s must hold 64-bit integers (array('q'), "
                         "numpy int64) or be a sequence of ints", what);
            PyBuffer_Release(&arr->view);
            return -1;
        }
        arr->n = arr->view.len / 8;
        return 0;
    }
    arr->seq = PySequence_Fast(o, what);
    if (!arr->seq)
        return -1;
    arr->n = PySequence_Fast_GET_SIZE(arr->seq);
    return 0;
}

int sr_i64_array_at(sr_i64_array *arr, Py_ssize_t k, int64_t *out, const char *what)
{
    if (!arr->seq) {
        *out = ((int64_t *)arr->view.buf)[k];
        return 0;
    }
    PyObject *o = PySequence_Fast_GET_ITEM(arr->seq, k);
    if (PyLong_Check(o) && _PyLong_Sign(o) > 0) {   /* user_data may use all 64 bits */
        uint64_t u;
        if (sr_as_u64(o, 0, &u, what) < 0)
            return -1;
        *out = (int64_t)u;
        return 0;
    }
    return sr_as_i64(o, 0, out, what);
}

void sr_i64_array_release(sr_i64_array *arr)
{
    if (arr->view.obj)
        PyBuffer_Release(&arr->view);
    Py_CLEAR(arr->seq);
}

/* An integer buffer format ('B' when the exporter gives none). */
int sr_int_format(const char *f)
{
    if (!f)
        return 1;
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    return f[0] && strchr("bBhHiIlLqQnN", f[0]) && !f[1];
}

/* ------------------------------------------------------------------------ */
/* op table                                                                  */
/* ------------------------------------------------------------------------ */

int sr_optable_init(sr_optable *t, uint32_t nslots)
{
    memset(t, 0, sizeof(*t));
    /* Cache-line aligned so that each slot is exactly one line. */
    if (posix_memalign((void **)&t->slots, 64, (size_t)nslots * sizeof(sr_slot)) != 0)
        t->slots = NULL;
    else
        memset(t->slots, 0, (size_t)nslots * sizeof(sr_slot));
    t->views = PyMem_Calloc(nslots, sizeof(Py_buffer));
    t->free_stack = PyMem_Calloc(nslots, sizeof(uint32_t));
    if (!t->slots || !t->views || !t->free_stack) {
        free(t->slots);
        PyMem_Free(t->views);
        PyMem_Free(t->free_stack);
        t->slots = NULL;
        t->views = NULL;
        t->free_stack = NULL;
        PyErr_NoMemory();
        return -1;
    }
    /* Room to park what every slot can hold (udata, keep; one export), so
     * that a reap of the whole table needs no allocation to defer. */
    t->trash.objs = PyMem_Calloc((size_t)nslots * 2, sizeof(PyObject *));
    t->trash.views = PyMem_Calloc(nslots, sizeof(Py_buffer));
    if (!t->trash.objs || !t->trash.views) {
        free(t->slots);
        PyMem_Free(t->views);
        PyMem_Free(t->free_stack);
        PyMem_Free(t->trash.objs);
        PyMem_Free(t->trash.views);
        memset(t, 0, sizeof(*t));
        PyErr_NoMemory();
        return -1;
    }
    t->trash.capobjs = nslots * 2;
    t->trash.capviews = nslots;
    t->nslots = nslots;
    /* Hand out low slots first (stack top = slot 0): keeps the hot part of
     * the table small for shallow queues. */
    for (uint32_t k = 0; k < nslots; k++)
        t->free_stack[k] = nslots - 1 - k;
    t->nfree = nslots;
    return 0;
}

int sr_trash_grow(sr_optable *t, int views)
{
    sr_trash *tr = &t->trash;
    uint32_t cap = views ? tr->capviews : tr->capobjs;
    uint32_t ncap = cap ? cap * 2 : 16;
    void *p = views ? PyMem_Realloc(tr->views, (size_t)ncap * sizeof(Py_buffer))
                    : PyMem_Realloc(tr->objs, (size_t)ncap * sizeof(PyObject *));
    if (!p)
        return -1;      /* no exception: the caller leaks the item instead */
    if (views) {
        tr->views = p;
        tr->capviews = ncap;
    } else {
        tr->objs = p;
        tr->capobjs = ncap;
    }
    return 0;
}

void sr_optable_flush(sr_optable *t)
{
    sr_trash *tr = &t->trash;
    if (!tr->nobjs && !tr->nviews)
        return;
    /* A pending exception (an error path) survives the finalizers we run. */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    /* Re-read the counts on every turn: the code we run may flush (or close
     * the ring, which flushes and frees the arrays) itself. */
    while (tr->nviews) {
        Py_buffer v = tr->views[--tr->nviews];
        PyBuffer_Release(&v);
    }
    while (tr->nobjs) {
        PyObject *o = tr->objs[--tr->nobjs];
        Py_DECREF(o);
        /* a finalizer may have released more views meanwhile */
        while (tr->nviews) {
            Py_buffer v = tr->views[--tr->nviews];
            PyBuffer_Release(&v);
        }
    }
    PyErr_Restore(et, ev, tb);
}

void sr_optable_free(sr_optable *t)
{
    sr_optable_flush(t);
    PyMem_Free(t->trash.objs);
    PyMem_Free(t->trash.views);
    memset(&t->trash, 0, sizeof(t->trash));
    free(t->slots);
    PyMem_Free(t->views);
    PyMem_Free(t->free_stack);
    t->slots = NULL;
    t->views = NULL;
    t->free_stack = NULL;
    t->nslots = t->nfree = t->live = 0;
    t->fixed_live = t->skip_live = t->owed_live = 0;
}

/* ------------------------------------------------------------------------ */
/* Completion                                                                */
/* ------------------------------------------------------------------------ */

/* Completions are made and dropped at the rate of the ring: keep a small
 * freelist instead of going through the allocator each time. */
static SR_Completion *cfree[1024];
static int ncfree;

SR_Completion *sr_completion_alloc(void)
{
    if (ncfree) {
        SR_Completion *c = cfree[--ncfree];
        _Py_NewReference((PyObject *)c);
        return c;
    }
    return PyObject_New(SR_Completion, &SR_CompletionType);
}

SR_Completion *sr_completion_new(PyObject *user_data_stolen, int32_t res,
                                 uint32_t flags, uint8_t opcode, const uint64_t *big)
{
    SR_Completion *c = sr_completion_alloc();
    if (!c) {
        Py_XDECREF(user_data_stolen);
        return NULL;
    }
    c->res_obj = PyLong_FromLong(res);
    if (!c->res_obj) {
        c->user_data = NULL;
        Py_XDECREF(user_data_stolen);
        Py_DECREF(c);
        return NULL;
    }
    c->user_data = user_data_stolen;
    c->res = res;
    c->flags = flags;
    c->opcode = opcode;
    c->has_big = big != NULL;
    if (big) {
        c->big[0] = big[0];
        c->big[1] = big[1];
    }
    c->data = NULL;
    c->opname = NULL;
    return c;
}

static void completion_dealloc(SR_Completion *c)
{
    Py_XDECREF(c->user_data);
    Py_XDECREF(c->res_obj);
    Py_XDECREF(c->data);
    Py_XDECREF(c->opname);
    if (ncfree < 1024)
        cfree[ncfree++] = c;
    else
        PyObject_Free(c);
}

static PyObject *completion_get_buffer_id(SR_Completion *c, void *closure)
{
    if (!(c->flags & IORING_CQE_F_BUFFER))
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(c->flags >> IORING_CQE_BUFFER_SHIFT);
}
static PyObject *completion_get_more(SR_Completion *c, void *closure)
{
    return PyBool_FromLong(c->flags & IORING_CQE_F_MORE);
}
static PyObject *completion_get_opcode(SR_Completion *c, void *closure)
{
    return PyLong_FromLong(c->opcode);
}
static PyObject *completion_get_op(SR_Completion *c, void *closure)
{
    if (c->opname)
        return Py_NewRef(c->opname);
    return PyUnicode_FromString(sr_opcode_name(c->opcode));
}

static const char *completion_opname(SR_Completion *c)
{
    const char *n = c->opname ? PyUnicode_AsUTF8(c->opname) : NULL;
    if (!n) {
        PyErr_Clear();
        n = sr_opcode_name(c->opcode);
    }
    return n;
}
static PyObject *completion_get_extra(SR_Completion *c, void *closure)
{
    if (!c->has_big)
        Py_RETURN_NONE;
    return Py_BuildValue("(KK)", (unsigned long long)c->big[0],
                         (unsigned long long)c->big[1]);
}

static PyObject *completion_get_data(SR_Completion *c, void *closure)
{
    if (c->data && PyBytes_Check(c->data))
        return Py_NewRef(c->data);
    Py_RETURN_NONE;
}
static PyObject *completion_get_error_text(SR_Completion *c, void *closure)
{
    if (c->data && PyUnicode_Check(c->data))
        return Py_NewRef(c->data);
    Py_RETURN_NONE;
}

static PyObject *completion_result(SR_Completion *c, PyObject *unused)
{
    if (c->res >= 0) {
        if (c->data && PyBytes_Check(c->data))
            return Py_NewRef(c->data);
        return PyLong_FromLong(c->res);
    }
    if (c->data && PyUnicode_Check(c->data)) {
        /* a subsystem handler raised: keep its text in the message */
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "(iN)", -c->res,
                                              PyUnicode_FromFormat("%s: %s (%U)",
                                                  completion_opname(c),
                                                  strerror(-c->res), c->data));
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    return sr_raise_errno(-c->res, completion_opname(c));
}

static PyObject *completion_repr(SR_Completion *c)
{
    if (c->res < 0)
        return PyUnicode_FromFormat("<Completion %s user_data=%R res=%d (%s) flags=0x%x>",
                                    completion_opname(c),
                                    c->user_data ? c->user_data : Py_None,
                                    c->res, strerror(-c->res), c->flags);
    return PyUnicode_FromFormat("<Completion %s user_data=%R res=%d flags=0x%x>",
                                completion_opname(c),
                                c->user_data ? c->user_data : Py_None, c->res,
                                c->flags);
}

/* Plain member descriptors for the three fields every loop reads. */
static PyMemberDef completion_members[] = {
    {"user_data", T_OBJECT_EX, offsetof(SR_Completion, user_data), READONLY,
     "The user_data given when the op was prepared (its token if none was given)."},
    {"res", T_OBJECT_EX, offsetof(SR_Completion, res_obj), READONLY,
     "Result: >= 0, or -errno."},
    {"flags", T_UINT, offsetof(SR_Completion, flags), READONLY, "Raw IORING_CQE_F_* flags."},
    {NULL}
};

static PyGetSetDef completion_getset[] = {
    {"buffer_id", (getter)completion_get_buffer_id, NULL,
     "Provided-buffer id (CQE flag BUFFER), or None."},
    {"more", (getter)completion_get_more, NULL,
     "True if the (multishot) op will post more completions."},
    {"opcode", (getter)completion_get_opcode, NULL, "The op's IORING_OP_* code."},
    {"op", (getter)completion_get_op, NULL, "The op's name, e.g. 'read'."},
    {"extra", (getter)completion_get_extra, NULL,
     "The 16 extra bytes of a CQE32 ring as two ints, or None."},
    {"data", (getter)completion_get_data, NULL,
     "Subsystem rings: the result bytes the handler returned, or None."},
    {"error_text", (getter)completion_get_error_text, NULL,
     "Subsystem rings: the text of the exception the handler raised, or None."},
    {NULL}
};

static PyMethodDef completion_methods[] = {
    {"result", (PyCFunction)completion_result, METH_NOARGS,
     "result($self, /)\n--\n\n"
     "Return res (or the result bytes of a subsystem op), or raise the matching\n"
     "OSError subclass; the message names the op (and the handler's error text)."},
    {NULL}
};

PyTypeObject SR_CompletionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring.Completion",
    .tp_basicsize = sizeof(SR_Completion),
    .tp_dealloc = (destructor)completion_dealloc,
    .tp_repr = (reprfunc)completion_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One completion (CQE): user_data, res, flags.  Immutable.",
    .tp_members = completion_members,
    .tp_getset = completion_getset,
    .tp_methods = completion_methods,
};

/* ------------------------------------------------------------------------ */
/* Pin                                                                       */
/* ------------------------------------------------------------------------ */

SR_Pin *sr_pin_new(PyObject *obj, int writable)
{
    SR_Pin *p = PyObject_New(SR_Pin, &SR_PinType);
    if (!p) return NULL;
    if (PyObject_GetBuffer(obj, &p->view,
                           writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        p->view.obj = NULL;
        Py_DECREF(p);
        return NULL;
    }
    return p;
}

static PyObject *pin_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"obj", "writable", NULL};
    PyObject *obj;
    int writable = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p:Pin", kwlist, &obj, &writable))
        return NULL;
    return (PyObject *)sr_pin_new(obj, writable);
}

static void pin_dealloc(SR_Pin *p)
{
    if (p->view.obj)
        PyBuffer_Release(&p->view);
    PyObject_Free(p);
}

static PyObject *pin_get_address(SR_Pin *p, void *c)
{
    return PyLong_FromVoidPtr(p->view.buf);
}
static PyObject *pin_get_nbytes(SR_Pin *p, void *c)
{
    return PyLong_FromSsize_t(p->view.len);
}
static PyObject *pin_get_obj(SR_Pin *p, void *c)
{
    return Py_NewRef(p->view.obj ? p->view.obj : Py_None);
}

static PyGetSetDef pin_getset[] = {
    {"address", (getter)pin_get_address, NULL, "Address of the first byte."},
    {"nbytes", (getter)pin_get_nbytes, NULL, "Length in bytes."},
    {"obj", (getter)pin_get_obj, NULL, "The exporting object."},
    {NULL}
};

PyTypeObject SR_PinType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.Pin",
    .tp_basicsize = sizeof(SR_Pin),
    .tp_dealloc = (destructor)pin_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Pin(obj, writable=False)\n--\n\n"
              "Hold a buffer export of obj (so its memory\n"
              "cannot move or be freed) and expose its address.  Pass it as `keep`\n"
              "to an op so the pin lives until the op's final completion.",
    .tp_getset = pin_getset,
    .tp_new = pin_new,
};
