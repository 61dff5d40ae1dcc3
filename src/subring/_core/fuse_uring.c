/*
 * fuse_uring.c -- the FUSE over io_uring transport (serve_ring).
 *
 * A ring (SQE128) of the serving thread holds `depth` entries per queue it
 * serves; each entry is a pinned header + payload buffer pair registered
 * with FUSE_IO_URING_CMD_REGISTER.  The kernel completes an entry's command
 * with a request in its buffers; we answer in the same buffers and resubmit
 * COMMIT_AND_FETCH, all answers of one wake-up in one io_uring_enter (which
 * also waits, GIL released, for the next requests).
 */
#define _GNU_SOURCE
#include "fuse.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#define URING_UD_WAKE ((uint64_t)-1)   /* user_data of the eventfd read */
void fring_free(struct fring *g)
{
    if (g->r.fd >= 0)
        sr_kring_teardown(&g->r, 1);
    if (g->evfd >= 0)
        close(g->evfd);
    if (g->hdr_map)
        munmap(g->hdr_map, g->hdr_len);
    if (g->pay_map)
        munmap(g->pay_map, g->pay_len);
    pthread_mutex_destroy(&g->mtx);
    free(g->ents);
    free(g->ready);
    free(g);
}

/* GIL held.  The buffers stay mapped until the connection's fd is closed:
 * after the ring fd is closed the kernel cancels its commands
 * asynchronously, and nothing may ever be mapped at an address the
 * connection could still copy a request to. */
void fring_unref(struct fring *g)
{
    if (--g->refs != 0)
        return;
    FuseConn *c = g->conn;
    g->next = c->dead;
    c->dead = g;
    if (c->fd < 0)
        fuse_conn_free_dead(c);
}

static void *map_anon(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* A forked child (subprocess without vfork) must not share these pages
     * copy-on-write while the kernel writes requests into them. */
    madvise(p, len, MADV_DONTFORK);
    return p;
}

static int fring_setup(FuseConn *c, struct fring *g, const uint16_t *qids, uint32_t nq,
                       uint32_t depth)
{
    g->r.fd = -1;
    g->evfd = -1;
    pthread_mutex_init(&g->mtx, NULL);
    g->nent = nq * depth;
    g->payload_size = c->payload_size;
    g->ents = calloc(g->nent, sizeof(*g->ents));
    g->ready = calloc(g->nent, sizeof(*g->ready));
    if (!g->ents || !g->ready)
        return -ENOMEM;
    /* One page per header (as libfuse): the kernel's 288 bytes, aligned. */
    g->hdr_len = (size_t)g->nent * 4096;
    g->pay_len = (size_t)g->nent * g->payload_size;
    g->hdr_map = map_anon(g->hdr_len);
    g->pay_map = map_anon(g->pay_len);
    if (!g->hdr_map || !g->pay_map)
        return -ENOMEM;
    for (uint32_t i = 0; i < g->nent; i++) {
        struct fring_ent *e = &g->ents[i];
        e->hdr = (struct fuse_uring_req_header *)((uint8_t *)g->hdr_map + (size_t)i * 4096);
        e->payload = (uint8_t *)g->pay_map + (size_t)i * g->payload_size;
        e->iov[0].iov_base = e->hdr;
        e->iov[0].iov_len = sizeof(struct fuse_uring_req_header);
        e->iov[1].iov_base = e->payload;
        e->iov[1].iov_len = g->payload_size;
        e->qid = qids[i / depth];
        e->state = ENT_KERNEL;
    }
    g->evfd = eventfd(0, EFD_CLOEXEC);
    if (g->evfd < 0)
        return -errno;
    /* SQE128 is required (fuse_uring_cmd_req lives in the big SQE).
     * SINGLE_ISSUER|DEFER_TASKRUN: the kernel copies requests in while we
     * wait in io_uring_enter, with no extra task-work wake-up -- the best
     * setting measured (notes §8).  Older kernels: plain SQE128. */
    uint32_t want[3] = {
        IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_NO_SQARRAY,
        IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SQE128 };
    int rc = -EINVAL;
    for (int i = 0; i < 3; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = want[i];
        rc = sr_kring_setup(&g->r, g->nent + 2, &p);
        if (rc == 0)
            break;
        if (rc != -EINVAL)
            return rc;
    }
    return rc;
}

static struct io_uring_sqe *ring_sqe(struct fring *g)
{
    uint32_t space = sr_sq_space(&g->r.sq);
    /* Never full: each entry has at most one command in the kernel, plus one
     * eventfd read, and the SQ holds nent + 2. */
    return sr_sq_get(&g->r.sq, &space);
}

static void prep_cmd(FuseConn *c, struct fring *g, uint32_t i, uint32_t cmd_op)
{
    struct fring_ent *e = &g->ents[i];
    struct io_uring_sqe *sqe = ring_sqe(g);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = c->fd;
    sqe->cmd_op = cmd_op;
    sqe->user_data = (uint64_t)i;
    struct fuse_uring_cmd_req *req = (struct fuse_uring_cmd_req *)sqe->cmd;
    req->qid = e->qid;
    if (cmd_op == FUSE_IO_URING_CMD_REGISTER) {
        sqe->addr = (uint64_t)(uintptr_t)e->iov;
        sqe->len = 2;
    } else {
        req->commit_id = e->hdr->ring_ent_in_out.commit_id;
    }
    e->state = ENT_KERNEL;
}

static void prep_wake(struct fring *g)
{
    struct io_uring_sqe *sqe = ring_sqe(g);
    sqe->opcode = IORING_OP_READ;
    sqe->fd = g->evfd;
    sqe->addr = (uint64_t)(uintptr_t)&g->evbuf;
    sqe->len = sizeof(g->evbuf);
    sqe->user_data = URING_UD_WAKE;
}

/* Write the reply of entry `e` (header + payload_sz); the payload is there. */
void fuse_ent_reply(struct fring_ent *e, int rc)
{
    struct fuse_out_header *oh = (struct fuse_out_header *)e->hdr->in_out;
    uint64_t unique = ((struct fuse_in_header *)e->hdr->in_out)->unique;
    oh->len = (uint32_t)sizeof(*oh) + (rc > 0 ? (uint32_t)rc : 0);
    oh->error = rc < 0 ? rc : 0;
    oh->unique = unique;
    /* The kernel reads payload_sz from this memory inside COMMIT_AND_FETCH,
     * after the io_uring_enter that submits it: program order suffices. */
    e->hdr->ring_ent_in_out.payload_sz = rc > 0 ? (uint32_t)rc : 0;
}

/* ---- waiting for the next request: poll first, then sleep -------------------
 *
 * The external system this works around is the scheduler's choice of CPU for
 * a task it wakes (kernel/sched/fair.c, select_idle_sibling).  When our
 * COMMIT_AND_FETCH ends a request, the kernel wakes the process that made it
 * from inside our io_uring_enter, so the waking CPU is busy (we are still
 * running there) and the scheduler looks for an idle CPU in the same cache
 * domain -- first the reader's "recently used" CPU.  With one reader and a
 * serving thread pinned per CPU, the reader then moves to the other CPU,
 * sends its next request to that CPU's queue, is woken from there and moves
 * back: a cross-CPU wake-up of an idle vCPU on every request (measured on a
 * 2-vCPU VM: ~0.5 migrations per read, 4 KiB reads/s down from ~190 k to
 * ~50 k, for the C server as much as for ours).  Once in, that ping-pong
 * sustains itself, because the recently used CPU is always the idle one.
 *
 * Polling for poll_ns before sleeping breaks it: a serving thread that just
 * answered keeps its CPU busy for a while, so the reader's next wake-up
 * finds no idle CPU to move to and stays where it is.  A request that comes
 * in meanwhile is also picked up without a wake-up.  Each poll step yields
 * first: the reader we just woke may be waiting for this very CPU, and
 * sched_yield() lets it run ahead of us (polling without the yield cost 15%
 * of the same-CPU rate, measured).  With DEFER_TASKRUN a request reaches the
 * CQ only when this thread runs its task work, hence io_uring_enter with
 * GETEVENTS and min_complete 0 in the loop rather than a plain CQ load.
 *
 * Returns like sr_kring_enter(): the SQEs submitted by the first call (>= 0),
 * or a negative errno of a later call that the loop must treat as fatal. */
static int fring_wait(FuseConn *c, struct fring *g, uint32_t to_submit, uint32_t cq_head)
{
    if (c->poll_ns <= 0)
        return sr_kring_enter(&g->r, to_submit, 1, IORING_ENTER_GETEVENTS, -1);
    int n = sr_kring_enter(&g->r, to_submit, 0, IORING_ENTER_GETEVENTS, -1);
    if (n < 0 || (uint32_t)n < to_submit || sr_cq_ready(&g->r.cq, cq_head))
        return n;          /* an error, SQEs left to submit, or work already there */
    int64_t until = sr_now_ns() + c->poll_ns;
    for (;;) {
        sched_yield();
        int m = sr_kring_enter(&g->r, 0, 0, IORING_ENTER_GETEVENTS, -1);
        if (m < 0 && m != -EINTR && m != -EAGAIN && m != -EBUSY)
            return m;
        if (sr_cq_ready(&g->r.cq, cq_head)) {
            /* relaxed: a statistic, written only by this thread */
            __atomic_store_n(&g->n_poll_hits, g->n_poll_hits + 1, __ATOMIC_RELAXED);
            return n;
        }
        if (sr_now_ns() >= until)
            break;
    }
    __atomic_store_n(&g->n_poll_timeouts, g->n_poll_timeouts + 1, __ATOMIC_RELAXED);
    int m = sr_kring_enter(&g->r, 0, 1, IORING_ENTER_GETEVENTS, -1);
    if (m < 0 && m != -EINTR && m != -EAGAIN && m != -EBUSY && m != -ETIME)
        return m;
    return n;
}

PyObject *fuse_serve_ring(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"qids", "depth", "cpu"};
    PyObject *v[3] = {0};
    if (sr_parse("serve_ring", args, nargs, kwnames, names, 3, 2, v) < 0)
        return NULL;
    uint32_t depth;
    int cpu;
    if (sr_as_u32(v[1], 8, &depth, "depth") < 0 || sr_as_int(v[2], -1, &cpu, "cpu") < 0)
        return NULL;
    if (!c->initialized || !c->uring || c->fd < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "serve_ring(): io_uring was not negotiated on this connection");
        return NULL;
    }
    if (depth < 1 || depth > 1024) {
        PyErr_SetString(PyExc_ValueError, "depth must be 1..1024");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(v[0], "qids must be a sequence of ints");
    if (!seq)
        return NULL;
    Py_ssize_t nq = PySequence_Fast_GET_SIZE(seq);
    if (nq < 1 || nq > 4096) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "qids must name 1..4096 queues");
        return NULL;
    }
    uint16_t *qids = malloc(sizeof(uint16_t) * (size_t)nq);
    if (!qids) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < nq; i++) {
        long q = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if ((q == -1 && PyErr_Occurred()) || q < 0 || q > 65535) {
            Py_DECREF(seq);
            free(qids);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a qid is out of range");
            return NULL;
        }
        qids[i] = (uint16_t)q;
    }
    Py_DECREF(seq);
    if (cpu >= 0) {
        /* Pin this thread to its queue's CPU: a caller on that CPU is then
         * answered without a cross-CPU wake-up (the lever on a VM). */
        cpu_set_t set;
        CPU_ZERO(&set);
        if (cpu < CPU_SETSIZE)
            CPU_SET(cpu, &set);
        /* Best effort: a possible-but-offline CPU, or one outside our cpuset,
         * refuses (EINVAL).  Its queue then gets few or no requests, and an
         * unpinned thread still serves it correctly. */
        (void)sched_setaffinity(0, sizeof(set), &set);
    }
    struct fring *g = calloc(1, sizeof(*g));
    if (!g) {
        free(qids);
        return PyErr_NoMemory();
    }
    int rc = fring_setup(c, g, qids, (uint32_t)nq, depth);
    free(qids);
    if (rc < 0) {
        fring_free(g);
        return sr_raise_errno(-rc, "FUSE io_uring setup");
    }
    g->refs = 1;
    g->conn = c;
    g->next = c->rings;
    c->rings = g;
    Py_INCREF(c);

    for (uint32_t i = 0; i < g->nent; i++)
        prep_cmd(c, g, i, FUSE_IO_URING_CMD_REGISTER);
    prep_wake(g);

    uint32_t to_submit = 0, cq_head = sr_cq_init_head(&g->r.cq), alive = g->nent;
    int fatal = 0, saw_gone = 0;
    const char *fatal_what = NULL;
    uint64_t ring_reqs = 0, errs = 0;
    PyThreadState *ts = PyEval_SaveThread();
    int have_gil = 0;
    int64_t gil_mark = 0;   /* fuse_gil_take's mark while have_gil */
    for (;;) {
        to_submit += sr_sq_publish(&g->r.sq);
        /* Submit the batch of commits and wait for the next requests (the
         * kernel copies them in during this call with DEFER_TASKRUN). */
        /* No timeout: an armed timer costs an hrtimer start/cancel in every
         * wait; stop() and teardown both complete a CQE (eventfd / ENOTCONN). */
        int n = fring_wait(c, g, to_submit, cq_head);
        __atomic_store_n(&g->n_batches, g->n_batches + 1, __ATOMIC_RELAXED);
        if (n < 0 && n != -EINTR && n != -ETIME && n != -EAGAIN && n != -EBUSY) {
            fatal = -n;
            fatal_what = "io_uring_enter";
            break;
        }
        if (n > 0)
            to_submit -= (uint32_t)n < to_submit ? (uint32_t)n : to_submit;
        uint32_t ready = sr_cq_ready(&g->r.cq, cq_head);
        int stop = 0;
        for (uint32_t k = 0; k < ready; k++) {
            const struct io_uring_cqe *cqe = sr_cq_at(&g->r.cq, cq_head + k);
            uint64_t ud = cqe->user_data;
            int32_t res = cqe->res;
            if (ud == URING_UD_WAKE) {
                /* Async answers are ready (or stop): queue their commits. */
                if (__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE))
                    stop = 1;
                pthread_mutex_lock(&g->mtx);
                uint32_t nr = g->nready;
                for (uint32_t j = 0; j < nr; j++)
                    if (g->ents[g->ready[j]].state == ENT_HELD)
                        prep_cmd(c, g, g->ready[j], FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
                g->nready = 0;
                pthread_mutex_unlock(&g->mtx);
                prep_wake(g);
                continue;
            }
            if (ud >= g->nent)
                continue;
            struct fring_ent *e = &g->ents[ud];
            if (res == -EAGAIN || res == -EINTR) {   /* REGISTER raced INIT: again */
                prep_cmd(c, g, (uint32_t)ud, FUSE_IO_URING_CMD_REGISTER);
                continue;
            }
            if (res < 0) {
                e->state = ENT_DEAD;
                alive--;
                if (res == -ENOTCONN || res == -ECONNABORTED || res == -ENODEV ||
                    res == -ECANCELED) {
                    saw_gone = 1;      /* unmounted / aborted */
                } else if (!fatal) {
                    /* Anything else (EINVAL, EOPNOTSUPP...) leaves the kernel
                     * waiting for a ring that will never be ready: fatal. */
                    fatal = -res;
                    fatal_what = "FUSE io_uring command";
                }
                continue;
            }
            /* A request is in the entry's buffers. */
            if (!have_gil) {
                gil_mark = fuse_gil_take(c, ts);
                have_gil = 1;
            }
            struct req r;
            r.in = (const struct fuse_in_header *)e->hdr->in_out;
            r.opin = (const uint8_t *)e->hdr->op_in;
            /* Copy out everything the handler reads before the reply
             * overwrites the payload: build_args turns names and data into
             * bytes objects first, so `rest` may point into it. */
            r.rest = e->payload;
            r.rest_len = e->hdr->ring_ent_in_out.payload_sz;
            if (r.rest_len > g->payload_size)
                r.rest_len = g->payload_size;
            ring_reqs++;
            int rc = fuse_dispatch(c, &r, e->payload, g->payload_size, g, (uint32_t)ud);
            if (rc == R_DEFERRED) {
                e->state = ENT_HELD;
                continue;
            }
            if (rc == R_NOREPLY)
                rc = 0;
            if (rc < 0)
                errs++;
            fuse_ent_reply(e, rc);
            prep_cmd(c, g, (uint32_t)ud, FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
        }
        /* release: we are done reading these CQEs. */
        cq_head += ready;
        sr_cq_release(&g->r.cq, cq_head);
        if (have_gil) {
            __atomic_store_n(&g->n_reqs, g->n_reqs + ring_reqs, __ATOMIC_RELAXED);
            __atomic_store_n(&g->n_errs, g->n_errs + errs, __ATOMIC_RELAXED);
            ring_reqs = errs = 0;
            ts = fuse_gil_drop(c, gil_mark);
            have_gil = 0;
        }
        if (fatal || stop)
            break;
        if (saw_gone) {
            /* Done once no entry is still with the kernel (HELD ones are
             * answered into nothing: their connection is gone). */
            int in_kernel = 0;
            for (uint32_t i = 0; i < g->nent; i++)
                if (g->ents[i].state == ENT_KERNEL) { in_kernel = 1; break; }
            if (!in_kernel)
                break;
        }
        (void)alive;
    }
    PyEval_RestoreThread(ts);
    /* Unlink from the connection; closing the ring cancels what the kernel
     * still holds (the kernel releases those entries itself). */
    struct fring **pp = &c->rings;
    while (*pp && *pp != g)
        pp = &(*pp)->next;
    if (*pp)
        *pp = g->next;
    c->n_ring += g->n_reqs;
    c->n_err += g->n_errs;
    c->n_batches += g->n_batches;
    c->n_poll_hits += g->n_poll_hits;
    c->n_poll_timeouts += g->n_poll_timeouts;
    g->stopped = 1;
    sr_kring_teardown(&g->r, 1);
    g->r.fd = -1;
    fring_unref(g);
    Py_DECREF(c);
    if (fatal) {
        errno = fatal;
        return PyErr_Format(PyExc_OSError, "%s failed: %s (the mount cannot be served)",
                            fatal_what, strerror(fatal));
    }
    Py_RETURN_NONE;
}
