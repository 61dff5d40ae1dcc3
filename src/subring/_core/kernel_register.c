/*
 * kernel_register.c -- the kernel backend's io_uring_register face: fixed
 * buffers and files (full and sparse tables, updates), eventfds, probe and
 * the register_raw escape hatch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ring_backend.h"

static PyObject *kr_raise_register(int err, const char *what)
{
    if (err == ENOMEM) {
        PyErr_Format(PyExc_MemoryError,
                     "%s: ENOMEM -- registered memory counts against RLIMIT_MEMLOCK "
                     "(see `ulimit -l`); register less or raise the limit", what);
        return NULL;
    }
    return sr_raise_errno(err, what);
}

void kr_release_regbufs(SR_Ring *r)
{
    for (uint32_t k = 0; k < r->k.nregbufs; k++)
        if (r->k.regbufs[k].obj)
            PyBuffer_Release(&r->k.regbufs[k]);
    PyMem_Free(r->k.regbufs);
    r->k.regbufs = NULL;
    r->k.nregbufs = 0;
}

static int kr_fixed_busy(SR_Ring *r, const char *what)
{
    if (r->ops.fixed_live) {
        PyErr_Format(SR_RingBusyError,
                     "%s: %u in-flight ops use registered buffers; reap them first",
                     what, r->ops.fixed_live);
        return -1;
    }
    return 0;
}

/* Export each buffer (writable) into bufs[k] and describe it in iov[k]; None
 * leaves an empty entry (for sparse tables).  Returns 0 or -1. */
static int kr_export_buffers(PyObject *seq, Py_buffer *bufs, struct iovec *iov,
                          Py_ssize_t n, int allow_none)
{
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, k);
        memset(&bufs[k], 0, sizeof(Py_buffer));
        iov[k].iov_base = NULL;
        iov[k].iov_len = 0;
        if (o == Py_None && allow_none)
            continue;
        if (PyObject_GetBuffer(o, &bufs[k], PyBUF_WRITABLE) < 0) {
            bufs[k].obj = NULL;
            for (Py_ssize_t j = 0; j < k; j++)
                if (bufs[j].obj)
                    PyBuffer_Release(&bufs[j]);
            return -1;
        }
        iov[k].iov_base = bufs[k].buf;
        iov[k].iov_len = (size_t)bufs[k].len;
    }
    return 0;
}

/* register_buffers(buffers): writable buffers, pinned until unregistered. */
PyObject *kr_register_buffers(SR_Ring *r, PyObject *arg)
{
    if (sr_ring_check(r) < 0)
        return NULL;
    if (r->k.regbufs) {
        PyErr_SetString(SR_RingBusyError, "buffers already registered; unregister first");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(arg, "buffers must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0 || n > 16384) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "register 1 to 16384 buffers");
        return NULL;
    }
    Py_buffer *bufs = PyMem_Calloc((size_t)n, sizeof(Py_buffer));
    struct iovec *iov = PyMem_Calloc((size_t)n, sizeof(struct iovec));
    if (!bufs || !iov) {
        PyErr_NoMemory();
        goto fail;
    }
    if (kr_export_buffers(seq, bufs, iov, n, 0) < 0)
        goto fail;
    int ret = sr_kring_register(r->q.fd, IORING_REGISTER_BUFFERS, iov, (unsigned)n);
    if (ret < 0) {
        for (Py_ssize_t j = 0; j < n; j++)
            PyBuffer_Release(&bufs[j]);
        kr_raise_register(-ret, "register_buffers");
        goto fail;
    }
    r->k.regbufs = bufs;
    r->k.nregbufs = (uint32_t)n;
    PyMem_Free(iov);
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
    PyMem_Free(bufs);
    PyMem_Free(iov);
    Py_DECREF(seq);
    return NULL;
}

/* register_buffers_sparse(count): an empty table to fill with update_buffers. */
PyObject *kr_register_buffers_sparse(SR_Ring *r, PyObject *arg)
{
    uint32_t n;
    if (sr_ring_check(r) < 0 || sr_as_u32(arg, 0, &n, "count") < 0)
        return NULL;
    if (r->k.regbufs) {
        PyErr_SetString(SR_RingBusyError, "buffers already registered; unregister first");
        return NULL;
    }
    if (n == 0 || n > 16384) {
        PyErr_SetString(PyExc_ValueError, "count must be in [1, 16384]");
        return NULL;
    }
    struct io_uring_rsrc_register reg = {.nr = n, .flags = IORING_RSRC_REGISTER_SPARSE};
    int ret = sr_kring_register(r->q.fd, IORING_REGISTER_BUFFERS2, &reg, sizeof(reg));
    if (ret < 0)
        return kr_raise_register(-ret, "register_buffers_sparse");
    r->k.regbufs = PyMem_Calloc(n, sizeof(Py_buffer));
    if (!r->k.regbufs)
        return PyErr_NoMemory();
    r->k.nregbufs = n;
    Py_RETURN_NONE;
}

/* update_buffers(offset, buffers): replace table entries; None clears one. */
PyObject *kr_update_buffers(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t off;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "update_buffers(offset, buffers)");
        return NULL;
    }
    if (sr_ring_check(r) < 0 || sr_as_u32(args[0], 0, &off, "offset") < 0 ||
        kr_fixed_busy(r, "update_buffers") < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(args[1], "buffers must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (!r->k.regbufs || (uint64_t)off + (uint64_t)n > r->k.nregbufs) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_IndexError, "update of %zd buffers at %u exceeds the table (%u)",
                     n, off, r->k.nregbufs);
        return NULL;
    }
    Py_buffer *bufs = PyMem_Calloc((size_t)n + 1, sizeof(Py_buffer));
    struct iovec *iov = PyMem_Calloc((size_t)n + 1, sizeof(struct iovec));
    PyObject *res = NULL;
    if (!bufs || !iov) {
        PyErr_NoMemory();
        goto out;
    }
    if (kr_export_buffers(seq, bufs, iov, n, 1) < 0)
        goto out;
    struct io_uring_rsrc_update2 up = {.offset = off, .data = (uint64_t)(uintptr_t)iov,
                                       .nr = (uint32_t)n};
    int ret = sr_kring_register(r->q.fd, IORING_REGISTER_BUFFERS_UPDATE, &up, sizeof(up));
    if (ret < 0) {
        for (Py_ssize_t j = 0; j < n; j++)
            if (bufs[j].obj)
                PyBuffer_Release(&bufs[j]);
        kr_raise_register(-ret, "update_buffers");
        goto out;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        if (r->k.regbufs[off + j].obj)
            PyBuffer_Release(&r->k.regbufs[off + j]);
        r->k.regbufs[off + j] = bufs[j];
    }
    res = PyLong_FromLong(ret);
out:
    PyMem_Free(bufs);
    PyMem_Free(iov);
    Py_DECREF(seq);
    return res;
}

PyObject *kr_unregister_buffers(SR_Ring *r, PyObject *unused)
{
    if (sr_ring_check(r) < 0 || kr_fixed_busy(r, "unregister_buffers") < 0)
        return NULL;
    if (!r->k.regbufs) {
        PyErr_SetString(PyExc_ValueError, "no buffers registered");
        return NULL;
    }
    int ret = sr_kring_register(r->q.fd, IORING_UNREGISTER_BUFFERS, NULL, 0);
    if (ret < 0)
        return sr_raise_errno(-ret, "unregister_buffers");
    kr_release_regbufs(r);
    Py_RETURN_NONE;
}

static int32_t *kr_fd_array(PyObject *seq, Py_ssize_t n)
{
    int32_t *fds = PyMem_Calloc((size_t)n + 1, sizeof(int32_t));
    if (!fds) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, k);
        int fd;
        if (o == Py_None) {
            fds[k] = -1;
            continue;
        }
        if (!PyLong_Check(o) && PyObject_HasAttrString(o, "fileno")) {
            PyObject *f = PyObject_CallMethod(o, "fileno", NULL);
            if (!f || sr_as_int(f, 0, &fd, "fileno()") < 0) {
                Py_XDECREF(f);
                PyMem_Free(fds);
                return NULL;
            }
            Py_DECREF(f);
        } else if (sr_as_int(o, 0, &fd, "fd") < 0) {
            PyMem_Free(fds);
            return NULL;
        }
        fds[k] = fd;
    }
    return fds;
}

/* register_files(fds): fds (ints, objects with fileno(), or None = empty). */
PyObject *kr_register_files(SR_Ring *r, PyObject *arg)
{
    if (sr_ring_check(r) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(arg, "fds must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int32_t *fds = n > 0 ? kr_fd_array(seq, n) : NULL;
    Py_DECREF(seq);
    if (n <= 0) {
        PyErr_SetString(PyExc_ValueError, "register at least one fd");
        return NULL;
    }
    if (!fds)
        return NULL;
    int ret = sr_kring_register(r->q.fd, IORING_REGISTER_FILES, fds, (unsigned)n);
    PyMem_Free(fds);
    if (ret < 0)
        return sr_raise_errno(-ret, "register_files");
    r->k.files_registered = 1;
    Py_RETURN_NONE;
}

PyObject *kr_register_files_sparse(SR_Ring *r, PyObject *arg)
{
    uint32_t n;
    if (sr_ring_check(r) < 0 || sr_as_u32(arg, 0, &n, "count") < 0)
        return NULL;
    struct io_uring_rsrc_register reg = {.nr = n, .flags = IORING_RSRC_REGISTER_SPARSE};
    int ret = sr_kring_register(r->q.fd, IORING_REGISTER_FILES2, &reg, sizeof(reg));
    if (ret < 0)
        return sr_raise_errno(-ret, "register_files_sparse");
    r->k.files_registered = 1;
    Py_RETURN_NONE;
}

/* update_files(offset, fds) -> number updated; -1/None clears a slot. */
PyObject *kr_update_files(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t off;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "update_files(offset, fds)");
        return NULL;
    }
    if (sr_ring_check(r) < 0 || sr_as_u32(args[0], 0, &off, "offset") < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(args[1], "fds must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int32_t *fds = kr_fd_array(seq, n);
    Py_DECREF(seq);
    if (!fds)
        return NULL;
    struct io_uring_rsrc_update2 up = {.offset = off, .data = (uint64_t)(uintptr_t)fds,
                                       .nr = (uint32_t)n};
    int ret = sr_kring_register(r->q.fd, IORING_REGISTER_FILES_UPDATE2, &up, sizeof(up));
    PyMem_Free(fds);
    if (ret < 0)
        return sr_raise_errno(-ret, "update_files");
    return PyLong_FromLong(ret);
}

PyObject *kr_unregister_files(SR_Ring *r, PyObject *unused)
{
    if (sr_ring_check(r) < 0)
        return NULL;
    int ret = sr_kring_register(r->q.fd, IORING_UNREGISTER_FILES, NULL, 0);
    if (ret < 0)
        return sr_raise_errno(-ret, "unregister_files");
    r->k.files_registered = 0;
    Py_RETURN_NONE;
}

/* register_eventfd(fd, async_only=False) */
PyObject *kr_register_eventfd(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames)
{
    static const char *const names[] = {"fd", "async_only"};
    PyObject *a[2];
    int fd;
    if (sr_parse("register_eventfd", args, nargs, kwnames, names, 2, 1, a) < 0 ||
        sr_as_int(a[0], 0, &fd, "fd") < 0)
        return NULL;
    int async_only = a[1] ? PyObject_IsTrue(a[1]) : 0;
    if (async_only < 0 || sr_ring_check(r) < 0)
        return NULL;
    int ret = sr_kring_register(r->q.fd, async_only ? IORING_REGISTER_EVENTFD_ASYNC
                                                    : IORING_REGISTER_EVENTFD, &fd, 1);
    if (ret < 0)
        return sr_raise_errno(-ret, "register_eventfd");
    r->k.eventfd_registered = 1;
    Py_RETURN_NONE;
}

/* enable_eventfd(async_only=False) -> fd: an eventfd made, registered and
 * owned by the ring (closed by close(), also when the ring is just dropped). */
PyObject *kr_enable_eventfd(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    static const char *const names[] = {"async_only"};
    PyObject *a[1];
    if (sr_parse("enable_eventfd", args, nargs, kwnames, names, 1, 0, a) < 0)
        return NULL;
    int async_only = a[0] ? PyObject_IsTrue(a[0]) : 0;
    if (async_only < 0 || sr_ring_check(r) < 0)
        return NULL;
    if (r->k.own_eventfd > 0)
        return PyLong_FromLong(r->k.own_eventfd);
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    int ret = sr_kring_register(r->q.fd, async_only ? IORING_REGISTER_EVENTFD_ASYNC
                                                    : IORING_REGISTER_EVENTFD, &fd, 1);
    if (ret < 0) {
        close(fd);
        return sr_raise_errno(-ret, "register_eventfd");
    }
    r->k.eventfd_registered = 1;
    r->k.own_eventfd = fd;
    return PyLong_FromLong(fd);
}

PyObject *kr_get_eventfd(SR_Ring *r, void *c)
{
    if (r->k.own_eventfd > 0)
        return PyLong_FromLong(r->k.own_eventfd);
    Py_RETURN_NONE;
}

PyObject *kr_unregister_eventfd(SR_Ring *r, PyObject *unused)
{
    if (sr_ring_check(r) < 0)
        return NULL;
    int ret = sr_kring_register(r->q.fd, IORING_UNREGISTER_EVENTFD, NULL, 0);
    if (ret < 0)
        return sr_raise_errno(-ret, "unregister_eventfd");
    r->k.eventfd_registered = 0;
    Py_RETURN_NONE;
}

/* probe() -> list of supported opcodes */
PyObject *kr_probe(SR_Ring *r, PyObject *unused)
{
    if (sr_ring_check(r) < 0)
        return NULL;
    size_t len = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *p = PyMem_Calloc(1, len);
    if (!p)
        return PyErr_NoMemory();
    int ret = sr_kring_register(r->q.fd, IORING_REGISTER_PROBE, p, 256);
    if (ret < 0) {
        PyMem_Free(p);
        return sr_raise_errno(-ret, "probe");
    }
    PyObject *list = PyList_New(0);
    for (unsigned k = 0; list && k < p->ops_len; k++) {
        if (p->ops[k].flags & IO_URING_OP_SUPPORTED) {
            PyObject *v = PyLong_FromLong(p->ops[k].op);
            if (!v || PyList_Append(list, v) < 0) {
                Py_XDECREF(v);
                Py_CLEAR(list);
                break;
            }
            Py_DECREF(v);
        }
    }
    PyMem_Free(p);
    return list;
}

/* register_raw(opcode, arg, nr_args) -> int: io_uring_register escape hatch. */
PyObject *kr_register_raw(SR_Ring *r, PyObject *args)
{
    unsigned opcode, nr;
    Py_buffer arg = {0};
    if (!PyArg_ParseTuple(args, "Iz*I:register_raw", &opcode, &arg, &nr))
        return NULL;
    if (sr_ring_check(r) < 0) {
        PyBuffer_Release(&arg);
        return NULL;
    }
    int ret = sr_kring_register(r->q.fd, opcode, arg.buf, nr);
    PyBuffer_Release(&arg);
    if (ret < 0)
        return sr_raise_errno(-ret, "io_uring_register");
    return PyLong_FromLong(ret);
}
