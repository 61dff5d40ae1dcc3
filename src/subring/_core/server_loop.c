/*
 * server_loop.c -- ServerLoop: the run loop of a subsystem (see server.h).
 */
#define _GNU_SOURCE
#include "server.h"

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

static Loop *live_loops;      /* see server_after_fork */

/* The pthread_atfork child handler (see server_queue.c for why): every fd a
 * live loop watches (listener, wake-up eventfd, client sockets) and its epoll
 * fd become /dev/null, the loop refuses to run; then the queues. */
static void server_after_fork(void)
{
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (Loop *L = live_loops; L; L = L->fork_next) {
        for (uint32_t k = 0; k < L->nwatched; k++)
            srv_fork_neutralize(L->watched[k], devnull);
        srv_fork_neutralize(L->epfd, devnull);
        L->stop = 1;
    }
    srv_queues_after_fork(devnull);
    if (devnull >= 0)
        close(devnull);
}

void srv_atfork_once(void)
{
    static int done;
    if (!done) {
        pthread_atfork(NULL, NULL, server_after_fork);
        done = 1;
    }
}

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
    srv_atfork_once();
    L->fork_prev = NULL;
    L->fork_next = live_loops;
    if (live_loops)
        live_loops->fork_prev = L;
    live_loops = L;
    return 0;
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
            if (srv_call_batch(L->handlers[batch_op], batch, rc < 0) < 0)
                rc = -1;
            Py_CLEAR(batch);
        }
        if (nvec && (op != vec_op || rc < 0)) {
            if (rc == 0 && !q->dead &&
                srv_call_vector(L->handlers[vec_op], q, sqes, vec, nvec) < 0)
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
            int bad = srv_sqe_check(q, sqe);
            if (bad)
                sq_post(q, sqe->user_data, bad, 0);
            else {
                vec_op = op;
                vec[nvec++] = k;
            }
            continue;
        }
        SRequest *r = srv_request_new(q);
        if (!r) {
            PyErr_Clear();
            sq_post(q, sqe->user_data, -ENOMEM, 0);
            continue;
        }
        int bad = srv_request_fill(r, q, sqe);
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
        if (srv_request_finish(r, res) < 0)
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
        if (srv_call_batch(L->handlers[batch_op], batch, rc < 0) < 0)
            rc = -1;
        Py_DECREF(batch);
    }
    if (nvec) {
        if (rc == 0 && !q->dead &&
            srv_call_vector(L->handlers[vec_op], q, sqes, vec, nvec) < 0)
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
    {"set_handlers", (PyCFunction)loop_set_handlers, METH_O,
     "set_handlers($self, handlers, /)\n--\n\nThe op table: one handler entry per op index."},
    {"add", (PyCFunction)loop_add, METH_O,
     "add($self, queue, /)\n--\n\nServe this ServerQueue (an attached client)."},
    {"remove", (PyCFunction)loop_remove, METH_O,
     "remove($self, queue, /)\n--\n\nStop serving this ServerQueue."},
    {"watch", (PyCFunction)loop_watch, METH_VARARGS,
     "watch($self, fd, token, /)\n--\n\nrun() returns `token` when `fd` becomes readable."},
    {"unwatch", (PyCFunction)loop_unwatch, METH_O,
     "unwatch($self, fd, /)\n--\n\nForget a watched fd."},
    {"run", (PyCFunction)(void (*)(void))loop_run, METH_FASTCALL,
     "run($self, timeout=None, /)\n--\n\nServe until there is an event, `timeout` seconds "
     "pass or stop() is called; returns the events: watch() tokens whose fd is readable and "
     "ServerQueues that broke the protocol."},
    {"stop", (PyCFunction)loop_stop, METH_NOARGS,
     "stop($self, /)\n--\n\nMake run() return (from any thread)."},
    {"set_error_hook", (PyCFunction)loop_set_error_hook, METH_O,
     "set_error_hook($self, hook, /)\n--\n\nhook(op_index, exc) is called when a handler raises "
     "an exception that maps to EIO (never for OSError, KeyError, ValueError...)."},
    {"stats", (PyCFunction)loop_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nThe loop's counters as a dict."},
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

