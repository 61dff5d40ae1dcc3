/*
 * kernel_bufring.c -- provided buffer rings (_core.BufferRing): a ring of
 * buffers the kernel picks from for IOSQE_BUFFER_SELECT ops, registered on a
 * KernelRing with register_buffer_ring().
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ring_backend.h"

/* A ring of `count` buffers of `size` bytes each, registered as buffer group
 * `bgid`.  The kernel (consumer) picks a buffer for an op submitted with
 * IOSQE_BUFFER_SELECT, writes into it, and reports its id in the CQE.  The
 * application (producer) hands buffers back with recycle().
 *
 * Buffer lifetime: a buffer the kernel picked belongs to the application from
 * the CQE until recycle(bid); after recycle the kernel may overwrite it at any
 * time, so finish with (or copy) a view from get() before recycling.  The
 * memory itself lives until the ring is closed and every view is gone. */
typedef struct {
    PyObject_HEAD
    SR_Ring *ring;
    uint8_t *ring_mem;   /* count * 16 bytes: struct io_uring_buf[] */
    size_t ring_len;
    uint8_t *data;       /* count * size bytes */
    size_t data_len;
    uint32_t count, mask, size;
    uint16_t bgid;
    uint16_t tail;       /* private shadow of the shared 16-bit tail */
    int registered;
    Py_ssize_t exports;
    /* owned[bid] = 1 while the application holds buffer bid: from the
     * completion that delivered it (kr_buffer_delivered) until recycle().
     * recycle() accepts only those, so the ring never holds more than
     * `count` entries (no overrun) and never a buffer twice. */
    uint8_t *owned;
    uint64_t fork_gen;   /* sr_fork_generation at creation */
} BufRing;

void kr_buffer_delivered(SR_Ring *r, uint16_t bgid, uint32_t bid)
{
    if (!r->k.buffer_rings)
        return;
    Py_ssize_t n = PyList_GET_SIZE(r->k.buffer_rings);
    for (Py_ssize_t k = 0; k < n; k++) {
        BufRing *b = (BufRing *)PyList_GET_ITEM(r->k.buffer_rings, k);
        if (b->registered && b->bgid == bgid) {
            if (bid < b->count)
                b->owned[bid] = 1;
            return;
        }
    }
}

/* The ring is closing: its buffer rings outlive it as plain memory (views
 * may still exist), no longer registered and no longer pointing back. */
void kr_bufrings_detach(SR_Ring *r)
{
    Py_ssize_t n = PyList_GET_SIZE(r->k.buffer_rings);
    for (Py_ssize_t k = 0; k < n; k++) {
        BufRing *b = (BufRing *)PyList_GET_ITEM(r->k.buffer_rings, k);
        b->registered = 0;
        b->ring = NULL;
    }
}

static int bufring_check_fork(BufRing *b)
{
    if (b->fork_gen != sr_fork_generation) {
        PyErr_SetString(SR_ForkedRingError,
                        "this buffer ring belongs to the parent process's ring: it cannot "
                        "be used after fork(); create a new ring in the child");
        return -1;
    }
    return 0;
}

static void bufring_push(BufRing *b, uint32_t bid)
{
    struct io_uring_buf *e = (struct io_uring_buf *)b->ring_mem + (b->tail & b->mask);
    e->addr = (uint64_t)(uintptr_t)(b->data + (size_t)bid * b->size);
    e->len = b->size;
    e->bid = (uint16_t)bid;
    b->tail++;
}

static void bufring_publish(BufRing *b)
{
    sr_pbuf_publish(b->ring_mem, b->tail);   /* after the entries (release, ring.h) */
}

PyObject *kr_register_buffer_ring(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    static const char *const names[] = {"group_id", "count", "size"};
    PyObject *a[3];
    uint32_t bgid, count, size;
    if (sr_parse("register_buffer_ring", args, nargs, kwnames, names, 3, 3, a) < 0 ||
        sr_as_u32(a[0], 0, &bgid, "group_id") < 0 || sr_as_u32(a[1], 0, &count, "count") < 0 ||
        sr_as_u32(a[2], 0, &size, "size") < 0)
        return NULL;
    if (sr_ring_check(r) < 0)
        return NULL;
    if (bgid > 0xffff || count == 0 || count > 32768 || (count & (count - 1)) || size == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "group_id must be < 65536, count a power of two <= 32768, size > 0");
        return NULL;
    }
    BufRing *b = PyObject_New(BufRing, &SR_BufferRingType);
    if (!b)
        return NULL;
    b->ring = r;   /* borrowed: the ring's buffer_rings list owns us, and
                      ring close sets this to NULL before dropping the list */
    b->count = count;
    b->mask = count - 1;
    b->size = size;
    b->bgid = (uint16_t)bgid;
    b->tail = 0;
    b->registered = 0;
    b->exports = 0;
    b->fork_gen = sr_fork_generation;
    b->owned = NULL;
    long page = sysconf(_SC_PAGESIZE);
    b->ring_len = ((size_t)count * 16 + page - 1) & ~(size_t)(page - 1);
    b->data_len = (size_t)count * size;
    b->ring_mem = mmap(NULL, b->ring_len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    b->data = mmap(NULL, b->data_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    b->owned = PyMem_Calloc(count, 1);
    if (b->ring_mem == MAP_FAILED || b->data == MAP_FAILED || !b->owned) {
        if (b->ring_mem == MAP_FAILED) b->ring_mem = NULL;
        if (b->data == MAP_FAILED) b->data = NULL;
        b->ring = NULL;
        Py_DECREF(b);
        return PyErr_NoMemory();
    }
    for (uint32_t k = 0; k < count; k++)
        bufring_push(b, k);
    bufring_publish(b);
    struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)b->ring_mem,
                                   .ring_entries = count, .bgid = (uint16_t)bgid};
    int ret = sr_kring_register(r->q.fd, IORING_REGISTER_PBUF_RING, &reg, 1);
    if (ret < 0) {
        b->ring = NULL;
        Py_DECREF(b);
        return sr_raise_errno(-ret, "register_buffer_ring");
    }
    b->registered = 1;
    if (PyList_Append(r->k.buffer_rings, (PyObject *)b) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return (PyObject *)b;
}

static void bufring_dealloc(BufRing *b)
{
    /* Only reached once the ring dropped us (closed) or we never got
     * registered: the kernel cannot be using this memory any more. */
    if (b->ring_mem) munmap(b->ring_mem, b->ring_len);
    if (b->data) munmap(b->data, b->data_len);
    PyMem_Free(b->owned);
    PyObject_Free(b);
}

static int bufring_check(BufRing *b, PyObject *bid_o, uint32_t *bid)
{
    if (sr_as_u32(bid_o, 0, bid, "buffer_id") < 0)
        return -1;
    if (*bid >= b->count) {
        PyErr_Format(PyExc_IndexError, "buffer_id %u out of range (%u buffers)", *bid,
                     b->count);
        return -1;
    }
    return 0;
}

/* get(buffer_id, nbytes=size) -> memoryview of that buffer's first nbytes */
static PyObject *bufring_get(BufRing *b, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t bid, nbytes = b->size;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(buffer_id, nbytes=size)");
        return NULL;
    }
    if (bufring_check_fork(b) < 0 || bufring_check(b, args[0], &bid) < 0 ||
        (nargs > 1 && args[1] != Py_None && sr_as_u32(args[1], 0, &nbytes, "nbytes") < 0))
        return NULL;
    if (nbytes > b->size) {
        PyErr_Format(PyExc_ValueError, "nbytes %u exceeds buffer size %u", nbytes, b->size);
        return NULL;
    }
    PyObject *mv = PyMemoryView_FromObject((PyObject *)b);
    if (!mv)
        return NULL;
    PyObject *sl = PySlice_New(PyLong_FromSize_t((size_t)bid * b->size),
                               PyLong_FromSize_t((size_t)bid * b->size + nbytes), NULL);
    PyObject *res = sl ? PyObject_GetItem(mv, sl) : NULL;
    Py_XDECREF(sl);
    Py_DECREF(mv);
    return res;
}

/* recycle(buffer_id): give the buffer back to the kernel.  Only a buffer
 * the application holds (delivered by a completion, not recycled since). */
static PyObject *bufring_recycle(BufRing *b, PyObject *bid_o)
{
    uint32_t bid;
    if (bufring_check_fork(b) < 0 || bufring_check(b, bid_o, &bid) < 0)
        return NULL;
    if (!b->registered) {
        PyErr_SetString(SR_RingClosedError, "buffer ring is closed");
        return NULL;
    }
    if (!b->owned[bid]) {
        PyErr_Format(PyExc_ValueError,
                     "buffer %u is not yours to recycle: the kernel holds it (no "
                     "completion delivered it, or it was recycled already)", bid);
        return NULL;
    }
    b->owned[bid] = 0;
    bufring_push(b, bid);
    bufring_publish(b);
    Py_RETURN_NONE;
}

static PyObject *bufring_close(BufRing *b, PyObject *unused)
{
    if (b->fork_gen != sr_fork_generation) {
        /* a forked child: the registration is the parent's; just let go */
        b->registered = 0;
        Py_RETURN_NONE;
    }
    if (b->registered && b->ring && !b->ring->closed &&
        b->ring->fork_gen == sr_fork_generation) {
        struct io_uring_buf_reg reg = {.bgid = b->bgid};
        int ret = sr_kring_register(b->ring->q.fd, IORING_UNREGISTER_PBUF_RING, &reg, 1);
        if (ret < 0)
            return sr_raise_errno(-ret, "unregister_buffer_ring");
    }
    b->registered = 0;
    Py_RETURN_NONE;
}

static int bufring_getbuffer(BufRing *b, Py_buffer *view, int flags)
{
    if (!b->data) {
        PyErr_SetString(PyExc_BufferError, "buffer ring memory is gone");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)b, b->data, (Py_ssize_t)b->data_len, 0, flags) < 0)
        return -1;
    b->exports++;
    return 0;
}

static void bufring_releasebuffer(BufRing *b, Py_buffer *view)
{
    b->exports--;
}

static PyBufferProcs bufring_as_buffer = {
    (getbufferproc)bufring_getbuffer, (releasebufferproc)bufring_releasebuffer};

static PyObject *bufring_get_group_id(BufRing *b, void *c) { return PyLong_FromLong(b->bgid); }

static PyObject *bufring_get_count(BufRing *b, void *c) { return PyLong_FromUnsignedLong(b->count); }

static PyObject *bufring_get_size(BufRing *b, void *c) { return PyLong_FromUnsignedLong(b->size); }

static PyObject *bufring_get_closed(BufRing *b, void *c) { return PyBool_FromLong(!b->registered); }

static PyGetSetDef bufring_getset[] = {
    {"group_id", (getter)bufring_get_group_id, NULL, "Buffer group id (sqe buf_group)."},
    {"count", (getter)bufring_get_count, NULL, "Number of buffers."},
    {"size", (getter)bufring_get_size, NULL, "Bytes per buffer."},
    {"closed", (getter)bufring_get_closed, NULL, "True once unregistered."},
    {NULL}
};

static PyMethodDef bufring_methods[] = {
    {"get", (PyCFunction)(void (*)(void))bufring_get, METH_FASTCALL,
     "get($self, buffer_id, nbytes=None, /)\n--\n\n"
     "A memoryview of the first `nbytes` (default: all) of buffer `buffer_id`; valid\n"
     "until the buffer is recycled."},
    {"recycle", (PyCFunction)bufring_recycle, METH_O,
     "recycle($self, buffer_id, /)\n--\n\n"
     "Give buffer `buffer_id` back to the kernel.  Only a buffer a completion delivered\n"
     "to you and that you have not recycled since (ValueError otherwise)."},
    {"close", (PyCFunction)bufring_close, METH_NOARGS,
     "close($self, /)\n--\n\nUnregister the buffer group."},
    {NULL}
};

PyTypeObject SR_BufferRingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring.BufferRing",
    .tp_basicsize = sizeof(BufRing),
    .tp_dealloc = (destructor)bufring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A provided-buffer ring registered with a KernelRing "
              "(KernelRing.register_buffer_ring).",
    .tp_getset = bufring_getset,
    .tp_methods = bufring_methods,
    .tp_as_buffer = &bufring_as_buffer,
};
