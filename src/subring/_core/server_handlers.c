/*
 * server_handlers.c -- calling batch and vector handlers: the Batch object a
 * vector handler receives, and how their results become CQEs (see server.h).
 */
#define _GNU_SOURCE
#include "server.h"

/* ------------------------------------------------------------------------ */
/* Batch: what a vector handler (@op(vector=True)) receives                   */
/* ------------------------------------------------------------------------ */

/* All payloads of a run of SQEs for one op, copied back to back into one
 * bytes object, plus the integer arguments as arrays: the handler pays the
 * Python call once per batch, not once per message. */
typedef struct {
    PyObject_HEAD
    uint32_t n;
    PyObject *data;       /* bytes: the payloads, concatenated */
    PyObject *offsets;    /* bytes: uint32[n + 1] -- payload k is data[off[k]:off[k+1]] */
    PyObject *args;       /* bytes: int64[2 * n] -- arg0, arg1 of each op */
    PyObject *client;
} SBatch;

PyTypeObject SR_BatchType;

static void batch_dealloc(SBatch *b)
{
    Py_XDECREF(b->data);
    Py_XDECREF(b->offsets);
    Py_XDECREF(b->args);
    Py_XDECREF(b->client);
    PyObject_Free(b);
}

static PyObject *batch_view(PyObject *bytes, const char *fmt, Py_ssize_t start, Py_ssize_t step)
{
    PyObject *mv = PyMemoryView_FromObject(bytes);
    if (!mv)
        return NULL;
    PyObject *cast = PyObject_CallMethod(mv, "cast", "s", fmt);
    Py_DECREF(mv);
    if (!cast || step == 1)
        return cast;
    PyObject *sl = PySlice_New(PyLong_FromSsize_t(start), Py_None, PyLong_FromSsize_t(step));
    PyObject *res = sl ? PyObject_GetItem(cast, sl) : NULL;
    Py_XDECREF(sl);
    Py_DECREF(cast);
    return res;
}

static PyObject *batch_get_data(SBatch *b, void *c) { return Py_NewRef(b->data); }
static PyObject *batch_get_count(SBatch *b, void *c) { return PyLong_FromUnsignedLong(b->n); }
static PyObject *batch_get_offsets(SBatch *b, void *c) { return batch_view(b->offsets, "I", 0, 1); }
static PyObject *batch_get_arg0(SBatch *b, void *c) { return batch_view(b->args, "q", 0, 2); }
static PyObject *batch_get_arg1(SBatch *b, void *c) { return batch_view(b->args, "q", 1, 2); }
static PyObject *batch_get_client(SBatch *b, void *c) { return Py_NewRef(b->client); }
static Py_ssize_t batch_len(SBatch *b) { return b->n; }

static PyObject *batch_item(SBatch *b, Py_ssize_t k)
{
    if (k < 0 || (size_t)k >= b->n) {
        PyErr_SetString(PyExc_IndexError, "batch index out of range");
        return NULL;
    }
    const uint32_t *off = (const uint32_t *)PyBytes_AS_STRING(b->offsets);
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(b->data) + off[k], off[k + 1] - off[k]);
}

static PySequenceMethods batch_as_sequence = {
    .sq_length = (lenfunc)batch_len,
    .sq_item = (ssizeargfunc)batch_item,
};

static PyGetSetDef batch_getset[] = {
    {"data", (getter)batch_get_data, NULL, "bytes: every payload, back to back."},
    {"count", (getter)batch_get_count, NULL,
     "Number of calls in the batch (an op of packed records is one call per record)."},
    {"offsets", (getter)batch_get_offsets, NULL,
     "memoryview of uint32[count + 1]: payload k is data[offsets[k]:offsets[k+1]]."},
    {"arg0", (getter)batch_get_arg0, NULL, "memoryview of int64: each op's arg0."},
    {"arg1", (getter)batch_get_arg1, NULL, "memoryview of int64: each op's arg1."},
    {"client", (getter)batch_get_client, NULL, "Who sent the batch."},
    {NULL}
};

PyTypeObject SR_BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring.Batch",
    .tp_basicsize = sizeof(SBatch),
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The ops a vector handler (@op(vector=True)) receives at once; batch[k] is\n"
              "payload k as bytes.  Owned copies: valid as long as you keep them.",
    .tp_getset = batch_getset,
    .tp_as_sequence = &batch_as_sequence,
};

/* Run a vector handler over sqes[idx[0..m)] (already validated into the
 * parallel arrays).  Posts one CQE per op.  Returns -1 to stop the loop. */
/* Post the completion of vector-op SQE `sqe` whose first call has result
 * `rv`: an op of packed records completes once with its number of records
 * (or the error every one of them got). */
static inline void vec_post(SQueue *q, const struct io_uring_sqe *sqe, int32_t rv, int failed)
{
    if ((sqe->op_flags & SR_OPF_RECORDS) && !failed)
        rv = (int32_t)sqe_calls(sqe);
    sq_post(q, sqe->user_data, rv, 0);
}

int srv_call_vector(PyObject *h, SQueue *q, const struct io_uring_sqe *sqes,
                            const int *idx, int m)
{
    size_t total = 0;
    uint32_t calls = 0;                 /* m ops carry this many calls */
    for (int j = 0; j < m; j++) {
        total += sqes[2 * idx[j]].len;
        calls += sqe_calls(&sqes[2 * idx[j]]);
    }
    SBatch *b = PyObject_New(SBatch, &SR_BatchType);
    if (b) {
        b->n = calls;
        b->client = Py_NewRef(q->info);
        b->data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        b->offsets = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(calls + 1) * 4);
        b->args = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)calls * 16);
        if (!b->data || !b->offsets || !b->args)
            Py_CLEAR(b);
    }
    if (!b) {
        PyErr_Clear();
        for (int j = 0; j < m; j++)
            sq_post(q, sqes[2 * idx[j]].user_data, -ENOMEM, 0);
        return 0;
    }
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(b->data);
    uint32_t *off = (uint32_t *)PyBytes_AS_STRING(b->offsets);
    int64_t *args = (int64_t *)PyBytes_AS_STRING(b->args);
    uint32_t pos = 0, c = 0;
    for (int j = 0; j < m; j++) {
        const struct io_uring_sqe *sqe = &sqes[2 * idx[j]];
        const uint8_t *src = NULL;
        switch (sqe->op_flags & SR_PAYLOAD_MASK) {
        case SR_PAYLOAD_INLINE: src = sqe->cmd; break;
        case SR_PAYLOAD_SLOT: src = q->send_area + (size_t)(uint32_t)sqe->fd * q->slot_size; break;
        case SR_PAYLOAD_POOL:
            src = q->pool + (size_t)sqe->buf_index * q->pool_size + sqe->file_index; break;
        }
        uint32_t len = src ? sqe->len : 0;
        if (len)
            memcpy(dst + pos, src, len);
        /* one call per record (a plain op: one record of its whole length) */
        uint32_t n = sqe_calls(sqe);
        uint32_t rec = (sqe->op_flags & SR_OPF_RECORDS) ? sqe->personality : 0;
        for (uint32_t k = 0; k < n; k++, c++) {
            off[c] = pos + k * rec;
            args[2 * c] = (int64_t)sqe->off;
            args[2 * c + 1] = (int64_t)sqe->addr;
        }
        pos += len;
    }
    off[calls] = pos;
    if (_PyBytes_Resize(&b->data, pos) < 0) {   /* payload-less ops: shorter */
        b->data = NULL;
        Py_DECREF(b);
        PyErr_Clear();
        for (int j = 0; j < m; j++)
            sq_post(q, sqes[2 * idx[j]].user_data, -ENOMEM, 0);
        return 0;
    }
    PyObject *res = PyObject_CallOneArg(h, (PyObject *)b);
    Py_DECREF(b);
    if (!res) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        int stop = !PyErr_GivenExceptionMatches(et, PyExc_Exception);
        int err = stop ? ECANCELED
                  : PyErr_GivenExceptionMatches(et, PyExc_ValueError) ? EINVAL : EIO;
        if (err == EIO) {
            PyErr_NormalizeException(&et, &ev, &tb);
            srv_report_handler_error(q, sqes[2 * idx[0]].opcode, ev, tb);
        }
        for (int j = 0; j < m; j++)
            sq_post(q, sqes[2 * idx[j]].user_data, -err, 0);
        if (stop) {
            PyErr_Restore(et, ev, tb);
            return -1;
        }
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return 0;
    }
    /* None / int: the same result for all; otherwise one result per call (a
     * sequence of ints, or an int32 buffer such as array('i') / numpy).  An op
     * posts the result of its first call (see vec_post for packed records). */
    if (res == Py_None || PyLong_Check(res)) {
        long long v = res == Py_None ? 0 : PyLong_AsLongLong(res);
        if ((v == -1 && PyErr_Occurred()) || v < INT32_MIN || v > INT32_MAX) {
            PyErr_Clear();
            v = -ERANGE;
        }
        for (int j = 0; j < m; j++)
            vec_post(q, &sqes[2 * idx[j]], (int32_t)v, 0);
    } else {
        Py_buffer v;
        if (PyObject_CheckBuffer(res) && PyObject_GetBuffer(res, &v, PyBUF_FORMAT) == 0 &&
            v.itemsize == 4 && v.len >= (Py_ssize_t)calls * 4) {
            const int32_t *rv = v.buf;
            c = 0;
            for (int j = 0; j < m; j++) {
                vec_post(q, &sqes[2 * idx[j]], rv[c], 0);
                c += sqe_calls(&sqes[2 * idx[j]]);
            }
            PyBuffer_Release(&v);
        } else {
            PyErr_Clear();
            PyObject *seq = PySequence_Fast(res, "vector handler result");
            c = 0;
            for (int j = 0; j < m; j++) {
                int32_t rv = -EINVAL;
                int failed = 1;
                if (seq && c < (uint32_t)PySequence_Fast_GET_SIZE(seq)) {
                    long long x = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, c));
                    if (!(x == -1 && PyErr_Occurred()) && x >= INT32_MIN && x <= INT32_MAX) {
                        rv = (int32_t)x;
                        failed = 0;
                    }
                    PyErr_Clear();
                }
                vec_post(q, &sqes[2 * idx[j]], rv, failed);
                c += sqe_calls(&sqes[2 * idx[j]]);
            }
            Py_XDECREF(seq);
            PyErr_Clear();
        }
    }
    Py_DECREF(res);
    return 0;
}

/* Call a batch handler with a list of Requests and finish each one.  It may
 * return None or an int (the result of every request), a sequence (one result
 * each), or PENDING (it completes them itself).  If it raises, every request
 * gets the error.  `stopping`: a BaseException is pending, cancel instead.
 * Returns -1 if the loop must stop (exception set). */
int srv_call_batch(PyObject *h, PyObject *batch, int stopping)
{
    Py_ssize_t m = PyList_GET_SIZE(batch);
    SQueue *bq = m ? ((SRequest *)PyList_GET_ITEM(batch, 0))->q : NULL;
    if (stopping || (bq && bq->dead)) {
        for (Py_ssize_t j = 0; j < m; j++) {
            SRequest *br = (SRequest *)PyList_GET_ITEM(batch, j);
            if (!br->done) {
                br->done = 1;
                sq_post(br->q, br->user_data, -ECANCELED, 0);
            }
        }
        return stopping ? -1 : 0;
    }
    PyObject *res = PyObject_CallOneArg(h, batch);
    int rc = 0;
    if (!res) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        for (Py_ssize_t j = 0; j < m; j++) {
            SRequest *br = (SRequest *)PyList_GET_ITEM(batch, j);
            if (br->done)
                continue;
            Py_XINCREF(et); Py_XINCREF(ev); Py_XINCREF(tb);
            PyErr_Restore(et, ev, tb);
            if (srv_request_finish(br, NULL) < 0) {
                rc = -1;
                PyErr_Clear();   /* we still hold the original */
            }
        }
        if (rc < 0)
            PyErr_Restore(et, ev, tb);
        else {
            Py_XDECREF(et); Py_XDECREF(ev); Py_XDECREF(tb);
        }
        return rc;
    }
    PyObject *seq = NULL;
    if (res != Py_None && res != SR_PENDING && !PyLong_Check(res)) {
        seq = PySequence_Fast(res, "a batch handler returns None, an int, a sequence or PENDING");
        if (!seq)
            PyErr_Clear();
    }
    for (Py_ssize_t j = 0; j < m; j++) {
        SRequest *br = (SRequest *)PyList_GET_ITEM(batch, j);
        if (br->done)
            continue;
        if (seq && j >= PySequence_Fast_GET_SIZE(seq)) {
            /* One rule for batch and vector handlers: a request the result
             * sequence has no entry for fails with EINVAL (never res 0). */
            PyErr_Format(PyExc_ValueError,
                         "the batch handler returned %zd results for %zd requests",
                         PySequence_Fast_GET_SIZE(seq), m);
            srv_request_finish(br, NULL);
        } else if (seq)
            srv_request_finish(br, PySequence_Fast_GET_ITEM(seq, j));
        else if (res != Py_None && res != SR_PENDING && !PyLong_Check(res))
            srv_request_finish(br, Py_Ellipsis);   /* not a valid result: -EINVAL */
        else
            srv_request_finish(br, res);
    }
    Py_XDECREF(seq);
    Py_DECREF(res);
    return 0;
}

