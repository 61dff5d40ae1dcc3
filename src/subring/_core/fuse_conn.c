/*
 * fuse_conn.c -- FuseConn, one mounted connection (the /dev/fuse fd): its
 * life (construction, FUSE_INIT, stop, close), notifications, statistics,
 * and the module functions around it (mount, umount, the unmount watchdog).
 * The loops that serve it are fuse_classic.c and fuse_uring.c.
 */
#define _GNU_SOURCE
#include "fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- FuseConn ---------------------------------------------------------------- */

static PyObject *conn_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "ops", "max_write", "direct_io", "attr_timeout",
                             "entry_timeout", "on_error", "gil_spin_us", "poll_us", NULL};
    int fd, direct_io = 0;
    unsigned int max_write = 131072;
    double attr_t = 1.0, entry_t = 1.0, gil_spin_us = FUSE_GIL_SPIN_US, poll_us = FUSE_POLL_US;
    PyObject *ops, *on_error = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|$IpddOdd:FuseConn", kwlist, &fd, &ops,
                                     &max_write, &direct_io, &attr_t, &entry_t, &on_error,
                                     &gil_spin_us, &poll_us))
        return NULL;
    if (!(poll_us >= 0 && poll_us <= 10000)) {
        PyErr_SetString(PyExc_ValueError, "poll_us must be in [0, 10000]");
        return NULL;
    }
    if (!(gil_spin_us >= 0 && gil_spin_us <= 1000)) {
        PyErr_SetString(PyExc_ValueError, "gil_spin_us must be in [0, 1000]");
        return NULL;
    }
    if (max_write < 4096 || max_write > (1U << 20) || max_write % 4096) {
        PyErr_SetString(PyExc_ValueError, "max_write must be a multiple of 4096 in 4 KiB..1 MiB");
        return NULL;
    }
    if (!(attr_t >= 0 && entry_t >= 0 && attr_t < 1e9 && entry_t < 1e9)) {
        PyErr_SetString(PyExc_ValueError, "timeouts must be in [0, 1e9) seconds");
        return NULL;
    }
    FuseConn *c = (FuseConn *)type->tp_alloc(type, 0);
    if (!c)
        return NULL;
    c->fd = fd;
    c->ops = Py_NewRef(ops);
    c->on_error = on_error == Py_None ? NULL : Py_NewRef(on_error);
    c->max_write = max_write;
    c->payload_size = max_write < 8192 ? 8192 : max_write;
    c->direct_io = direct_io;
    c->entry_s = (uint32_t)entry_t;
    c->entry_ns = (uint32_t)((entry_t - (double)c->entry_s) * 1e9);
    c->attr_s = (uint32_t)attr_t;
    c->attr_ns = (uint32_t)((attr_t - (double)c->attr_s) * 1e9);
    c->gil_spin_ns = (int64_t)(gil_spin_us * 1000.0);
    c->poll_ns = (int64_t)(poll_us * 1000.0);
    for (int op = 1; op < FUSE_OPCODE_MAX; op++) {
        if (!fuse_op_names[op])
            continue;
        PyObject *h = PyObject_GetAttrString(ops, fuse_op_names[op]);
        if (!h) {
            PyErr_Clear();
            continue;
        }
        if (!PyCallable_Check(h)) {
            Py_DECREF(h);
            continue;
        }
        c->h[op] = h;
    }
    return (PyObject *)c;
}

static int conn_traverse(FuseConn *c, visitproc visit, void *arg)
{
    Py_VISIT(c->ops);
    Py_VISIT(c->on_error);
    Py_VISIT(c->async_runner);
    Py_VISIT(c->interrupt_hook);
    for (int i = 0; i < FUSE_OPCODE_MAX; i++)
        Py_VISIT(c->h[i]);
    return 0;
}

static int conn_clear(FuseConn *c)
{
    Py_CLEAR(c->ops);
    Py_CLEAR(c->on_error);
    Py_CLEAR(c->async_runner);
    Py_CLEAR(c->interrupt_hook);
    for (int i = 0; i < FUSE_OPCODE_MAX; i++)
        Py_CLEAR(c->h[i]);
    return 0;
}

void fuse_conn_free_dead(FuseConn *c)
{
    while (c->dead) {
        struct fring *g = c->dead;
        c->dead = g->next;
        fring_free(g);
    }
}

static void conn_dealloc(FuseConn *c)
{
    PyObject_GC_UnTrack(c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    fuse_conn_free_dead(c);
    conn_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *conn_init(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"want_uring", "timeout"};
    PyObject *v[2] = {0};
    if (sr_parse("init", args, nargs, kwnames, names, 2, 1, v) < 0)
        return NULL;
    int want = PyObject_IsTrue(v[0]);
    if (want < 0)
        return NULL;
    double timeout = v[1] && v[1] != Py_None ? PyFloat_AsDouble(v[1]) : -1.0;
    if (PyErr_Occurred())
        return NULL;
    if (c->initialized || c->fd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "init(): already initialized or closed");
        return NULL;
    }
    size_t len = c->max_write + 8192;
    uint8_t *buf = malloc(len);
    if (!buf)
        return PyErr_NoMemory();
    ssize_t n;
    int e = 0;
    Py_BEGIN_ALLOW_THREADS
    struct pollfd pfd = {c->fd, POLLIN, 0};
    int pr;
    do pr = poll(&pfd, 1, timeout < 0 ? -1 : (int)(timeout * 1000));
    while (pr < 0 && errno == EINTR);
    if (pr == 0) {
        n = -1; e = ETIMEDOUT;
    } else {
        do n = read(c->fd, buf, len);
        while (n < 0 && errno == EINTR);
        if (n < 0) e = errno;
    }
    Py_END_ALLOW_THREADS
    if (n < 0) {
        free(buf);
        errno = e;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/dev/fuse (FUSE_INIT)");
    }
    const struct fuse_in_header *in = (const void *)buf;
    if (n < (ssize_t)(sizeof(*in) + 48) || in->opcode != FUSE_INIT) {
        free(buf);
        PyErr_Format(PyExc_OSError, "expected FUSE_INIT, got opcode %u (%zd bytes)",
                     n >= 8 ? in->opcode : 0, n);
        return NULL;
    }
    const struct fuse_init_in *ii = (const void *)(buf + sizeof(*in));
    uint32_t kflags2 = (ii->flags & FUSE_INIT_EXT) ? ii->flags2 : 0;
    struct fuse_init_out o;
    memset(&o, 0, sizeof(o));
    o.major = FUSE_KERNEL_VERSION;
    if (ii->major != FUSE_KERNEL_VERSION || ii->minor < 12) {
        /* Answer with our major only; the kernel then gives up. */
        fuse_dev_reply(c->fd, in->unique, sizeof(o), (const uint8_t *)&o);
        PyErr_Format(PyExc_OSError, "unsupported FUSE protocol %u.%u", ii->major, ii->minor);
        free(buf);
        return NULL;
    }
    o.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor : FUSE_KERNEL_MINOR_VERSION;
    o.max_readahead = ii->max_readahead;
    uint32_t want_flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_INIT_EXT |
                          FUSE_NO_OPEN_SUPPORT | FUSE_NO_OPENDIR_SUPPORT |
                          FUSE_PARALLEL_DIROPS | FUSE_ATOMIC_O_TRUNC;
    if (c->h[FUSE_READDIRPLUS])
        want_flags |= FUSE_DO_READDIRPLUS;
    o.flags = ii->flags & want_flags;
    int uring = want && (kflags2 & FUSE_OVER_IO_URING_FLAGS2) &&
                o.minor >= FUSE_URING_MIN_MINOR && (o.flags & FUSE_INIT_EXT);
    o.flags2 = uring ? FUSE_OVER_IO_URING_FLAGS2 : 0;
    o.max_background = 64;
    o.congestion_threshold = 48;
    o.max_write = c->max_write;
    o.time_gran = 1;
    o.max_pages = (uint16_t)(c->max_write / 4096);
    /* The kernel applies the INIT reply inside this write(): once it returns,
     * REGISTER is accepted (earlier ones complete -EAGAIN). */
    int w = fuse_dev_reply(c->fd, in->unique, sizeof(o), (const uint8_t *)&o);
    uint32_t kmajor = ii->major, kminor = ii->minor;
    free(buf);
    if (w < 0) {
        errno = -w;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/dev/fuse (INIT reply)");
    }
    c->initialized = 1;
    c->uring = uring;
    c->proto_minor = o.minor;
    return Py_BuildValue("{s:O,s:O,s:I,s:I,s:I,s:I,s:I,s:I}",
                         "uring", uring ? Py_True : Py_False,
                         "kernel_offers_uring", (kflags2 & FUSE_OVER_IO_URING_FLAGS2) ? Py_True : Py_False,
                         "major", kmajor, "kernel_minor", kminor, "minor", o.minor,
                         "flags", o.flags, "flags2", o.flags2, "max_write", o.max_write);
}

/* Write one notification (GIL released: the kernel may take inode locks,
 * and a handler serving a request on another thread may need the GIL to
 * let that happen). */
static PyObject *notify(FuseConn *c, int code, struct iovec *iov, int n, size_t len)
{
    if (c->fd < 0 || !c->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "the connection is not serving");
        return NULL;
    }
    struct fuse_out_header oh = {.len = (uint32_t)(sizeof(oh) + len), .error = code, .unique = 0};
    iov[0].iov_base = &oh;
    iov[0].iov_len = sizeof(oh);
    ssize_t w;
    int e = 0, fd = c->fd;
    Py_BEGIN_ALLOW_THREADS
    w = writev(fd, iov, n);
    if (w < 0) e = errno;
    Py_END_ALLOW_THREADS
    if (w < 0) {
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *conn_notify_inval_inode(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    static const char *const names[] = {"ino", "offset", "length"};
    PyObject *v[3] = {0};
    if (sr_parse("notify_inval_inode", args, nargs, kwnames, names, 3, 1, v) < 0)
        return NULL;
    struct fuse_notify_inval_inode_out o;
    int64_t off, len;
    if (sr_as_u64(v[0], 0, &o.ino, "ino") < 0 || sr_as_i64(v[1], 0, &off, "offset") < 0 ||
        sr_as_i64(v[2], 0, &len, "length") < 0)
        return NULL;
    o.off = off;
    o.len = len;
    struct iovec iov[2] = {{0}, {&o, sizeof(o)}};
    return notify(c, FUSE_NOTIFY_INVAL_INODE, iov, 2, sizeof(o));
}

static PyObject *conn_notify_inval_entry(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    static const char *const names[] = {"parent", "name"};
    PyObject *v[2] = {0};
    if (sr_parse("notify_inval_entry", args, nargs, kwnames, names, 2, 2, v) < 0)
        return NULL;
    struct fuse_notify_inval_entry_out o = {0};
    if (sr_as_u64(v[0], 0, &o.parent, "parent") < 0)
        return NULL;
    if (!PyBytes_Check(v[1]) || PyBytes_GET_SIZE(v[1]) == 0 || PyBytes_GET_SIZE(v[1]) > 1024 ||
        memchr(PyBytes_AS_STRING(v[1]), 0, (size_t)PyBytes_GET_SIZE(v[1])) ||
        memchr(PyBytes_AS_STRING(v[1]), '/', (size_t)PyBytes_GET_SIZE(v[1]))) {
        PyErr_SetString(PyExc_ValueError, "name must be 1..1024 bytes without NUL or '/'");
        return NULL;
    }
    o.namelen = (uint32_t)PyBytes_GET_SIZE(v[1]);
    static const char nul = 0;
    struct iovec iov[4] = {{0}, {&o, sizeof(o)},
                           {PyBytes_AS_STRING(v[1]), o.namelen}, {(void *)&nul, 1}};
    return notify(c, FUSE_NOTIFY_INVAL_ENTRY, iov, 4, sizeof(o) + o.namelen + 1);
}

static PyObject *conn_stop(FuseConn *c, PyObject *unused)
{
    /* release: a loop that sees the wake-up also sees the flag. */
    __atomic_store_n(&c->stopping, 1, __ATOMIC_RELEASE);
    for (struct fring *g = c->rings; g; g = g->next)
        sr_eventfd_signal(g->evfd);
    Py_RETURN_NONE;
}

static PyObject *conn_close(FuseConn *c, PyObject *unused)
{
    if (c->rings || c->dev_loops) {
        /* They use the fd number: closing it now could make them read or
         * write whatever file reuses it. */
        PyErr_SetString(PyExc_RuntimeError, "close(): serving loops are still running");
        return NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    fuse_conn_free_dead(c);
    Py_RETURN_NONE;
}

static PyObject *conn_set_async_runner(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                                       PyObject *kwnames)
{
    static const char *const names[] = {"runner", "interrupt"};
    PyObject *v[2] = {0};
    if (sr_parse("set_async_runner", args, nargs, kwnames, names, 2, 1, v) < 0)
        return NULL;
    for (int i = 0; i < 2; i++)
        if (v[i] && v[i] != Py_None && !PyCallable_Check(v[i])) {
            PyErr_SetString(PyExc_TypeError, "set_async_runner() takes callables or None");
            return NULL;
        }
    Py_XSETREF(c->async_runner, v[0] == Py_None ? NULL : Py_NewRef(v[0]));
    Py_XSETREF(c->interrupt_hook, !v[1] || v[1] == Py_None ? NULL : Py_NewRef(v[1]));
    Py_RETURN_NONE;
}

static PyObject *conn_statistics(FuseConn *c, PyObject *unused)
{
    uint64_t ring = c->n_ring, err = c->n_err, batches = c->n_batches;
    uint64_t hits = c->n_poll_hits, pto = c->n_poll_timeouts;
    for (struct fring *g = c->rings; g; g = g->next) {   /* live loops (GIL: list stable) */
        ring += __atomic_load_n(&g->n_reqs, __ATOMIC_RELAXED);
        err += __atomic_load_n(&g->n_errs, __ATOMIC_RELAXED);
        batches += __atomic_load_n(&g->n_batches, __ATOMIC_RELAXED);
        hits += __atomic_load_n(&g->n_poll_hits, __ATOMIC_RELAXED);
        pto += __atomic_load_n(&g->n_poll_timeouts, __ATOMIC_RELAXED);
    }
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}",
        "requests", (unsigned long long)(ring + c->n_dev),
        "ring_requests", (unsigned long long)ring,
        "dev_requests", (unsigned long long)c->n_dev,
        "error_replies", (unsigned long long)err,
        "handler_exceptions", (unsigned long long)c->n_exc,
        "async_requests", (unsigned long long)c->n_async,
        "forgets", (unsigned long long)c->n_forgets,
        "interrupts", (unsigned long long)c->n_interrupts,
        "batches", (unsigned long long)batches,
        "gil_spins", (unsigned long long)c->n_gil_spins,
        "gil_spin_timeouts", (unsigned long long)c->n_gil_spin_timeouts,
        "poll_hits", (unsigned long long)hits,
        "poll_timeouts", (unsigned long long)pto);
}

static PyObject *conn_get_uring(FuseConn *c, void *unused)
{
    return PyBool_FromLong(c->uring);
}

static PyObject *conn_get_fd(FuseConn *c, void *unused)
{
    return PyLong_FromLong(c->fd);
}

static PyGetSetDef conn_getset[] = {
    {"uring", (getter)conn_get_uring, NULL, "True when FUSE over io_uring was negotiated.", NULL},
    {"fd", (getter)conn_get_fd, NULL, "The /dev/fuse fd (-1 after close()).", NULL},
    {NULL}
};

static PyMethodDef conn_methods[] = {
    {"init", (PyCFunction)(void (*)(void))conn_init, METH_FASTCALL | METH_KEYWORDS,
     "init($self, want_uring, timeout=None)\n--\n\n"
     "Read FUSE_INIT from /dev/fuse and answer it, offering io_uring when\n"
     "want_uring and the kernel does.  Returns what was negotiated."},
    {"serve_dev", (PyCFunction)fuse_serve_dev, METH_NOARGS,
     "serve_dev($self)\n--\n\n"
     "Serve requests read from /dev/fuse until the connection ends."},
    {"serve_ring", (PyCFunction)(void (*)(void))fuse_serve_ring, METH_FASTCALL | METH_KEYWORDS,
     "serve_ring($self, qids, depth, cpu=-1)\n--\n\n"
     "Register depth io_uring entries on each queue in qids and serve them\n"
     "until the connection ends or stop(); cpu >= 0 pins this thread first."},
    {"notify_inval_inode", (PyCFunction)(void (*)(void))conn_notify_inval_inode,
     METH_FASTCALL | METH_KEYWORDS,
     "notify_inval_inode($self, ino, offset=0, length=0)\n--\n\n"
     "Tell the kernel to drop cached attributes of ino and its cached data in\n"
     "[offset, offset+length) (length 0: to the end; offset < 0: attributes only)."},
    {"notify_inval_entry", (PyCFunction)(void (*)(void))conn_notify_inval_entry,
     METH_FASTCALL | METH_KEYWORDS,
     "notify_inval_entry($self, parent, name)\n--\n\n"
     "Tell the kernel to forget its cached lookup of name in directory parent."},
    {"stop", (PyCFunction)conn_stop, METH_NOARGS,
     "stop($self)\n--\n\nMake every serve_ring() loop return."},
    {"close", (PyCFunction)conn_close, METH_NOARGS,
     "close($self)\n--\n\nClose the /dev/fuse fd (after the loops ended)."},
    {"set_async_runner", (PyCFunction)(void (*)(void))conn_set_async_runner,
     METH_FASTCALL | METH_KEYWORDS,
     "set_async_runner($self, runner, interrupt=None)\n--\n\n"
     "runner(coroutine, pending) runs an async handler; pending.reply/fail answer.\n"
     "interrupt(unique) is called when the kernel interrupts request `unique`."},
    {"statistics", (PyCFunction)conn_statistics, METH_NOARGS,
     "statistics($self)\n--\n\nCounters as a dict."},
    {NULL}
};

static PyTypeObject FuseConnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.FuseConn",
    .tp_basicsize = sizeof(FuseConn),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FuseConn(fd, ops, *, max_write=131072, direct_io=False, attr_timeout=1.0, "
              "entry_timeout=1.0, on_error=None, gil_spin_us=20.0, poll_us=50.0)\n--\n\n"
              "One FUSE connection (a /dev/fuse fd, owned) served by the C loops.\n"
              "gil_spin_us: how long a serving loop spins for the GIL while another\n"
              "serving loop holds it, before blocking (0: never spin).\n"
              "poll_us: how long a ring loop polls for its next request, yielding\n"
              "the CPU, before it sleeps (0: sleep at once).",
    .tp_new = conn_new,
    .tp_dealloc = (destructor)conn_dealloc,
    .tp_traverse = (traverseproc)conn_traverse,
    .tp_clear = (inquiry)conn_clear,
    .tp_methods = conn_methods,
    .tp_getset = conn_getset,
};

/* ---- module functions: mount, umount, watchdog ------------------------------- */

/* mount/umount2's outcome (r, its errno e) as None or OSError naming the
 * path; consumes `target` (the PyUnicode_FSConverter bytes). */
static PyObject *path_result(int r, int e, PyObject *target)
{
    PyObject *ret = NULL;
    if (r < 0) {
        errno = e;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, target);
    } else {
        ret = Py_NewRef(Py_None);
    }
    Py_DECREF(target);
    return ret;
}

static PyObject *fuse_mount(PyObject *m, PyObject *args)
{
    PyObject *src, *target;
    const char *fstype, *data;
    unsigned long flags;
    if (!PyArg_ParseTuple(args, "O&O&skz:fuse_mount", PyUnicode_FSConverter, &src,
                          PyUnicode_FSConverter, &target, &fstype, &flags, &data))
        return NULL;
    int r, e = 0;
    Py_BEGIN_ALLOW_THREADS
    r = mount(PyBytes_AS_STRING(src), PyBytes_AS_STRING(target), fstype, flags, data);
    if (r < 0) e = errno;
    Py_END_ALLOW_THREADS
    Py_DECREF(src);
    return path_result(r, e, target);
}

static PyObject *fuse_umount(PyObject *m, PyObject *args)
{
    PyObject *target;
    int flags = 0;
    if (!PyArg_ParseTuple(args, "O&|i:fuse_umount", PyUnicode_FSConverter, &target, &flags))
        return NULL;
    int r, e = 0;
    Py_BEGIN_ALLOW_THREADS
    r = umount2(PyBytes_AS_STRING(target), flags);
    if (r < 0) e = errno;
    Py_END_ALLOW_THREADS
    return path_result(r, e, target);
}

/* Fork a process that lazily unmounts `target` if we die without saying
 * "unmounted" (one byte) on the pipe: EOF means our last reference to the
 * write end went away, i.e. this process is gone (SIGKILL included).  The
 * child closes every other fd first -- above all /dev/fuse, whose last
 * reference must die with the server so the kernel aborts the connection
 * (callers get ENOTCONN instead of hanging) -- and only makes syscalls, which
 * is what is safe in the child of a multi-threaded process. */
static PyObject *fuse_watchdog(PyObject *m, PyObject *arg)
{
    PyObject *target;
    if (!PyUnicode_FSConverter(arg, &target))
        return NULL;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        Py_DECREF(target);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    const char *path = PyBytes_AS_STRING(target);
    pid_t pid = fork();
    if (pid == 0) {
        int rfd = p[0];
        if (rfd > 3)
            syscall(SYS_close_range, 3, (unsigned)rfd - 1, 0);
        syscall(SYS_close_range, (unsigned)rfd + 1, ~0U, 0);
        if (rfd != 0) close(0);
        if (rfd != 1) close(1);
        if (rfd != 2) close(2);
        setsid();                 /* not killed with the server's process group */
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        char ch;
        ssize_t n;
        do n = read(rfd, &ch, 1);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            umount2(path, MNT_DETACH);
        _exit(0);
    }
    int e = errno;
    close(p[0]);
    Py_DECREF(target);
    if (pid < 0) {
        close(p[1]);
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(ii)", (int)pid, p[1]);
}

static PyMethodDef fuse_functions[] = {
    {"fuse_mount", fuse_mount, METH_VARARGS,
     "fuse_mount(source, target, fstype, flags, data)\n--\n\nmount(2) (GIL released)."},
    {"fuse_umount", fuse_umount, METH_VARARGS,
     "fuse_umount(target, flags=0)\n--\n\numount2(2) (GIL released)."},
    {"fuse_watchdog", fuse_watchdog, METH_O,
     "fuse_watchdog(target, /)\n--\n\n"
     "Fork a process that unmounts target (MNT_DETACH) if this process dies.\n"
     "Returns (pid, write_fd): write one byte and close it after a clean unmount."},
    {"fuse_context", fuse_context, METH_NOARGS,
     "fuse_context()\n--\n\n(uid, gid, pid) of the request being handled on this thread."},
    {NULL}
};

/* Called from the module init (module.c). */
int sr_fuse_init(PyObject *module)
{
    if (PyType_Ready(&FuseConnType) < 0 || PyType_Ready(&FusePendingType) < 0)
        return -1;
    if (PyModule_AddFunctions(module, fuse_functions) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "FuseConn", (PyObject *)&FuseConnType) < 0 ||
        PyModule_AddObjectRef(module, "FusePending", (PyObject *)&FusePendingType) < 0)
        return -1;
    return 0;
}
