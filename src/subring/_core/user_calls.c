/*
 * user_calls.c -- the user backend's SQE builders: prep_call (payload copied
 * inline or into the op's send slot), prep_call_pool (zero-copy from a
 * registered BufferPool), and the batch forms prep_calls and prep_records.
 */
#define _GNU_SOURCE
#include <string.h>

#include "ring_backend.h"
#include "ring_prep.h"

/* Where a payload of `len` bytes goes: inline in the SQE or the op's send slot. */
static int ur_check_payload(SR_Ring *r, Py_ssize_t len)
{
    if ((size_t)len > r->u.slot_size && len > SR_INLINE_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "payload of %zd bytes exceeds this connection's slot_size (%u); "
                     "put large data in a BufferPool and use prep_call_pool",
                     len, r->u.slot_size);
        return -1;
    }
    return 0;
}

static void ur_fill(SR_Ring *r, struct io_uring_sqe *sqe, uint32_t slot, const void *data,
                    Py_ssize_t len, int64_t arg0, int64_t arg1)
{
    sqe->off = (uint64_t)arg0;
    sqe->addr = (uint64_t)arg1;
    sqe->fd = (int32_t)slot;
    sqe->len = (uint32_t)len;
    uint32_t where = SR_PAYLOAD_NONE;
    if (data && len <= SR_INLINE_MAX) {
        memcpy(sqe->cmd, data, (size_t)len);
        where = SR_PAYLOAD_INLINE;
    } else if (data) {
        memcpy(r->u.send_area + (size_t)slot * r->u.slot_size, data, (size_t)len);
        where = SR_PAYLOAD_SLOT;
    }
    sqe->op_flags = where | SR_OPF_RESULT;
}

/* prep_call(op, data=None, arg0=0, arg1=0, user_data=None) -> token */
PyObject *ur_prep_call(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"op", "data", "arg0", "arg1", "user_data"};
    PyObject *a[5];
    uint32_t op;
    int64_t arg0, arg1, i;
    Py_buffer view = {0};
    if (sr_parse("prep_call", args, nargs, kwnames, names, 5, 1, a) < 0 ||
        sr_as_u32(a[0], 0, &op, "op") < 0 || sr_as_i64(a[2], 0, &arg0, "arg0") < 0 ||
        sr_as_i64(a[3], 0, &arg1, "arg1") < 0 || ur_only(r, "prep_call") < 0)
        return NULL;
    if (op > 255) {
        PyErr_Format(PyExc_ValueError, "op index %u out of range", op);
        return NULL;
    }
    if (a[1] && a[1] != Py_None) {
        if (PyObject_GetBuffer(a[1], &view, PyBUF_SIMPLE) < 0)
            return NULL;
        if (ur_check_payload(r, view.len) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    struct io_uring_sqe *sqe = sr_ring_begin(r, (uint8_t)op, 0, &i);
    if (sqe) {
        /* The payload is copied into shared memory now: the caller's buffer
         * is free again as soon as this returns. */
        ur_fill(r, sqe, (uint32_t)i, view.obj ? view.buf : NULL, view.obj ? view.len : 0,
                arg0, arg1);
    }
    if (view.obj)
        PyBuffer_Release(&view);
    if (!sqe)
        return NULL;
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[4], 0));
}

/* prep_call_pool(op, buf_index, offset, length, arg0=0, arg1=0, user_data=None)
 * Zero-copy: the payload is bytes [offset, offset+length) of buffer
 * `buf_index` of the BufferPool registered on this connection. */
PyObject *ur_prep_call_pool(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    static const char *const names[] = {"op", "buf_index", "offset", "length", "arg0",
                                        "arg1", "user_data"};
    PyObject *a[7];
    uint32_t op, bidx, off, len;
    int64_t arg0, arg1, i;
    if (sr_parse("prep_call_pool", args, nargs, kwnames, names, 7, 4, a) < 0 ||
        sr_as_u32(a[0], 0, &op, "op") < 0 || sr_as_u32(a[1], 0, &bidx, "buf_index") < 0 ||
        sr_as_u32(a[2], 0, &off, "offset") < 0 || sr_as_u32(a[3], 0, &len, "length") < 0 ||
        sr_as_i64(a[4], 0, &arg0, "arg0") < 0 || sr_as_i64(a[5], 0, &arg1, "arg1") < 0 ||
        ur_only(r, "prep_call_pool") < 0)
        return NULL;
    if (op > 255) {
        PyErr_Format(PyExc_ValueError, "op index %u out of range", op);
        return NULL;
    }
    if (!r->u.pool_count) {
        PyErr_SetString(PyExc_ValueError, "no BufferPool is registered on this connection");
        return NULL;
    }
    if (bidx >= r->u.pool_count || (uint64_t)off + len > r->u.pool_size) {
        PyErr_Format(PyExc_IndexError,
                     "buffer %u [%u, %u+%u) is outside the pool (%llu buffers of %llu bytes)",
                     bidx, off, off, len, (unsigned long long)r->u.pool_count,
                     (unsigned long long)r->u.pool_size);
        return NULL;
    }
    struct io_uring_sqe *sqe = sr_ring_begin(r, (uint8_t)op, 0, &i);
    if (!sqe)
        return NULL;
    ur_fill(r, sqe, (uint32_t)i, NULL, 0, arg0, arg1);
    sqe->len = len;
    sqe->buf_index = (uint16_t)bidx;
    sqe->file_index = off;
    sqe->op_flags = SR_PAYLOAD_POOL | SR_OPF_RESULT;
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[6], 0));
}

/* The arguments of the batch call builders, parsed and checked:
 * (op, data, size, count=None, user_data=None).  On success `view` holds an
 * export of data (the caller releases it) and `count` is resolved (None:
 * every whole `size` bytes of data); `what` names the records in errors. */
typedef struct {
    uint32_t op, size;
    int64_t count;
    uint64_t base;
    Py_buffer view;
} ur_batch_args;

static int ur_parse_batch(SR_Ring *r, const char *fname, const char *what,
                          PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                          ur_batch_args *b)
{
    static const char *const names[] = {"op", "data", "size", "count", "user_data"};
    PyObject *a[5];
    b->view.obj = NULL;
    if (sr_parse(fname, args, nargs, kwnames, names, 5, 3, a) < 0 ||
        sr_as_u32(a[0], 0, &b->op, "op") < 0 || sr_as_u32(a[2], 0, &b->size, "size") < 0 ||
        sr_as_i64(a[3] == Py_None ? NULL : a[3], -1, &b->count, "count") < 0 ||
        sr_as_u64(a[4] == Py_None ? NULL : a[4], 0, &b->base, "user_data") < 0 ||
        ur_only(r, fname) < 0 || sr_ring_check(r) < 0)
        return -1;
    if (b->op > 255) {
        PyErr_Format(PyExc_ValueError, "op index %u out of range", b->op);
        return -1;
    }
    if (r->u.peer_dead) {
        ur_refuse_dead(r);
        return -1;
    }
    if (PyObject_GetBuffer(a[1], &b->view, PyBUF_SIMPLE) < 0) {
        b->view.obj = NULL;
        return -1;
    }
    if (b->count < 0)
        b->count = b->size ? b->view.len / b->size : 0;
    if ((uint64_t)b->count * b->size > (uint64_t)b->view.len) {
        PyErr_Format(PyExc_ValueError, "data holds %zd bytes; %lld %s of %u need more",
                     b->view.len, (long long)b->count, what, b->size);
        PyBuffer_Release(&b->view);
        return -1;
    }
    return 0;
}

/* prep_calls(op, data, size, count=None, user_data=None) -> count
 * Batch: op k carries data[k*size:(k+1)*size] (inline up to 80 bytes, else in
 * its send slot); user_data None -> k, an int -> user_data + k. */
PyObject *ur_prep_calls(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    ur_batch_args b;
    if (ur_parse_batch(r, "prep_calls", "ops", args, nargs, kwnames, &b) < 0)
        return NULL;
    uint32_t op = b.op, size = b.size;
    int64_t count = b.count;
    uint64_t base = b.base;
    PyObject *result = NULL;
    if (ur_check_payload(r, size) < 0 || sr_ring_batch_room(r, count) < 0)
        goto out;
    struct sr_sq *sq = &r->q.sq;
    uint32_t space = sr_sq_space(sq);
    const char *p = b.view.buf;
    for (int64_t k = 0; k < count; k++) {
        if (space == 0) {
            if (sr_ring_make_room(r) < 0)
                goto out;
            space = sr_sq_space(sq);
        }
        struct io_uring_sqe *sqe = sr_sq_get(sq, &space);
        int64_t i = sr_slot_alloc(&r->ops, (uint8_t)op);
        sqe->opcode = (uint8_t)op;
        ur_fill(r, sqe, (uint32_t)i, p + (size_t)k * size, size, 0, 0);
        sqe->user_data = sr_token(&r->ops, (uint32_t)i);
        r->ops.slots[i].udata = NULL;
        r->ops.slots[i].int_udata = base + (uint64_t)k;
        sr_ring_link_in(r, (uint32_t)i);   /* joins a chain the previous op left open */
        r->chain_open = 0;
    }
    r->chain_open = 0;
    result = PyLong_FromLongLong(count);
out:
    PyBuffer_Release(&b.view);
    return result;
}

/* prep_records(op, data, size, count=None, user_data=None) -> ops
 *
 * Packed records: many calls of a vector op per SQE.  prep_calls spends one
 * 128-byte SQE (two cache lines the consumer's CPU must fetch) and one CQE on
 * every call; for a stream of small one-way messages that traffic, not the
 * copying, is the cost.  Here record k is data[k*size:(k+1)*size] and the
 * records are packed back to back into each op's send slot (up to
 * slot_size / size of them), so the consumer reads the payload and little
 * else.  The subsystem's vector handler sees every record as one call of its
 * Batch, exactly as if each had been its own op; what is given up is the
 * per-call result: an op completes once, res = the number of records it
 * carried (or -errno for all of them).  user_data: None -> op index k,
 * an int -> user_data + k. */
PyObject *ur_prep_records(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    ur_batch_args b;
    if (ur_parse_batch(r, "prep_records", "records", args, nargs, kwnames, &b) < 0)
        return NULL;
    uint32_t op = b.op, size = b.size;
    int64_t count = b.count;
    uint64_t base = b.base;
    PyObject *result = NULL;
    if (r->u.opkinds[op] != 2) {
        PyObject *name = r->u.opnames ? ur_opname(r, op) : PyLong_FromUnsignedLong(op);
        PyErr_Format(PyExc_TypeError,
                     "prep_records needs a vector op (@op(vector=True)); %R is not one",
                     name ? name : Py_None);
        Py_XDECREF(name);
        goto out;
    }
    if (size == 0 || size > 0xffff || size > r->u.slot_size) {
        PyErr_Format(PyExc_ValueError,
                     "record size must be 1..%u bytes (this connection's slot_size, at "
                     "most 65535)", r->u.slot_size < 0xffff ? r->u.slot_size : 0xffff);
        goto out;
    }
    uint32_t per = r->u.slot_size / size;             /* records per op */
    if (per > SR_RECORDS_MAX)
        per = SR_RECORDS_MAX;
    int64_t nops = (count + per - 1) / per;
    if (sr_ring_batch_room(r, nops) < 0)
        goto out;
    struct sr_sq *sq = &r->q.sq;
    uint32_t space = sr_sq_space(sq);
    const char *p = b.view.buf;
    for (int64_t k = 0; k < nops; k++) {
        if (space == 0) {
            if (sr_ring_make_room(r) < 0)
                goto out;
            space = sr_sq_space(sq);
        }
        int64_t left = count - k * (int64_t)per;
        uint32_t nrec = left < per ? (uint32_t)left : per;
        struct io_uring_sqe *sqe = sr_sq_get(sq, &space);
        int64_t i = sr_slot_alloc(&r->ops, (uint8_t)op);
        sqe->opcode = (uint8_t)op;
        ur_fill(r, sqe, (uint32_t)i, p, (Py_ssize_t)nrec * size, 0, 0);
        sqe->op_flags |= SR_OPF_RECORDS;
        sqe->personality = (uint16_t)size;
        p += (size_t)nrec * size;
        sqe->user_data = sr_token(&r->ops, (uint32_t)i);
        r->ops.slots[i].udata = NULL;
        r->ops.slots[i].int_udata = base + (uint64_t)k;
        sr_ring_link_in(r, (uint32_t)i);
        r->chain_open = 0;
    }
    r->chain_open = 0;
    result = PyLong_FromLongLong(nops);
out:
    PyBuffer_Release(&b.view);
    return result;
}
