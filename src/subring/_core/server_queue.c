/*
 * server_queue.c -- ServerQueue: the server side of one client's queue pair
 * (see server.h for the whole server half).
 */
#define _GNU_SOURCE
#include "server.h"

/* ---- fork ----------------------------------------------------------------
 * A handler (or a task) that calls fork() without exec must not leave the
 * server's connections open in the child: clients learn that the server died
 * through their attach socket reaching EOF, a restarted server needs the
 * listening socket free, and both only happen once every copy of those fds is
 * closed.  O_CLOEXEC does not help without exec, so a pthread_atfork child
 * handler does it for every live ServerLoop (its epoll fd and every fd it
 * watches: listener, wake-up eventfd, client sockets) and ServerQueue (its
 * eventfds).  The fds are not just closed but replaced by /dev/null with
 * dup2(): Python socket objects in the child still hold those numbers, and
 * must not close some unrelated file that reused one.  The child's copies of
 * the queues are marked dead (their regions are MADV_DONTFORK: not mapped in
 * the child) and its loops refuse to run. */
static SQueue *live_queues;

static void queue_link(SQueue *q)
{
    srv_atfork_once();
    q->fork_prev = NULL;
    q->fork_next = live_queues;
    if (live_queues)
        live_queues->fork_prev = q;
    live_queues = q;
}

static void queue_unlink(SQueue *q)
{
    SQueue *p = q->fork_prev, *n = q->fork_next;
    if (p) p->fork_next = n; else if (live_queues == q) live_queues = n;
    if (n) n->fork_prev = p;
    q->fork_prev = q->fork_next = NULL;
}

/* In a fork child (pthread_atfork, via server_loop.c): every live queue is
 * dead here, its region and pool not mapped (MADV_DONTFORK), its fds
 * replaced by /dev/null. */
void srv_queues_after_fork(int devnull)
{
    for (SQueue *q = live_queues; q; q = q->fork_next) {
        q->dead = 1;
        q->cq_dirty = 0;
        q->reg = NULL;
        q->pool = NULL;
        q->send_area = q->result_area = NULL;
        srv_fork_neutralize(q->region_fd, devnull);
        srv_fork_neutralize(q->doorbell_fd, devnull);
        srv_fork_neutralize(q->cq_efd, devnull);
    }
}

/* ServerQueue(entries, slot_size, client_pid=0) */
static int squeue_init(SQueue *q, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"entries", "slot_size", "client_pid", NULL};
    unsigned entries, slot_size, pid = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "II|I:ServerQueue", kwlist, &entries,
                                     &slot_size, &pid))
        return -1;
    if (q->reg) {
        PyErr_SetString(PyExc_RuntimeError, "queue already set up");
        return -1;
    }
    if (entries < 1 || entries > 4096 || (entries & (entries - 1))) {
        PyErr_SetString(PyExc_ValueError, "entries must be a power of two in [1, 4096]");
        return -1;
    }
    if (slot_size < 64 || slot_size > (16u << 20)) {
        PyErr_SetString(PyExc_ValueError, "slot_size must be in [64, 16 MiB]");
        return -1;
    }
    slot_size = (slot_size + 63) & ~63u;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t off = sizeof(struct sr_uring_region);
    uint64_t sqes_off = off;
    off += (uint64_t)entries * 128;
    uint64_t cqes_off = off;
    off += (uint64_t)entries * 16;
    off = (off + page - 1) & ~(uint64_t)(page - 1);
    uint64_t send_off = off;
    off += (uint64_t)entries * slot_size;
    uint64_t result_off = off;
    off += (uint64_t)entries * slot_size;
    uint64_t size = (off + page - 1) & ~(uint64_t)(page - 1);

    int fd = memfd_create("subring-queue", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* memfds are created 0777; only its two processes need it (the fd is
     * what grants access, but /proc/PID/fd/N reopens go by the mode). */
    (void)fchmod(fd, 0600);
    if (ftruncate(fd, (off_t)size) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return -1;
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return -1;
    }
    madvise(base, size, MADV_DONTFORK);
    int dfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int cfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (dfd < 0 || cfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        if (dfd >= 0) close(dfd);
        if (cfd >= 0) close(cfd);
        munmap(base, size);
        close(fd);
        return -1;
    }
    struct sr_uring_region *g = base;   /* fresh memfd: all zero */
    g->magic = SR_URING_MAGIC;
    g->version = SR_URING_ABI_VERSION;
    g->sq_entries = g->cq_entries = entries;
    g->sqe_size = 128;
    g->cqe_size = 16;
    g->nslots = entries;
    g->slot_size = slot_size;
    g->sqes_off = sqes_off;
    g->cqes_off = cqes_off;
    g->send_off = send_off;
    g->result_off = result_off;
    g->region_size = size;
    g->server_pid = (uint32_t)getpid();
    g->client_pid = pid;
    g->state.v = SR_STATE_RUNNING;

    q->reg = g;
    q->reg_len = size;
    q->sq = (struct sr_sq_cons){.ktail = &g->sq_tail.v, .khead = &g->sq_head.v,
                                .sqes = (uint8_t *)base + sqes_off, .mask = entries - 1,
                                .entries = entries, .sqe_shift = 1, .head = 0};
    q->cq = (struct sr_cq_prod){.khead = &g->cq_head.v, .ktail = &g->cq_tail.v,
                                .cqes = (uint8_t *)base + cqes_off, .mask = entries - 1,
                                .entries = entries, .cqe_shift = 0, .tail = 0};
    q->send_area = (uint8_t *)base + send_off;
    q->result_area = (uint8_t *)base + result_off;
    q->nslots = entries;
    q->slot_size = slot_size;
    q->region_fd = fd;
    q->doorbell_fd = dfd;
    q->cq_efd = cfd;
    queue_link(q);
    return 0;
}

static PyObject *squeue_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    SQueue *q = (SQueue *)type->tp_alloc(type, 0);
    if (q) {
        q->region_fd = q->doorbell_fd = q->cq_efd = -1;
        q->info = Py_NewRef(Py_None);
    }
    return (PyObject *)q;
}

static void squeue_close_fds(SQueue *q)
{
    if (q->region_fd >= 0) close(q->region_fd);
    if (q->doorbell_fd >= 0) close(q->doorbell_fd);
    if (q->cq_efd >= 0) close(q->cq_efd);
    q->region_fd = q->doorbell_fd = q->cq_efd = -1;
}

static void squeue_dealloc(SQueue *q)
{
    if (q->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)q);
    queue_unlink(q);
    squeue_close_fds(q);
    /* Only now: no Request (and so no memoryview of ours) is alive. */
    if (q->reg) munmap(q->reg, q->reg_len);
    if (q->pool) munmap(q->pool, q->pool_len);
    Py_XDECREF(q->info);
    Py_XDECREF(q->error_hook);
    Py_TYPE(q)->tp_free((PyObject *)q);
}

/* restrict(allowed: bytes of 32) -- bitmap of op indices this client may run. */
static PyObject *squeue_restrict(SQueue *q, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    if (b.len != 32) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "restrict() takes a 32-byte bitmap of op indices");
        return NULL;
    }
    memcpy(q->allowed, b.buf, 32);
    q->allowed[0] |= 1;          /* the built-in nop */
    q->restricted = 1;
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

static PyObject *squeue_close_region_fd(SQueue *q, PyObject *unused)
{
    if (q->region_fd >= 0) close(q->region_fd);
    q->region_fd = -1;
    Py_RETURN_NONE;
}

/* attach_pool(fd, count, size): map a client's BufferPool (must be sealed). */
static PyObject *squeue_attach_pool(SQueue *q, PyObject *args)
{
    int fd;
    unsigned long long count, size;
    if (!PyArg_ParseTuple(args, "iKK:attach_pool", &fd, &count, &size))
        return NULL;
    if (q->pool) {
        PyErr_SetString(PyExc_ValueError, "a pool is already attached to this connection");
        return NULL;
    }
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
        PyErr_SetString(PyExc_ValueError,
                        "pool memfd must be sealed with F_SEAL_SHRINK (use subring.BufferPool)");
        return NULL;
    }
    if (!count || !size || count > (1u << 20) || size > (1ull << 40) / count ||
        fstat(fd, &st) < 0 || (uint64_t)st.st_size < count * size) {
        PyErr_SetString(PyExc_ValueError, "pool geometry does not match its memfd");
        return NULL;
    }
    void *p = mmap(NULL, count * size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    madvise(p, count * size, MADV_DONTFORK);
    q->pool = p;
    q->pool_len = count * size;
    q->pool_count = count;
    q->pool_size = size;
    Py_RETURN_NONE;
}

/* detach(): stop serving this client.  Memory stays mapped while any Request
 * (or view of its data) is alive; fds are closed now. */
static PyObject *squeue_detach(SQueue *q, PyObject *unused)
{
    if (!q->dead && q->reg)
        q->reg->state.v = SR_STATE_STOPPED;
    q->dead = 1;
    squeue_close_fds(q);
    Py_RETURN_NONE;
}

static PyObject *sq_get_fd(int fd) { return PyLong_FromLong(fd); }
static PyObject *squeue_get_region_fd(SQueue *q, void *c) { return sq_get_fd(q->region_fd); }
static PyObject *squeue_get_doorbell_fd(SQueue *q, void *c) { return sq_get_fd(q->doorbell_fd); }
static PyObject *squeue_get_cq_efd(SQueue *q, void *c) { return sq_get_fd(q->cq_efd); }
static PyObject *squeue_get_dead(SQueue *q, void *c) { return PyBool_FromLong(q->dead); }
static PyObject *squeue_get_corrupt(SQueue *q, void *c) { return PyBool_FromLong(q->corrupt); }
static PyObject *squeue_get_pending(SQueue *q, void *c) { return PyLong_FromUnsignedLong(q->pending); }
static PyObject *squeue_get_info(SQueue *q, void *c) { return Py_NewRef(q->info); }
static int squeue_set_info(SQueue *q, PyObject *v, void *c)
{
    Py_XSETREF(q->info, Py_NewRef(v ? v : Py_None));
    return 0;
}
/* stats() -> dict.  Occupancies are read from the shared region (the
 * client's indices are untrusted: clamped to the ring size); the client's
 * own counters come from its cq_head line (abi.h), informational only.
 * Called on a statistics query, never on the data path. */
static PyObject *squeue_stats(SQueue *q, PyObject *unused)
{
    uint32_t sq_pending = 0, cq_pending = 0, mode = 0;
    uint64_t c_sub = 0, c_bells = 0, c_hits = 0, c_sleeps = 0;
    if (q->reg && !q->dead) {
        struct sr_uring_region *g = q->reg;
        sq_pending = sr_sqc_waiting(&q->sq);
        cq_pending = sr_cqp_unreaped(&q->cq);
        if (sq_pending > q->sq.entries) sq_pending = q->sq.entries;
        if (cq_pending > q->cq.entries) cq_pending = q->cq.entries;
        mode = __atomic_load_n(&g->cq_head.mode, __ATOMIC_RELAXED);
        c_sub = __atomic_load_n(&g->cq_head.submitted, __ATOMIC_RELAXED);
        c_bells = __atomic_load_n(&g->cq_head.doorbells, __ATOMIC_RELAXED);
        c_hits = __atomic_load_n(&g->cq_head.poll_hits, __ATOMIC_RELAXED);
        c_sleeps = __atomic_load_n(&g->cq_head.sleeps, __ATOMIC_RELAXED);
    }
    PyObject *mode_name = mode >= 1 && mode <= 3 ? sr_mode_name((int)mode - 1)
                                                 : PyUnicode_FromString("?");
    if (!mode_name)
        return NULL;
    return Py_BuildValue(
        "{sKsKsKsIsIsIsIsIsKsKsNsKsKsKsK}",
        "submitted", (unsigned long long)q->st_taken,
        "completed", (unsigned long long)q->st_ops,
        "errors", (unsigned long long)q->st_errors,
        "inflight", q->pending,
        "sq_pending", sq_pending, "sq_entries", q->sq.entries,
        "cq_pending", cq_pending, "cq_entries", q->cq.entries,
        "wakeups_sent", (unsigned long long)q->st_notifies,
        "wakeups_suppressed", (unsigned long long)q->st_quiet,
        "mode", mode_name,
        "client_submitted", (unsigned long long)c_sub,
        "doorbells", (unsigned long long)c_bells,
        "poll_hits", (unsigned long long)c_hits,
        "sleeps", (unsigned long long)c_sleeps);
}

static PyGetSetDef squeue_getset[] = {
    {"region_fd", (getter)squeue_get_region_fd, NULL, "memfd of the shared region (to send)."},
    {"doorbell_fd", (getter)squeue_get_doorbell_fd, NULL, "eventfd the client rings."},
    {"cq_efd", (getter)squeue_get_cq_efd, NULL, "eventfd we signal for the client."},
    {"dead", (getter)squeue_get_dead, NULL, NULL},
    {"corrupt", (getter)squeue_get_corrupt, NULL, NULL},
    {"pending", (getter)squeue_get_pending, NULL, "ops taken and not yet completed"},
    {"info", (getter)squeue_get_info, (setter)squeue_set_info, "free for the Python layer"},
    {NULL}
};

static PyMethodDef squeue_methods[] = {
    {"close_region_fd", (PyCFunction)squeue_close_region_fd, METH_NOARGS,
     "close_region_fd($self, /)\n--\n\nClose our copy of the region memfd (once sent to the "
     "client)."},
    {"attach_pool", (PyCFunction)squeue_attach_pool, METH_VARARGS,
     "attach_pool($self, fd, count, size, /)\n--\n\nMap the client's buffer pool memfd "
     "(`count` buffers of `size` bytes)."},
    {"detach", (PyCFunction)squeue_detach, METH_NOARGS,
     "detach($self, /)\n--\n\nMark the region stopped (the client sees it) and close "
     "this queue's fds."},
    {"restrict", (PyCFunction)squeue_restrict, METH_O,
     "restrict($self, allowed, /)\n--\n\nOnly ops whose bit is set in the 32-byte bitmap "
     "`allowed` may run; the others complete with -EACCES."},
    {"stats", (PyCFunction)squeue_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nThis queue's counters as a dict."},
    {NULL}
};

PyTypeObject SR_ServerQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.ServerQueue",
    .tp_basicsize = sizeof(SQueue),
    .tp_dealloc = (destructor)squeue_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Server side of one client's queue pair.",
    .tp_weaklistoffset = offsetof(SQueue, weakreflist),
    .tp_getset = squeue_getset,
    .tp_methods = squeue_methods,
    .tp_init = (initproc)squeue_init,
    .tp_new = squeue_new,
};

