/*
 * pyserver.c -- the server half of user-space subsystems.
 *
 *   ServerQueue  one client's queue pair: the shared region (created here,
 *                sealed, sent to the client), its eventfds, a registered pool.
 *   Request      one operation handed to a Python handler.
 *   ServerLoop   the run loop: consume SQEs from every queue in fair batches,
 *                call handlers, post CQEs, notify only clients that sleep, and
 *                sleep itself (interrupt / poll / hybrid) when there is no work.
 *
 * Trust: the client is untrusted.  Its indices are read once per batch and
 * validated; SQEs are copied out before being looked at; every slot index,
 * length, pool index and offset is bounds-checked; our own indices are never
 * read back from shared memory.  A client that breaks the protocol gets its
 * queue marked corrupt and dropped; it cannot make us touch memory outside its
 * own region and pool, and cannot make us SIGBUS (regions and pools must be
 * sealed against shrinking).
 *
 * Backpressure: we take an SQE only if its CQE is guaranteed room in the CQ
 * (CQ free entries minus ops we hold), so we never need an overflow list.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

PyObject *SR_PENDING;

/* ------------------------------------------------------------------------ */
/* ServerQueue                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    struct sr_uring_region *reg;
    size_t reg_len;
    struct sr_sq_cons sq;
    struct sr_cq_prod cq;
    uint8_t *send_area, *result_area;
    uint32_t nslots, slot_size;
    int region_fd;        /* kept until sent; closed by close_region_fd() */
    int doorbell_fd;      /* clients write it; we epoll it */
    int cq_efd;           /* we write it when the client is ARMED */
    uint8_t *pool;        /* mapped client pool, or NULL */
    size_t pool_len;
    uint64_t pool_count, pool_size;
    uint32_t pending;     /* ops taken and not yet completed */
    int restricted;       /* only ops set in `allowed` may run (others: -EACCES) */
    uint8_t allowed[32];  /* bitmap over op indices, set once before serving */
    int dead;             /* detached: client gone, or we dropped it */
    int corrupt;          /* protocol violation seen */
    int cq_dirty;         /* CQEs written but not yet published */
    int in_loop;          /* registered with a ServerLoop */
    uint32_t loop_index;
    /* statistics, written only by the serving thread (GIL held) */
    uint64_t st_taken;     /* SQEs taken */
    uint64_t st_ops, st_errors;   /* CQEs posted, of which res < 0 */
    uint64_t st_notifies;  /* CQ publishes that signalled the client's eventfd */
    uint64_t st_quiet;     /* CQ publishes with the client awake: no syscall */
    PyObject *info;       /* anything the Python layer wants to keep (peer creds) */
    PyObject *error_hook; /* the loop's: called with (op, exc) for unexpected handler errors */
    PyObject *weakreflist;
    void *fork_prev, *fork_next;   /* live queues: see server_after_fork */
} SQueue;

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
static struct Loop_s *live_loops;
static void server_after_fork(void);

static void server_atfork_once(void)
{
    static int done;
    if (!done) {
        pthread_atfork(NULL, NULL, server_after_fork);
        done = 1;
    }
}

static void fork_neutralize(int fd, int devnull)
{
    if (fd < 0)
        return;
    if (devnull < 0 || dup2(devnull, fd) < 0)
        close(fd);
}

static void queue_link(SQueue *q)
{
    server_atfork_once();
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

static void sq_mark_corrupt(SQueue *q)
{
    q->corrupt = 1;
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

/* Publish written CQEs and wake the client if (and only if) it sleeps. */
static void sq_flush(SQueue *q)
{
    if (!q->cq_dirty)
        return;
    q->cq_dirty = 0;
    sr_cqp_publish(&q->cq);
    SR_DEBUG_DELAY("server: cq_tail published, before the fence");
    /* Invariant 3, notify side: the release store of cq_tail must be ordered
     * before our load of cq_flags; the client orders "set ARMED" before its
     * re-check of cq_tail.  With the full fence on both sides, at least one
     * of us sees the other. */
    sr_full_fence();
    if (sr_load_relaxed(&q->reg->cq_flags.v) & SR_CQ_ARMED) {
        q->st_notifies++;
        sr_eventfd_signal(q->cq_efd);
    } else {
        q->st_quiet++;
    }
}

/* Write one CQE.  Room was reserved when the SQE was taken (q->pending). */
static void sq_post(SQueue *q, uint64_t ud, int32_t res, uint32_t flags)
{
    q->pending--;
    if (q->dead)
        return;
    sr_cqp_put(&q->cq, ud, res, flags);
    q->cq_dirty = 1;
    q->st_ops++;
    if (res < 0)
        q->st_errors++;
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
        sq_pending = sr_load_acquire(&g->sq_tail.v) - q->sq.head;
        cq_pending = q->cq.tail - sr_load_acquire(&g->cq_head.v);
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
    {"close_region_fd", (PyCFunction)squeue_close_region_fd, METH_NOARGS, NULL},
    {"attach_pool", (PyCFunction)squeue_attach_pool, METH_VARARGS, NULL},
    {"detach", (PyCFunction)squeue_detach, METH_NOARGS, NULL},
    {"restrict", (PyCFunction)squeue_restrict, METH_O,
     "restrict($self, allowed, /)\n--\n\nOnly ops whose bit is set in the 32-byte bitmap "
     "`allowed` may run; the others complete with -EACCES."},
    {"stats", (PyCFunction)squeue_stats, METH_NOARGS, NULL},
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

/* ------------------------------------------------------------------------ */
/* Request                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    SQueue *q;              /* owned: keeps the region and pool mapped */
    uint64_t user_data;
    int64_t arg0, arg1;
    uint8_t *data;          /* into inl, the send slot, or the pool */
    uint32_t len;
    uint32_t slot;
    uint8_t op;
    uint8_t where;          /* SR_PAYLOAD_* */
    uint8_t want_result;
    uint8_t done;
    Py_ssize_t exports;
    uint8_t inl[SR_INLINE_MAX];
} SRequest;

static SRequest *req_freelist[256];
static int req_nfree;

static SRequest *request_new(SQueue *q)
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
static void report_handler_error(SQueue *q, int op, PyObject *ev, PyObject *tb)
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
static int request_finish(SRequest *r, PyObject *result)
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
            report_handler_error(q, r->op, ev, tb);
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
    request_finish(r, res);
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
    request_finish(r, NULL);
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
    if (request_finish(r, NULL) < 0)      /* a BaseException: completed -ECANCELED */
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
     "complete(result=None) -> bool: finish a request whose handler returned PENDING."},
    {"fail", (PyCFunction)request_fail, METH_VARARGS,
     "fail(errno, text=None) -> bool: finish it with an error."},
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

/* ------------------------------------------------------------------------ */
/* ServerLoop                                                                */
/* ------------------------------------------------------------------------ */

enum { MODE_HYBRID = SR_MODE_HYBRID, MODE_INTERRUPT = SR_MODE_INTERRUPT,
       MODE_POLL = SR_MODE_POLL };
#define DOORBELL_TAG (1ULL << 63)
#define BUDGET 256              /* SQEs taken from one client per round */

typedef struct Loop_s {
    PyObject_HEAD
    int epfd;
    int *watched;                /* fds given to watch() (closed in a fork child) */
    uint32_t nwatched, capwatched;
    struct Loop_s *fork_prev, *fork_next;   /* live loops: see server_after_fork */
    uint64_t fork_gen;
    SQueue **queues;
    uint32_t nqueues, cap;
    uint32_t rr;                 /* round-robin start */
    PyObject **handlers;         /* per op index: callable or NULL */
    uint8_t *is_batch;
    uint32_t nhandlers;
    int mode;
    int64_t spin_ns;
    int stop;
    int running;
    uint64_t st_rounds, st_sleeps, st_ops;
    PyObject *error_hook;          /* given to every queue added */
    struct io_uring_sqe *sqebuf;   /* BUDGET copied SQEs (128 bytes each) */
    int *vecidx;                   /* indices of a vector-handler run */
} Loop;

static int loop_init(Loop *L, PyObject *args, PyObject *kw)
{
    if (L->epfd > 0)
        return 0;
    L->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (L->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    L->sqebuf = PyMem_Calloc(BUDGET * 2, sizeof(struct io_uring_sqe));
    L->vecidx = PyMem_Calloc(BUDGET, sizeof(int));
    if (!L->sqebuf || !L->vecidx) {
        PyErr_NoMemory();
        return -1;
    }
    L->mode = MODE_HYBRID;
    L->spin_ns = 50000;
    L->fork_gen = sr_fork_generation;
    server_atfork_once();
    L->fork_prev = NULL;
    L->fork_next = live_loops;
    if (live_loops)
        live_loops->fork_prev = L;
    live_loops = L;
    return 0;
}

static void server_after_fork(void)
{
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (Loop *L = live_loops; L; L = L->fork_next) {
        for (uint32_t k = 0; k < L->nwatched; k++)
            fork_neutralize(L->watched[k], devnull);
        fork_neutralize(L->epfd, devnull);
        L->stop = 1;
    }
    for (SQueue *q = live_queues; q; q = q->fork_next) {
        /* MADV_DONTFORK: the region and pool are not mapped here */
        q->dead = 1;
        q->cq_dirty = 0;
        q->reg = NULL;
        q->pool = NULL;
        q->send_area = q->result_area = NULL;
        fork_neutralize(q->region_fd, devnull);
        fork_neutralize(q->doorbell_fd, devnull);
        fork_neutralize(q->cq_efd, devnull);
    }
    if (devnull >= 0)
        close(devnull);
}

static int loop_check(Loop *L)
{
    if (L->fork_gen != sr_fork_generation) {
        PyErr_SetString(SR_ForkedRingError,
                        "this ServerLoop belongs to the parent process: it cannot be used "
                        "after fork()");
        return -1;
    }
    return 0;
}

static void loop_clear_handlers(Loop *L)
{
    for (uint32_t k = 0; k < L->nhandlers; k++)
        Py_XDECREF(L->handlers[k]);
    PyMem_Free(L->handlers);
    PyMem_Free(L->is_batch);
    L->handlers = NULL;
    L->is_batch = NULL;
    L->nhandlers = 0;
}

static void loop_dealloc(Loop *L)
{
    {
        struct Loop_s *p = L->fork_prev, *n = L->fork_next;
        if (p) p->fork_next = n; else if (live_loops == L) live_loops = n;
        if (n) n->fork_prev = p;
    }
    PyMem_Free(L->watched);
    for (uint32_t k = 0; k < L->nqueues; k++) {
        L->queues[k]->in_loop = 0;
        Py_DECREF(L->queues[k]);
    }
    PyMem_Free(L->queues);
    loop_clear_handlers(L);
    Py_CLEAR(L->error_hook);
    PyMem_Free(L->sqebuf);
    PyMem_Free(L->vecidx);
    if (L->epfd > 0)
        close(L->epfd);
    Py_TYPE(L)->tp_free((PyObject *)L);
}

/* set_handlers(table): table[i] is None or (callable, is_batch) for op i.
 * Op 0 is the built-in NOP and is never dispatched to Python. */
static PyObject *loop_set_handlers(Loop *L, PyObject *table)
{
    PyObject *seq = PySequence_Fast(table, "handlers must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 256) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "at most 256 ops");
        return NULL;
    }
    PyObject **h = PyMem_Calloc((size_t)n + 1, sizeof(PyObject *));
    uint8_t *b = PyMem_Calloc((size_t)n + 1, 1);
    if (!h || !b) {
        PyMem_Free(h);
        PyMem_Free(b);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *e = PySequence_Fast_GET_ITEM(seq, k);
        if (e == Py_None)
            continue;
        PyObject *fn;
        int batch;   /* 0 per-op, 1 list of Requests, 2 vector (Batch) */
        if (!PyArg_ParseTuple(e, "Oi;handler entries are (callable, kind)", &fn, &batch) ||
            batch < 0 || batch > 2 ||
            !PyCallable_Check(fn)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "handler is not callable");
            for (Py_ssize_t j = 0; j < k; j++)
                Py_XDECREF(h[j]);
            PyMem_Free(h);
            PyMem_Free(b);
            Py_DECREF(seq);
            return NULL;
        }
        h[k] = Py_NewRef(fn);
        b[k] = (uint8_t)batch;
    }
    Py_DECREF(seq);
    loop_clear_handlers(L);
    L->handlers = h;
    L->is_batch = b;
    L->nhandlers = (uint32_t)n;
    Py_RETURN_NONE;
}

static PyObject *loop_add(Loop *L, PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, &SR_ServerQueueType)) {
        PyErr_SetString(PyExc_TypeError, "add() takes a ServerQueue");
        return NULL;
    }
    SQueue *q = (SQueue *)arg;
    if (loop_check(L) < 0)
        return NULL;
    if (q->in_loop || q->dead || !q->reg) {
        PyErr_SetString(PyExc_ValueError, "queue is dead, unset or already in a loop");
        return NULL;
    }
    if (L->nqueues == L->cap) {
        uint32_t cap = L->cap ? L->cap * 2 : 16;
        SQueue **nq = PyMem_Realloc(L->queues, cap * sizeof(SQueue *));
        if (!nq)
            return PyErr_NoMemory();
        L->queues = nq;
        L->cap = cap;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = DOORBELL_TAG | (uintptr_t)q};
    if (epoll_ctl(L->epfd, EPOLL_CTL_ADD, q->doorbell_fd, &ev) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    q->in_loop = 1;
    Py_XSETREF(q->error_hook, Py_XNewRef(L->error_hook));
    L->queues[L->nqueues++] = (SQueue *)Py_NewRef(arg);
    Py_RETURN_NONE;
}

static void loop_drop(Loop *L, uint32_t k)
{
    SQueue *q = L->queues[k];
    if (q->doorbell_fd >= 0)
        epoll_ctl(L->epfd, EPOLL_CTL_DEL, q->doorbell_fd, NULL);
    q->in_loop = 0;
    L->queues[k] = L->queues[--L->nqueues];
    Py_DECREF(q);
}

static PyObject *loop_remove(Loop *L, PyObject *arg)
{
    for (uint32_t k = 0; k < L->nqueues; k++) {
        if ((PyObject *)L->queues[k] == arg) {
            loop_drop(L, k);
            Py_RETURN_NONE;
        }
    }
    PyErr_SetString(PyExc_KeyError, "queue not in this loop");
    return NULL;
}

/* watch(fd, token): report `token` from run() when fd is readable. */
static PyObject *loop_watch(Loop *L, PyObject *args)
{
    int fd;
    unsigned long long token;
    if (!PyArg_ParseTuple(args, "iK:watch", &fd, &token))
        return NULL;
    if (token & DOORBELL_TAG) {
        PyErr_SetString(PyExc_ValueError, "token must be < 2**63");
        return NULL;
    }
    if (loop_check(L) < 0)
        return NULL;
    if (L->nwatched == L->capwatched) {
        uint32_t cap = L->capwatched ? L->capwatched * 2 : 16;
        int *nw = PyMem_Realloc(L->watched, cap * sizeof(int));
        if (!nw)
            return PyErr_NoMemory();
        L->watched = nw;
        L->capwatched = cap;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = token};
    if (epoll_ctl(L->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    L->watched[L->nwatched++] = fd;
    Py_RETURN_NONE;
}

static PyObject *loop_unwatch(Loop *L, PyObject *arg)
{
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    for (uint32_t k = 0; k < L->nwatched; k++)
        if (L->watched[k] == fd) {
            L->watched[k] = L->watched[--L->nwatched];
            break;
        }
    if (L->fork_gen == sr_fork_generation)
        epoll_ctl(L->epfd, EPOLL_CTL_DEL, fd, NULL);
    Py_RETURN_NONE;
}

/* Validate a copied SQE's payload reference; 0 or -errno. */
static int sqe_check(const SQueue *q, const struct io_uring_sqe *sqe)
{
    uint32_t of = sqe->op_flags, len = sqe->len;
    if (of & ~SR_OPF_KNOWN || (uint32_t)sqe->fd >= q->nslots)
        return -EINVAL;
    /* Packed records: a whole number of records of a non-zero size (the
     * caller, loop_call_vector, divides by it). */
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
static int sqe_check(const SQueue *q, const struct io_uring_sqe *sqe);

static int request_fill(SRequest *r, SQueue *q, const struct io_uring_sqe *sqe)
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
/* Calls of SQE `sqe` (validated by sqe_check): its packed records, or 1. */
static inline uint32_t sqe_calls(const struct io_uring_sqe *sqe)
{
    return (sqe->op_flags & SR_OPF_RECORDS) ? sqe->len / sqe->personality : 1;
}

/* Post the completion of vector-op SQE `sqe` whose first call has result
 * `rv`: an op of packed records completes once with its number of records
 * (or the error every one of them got). */
static inline void vec_post(SQueue *q, const struct io_uring_sqe *sqe, int32_t rv, int failed)
{
    if ((sqe->op_flags & SR_OPF_RECORDS) && !failed)
        rv = (int32_t)sqe_calls(sqe);
    sq_post(q, sqe->user_data, rv, 0);
}

static int loop_call_vector(PyObject *h, SQueue *q, const struct io_uring_sqe *sqes,
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
            report_handler_error(q, sqes[2 * idx[0]].opcode, ev, tb);
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
static int loop_call_batch(PyObject *h, PyObject *batch, int stopping)
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
            if (request_finish(br, NULL) < 0) {
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
            request_finish(br, NULL);
        } else if (seq)
            request_finish(br, PySequence_Fast_GET_ITEM(seq, j));
        else if (res != Py_None && res != SR_PENDING && !PyLong_Check(res))
            request_finish(br, Py_Ellipsis);   /* not a valid result: -EINVAL */
        else
            request_finish(br, res);
    }
    Py_XDECREF(seq);
    Py_DECREF(res);
    return 0;
}

/* Process up to BUDGET SQEs of one queue.  Returns SQEs taken, or -1 if a
 * BaseException must stop the loop (every taken SQE still got its CQE). */
static int loop_process(Loop *L, SQueue *q)
{
    if (q->dead || q->corrupt)
        return 0;
    int64_t avail = sr_sqc_avail(&q->sq);
    if (avail < 0) {
        sq_mark_corrupt(q);
        return 0;
    }
    if (avail == 0)
        return 0;
    int64_t space = sr_cqp_space_cached(&q->cq) - q->pending;
    if (space < avail) {                  /* maybe more room than we last saw */
        space = sr_cqp_space(&q->cq);
        if (space < 0) {
            sq_mark_corrupt(q);
            return 0;
        }
        space -= q->pending;
    }
    if (space <= 0)
        return 0;
    int n = (int)(avail < space ? avail : space);
    if (n > BUDGET)
        n = BUDGET;
    struct io_uring_sqe *sqes = L->sqebuf;   /* 128-byte SQEs: two structs each */
    for (int k = 0; k < n; k++)
        sr_sqc_take(&q->sq, &sqes[2 * k]);
    sr_sqc_release(&q->sq);
    q->pending += (uint32_t)n;
    q->st_taken += (uint64_t)n;
    int rc = 0;
    PyObject *batch = NULL;
    uint8_t batch_op = 0;
    int *vec = L->vecidx, nvec = 0;
    uint8_t vec_op = 0;
    int64_t t_flush = sr_now_ns();
    for (int k = 0; k < n; k++) {
        const struct io_uring_sqe *sqe = &sqes[2 * k];
        uint8_t op = sqe->opcode;
        if (batch && (op != batch_op || rc < 0)) {
            if (loop_call_batch(L->handlers[batch_op], batch, rc < 0) < 0)
                rc = -1;
            Py_CLEAR(batch);
        }
        if (nvec && (op != vec_op || rc < 0)) {
            if (rc == 0 && !q->dead &&
                loop_call_vector(L->handlers[vec_op], q, sqes, vec, nvec) < 0)
                rc = -1;
            else if (rc < 0 || q->dead)
                for (int j = 0; j < nvec; j++)
                    sq_post(q, sqes[2 * vec[j]].user_data, -ECANCELED, 0);
            nvec = 0;
        }
        if (rc < 0 || q->dead) {
            /* stopping, or the queue went away under a handler (dropped, or
             * this is a fork child where the region is not mapped) */
            sq_post(q, sqe->user_data, -ECANCELED, 0);
            continue;
        }
        if (sr_unlikely(q->restricted && !(q->allowed[op >> 3] & (1u << (op & 7))))) {
            sq_post(q, sqe->user_data, -EACCES, 0);
            continue;
        }
        if (op == 0) {                          /* built-in NOP */
            sq_post(q, sqe->user_data, 0, 0);
            continue;
        }
        PyObject *h = op < L->nhandlers ? L->handlers[op] : NULL;
        if (!h) {
            sq_post(q, sqe->user_data, -EOPNOTSUPP, 0);
            continue;
        }
        if (L->is_batch[op] == 2) {
            /* vector handler: validate like a Request would, no object */
            int bad = sqe_check(q, sqe);
            if (bad)
                sq_post(q, sqe->user_data, bad, 0);
            else {
                vec_op = op;
                vec[nvec++] = k;
            }
            continue;
        }
        SRequest *r = request_new(q);
        if (!r) {
            PyErr_Clear();
            sq_post(q, sqe->user_data, -ENOMEM, 0);
            continue;
        }
        int bad = request_fill(r, q, sqe);
        if (bad) {
            r->done = 1;
            sq_post(q, sqe->user_data, bad, 0);
            Py_DECREF(r);
            continue;
        }
        if (L->is_batch[op]) {
            if (!batch) {
                batch = PyList_New(0);
                batch_op = op;
            }
            if (!batch || PyList_Append(batch, (PyObject *)r) < 0) {
                PyErr_Clear();
                r->done = 1;
                sq_post(q, sqe->user_data, -ENOMEM, 0);
            }
            Py_DECREF(r);
            continue;
        }
        PyObject *res = PyObject_CallOneArg(h, (PyObject *)r);
        if (request_finish(r, res) < 0)
            rc = -1;
        Py_XDECREF(res);
        Py_DECREF(r);
        /* Completions are published once per batch -- unless handlers are
         * slow: then a finished result must not wait for the rest of the
         * batch (nor be lost if the process dies before the batch ends). */
        int64_t t = sr_now_ns();
        if (t - t_flush > 20000) {
            sq_flush(q);
            t_flush = t;
        }
    }
    if (batch) {
        if (loop_call_batch(L->handlers[batch_op], batch, rc < 0) < 0)
            rc = -1;
        Py_DECREF(batch);
    }
    if (nvec) {
        if (rc == 0 && !q->dead &&
            loop_call_vector(L->handlers[vec_op], q, sqes, vec, nvec) < 0)
            rc = -1;
        else if (rc < 0 || q->dead)
            for (int j = 0; j < nvec; j++)
                sq_post(q, sqes[2 * vec[j]].user_data, -ECANCELED, 0);
    }
    sq_flush(q);
    L->st_ops += (uint64_t)n;
    return rc < 0 ? -1 : n;
}

/* One fair round over all queues. */
static int loop_round(Loop *L)
{
    int total = 0;
    uint32_t nq = L->nqueues;
    if (!nq)
        return 0;
    uint32_t start = L->rr++ % nq;
    for (uint32_t k = 0; k < nq && k < L->nqueues; k++) {
        SQueue *q = L->queues[(start + k) % L->nqueues];
        Py_INCREF(q);
        int n = loop_process(L, q);
        Py_DECREF(q);
        if (n < 0)
            return -1;
        total += n;
    }
    L->st_rounds++;
    return total;
}

static int loop_any_work(Loop *L)
{
    for (uint32_t k = 0; k < L->nqueues; k++) {
        SQueue *q = L->queues[k];
        if (q->dead || q->corrupt)
            continue;
        int64_t a = sr_sqc_avail(&q->sq);
        if (a < 0)                 /* corruption to report */
            return 1;
        /* The hot path reads the client's CQ head only when it needs more
         * room; here, before sleeping, it is always read and validated, so
         * a client that wrote an impossible head is dropped even when it
         * has nothing queued. */
        int64_t space = sr_cqp_space(&q->cq);
        if (space < 0) {
            sq_mark_corrupt(q);
            return 1;
        }
        /* SQEs we could not take anyway (the client's CQ has no room for
         * their completions) are not work: a client that does not reap must
         * not keep the loop spinning. */
        if (a > 0 && space - (int64_t)q->pending > 0)
            return 1;
    }
    return 0;
}

static void loop_set_need_wakeup(Loop *L, uint32_t v)
{
    /* We are the only writer of sq_flags. */
    for (uint32_t k = 0; k < L->nqueues; k++)
        if (!L->queues[k]->dead)
            sr_store_release(&L->queues[k]->reg->sq_flags.v, v);
}

/* Collect control events; returns 0 or -1. */
static int loop_collect(Loop *L, struct epoll_event *evs, int n, PyObject *out)
{
    for (int k = 0; k < n; k++) {
        uint64_t d = evs[k].data.u64;
        if (d & DOORBELL_TAG) {
            SQueue *q = (SQueue *)(uintptr_t)(d & ~DOORBELL_TAG);
            if (q->doorbell_fd >= 0)
                sr_eventfd_drain(q->doorbell_fd);
            continue;
        }
        PyObject *t = PyLong_FromUnsignedLongLong(d);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            return -1;
        }
        Py_DECREF(t);
    }
    return 0;
}

static int loop_report_corrupt(Loop *L, PyObject *out)
{
    for (uint32_t k = 0; k < L->nqueues; k++) {
        if (L->queues[k]->corrupt && !L->queues[k]->dead) {
            if (PyList_Append(out, (PyObject *)L->queues[k]) < 0)
                return -1;
        }
    }
    return 0;
}

/* run(timeout=None) -> list of events: watch() tokens whose fd is readable,
 * and ServerQueue objects that broke the protocol.  Serves until there is an
 * event, the timeout passes, or stop() was called. */
static PyObject *loop_run(Loop *L, PyObject *const *args, Py_ssize_t nargs)
{
    double timeout = -1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "run(timeout=None)");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        timeout = PyFloat_AsDouble(args[0]);
        if (timeout == -1 && PyErr_Occurred())
            return NULL;
        if (timeout < 0) {
            PyErr_SetString(PyExc_ValueError, "timeout must be >= 0");
            return NULL;
        }
    }
    if (L->running) {
        PyErr_SetString(PyExc_RuntimeError, "loop is already running");
        return NULL;
    }
    if (loop_check(L) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    L->running = 1;
    L->stop = 0;
    int64_t start = sr_now_ns();
    int64_t deadline = timeout < 0 ? INT64_MAX : start + (int64_t)(timeout * 1e9);
    int64_t idle_since = 0, next_ctl = start + 1000000;
    struct epoll_event evs[64];
    for (;;) {
        int did = loop_round(L);
        if (did < 0)
            goto error;
        if (loop_report_corrupt(L, out) < 0)
            goto error;
        if (L->stop || PyList_GET_SIZE(out))
            break;
        int64_t now = sr_now_ns();
        if (now >= deadline)
            break;
        if (did) {
            idle_since = 0;
            if (now >= next_ctl) {          /* under load: still see attaches/deaths */
                next_ctl = now + 1000000;
                int n = epoll_wait(L->epfd, evs, 64, 0);
                if (n > 0 && loop_collect(L, evs, n, out) < 0)
                    goto error;
                if (PyErr_CheckSignals() < 0)
                    goto error;
                if (PyList_GET_SIZE(out))
                    break;
            }
            continue;
        }
        if (!idle_since)
            idle_since = now;
        if (L->mode == MODE_POLL || (L->mode == MODE_HYBRID && now - idle_since < L->spin_ns)) {
            /* Spin without the GIL for a moment (other threads may run). */
            int found = 0;
            Py_BEGIN_ALLOW_THREADS
            for (int k = 0; k < 256 && !found; k++) {
                sr_cpu_relax();
                if ((k & 15) == 15)
                    found = loop_any_work(L);
                if ((k & 63) == 63 && !found)
                    sr_spin_yield();
            }
            Py_END_ALLOW_THREADS
            if (!found && now >= next_ctl) {
                next_ctl = now + 1000000;
                int n = epoll_wait(L->epfd, evs, 64, 0);
                if (n > 0 && loop_collect(L, evs, n, out) < 0)
                    goto error;
                if (PyErr_CheckSignals() < 0)
                    goto error;
                if (PyList_GET_SIZE(out))
                    break;
            }
            continue;
        }
        /* Sleep: arm NEED_WAKEUP everywhere, full fence, re-check every SQ
         * (invariant 3, consumer side), then epoll_wait. */
        loop_set_need_wakeup(L, SR_SQ_NEED_WAKEUP);
        SR_DEBUG_DELAY("server: NEED_WAKEUP set, before the fence");
        sr_full_fence();
        if (loop_any_work(L)) {
            loop_set_need_wakeup(L, 0);
            continue;
        }
        int64_t left = deadline - now;
        int ms = deadline == INT64_MAX ? 1000 : (int)((left + 999999) / 1000000);
        if (ms > 1000) ms = 1000;     /* wake up now and then for signals */
        int n;
        L->st_sleeps++;
        Py_BEGIN_ALLOW_THREADS
        SR_DEBUG_DELAY("server: re-checked, before epoll_wait");
        n = epoll_wait(L->epfd, evs, 64, ms);
        Py_END_ALLOW_THREADS
        loop_set_need_wakeup(L, 0);
        idle_since = 0;
        if (n < 0 && errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto error;
        }
        if (n > 0 && loop_collect(L, evs, n, out) < 0)
            goto error;
        if (PyErr_CheckSignals() < 0)
            goto error;
        if (PyList_GET_SIZE(out) || L->stop)
            break;
    }
    L->running = 0;
    return out;
error:
    L->running = 0;
    Py_DECREF(out);
    return NULL;
}

/* set_error_hook(callable or None) */
static PyObject *loop_set_error_hook(Loop *L, PyObject *hook)
{
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "the error hook must be callable or None");
        return NULL;
    }
    Py_XSETREF(L->error_hook, Py_NewRef(hook));
    Py_RETURN_NONE;
}

static PyObject *loop_stop(Loop *L, PyObject *unused)
{
    L->stop = 1;
    Py_RETURN_NONE;
}

static PyObject *loop_get_mode(Loop *L, void *c)
{
    return sr_mode_name(L->mode);
}

static int loop_set_mode(Loop *L, PyObject *v, void *c)
{
    return sr_mode_parse(v, &L->mode);
}

static PyObject *loop_get_spin_us(Loop *L, void *c) { return PyFloat_FromDouble(L->spin_ns / 1e3); }
static int loop_set_spin_us(Loop *L, PyObject *v, void *c)
{
    return sr_spin_us_parse(v, &L->spin_ns);
}

static PyObject *loop_get_queues(Loop *L, void *c)
{
    PyObject *l = PyList_New(L->nqueues);
    for (uint32_t k = 0; l && k < L->nqueues; k++)
        PyList_SET_ITEM(l, k, Py_NewRef((PyObject *)L->queues[k]));
    return l;
}

static PyObject *loop_stats(Loop *L, PyObject *unused)
{
    return Py_BuildValue("{sKsKsKsI}", "rounds", (unsigned long long)L->st_rounds,
                         "sleeps", (unsigned long long)L->st_sleeps,
                         "ops", (unsigned long long)L->st_ops, "clients", L->nqueues);
}

static PyObject *loop_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Loop *L = (Loop *)type->tp_alloc(type, 0);
    if (L)
        L->epfd = -1;
    return (PyObject *)L;
}

static PyGetSetDef loop_getset[] = {
    {"mode", (getter)loop_get_mode, (setter)loop_set_mode,
     "'hybrid' (default), 'interrupt' or 'poll'; may change while running."},
    {"spin_us", (getter)loop_get_spin_us, (setter)loop_set_spin_us,
     "Hybrid: microseconds of idle spinning before sleeping."},
    {"queues", (getter)loop_get_queues, NULL, NULL},
    {NULL}
};

static PyMethodDef loop_methods[] = {
    {"set_handlers", (PyCFunction)loop_set_handlers, METH_O, NULL},
    {"add", (PyCFunction)loop_add, METH_O, NULL},
    {"remove", (PyCFunction)loop_remove, METH_O, NULL},
    {"watch", (PyCFunction)loop_watch, METH_VARARGS, NULL},
    {"unwatch", (PyCFunction)loop_unwatch, METH_O, NULL},
    {"run", (PyCFunction)(void (*)(void))loop_run, METH_FASTCALL, NULL},
    {"stop", (PyCFunction)loop_stop, METH_NOARGS, NULL},
    {"set_error_hook", (PyCFunction)loop_set_error_hook, METH_O,
     "set_error_hook($self, hook, /)\n--\n\nhook(op_index, exc) is called when a handler raises "
     "an exception that maps to EIO (never for OSError, KeyError, ValueError...)."},
    {"stats", (PyCFunction)loop_stats, METH_NOARGS, NULL},
    {NULL}
};

PyTypeObject SR_ServerLoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.ServerLoop",
    .tp_basicsize = sizeof(Loop),
    .tp_dealloc = (destructor)loop_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The C run loop of a Subsystem.",
    .tp_getset = loop_getset,
    .tp_methods = loop_methods,
    .tp_init = (initproc)loop_init,
    .tp_new = loop_new,
};
