/*
 * pykring.c -- both ring backends as one Python type family: _core.KernelRing
 * (the kernel io_uring) and _core.UserRing (the client side of a user-space
 * subsystem's shared-memory ring, "the user backend" below), which share the
 * op table, the prep/submit/reap paths and the statistics; plus sr_wait_any,
 * one wait over several subsystem connections (used by the executor).
 *
 * Principles (the Python layer builds on these):
 *   - Python never touches ring memory.  Every prep_* call writes one SQE (or
 *     a batch) here, every reap call reads CQEs here.
 *   - Every op gets a slot in the op table (optable.h) that pins its memory
 *     until its final CQE.  The SQE's user_data is the slot's token.
 *   - Submitting is explicit (submit / submit_and_wait), except that a full SQ
 *     is flushed automatically when that cannot split a link chain.
 *   - Every wait has a timeout, is interruptible by signals (EINTR is retried
 *     after running Python signal handlers), and refuses to wait when nothing
 *     is in flight that could ever complete it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "ring_backend.h"


/* timeout argument: None or math.inf -> -1 (no timeout), a number of
 * seconds -> ns.  inf is "no timeout" for every purpose, in particular a
 * wait that could never be satisfied is refused at once instead of blocking
 * for ever (submit_and_wait). */
static int sr_parse_timeout(PyObject *o, int64_t *ns)
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

/* ------------------------------------------------------------------------ */
/* entering the kernel                                                       */
/* ------------------------------------------------------------------------ */

/* Publish prepared SQEs (shared by every backend).  Returns the number this
 * call made visible. */
uint32_t sr_ring_publish(SR_Ring *r)
{
    if (r->pending_skip) {
        /* A CQE_SKIP_SUCCESS op is the last of this submission: no successor
         * will ever bound its lifetime, so let it post its CQE after all.  Its
         * SQE is not yet visible to the kernel, so it is still ours to edit. */
        struct sr_sq *sq = &r->q.sq;
        struct io_uring_sqe *sqe = (struct io_uring_sqe *)(sq->sqes +
            ((size_t)(r->pending_skip_sqidx & sq->mask) << (6 + sq->sqe_shift)));
        sqe->flags &= ~IOSQE_CQE_SKIP_SUCCESS;
        sr_slot *ps = &r->ops.slots[r->pending_skip - 1];
        if (ps->skip) {
            ps->skip = 0;
            r->ops.skip_live--;
        }
        r->pending_skip = 0;
    }
    /* The kernel ends link chains at the end of each submission. */
    r->chain_open = 0;
    r->chain_head = 0;
    r->last_slot = 0;
    return sr_sq_publish(&r->q.sq);
}

/* Kernel backend: publish, and return the published-but-unconsumed count.
 * The kernel's head is cheap to read (this CPU wrote it in our last enter);
 * a subsystem's is a cache line on another CPU, and nothing on the user path
 * needs more than what the call published (ur_publish). */
static uint32_t kr_publish(SR_Ring *r)
{
    uint32_t fresh = sr_ring_publish(r);
    if (r->k.sqpoll)      /* consumed without an enter: counted here */
        r->st_submitted += fresh;
    return sr_sq_pending(&r->q.sq);
}

/* io_uring_enter with the GIL released.  Returns the number of SQEs
 * submitted (>= 0; also on timeout), or -1 with an exception set.
 *
 * Signals: a wait the kernel cuts short is resumed after running the Python
 * signal handlers (PyErr_CheckSignals, with the GIL; a handler that raises
 * ends the wait with its exception), with what is left of the timeout.  The
 * kernel reports the interruption as -EINTR -- unless the same call also
 * submitted SQEs: then it returns the count submitted and says nothing.  So
 * a wait (GETEVENTS, min_complete > 0) that returns with fewer completions
 * ready than asked, while no other thread consumed any, was interrupted too
 * and is resumed the same way. */
int kr_enter(SR_Ring *r, uint32_t min_complete, uint32_t flags, int64_t ts_ns)
{
    int64_t deadline = ts_ns >= 0 ? sr_now_ns() + ts_ns : -1;
    int waiting = (flags & IORING_ENTER_GETEVENTS) && min_complete;
    int submitted = 0;
    for (;;) {
        uint32_t to_submit = 0;
        if (!r->k.sqpoll)
            to_submit = sr_ring_sq_published(r) - sr_load_acquire(r->q.sq.khead);
        uint32_t head0 = sr_ring_cq_head(r);
        int ret;
        r->in_enter++;
        r->st_enters++;
        Py_BEGIN_ALLOW_THREADS
        ret = sr_kring_enter(&r->q, to_submit, min_complete, flags, ts_ns);
        Py_END_ALLOW_THREADS
        r->in_enter--;
        if (ret >= 0) {
            if (!r->k.sqpoll)
                r->st_submitted += (uint32_t)ret;
            submitted += ret;
            int again = 0;
            /* Without SUBMIT_ALL (kernels before 5.18) the kernel stops at
             * the first SQE it rejects, and then does not wait either: go on
             * with the rest (the rejected one already has its error CQE). */
            if (!r->k.sqpoll && ret > 0 && (uint32_t)ret < to_submit)
                again = 1;
            /* An interrupted wait that also submitted (see above). */
            if (!again && waiting && sr_ring_cq_ready(r) < min_complete &&
                sr_ring_cq_head(r) == head0) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
                again = 1;
            }
            if (!again)
                return submitted;
        } else if (ret == -ETIME) {
            return submitted;
        } else if (ret == -EINTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
        } else if (ret == -EBUSY || ret == -EAGAIN) {
            PyErr_SetString(SR_RingBusyError,
                            "the kernel refused new submissions until completions are "
                            "reaped (completion backlog); reap and retry -- nothing was lost");
            return -1;
        } else if (ret == -EEXIST) {
            PyErr_SetString(PyExc_RuntimeError,
                            "io_uring_enter: EEXIST -- this ring was set up with "
                            "single_issuer and is being used from another thread");
            return -1;
        } else {
            sr_raise_errno(-ret, "io_uring_enter");
            return -1;
        }
        if (deadline >= 0) {
            ts_ns = deadline - sr_now_ns();
            if (ts_ns <= 0) {
                if (!waiting)
                    ts_ns = 0;        /* still submit the rest, without waiting */
                else
                    return submitted; /* the timeout passed: not an error */
            }
        }
    }
}

int kr_flush_cq(SR_Ring *r)
{
    if (sr_load_relaxed(r->q.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
        r->k.st_overflow++;
    return kr_enter(r, 0, IORING_ENTER_GETEVENTS, -1) < 0 ? -1 : 0;
}

/* Kernel backend: submit everything prepared; wait for `wait_nr` CQEs (0:
 * don't wait). */
int kr_submit(SR_Ring *r, uint32_t wait_nr, int64_t ts_ns)
{
    uint32_t pending = kr_publish(r);
    uint32_t flags = wait_nr ? IORING_ENTER_GETEVENTS : 0;
    if (r->k.sqpoll) {
        /* The SQ thread consumes the ring by itself; only wake it if it went
         * to sleep (full fence inside, see ring.h). */
        if (pending && sr_sq_needs_wakeup(&r->q.sq))
            flags |= IORING_ENTER_SQ_WAKEUP;
        if (!flags)
            return (int)pending;
        return kr_enter(r, wait_nr, flags, ts_ns);
    }
    if (!pending && !wait_nr)
        return 0;
    return kr_enter(r, wait_nr, flags, ts_ns);
}

/* Queue slot i for a made-up final completion (reap delivers it): the
 * kernel will never post one.  Idempotent. */
void sr_ring_owe(SR_Ring *r, uint32_t i)
{
    sr_slot *s = &r->ops.slots[i];
    if (s->state != SLOT_LIVE || s->owed)
        return;
    s->owed = 1;
    r->ops.owed_live++;
    /* An op is queued at most once per generation and stays live until the
     * queue entry is consumed, so the queue (2 x max_inflight) cannot fill;
     * compaction is a safety net. */
    if (r->nsynth == 2 * r->ops.nslots) {
        uint32_t w = 0;
        for (uint32_t k = 0; k < r->nsynth; k++) {
            int64_t j = sr_slot_find(&r->ops, r->synth[k]);
            if (j >= 0 && r->ops.slots[j].owed)
                r->synth[w++] = r->synth[k];
        }
        r->nsynth = w;
    }
    r->synth[r->nsynth++] = sr_token(&r->ops, i);
}

/* The SQ filled up inside a link chain, which must reach the kernel in one
 * submission.  Withdraw the part of the chain prepared so far: its SQEs are
 * not published yet (a chain is open only since the last publish), so they
 * are taken back and never run.  Their tokens were handed out, so each op
 * still gets its one final completion: -ECANCELED, made up by reap, as if the
 * kernel had failed the chain before its first op started. */
void sr_ring_withdraw_chain(SR_Ring *r)
{
    struct sr_sq *sq = &r->q.sq;
    uint32_t nxt = r->chain_head, g = r->chain_head_gen;
    if (nxt) {
        sr_slot *h = &r->ops.slots[nxt - 1];
        uint32_t unpublished = sq->sqe_tail - sr_ring_sq_published(r);
        uint32_t back = sq->sqe_tail - r->chain_head_sqidx;
        if (h->state == SLOT_LIVE && h->gen == g && back <= unpublished)
            sq->sqe_tail = r->chain_head_sqidx;   /* the chain's SQEs are ours again */
    }
    while (nxt) {
        sr_slot *n = &r->ops.slots[nxt - 1];
        if (n->state != SLOT_LIVE || n->gen != g)
            break;
        sr_ring_owe(r, nxt - 1);
        g = n->link_next_gen;
        nxt = n->link_next;
    }
    r->chain_open = 0;
    r->chain_head = 0;
    r->last_slot = 0;
    r->pending_skip = 0;
}

/* The SQ is full: make room by submitting, unless that would split a chain. */
int sr_ring_make_room(SR_Ring *r)
{
    if (r->chain_open) {
        sr_ring_withdraw_chain(r);
        PyErr_SetString(SR_RingFullError,
                        "submission queue full in the middle of a link chain; a chain "
                        "must fit in the SQ (use a larger ring or a shorter chain).  The "
                        "ops prepared so far in this chain were withdrawn: they will not "
                        "run, and each completes with -ECANCELED");
        return -1;
    }
    r->st_sq_full_flushes++;
    if (sr_be_submit(r, 0, -1) < 0)
        return -1;
    if (sr_sq_space(&r->q.sq) == 0 && r->k.sqpoll) {
        if (kr_enter(r, 0, IORING_ENTER_SQ_WAIT, -1) < 0)
            return -1;
    }
    if (sr_sq_space(&r->q.sq) == 0) {
        PyErr_SetString(SR_RingFullError,
                        "submission queue full and the kernel did not consume it");
        return -1;
    }
    return 0;
}


/* ------------------------------------------------------------------------ */
/* the user backend: this ring is a client of a user-space subsystem        */
/* ------------------------------------------------------------------------ */
/*
 * The peer is another process reading our SQ and writing our CQ through a
 * shared memfd region (layout and ownership of every word: abi.h).  There is
 * no syscall in the data path.  The interrupt path, both directions, follows
 * docs/design.md invariant 3 (arm, full fence, re-check, only then sleep / wake):
 *
 *   submit:  store-release sq_tail; full fence; if the server set
 *            NEED_WAKEUP, write its doorbell eventfd.
 *   wait:    spin (hybrid/poll); then set ARMED in cq_flags; full fence;
 *            re-check cq_tail; sleep in ppoll() on our eventfd and the attach
 *            socket; clear ARMED.  The server posts CQEs, fences, and signals
 *            our eventfd only if it saw ARMED.
 *
 * The attach socket doubles as the death detector: when the server process
 * dies the kernel closes its end and our end polls readable/HUP.  From then on
 * every op still in flight completes with -ECONNRESET (made up here, since the
 * peer cannot), so nobody waits forever and every op gets its final CQE
 * (invariant 4).
 */

int ur_peer_gone(SR_Ring *r)
{
    struct pollfd p = {.fd = r->u.sock_fd, .events = POLLIN};
    if (r->u.peer_dead)
        return 1;
    if (poll(&p, 1, 0) > 0)
        r->u.peer_dead = SR_PEER_GONE;
    return r->u.peer_dead;
}

/* The subsystem (or someone scribbling on the shared region) broke the ring
 * protocol: fail the connection.  Every op in flight then gets its final
 * completion here (-EPROTO, ur_synth_dead), and shutting the attach socket
 * down makes the server drop us too, so neither side waits on the other. */
void ur_protocol_broken(SR_Ring *r)
{
    if (r->u.peer_dead != SR_PEER_BROKE && r->u.sock_fd >= 0)
        shutdown(r->u.sock_fd, SHUT_RDWR);
    r->u.peer_dead = SR_PEER_BROKE;
}

/* Counters for the server's statistics query, in the cq_head line we own
 * (abi.h: struct sr_cq_head_line).  Relaxed: informational only. */
void ur_publish_stats(SR_Ring *r)
{
    struct sr_cq_head_line *l = &r->u.ureg->cq_head;
    __atomic_store_n(&l->submitted, r->st_submitted, __ATOMIC_RELAXED);
    __atomic_store_n(&l->doorbells, r->u.st_doorbells, __ATOMIC_RELAXED);
    __atomic_store_n(&l->poll_hits, r->u.st_poll_hits, __ATOMIC_RELAXED);
    __atomic_store_n(&l->sleeps, r->u.st_sleeps, __ATOMIC_RELAXED);
    __atomic_store_n(&l->mode, (uint32_t)r->u.wait_mode + 1, __ATOMIC_RELAXED);
}

uint32_t ur_publish(SR_Ring *r)
{
    /* Only entries published by *this* call can need a doorbell: anything
     * published earlier was visible before the server set NEED_WAKEUP, so
     * its re-check after arming sees it (invariant 3). */
    uint32_t fresh = sr_ring_publish(r);
    r->st_submitted += fresh;    /* consumed without a syscall: counted here */
    SR_DEBUG_DELAY("client: sq_tail published, before the fence");
    if (sr_unlikely(!sr_sq_head_sane(&r->q.sq))) {
        /* The server's SQ head ran past what we ever published: it took
         * entries we never wrote, so some of our ops will never run. */
        ur_protocol_broken(r);
        return fresh;
    }
    if (fresh) {
        /* Invariant 3, submit side: the release store of sq_tail (in
         * sr_ring_publish) must be ordered before the load of sq_flags, or we and a
         * server going to sleep could both miss each other.  Full fence. */
        sr_full_fence();
        if (sr_load_relaxed(&r->u.ureg->sq_flags.v) & SR_SQ_NEED_WAKEUP) {
            r->u.st_doorbells++;
            sr_eventfd_signal(r->u.doorbell_fd);
            ur_publish_stats(r);    /* next to a syscall: free */
        }
    }
    return fresh;
}

/* CQEs visible; a server that pushed the tail past our head + entries broke
 * the protocol: treat it as dead (corrupt) rather than read garbage. */
static inline uint32_t ur_cq_ready(SR_Ring *r)
{
    /* This runs without the GIL, while threads holding it reap and advance
     * our head.  So the peer's tail is read FIRST, then our head (private
     * copy, sr_ring_cq_head; never the shared word read back).  The other order
     * let the head go stale while other threads reaped and the server posted
     * past it: tail - stale head exceeded the CQ, and a sane server was
     * failed as a protocol breaker (bug: "ClientStatistics.submitted ends 16
     * below completed under threads").  In this order the check is sound: the
     * server posted that tail only after seeing a shared head >= tail -
     * entries, and the reaper stored our private head before releasing that
     * shared head (sr_ring_cq_release), so the acquire of the tail makes a head at
     * least that new visible to the relaxed load after it. */
    uint32_t tail = sr_load_acquire(r->q.cq.ktail);
    uint32_t head = sr_load_relaxed(&r->cq_head);
    uint32_t n = tail - head;
    /* Other threads reaped past the tail we read: nothing new for us (the
     * caller re-checks). */
    if ((int32_t)n < 0)
        return 0;
    if (sr_unlikely(n > r->q.cq.entries)) {
        r->u.peer_dead = SR_PEER_BROKE;
        return 0;
    }
    return n;
}

/* Wait without the GIL.  Returns 0 (condition, timeout or peer death) or
 * -EINTR. */
int ur_wait_nogil(SR_Ring *r, uint32_t min_complete, int64_t deadline, int mode,
                         int64_t spin_ns, uint64_t *sleeps)
{
    int64_t now = sr_now_ns();
    int64_t spin_until = mode == SR_MODE_POLL ? deadline
                        : mode == SR_MODE_HYBRID ? now + spin_ns : now;
    int64_t next_peer_check = now + 1000000;
    for (;;) {
        if (ur_cq_ready(r) >= min_complete || r->u.peer_dead)
            return 0;
        now = sr_now_ns();
        if (now >= deadline)
            return 0;
        if (now < spin_until) {
            for (int k = 0; k < 64; k++) {
                sr_cpu_relax();
                if (ur_cq_ready(r) >= min_complete)
                    return 0;
            }
            sr_spin_yield();
            if (now >= next_peer_check) {   /* poll mode never sleeps: look for death */
                next_peer_check = now + 1000000;
                if (ur_peer_gone(r))
                    return 0;
            }
            continue;
        }
        /* Arm, fence, re-check (invariant 3, wait side).  We are the only
         * writer of cq_flags. */
        sr_store_release(&r->u.ureg->cq_flags.v, SR_CQ_ARMED);
        SR_DEBUG_DELAY("client: ARMED set, before the fence");
        sr_full_fence();
        if (ur_cq_ready(r) >= min_complete || r->u.peer_dead) {
            if (!r->u.async_armed)
                sr_store_release(&r->u.ureg->cq_flags.v, 0);
            return 0;
        }
        struct pollfd pf[2] = {{.fd = r->u.cq_efd, .events = POLLIN},
                               {.fd = r->u.sock_fd, .events = POLLIN}};
        struct timespec ts, *tsp = NULL;
        if (deadline != INT64_MAX) {
            int64_t left = deadline - now;
            ts.tv_sec = left / 1000000000LL;
            ts.tv_nsec = left % 1000000000LL;
            tsp = &ts;
        }
        (*sleeps)++;
        SR_DEBUG_DELAY("client: re-checked, before ppoll");
        int n = ppoll(pf, 2, tsp, NULL);
        int err = errno;
        if (!r->u.async_armed)
            sr_store_release(&r->u.ureg->cq_flags.v, 0);
        if (n < 0) {
            if (err == EINTR)
                return -EINTR;
            return 0;
        }
        if (pf[0].revents & POLLIN)
            sr_eventfd_drain(r->u.cq_efd);
        if (pf[1].revents)
            r->u.peer_dead = SR_PEER_GONE;
    }
}

int ur_submit(SR_Ring *r, uint32_t wait_nr, int64_t ts_ns)
{
    uint32_t pending = 0;
    if (!r->u.peer_dead)
        pending = ur_publish(r);
    if (!wait_nr)
        return (int)pending;
    int64_t deadline = ts_ns < 0 ? INT64_MAX : sr_now_ns() + ts_ns;
    for (;;) {
        int ret;
        uint64_t sleeps = 0;
        int mode = r->u.wait_mode;
        int64_t spin = r->u.spin_ns;
        r->in_enter++;
        Py_BEGIN_ALLOW_THREADS
        ret = ur_wait_nogil(r, wait_nr, deadline, mode, spin, &sleeps);
        Py_END_ALLOW_THREADS
        r->in_enter--;
        r->u.st_sleeps += sleeps;
        r->st_enters += sleeps;
        if (ret == -EINTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        if (!sleeps)
            r->u.st_poll_hits++;
        /* Published after a sleep (a syscall anyway) and every 64th poll
         * hit: the line is one the server reads while it spins, so we do
         * not add a store to it on every round trip. */
        if (!r->closed && (sleeps || (r->u.st_poll_hits & 63) == 1))
            ur_publish_stats(r);
        return (int)pending;
    }
}

/* ------------------------------------------------------------------------ */
/* preparing SQEs                                                            */
/* ------------------------------------------------------------------------ */

static int sr_check_sqe_flags(uint32_t flags)
{
    if (flags > 0x7f) {
        PyErr_Format(PyExc_ValueError, "unknown SQE flags 0x%x", flags);
        return -1;
    }
    if ((flags & IOSQE_CQE_SKIP_SUCCESS) &&
        !(flags & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK))) {
        PyErr_SetString(PyExc_ValueError,
                        "CQE_SKIP_SUCCESS needs LINK or HARDLINK: the next op's completion "
                        "is what tells subring that a skipped op finished with its buffers");
        return -1;
    }
    return 0;
}

static int64_t sr_ring_alloc(SR_Ring *r, uint8_t opcode)
{
    int64_t i = sr_slot_alloc(&r->ops, opcode);
    if (sr_unlikely(i < 0))
        PyErr_Format(SR_RingFullError,
                     "%u operations in flight (max_inflight); reap completions first",
                     r->ops.nslots);
    return i;
}

/* Next SQE, flushing a full SQ if allowed. */
static inline struct io_uring_sqe *sr_ring_sqe(SR_Ring *r)
{
    uint32_t space = sr_sq_space(&r->q.sq);
    if (sr_unlikely(space == 0)) {
        if (sr_ring_make_room(r) < 0)
            return NULL;
        space = sr_sq_space(&r->q.sq);
    }
    return sr_sq_get(&r->q.sq, &space);
}

/* Slot i is the next SQE in submission order: if the previous op carries
 * LINK/HARDLINK, i is its successor in the kernel's chain.  Every prep path
 * (single and batch) goes through here, so chain bookkeeping cannot be
 * attached to the wrong op. */
static inline void sr_ring_link_in(SR_Ring *r, uint32_t i)
{
    sr_slot *s = &r->ops.slots[i];
    if (r->pending_skip) {
        s->chain = r->pending_skip;
        s->chain_gen = r->pending_skip_gen;
        r->pending_skip = 0;
    }
    if (r->chain_open && r->last_slot) {
        sr_slot *p = &r->ops.slots[r->last_slot - 1];
        if (p->state == SLOT_LIVE && p->gen == r->last_gen) {
            p->link_next = i + 1;
            p->link_next_gen = s->gen;
        }
    }
    r->last_slot = i + 1;
    r->last_gen = s->gen;
}

/* Fill the bookkeeping of slot i for `sqe` and return the token. */
static inline uint64_t sr_ring_bind(SR_Ring *r, struct io_uring_sqe *sqe, uint32_t i,
                               PyObject *udata, uint8_t sqe_flags)
{
    sr_slot *s = &r->ops.slots[i];
    uint64_t tok = sr_token(&r->ops, i);
    sqe->user_data = tok ^ r->ud_key;
    sqe->flags = sqe_flags;
    if (udata && udata != Py_None) {
        s->udata = Py_NewRef(udata);
    } else {
        s->udata = NULL;
        s->int_udata = tok;
    }
    sr_ring_link_in(r, i);
    s->linkflag = (sqe_flags & IOSQE_IO_LINK) ? 1 : (sqe_flags & IOSQE_IO_HARDLINK) ? 2 : 0;
    if (sqe_flags & IOSQE_CQE_SKIP_SUCCESS) {
        s->skip = 1;
        r->ops.skip_live++;
        r->pending_skip = i + 1;
        r->pending_skip_gen = s->gen;
        r->pending_skip_sqidx = r->q.sq.sqe_tail - 1;
    }
    if (sqe_flags & IOSQE_BUFFER_SELECT) {
        /* the kernel picks a buffer of group buf_group: remember the group so
         * the completion can hand that buffer to the application */
        s->bufsel = 1;
        s->bgid = sqe->buf_group;
    }
    int linked = (sqe_flags & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK)) != 0;
    if (linked && !r->chain_open) {
        /* first op of a new chain: remembered so that a chain cut short by a
         * full SQ can be withdrawn as a whole (sr_ring_make_room) */
        r->chain_head = i + 1;
        r->chain_head_gen = s->gen;
        r->chain_head_sqidx = r->q.sq.sqe_tail - 1;
    }
    r->chain_open = linked;
    return tok;
}

/* Common front half of every single-op prep: checks, slot, SQE. */
int ur_refuse_dead(SR_Ring *r)
{
    PyErr_SetString(SR_PeerDiedError, r->u.peer_dead == SR_PEER_BROKE
                    ? "the subsystem broke the ring protocol; the connection was failed"
                    : "the subsystem is gone (process exited or closed the connection); "
                      "reconnect to submit more");
    return -1;
}

static inline struct io_uring_sqe *sr_ring_begin(SR_Ring *r, uint8_t opcode, uint32_t sqe_flags,
                                            int64_t *slot)
{
    if (sr_ring_check(r) < 0 || sr_check_sqe_flags(sqe_flags) < 0)
        return NULL;
    if (sr_be_refuse_work(r, 1) < 0)
        return NULL;
    /* Refuse early when no slot is free (nothing gets submitted then)... */
    if (sr_unlikely(r->ops.nfree == 0)) {
        sr_ring_alloc(r, opcode);   /* fails: raises RingFullError */
        return NULL;
    }
    /* ...then take the SQE, which may submit a full SQ and so release the
     * GIL, and only then the slot: another thread may have taken the last
     * free slot meanwhile, and a slot taken before the GIL was released
     * would sit live without an SQE. */
    struct io_uring_sqe *sqe = sr_ring_sqe(r);
    if (!sqe)
        return NULL;
    *slot = sr_ring_alloc(r, opcode);
    if (*slot < 0) {
        r->q.sq.sqe_tail--;   /* the SQE we just took (no GIL release since) */
        return NULL;
    }
    sqe->opcode = opcode;
    return sqe;
}

/* prep_nop(user_data=None, flags=0) */
PyObject *sr_ring_prep_nop(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"user_data", "flags"};
    PyObject *a[2];
    uint32_t flags;
    int64_t i;
    if (sr_parse("prep_nop", args, nargs, kwnames, names, 2, 0, a) < 0 ||
        sr_as_u32(a[1], 0, &flags, "flags") < 0)
        return NULL;
    struct io_uring_sqe *sqe = sr_ring_begin(r, IORING_OP_NOP, flags, &i);
    if (!sqe)
        return NULL;
    sqe->fd = -1;
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[0], (uint8_t)flags));
}

/* prep_read / prep_write (fd, buf, offset=-1, user_data=None, flags=0, rw_flags=0) */
static PyObject *kr_prep_rw(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, uint8_t opcode)
{
    static const char *const names[] = {"fd", "buf", "offset", "user_data", "flags",
                                        "rw_flags"};
    const char *fname = opcode == IORING_OP_READ ? "prep_read" : "prep_write";
    PyObject *a[6];
    int fd;
    int64_t off, i;
    uint32_t flags, rw_flags;
    if (sr_parse(fname, args, nargs, kwnames, names, 6, 2, a) < 0 ||
        sr_as_int(a[0], 0, &fd, "fd") < 0 || sr_as_i64(a[2], -1, &off, "offset") < 0 ||
        sr_as_u32(a[4], 0, &flags, "flags") < 0 ||
        sr_as_u32(a[5], 0, &rw_flags, "rw_flags") < 0)
        return NULL;
    if (off < -1) {
        PyErr_SetString(PyExc_ValueError, "offset must be >= 0, or -1 for the file position");
        return NULL;
    }
    /* Export the buffer before taking a slot and an SQE, so a bad buffer
     * leaves the ring untouched. */
    Py_buffer view;
    if (PyObject_GetBuffer(a[1], &view,
                           opcode == IORING_OP_READ ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len > UINT32_MAX) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "buffer larger than 4 GiB - 1");
        return NULL;
    }
    struct io_uring_sqe *sqe = sr_ring_begin(r, opcode, flags, &i);
    if (!sqe) {
        PyBuffer_Release(&view);
        return NULL;
    }
    r->ops.views[i] = view;   /* the slot now owns the export */
    r->ops.slots[i].has_view = 1;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)view.buf;
    sqe->len = (uint32_t)view.len;
    sqe->off = (uint64_t)off;
    sqe->rw_flags = rw_flags;
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[3], (uint8_t)flags));
}

PyObject *kr_prep_read(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rw(r, a, n, k, IORING_OP_READ);
}
PyObject *kr_prep_write(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rw(r, a, n, k, IORING_OP_WRITE);
}

/* prep_read_fixed / prep_write_fixed
 *   (fd, buf_index, offset, nbytes, buf_offset=0, user_data=None, flags=0) */
static PyObject *kr_prep_rw_fixed(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames, uint8_t opcode)
{
    static const char *const names[] = {"fd", "buf_index", "offset", "nbytes",
                                        "buf_offset", "user_data", "flags"};
    const char *fname = opcode == IORING_OP_READ_FIXED ? "prep_read_fixed"
                                                       : "prep_write_fixed";
    PyObject *a[7];
    int fd;
    int64_t off, i, boff;
    uint32_t bidx, nbytes, flags;
    if (sr_parse(fname, args, nargs, kwnames, names, 7, 4, a) < 0 ||
        sr_as_int(a[0], 0, &fd, "fd") < 0 || sr_as_u32(a[1], 0, &bidx, "buf_index") < 0 ||
        sr_as_i64(a[2], -1, &off, "offset") < 0 ||
        sr_as_u32(a[3], 0, &nbytes, "nbytes") < 0 ||
        sr_as_i64(a[4], 0, &boff, "buf_offset") < 0 ||
        sr_as_u32(a[6], 0, &flags, "flags") < 0)
        return NULL;
    if (sr_ring_check(r) < 0)
        return NULL;
    if (bidx >= r->k.nregbufs || !r->k.regbufs[bidx].obj) {
        PyErr_Format(PyExc_IndexError, "no registered buffer at index %u", bidx);
        return NULL;
    }
    if (boff < 0 || (uint64_t)boff + nbytes > (uint64_t)r->k.regbufs[bidx].len) {
        PyErr_Format(PyExc_ValueError,
                     "buf_offset %lld + nbytes %u is outside registered buffer %u "
                     "(%zd bytes)", (long long)boff, nbytes, bidx, r->k.regbufs[bidx].len);
        return NULL;
    }
    if (off < -1) {
        PyErr_SetString(PyExc_ValueError, "offset must be >= 0, or -1 for the file position");
        return NULL;
    }
    struct io_uring_sqe *sqe = sr_ring_begin(r, opcode, flags, &i);
    if (!sqe)
        return NULL;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)((char *)r->k.regbufs[bidx].buf + boff);
    sqe->len = nbytes;
    sqe->off = (uint64_t)off;
    sqe->buf_index = (uint16_t)bidx;
    r->ops.slots[i].fixed = 1;
    r->ops.fixed_live++;
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[5], (uint8_t)flags));
}

PyObject *kr_prep_read_fixed(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rw_fixed(r, a, n, k, IORING_OP_READ_FIXED);
}
PyObject *kr_prep_write_fixed(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rw_fixed(r, a, n, k, IORING_OP_WRITE_FIXED);
}

/* prep_sqe(opcode, fd=-1, addr=0, len=0, off=0, op_flags=0, flags=0, ioprio=0,
 *          buf_index=0, file_index=0, addr3=0, user_data=None, keep=None,
 *          cmd=None, multishot=False)
 * The generic builder behind the Python-level prep_* methods.  `keep` is held
 * until the op's final completion: pass the Pins of every address you give. */
PyObject *kr_prep_sqe(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {
        "opcode", "fd", "addr", "len", "off", "op_flags", "flags", "ioprio",
        "buf_index", "file_index", "addr3", "user_data", "keep", "cmd", "multishot"};
    PyObject *a[15];
    uint32_t opcode, len, op_flags, flags, ioprio, buf_index;
    int fd;
    int64_t fi;
    uint64_t addr, off, addr3;
    int64_t i;
    if (sr_parse("prep_sqe", args, nargs, kwnames, names, 15, 1, a) < 0 ||
        sr_as_u32(a[0], 0, &opcode, "opcode") < 0 || sr_as_int(a[1], -1, &fd, "fd") < 0 ||
        sr_as_u64(a[2], 0, &addr, "addr") < 0 || sr_as_u32(a[3], 0, &len, "len") < 0 ||
        sr_as_u64(a[4], 0, &off, "off") < 0 ||
        sr_as_u32(a[5], 0, &op_flags, "op_flags") < 0 ||
        sr_as_u32(a[6], 0, &flags, "flags") < 0 ||
        sr_as_u32(a[7], 0, &ioprio, "ioprio") < 0 ||
        sr_as_u32(a[8], 0, &buf_index, "buf_index") < 0 ||
        sr_as_i64(a[9], 0, &fi, "file_index") < 0 || sr_as_u64(a[10], 0, &addr3, "addr3") < 0)
        return NULL;
    if (opcode > 0xff || ioprio > 0xffff || buf_index > 0xffff || fi < INT32_MIN ||
        fi > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "opcode, ioprio, buf_index or file_index out of range");
        return NULL;
    }
    Py_buffer cmd = {0};
    if (a[13] && a[13] != Py_None) {
        if (PyObject_GetBuffer(a[13], &cmd, PyBUF_SIMPLE) < 0)
            return NULL;
    }
    int multishot = a[14] ? PyObject_IsTrue(a[14]) : 0;
    if (multishot < 0) {
        PyBuffer_Release(&cmd);
        return NULL;
    }
    if (sr_ring_check(r) < 0)
        goto fail;
    size_t cmd_max = r->q.sq.sqe_shift ? 80 : 16;
    if (cmd.obj && (size_t)cmd.len > cmd_max) {
        PyErr_Format(PyExc_ValueError, "cmd is %zd bytes; this ring's SQEs hold %zu "
                     "(use sqe128=True for 80)", cmd.len, cmd_max);
        goto fail;
    }
    if (opcode == IORING_OP_ASYNC_CANCEL || opcode == IORING_OP_TIMEOUT_REMOVE ||
        opcode == IORING_OP_POLL_REMOVE)
        addr ^= r->ud_key;    /* target token -> the user_data the kernel knows */
    struct io_uring_sqe *sqe = sr_ring_begin(r, (uint8_t)opcode, flags, &i);
    if (!sqe)
        goto fail;
    sqe->fd = fd;
    sqe->addr = addr;
    sqe->len = len;
    sqe->off = off;
    sqe->op_flags = op_flags;
    sqe->ioprio = (uint16_t)ioprio;
    sqe->buf_index = (uint16_t)buf_index;
    sqe->file_index = (uint32_t)fi;
    if (cmd.obj)
        memcpy(sqe->cmd, cmd.buf, (size_t)cmd.len);
    else
        sqe->addr3 = addr3;
    sr_slot *s = &r->ops.slots[i];
    if (a[12] && a[12] != Py_None)
        s->keep = Py_NewRef(a[12]);
    if (multishot) {
        s->multishot = 1;
        r->multishot_live++;
    }
    PyBuffer_Release(&cmd);
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[11], (uint8_t)flags));
fail:
    PyBuffer_Release(&cmd);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* batch preparation                                                         */
/* ------------------------------------------------------------------------ */

int sr_ring_batch_room(SR_Ring *r, Py_ssize_t n)
{
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "count must be >= 0");
        return -1;
    }
    if ((uint64_t)n > r->ops.nfree) {
        PyErr_Format(SR_RingFullError,
                     "batch of %zd ops does not fit: %u of %u slots free "
                     "(max_inflight); reap completions first", n, r->ops.nfree,
                     r->ops.nslots);
        return -1;
    }
    return 0;
}

/* A batch submits a full SQ to make room, which releases the GIL; another
 * thread may take op slots meanwhile.  Called after each such submit: if the
 * rest of the batch no longer fits, stop with RingFullError.  The first
 * `done` ops are prepared (and submitted) and complete as usual; the
 * exception's `prepared` attribute says how many. */
static int sr_ring_batch_still_fits(SR_Ring *r, Py_ssize_t done, Py_ssize_t n)
{
    if ((uint64_t)(n - done) <= r->ops.nfree)
        return 0;
    PyObject *msg = PyUnicode_FromFormat(
        "batch of %zd ops stopped after %zd: another thread took the free slots while "
        "this one submitted a full SQ (max_inflight %u); the first %zd were submitted "
        "and complete as usual", n, done, r->ops.nslots, done);
    PyObject *exc = msg ? PyObject_CallOneArg(SR_RingFullError, msg) : NULL;
    Py_XDECREF(msg);
    if (exc) {
        PyObject *k = PyLong_FromSsize_t(done);
        if (k && PyObject_SetAttrString(exc, "prepared", k) == 0)
            PyErr_SetObject(SR_RingFullError, exc);
        Py_XDECREF(k);
        Py_DECREF(exc);
    }
    return -1;
}

/* prep_nops(count, user_data=0, flags=0): NOPs whose user_data are
 * user_data + 0 .. user_data + count-1.  Returns count. */
PyObject *sr_ring_prep_nops(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"count", "user_data", "flags"};
    PyObject *a[3];
    int64_t n;
    uint64_t base;
    uint32_t flags;
    if (sr_parse("prep_nops", args, nargs, kwnames, names, 3, 1, a) < 0 ||
        sr_as_i64(a[0], 0, &n, "count") < 0 || sr_as_u64(a[1], 0, &base, "user_data") < 0 ||
        sr_as_u32(a[2], 0, &flags, "flags") < 0)
        return NULL;
    if (sr_ring_check(r) < 0 || sr_check_sqe_flags(flags) < 0 || sr_ring_batch_room(r, n) < 0)
        return NULL;
    /* Like every single-op prep (sr_ring_begin): a dead subsystem takes no more
     * work; SQEs prepared now would never be published. */
    if (sr_be_refuse_work(r, 0) < 0)
        return NULL;
    if (flags & (IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_LINK | IOSQE_IO_HARDLINK)) {
        PyErr_SetString(PyExc_ValueError, "prep_nops does not take LINK/HARDLINK/SKIP_SUCCESS");
        return NULL;
    }
    if (n == 0)
        return PyLong_FromLong(0);   /* nothing prepared: an open chain stays open */
    struct sr_sq *sq = &r->q.sq;
    uint32_t space = sr_sq_space(sq);
    uint32_t last = 0;
    for (int64_t k = 0; k < n; k++) {
        if (space == 0) {
            if (sr_ring_make_room(r) < 0 || sr_ring_batch_still_fits(r, k, n) < 0) {
                /* the first k are prepared (submitted) and complete as usual */
                return NULL;
            }
            space = sr_sq_space(sq);
        }
        struct io_uring_sqe *sqe = sr_sq_get(sq, &space);
        /* room checked above and after every GIL release */
        int64_t i = sr_slot_alloc(&r->ops, IORING_OP_NOP);
        sr_slot *s = &r->ops.slots[i];
        sqe->opcode = IORING_OP_NOP;
        sqe->fd = -1;
        sqe->flags = (uint8_t)flags;
        sqe->user_data = sr_ring_wire(r, (uint32_t)i);
        s->udata = NULL;
        s->int_udata = base + (uint64_t)k;
        if (sr_unlikely(k == 0 || r->pending_skip || r->chain_open)) {
            sr_ring_link_in(r, (uint32_t)i);   /* joins a chain the previous op left open */
            r->chain_open = 0;
        }
        last = (uint32_t)i;
    }
    /* NOPs of this batch never link (flags checked above): only the first
     * can join an open chain, and only the last is "the previous op" for
     * whatever is prepared next. */
    if (n > 0) {
        r->last_slot = last + 1;
        r->last_gen = r->ops.slots[last].gen;
    }
    r->chain_open = 0;
    return PyLong_FromLongLong(n);
}

/* Read an array of 64-bit integers from a buffer (itemsize 8) or a sequence. */
typedef struct {
    Py_buffer view;
    PyObject *seq;
    Py_ssize_t n;
} sr_i64_array;

static int sr_i64_array_get(PyObject *o, sr_i64_array *arr, const char *what)
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

static int sr_i64_array_at(sr_i64_array *arr, Py_ssize_t k, int64_t *out, const char *what)
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

static void sr_i64_array_release(sr_i64_array *arr)
{
    if (arr->view.obj)
        PyBuffer_Release(&arr->view);
    Py_CLEAR(arr->seq);
}

/* prep_reads / prep_writes (fd, buf, size, offsets, user_data=None, flags=0)
 * Op k transfers buf[k*size:(k+1)*size] at file offset offsets[k].  user_data:
 * None -> k, an int -> user_data + k, or a sequence/array of ints.  One pin of
 * `buf` is shared by all ops of the batch.  Returns the number prepared. */
static PyObject *kr_prep_rws(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames, uint8_t opcode)
{
    static const char *const names[] = {"fd", "buf", "size", "offsets", "user_data",
                                        "flags"};
    const char *fname = opcode == IORING_OP_READ ? "prep_reads" : "prep_writes";
    PyObject *a[6];
    int fd;
    uint32_t size, flags;
    uint64_t ud_base = 0;
    sr_i64_array offs = {0}, uds = {0};
    int have_uds = 0;
    SR_Pin *pin = NULL;
    PyObject *result = NULL;
    if (sr_parse(fname, args, nargs, kwnames, names, 6, 4, a) < 0 ||
        sr_as_int(a[0], 0, &fd, "fd") < 0 || sr_as_u32(a[2], 0, &size, "size") < 0 ||
        sr_as_u32(a[5], 0, &flags, "flags") < 0)
        return NULL;
    if (sr_ring_check(r) < 0 || sr_check_sqe_flags(flags) < 0)
        return NULL;
    if (flags & (IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_LINK | IOSQE_IO_HARDLINK)) {
        PyErr_Format(PyExc_ValueError, "%s does not take LINK/HARDLINK/SKIP_SUCCESS", fname);
        return NULL;
    }
    if (a[4] && a[4] != Py_None) {
        if (PyLong_Check(a[4])) {
            if (sr_as_u64(a[4], 0, &ud_base, "user_data") < 0)
                return NULL;
        } else {
            if (sr_i64_array_get(a[4], &uds, "user_data") < 0)
                return NULL;
            have_uds = 1;
        }
    }
    if (sr_i64_array_get(a[3], &offs, "offsets") < 0)
        goto out;
    Py_ssize_t n = offs.n;
    if (have_uds && uds.n != n) {
        PyErr_SetString(PyExc_ValueError, "user_data and offsets differ in length");
        goto out;
    }
    pin = sr_pin_new(a[1], opcode == IORING_OP_READ);
    if (!pin)
        goto out;
    if ((uint64_t)pin->view.len < (uint64_t)n * size) {
        PyErr_Format(PyExc_ValueError, "buf holds %zd bytes, %zd ops of %u need %llu",
                     pin->view.len, n, size, (unsigned long long)n * size);
        goto out;
    }
    if (sr_ring_batch_room(r, n) < 0)
        goto out;
    if (n == 0) {                    /* nothing prepared: an open chain stays open */
        result = PyLong_FromLong(0);
        goto out;
    }
    /* Validate every offset and user_data before preparing anything (all or
     * nothing: a bad item must not leave the first ones queued). */
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t off, ud;
        if (sr_i64_array_at(&offs, k, &off, "offsets") < 0)
            goto out;
        if (off < -1) {
            PyErr_Format(PyExc_ValueError, "offsets[%zd] = %lld is negative", k,
                         (long long)off);
            goto out;
        }
        if (have_uds && sr_i64_array_at(&uds, k, &ud, "user_data") < 0)
            goto out;
    }
    struct sr_sq *sq = &r->q.sq;
    uint32_t space = sr_sq_space(sq);
    char *base = pin->view.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t off, ud;
        if (space == 0) {
            if (sr_ring_make_room(r) < 0 || sr_ring_batch_still_fits(r, k, n) < 0)
                goto out;     /* the first k are submitted and complete as usual */
            space = sr_sq_space(sq);
        }
        sr_i64_array_at(&offs, k, &off, "offsets");
        if (have_uds) {
            sr_i64_array_at(&uds, k, &ud, "user_data");   /* validated above */
        } else {
            ud = (int64_t)(ud_base + (uint64_t)k);
        }
        struct io_uring_sqe *sqe = sr_sq_get(sq, &space);
        int64_t i = sr_slot_alloc(&r->ops, opcode);
        sr_slot *s = &r->ops.slots[i];
        sqe->opcode = opcode;
        sqe->flags = (uint8_t)flags;
        sqe->fd = fd;
        sqe->addr = (uint64_t)(uintptr_t)(base + (size_t)k * size);
        sqe->len = size;
        sqe->off = (uint64_t)off;
        sqe->user_data = sr_ring_wire(r, (uint32_t)i);
        s->udata = NULL;
        s->int_udata = (uint64_t)ud;
        s->keep = Py_NewRef((PyObject *)pin);
        sr_ring_link_in(r, (uint32_t)i);   /* joins a chain the previous op left open */
        r->chain_open = 0;
    }
    r->chain_open = 0;
    result = PyLong_FromSsize_t(n);
out:
    Py_XDECREF(pin);
    sr_i64_array_release(&offs);
    sr_i64_array_release(&uds);
    return result;
}

PyObject *kr_prep_reads(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rws(r, a, n, k, IORING_OP_READ);
}
PyObject *kr_prep_writes(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rws(r, a, n, k, IORING_OP_WRITE);
}

/* ------------------------------------------------------------------------ */
/* submitting and reaping                                                    */
/* ------------------------------------------------------------------------ */

PyObject *sr_ring_submit_py(SR_Ring *r, PyObject *unused)
{
    if (sr_ring_check(r) < 0)
        return NULL;
    int ret = sr_be_submit(r, 0, -1);
    return ret < 0 ? NULL : PyLong_FromLong(ret);
}

/* Ready CQEs that are not final completions of our live ops (posted into
 * this ring by MSG_RING): each live op gives at most one more completion, so
 * live + these bound what a wait can ever see. */
static uint32_t sr_ring_foreign_ready(SR_Ring *r)
{
    struct sr_cq *cq = &r->q.cq;
    uint32_t head = sr_ring_cq_head(r), n = sr_ring_cq_ready(r), foreign = 0;
    if (n > cq->entries)
        n = cq->entries;
    for (uint32_t k = 0; k < n; k++)
        if (sr_ring_find(r, sr_cq_at(cq, head + k)->user_data) < 0)
            foreign++;
    return foreign;
}

/* Ops that may still post a CQE of their own: every live op, except
 * CQE_SKIP_SUCCESS ops (they post one only if they fail, and then their
 * chain successors post none -- so a chain never posts more than its ops
 * without the flag) and ops owed a made-up completion (the kernel posts
 * none for them).  The SKIP_SUCCESS op still waiting for a successor loses
 * its flag when it is submitted (kr_publish), so it counts. */
static uint64_t sr_ring_may_post(SR_Ring *r)
{
    uint64_t n = (uint64_t)r->ops.live - r->ops.skip_live - r->ops.owed_live;
    if (r->pending_skip) {
        const sr_slot *ps = &r->ops.slots[r->pending_skip - 1];
        if (ps->state == SLOT_LIVE && ps->gen == r->pending_skip_gen && ps->skip)
            n++;
    }
    return n;
}

/* submit_and_wait(wait_nr=1, timeout=None) -> completions ready to reap
 * ("ready" includes made-up completions: reap() returns them without the
 * kernel's help). */
PyObject *sr_ring_submit_and_wait(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    static const char *const names[] = {"wait_nr", "timeout"};
    PyObject *a[2];
    uint32_t wait_nr;
    int64_t ts;
    if (sr_parse("submit_and_wait", args, nargs, kwnames, names, 2, 0, a) < 0 ||
        sr_as_u32(a[0], 1, &wait_nr, "wait_nr") < 0 || sr_parse_timeout(a[1], &ts) < 0)
        return NULL;
    if (sr_ring_check(r) < 0)
        return NULL;
    uint32_t made_up = r->ops.owed_live;
    uint32_t kwait = wait_nr > made_up ? wait_nr - made_up : 0;   /* from the kernel */
    uint32_t ready = sr_ring_cq_ready(r);
    if (kwait > ready && ts < 0 && !r->multishot_live &&
        (uint64_t)kwait > sr_ring_may_post(r) + sr_ring_foreign_ready(r) &&
        !sr_be_needs_flush(r)) {
        PyErr_Format(PyExc_ValueError,
                     "waiting for %u completions with %u ready and %u in flight would "
                     "never return%s; pass a timeout or wait for fewer", wait_nr,
                     ready + made_up, r->ops.live - made_up,
                     r->ops.skip_live ? " (ops with SKIP_SUCCESS complete only if they "
                                        "fail)" : "");
        return NULL;
    }
    if (wait_nr && ready >= kwait && r->q.sq.sqe_tail == sr_ring_sq_published(r) &&
        !r->pending_skip) {
        /* nothing to do: no syscall */
        return PyLong_FromUnsignedLong(ready + made_up);
    }
    if (sr_be_submit(r, kwait, ts) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(sr_ring_cq_ready(r) + r->ops.owed_live);
}

/* A CQE_SKIP_SUCCESS op only posts a CQE when it failed, and then the kernel
 * cancels the rest of its IOSQE_IO_LINK chain *without posting their CQEs*
 * (req_set_fail turns REQ_F_CQE_SKIP into REQ_F_SKIP_LINK_CQES).  Those ops
 * must still get their one final completion (invariant 4): queue them, and
 * reap makes up -ECANCELED for each. */
static void sr_ring_silent_successors(SR_Ring *r, uint32_t i)
{
    sr_slot *s = &r->ops.slots[i];
    uint32_t nxt = s->link_next, g = s->link_next_gen;
    while (nxt) {
        sr_slot *n = &r->ops.slots[nxt - 1];
        if (n->state != SLOT_LIVE || n->gen != g)
            break;
        sr_ring_owe(r, nxt - 1);
        g = n->link_next_gen;
        nxt = n->link_next;
    }
}

/* The final CQE of slot i was consumed. */
void sr_ring_retire(SR_Ring *r, uint32_t i)
{
    sr_slot *s = &r->ops.slots[i];
    if (s->multishot)
        r->multishot_live--;
    if (sr_unlikely(s->skip && s->linkflag == 1))
        sr_ring_silent_successors(r, i);
    sr_slot_release(&r->ops, i);
}

/* Take one CQE apart.  On success the CQE is consumed from the op table's
 * point of view (slot released if final); on failure nothing changed. */
static SR_Completion *sr_ring_take_cqe(SR_Ring *r, const struct io_uring_cqe *cqe)
{
    const uint64_t *big = r->q.cq.cqe_shift ? cqe->big_cqe : NULL;
    int64_t i = sr_ring_find(r, cqe->user_data);
    if (i < 0) {
        /* Not one of our ops: posted by another ring through MSG_RING, or a
         * stale token.  Delivered as-is with the raw user_data. */
        PyObject *ud = PyLong_FromUnsignedLongLong(cqe->user_data);
        if (!ud)
            return NULL;
        r->st_foreign++;
        return sr_completion_new(ud, cqe->res, cqe->flags, 0xff, big);
    }
    sr_slot *s = &r->ops.slots[i];
    int final = !(cqe->flags & IORING_CQE_F_MORE);
    PyObject *ud;
    if (s->udata)
        ud = final ? s->udata : Py_NewRef(s->udata);
    else if (!(ud = PyLong_FromUnsignedLongLong(s->int_udata)))
        return NULL;
    SR_Completion *c = sr_completion_alloc();
    PyObject *res_obj = c ? PyLong_FromLong(cqe->res) : NULL;
    if (!res_obj) {
        if (c) {
            c->user_data = c->res_obj = c->data = c->opname = NULL;
            Py_DECREF(c);
        }
        if (!s->udata || !final)
            Py_DECREF(ud);
        return NULL;
    }
    c->res_obj = res_obj;
    c->user_data = ud;
    c->res = cqe->res;
    c->flags = cqe->flags;
    c->opcode = s->opcode;
    c->has_big = big != NULL;
    c->data = NULL;
    c->opname = NULL;
    if (big) {
        c->big[0] = big[0];
        c->big[1] = big[1];
    }
    c->opname = sr_be_opname(r, s->opcode);
    if (sr_be_cqe_data(r, (uint32_t)i, cqe, c) < 0) {
        c->user_data = NULL;      /* not consumed: give the ref back */
        if (!s->udata || !final)
            Py_DECREF(ud);
        Py_DECREF(c);
        return NULL;
    }
    sr_be_cqe_seen(r, s, cqe->flags);
    if (final) {
        s->udata = NULL;   /* moved into the completion */
        sr_ring_retire(r, (uint32_t)i);
    }
    return c;
}


/* A CQE says the server wrote into op i's result slot (ours until the slot is
 * released): the result bytes or an error text, into c->data.  Lengths come
 * from the peer: bound them.  0, or -1 with an exception set. */
int ur_cqe_data(SR_Ring *r, uint32_t i, const struct io_uring_cqe *cqe, SR_Completion *c)
{
    if ((cqe->flags >> IORING_CQE_BUFFER_SHIFT) != i)
        return 0;
    const uint8_t *p = r->u.result_area + (size_t)i * r->u.slot_size;
    if (cqe->flags & SR_CQE_F_ERRTEXT) {
        uint16_t n;
        memcpy(&n, p, 2);
        if (n > r->u.slot_size - 2)
            n = (uint16_t)(r->u.slot_size - 2);
        c->data = PyUnicode_DecodeUTF8((const char *)p + 2, n, "replace");
    } else if (cqe->res >= 0 && (uint32_t)cqe->res <= r->u.slot_size) {
        c->data = PyBytes_FromStringAndSize((const char *)p, cqe->res);
    }
    return !c->data && PyErr_Occurred() ? -1 : 0;
}

/* After the CQ is drained: is the subsystem gone?  (At most one poll()
 * syscall per millisecond, and only while ops are in flight.) */
int ur_dead_after_drain(SR_Ring *r)
{
    /* A completion that matches no op in flight (st_foreign) is impossible
     * from a subsystem: it posted an SQE we never published (a scribbled
     * tail), or garbage.  Either way the ring can no longer be trusted. */
    if (sr_unlikely(r->st_foreign || r->u.peer_dead == SR_PEER_BROKE))
        ur_protocol_broken(r);
    if (!r->ops.live)
        return 0;
    if (r->u.peer_dead)
        return 1;
    int64_t now = sr_now_ns();
    if (now < r->u.next_peer_check)
        return 0;
    r->u.next_peer_check = now + 1000000;
    return ur_peer_gone(r);
}

/* Make up the final completion of slot k with res -err (the peer will never
 * post it).  Appends to `list` or writes to the arrays. */
int sr_ring_synth_one(SR_Ring *r, uint32_t k, int err, PyObject *list, uint64_t *uo,
                        int32_t *ro, uint32_t *fo, int64_t *got)
{
    sr_slot *s = &r->ops.slots[k];
    if (list) {
        PyObject *ud = s->udata ? Py_NewRef(s->udata)
                                : PyLong_FromUnsignedLongLong(s->int_udata);
        if (!ud)
            return -1;
        SR_Completion *c = sr_completion_new(ud, -err, 0, s->opcode, NULL);
        if (!c)
            return -1;
        c->opname = sr_be_opname(r, s->opcode);
        if (PyList_Append(list, (PyObject *)c) < 0) {
            sr_trash_obj(&r->ops, (PyObject *)c);   /* no finalizer mid-update */
            return -1;
        }
        Py_DECREF(c);
    } else {
        uint64_t ud = s->int_udata;
        if (s->udata) {
            ud = PyLong_Check(s->udata) ? PyLong_AsUnsignedLongLongMask(s->udata)
                                        : sr_token(&r->ops, k);
            PyErr_Clear();
        }
        uo[*got] = ud;
        ro[*got] = -err;
        if (fo)
            fo[*got] = 0;
    }
    (*got)++;
    r->st_completed++;
    sr_ring_retire(r, k);
    return 0;
}

/* The subsystem died (or broke the protocol): every op still in flight gets
 * its final completion here, -ECONNRESET (-EPROTO), since the peer cannot
 * post it any more. */
int ur_synth_dead(SR_Ring *r, PyObject *list, uint64_t *uo, int32_t *ro, uint32_t *fo,
                         int64_t max, int64_t *got)
{
    int err = r->u.peer_dead == SR_PEER_BROKE ? EPROTO : ECONNRESET;
    for (uint32_t k = 0; k < r->ops.nslots && *got < max; k++) {
        if (r->ops.slots[k].state == SLOT_LIVE &&
            sr_ring_synth_one(r, k, err, list, uo, ro, fo, got) < 0)
            return -1;
    }
    return 0;
}

/* Completions the kernel will never post (see sr_ring_silent_successors and
 * sr_ring_withdraw_chain), oldest first, so a chain's ops complete in chain order.
 * An entry whose op is gone (or no longer owed) is skipped: each op gets
 * exactly one final completion. */
static int sr_ring_drain_synth(SR_Ring *r, PyObject *list, uint64_t *uo, int32_t *ro, uint32_t *fo,
                          int64_t max, int64_t *got)
{
    uint32_t k = 0;
    int rc = 0;
    while (k < r->nsynth && *got < max) {
        int64_t j = sr_slot_find(&r->ops, r->synth[k++]);
        if (j < 0 || !r->ops.slots[j].owed)
            continue;
        if (sr_ring_synth_one(r, (uint32_t)j, ECANCELED, list, uo, ro, fo, got) < 0) {
            k--;          /* not delivered: stays queued */
            rc = -1;
            break;
        }
    }
    /* sr_ring_synth_one may have queued more (appended): keep what is left */
    memmove(r->synth, r->synth + k, (size_t)(r->nsynth - k) * sizeof(uint64_t));
    r->nsynth -= k;
    return rc;
}

/* Closing: ops owed a made-up completion are done (the kernel holds nothing
 * of theirs); free them without delivering anything. */
void sr_ring_drop_synth(SR_Ring *r)
{
    while (r->nsynth) {
        int64_t j = sr_slot_find(&r->ops, r->synth[--r->nsynth]);
        if (j >= 0 && r->ops.slots[j].owed)
            sr_ring_retire(r, (uint32_t)j);   /* may queue more: the loop takes them */
    }
}

/* reap(max=None) -> list[Completion]; never blocks.
 *
 * Re-entrancy and threads: nothing in the loop runs Python code (references
 * the op table drops are parked in its trash, released as the very last
 * step), and the only place the GIL is released is kr_flush_cq.  After that,
 * the CQ head is read again: another thread may have reaped meanwhile, and
 * writing back a head from before would hand its CQEs out a second time. */
PyObject *sr_ring_reap(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"max"};
    PyObject *a[1];
    int64_t max;
    if (sr_parse("reap", args, nargs, kwnames, names, 1, 0, a) < 0 ||
        sr_as_i64(a[0] == Py_None ? NULL : a[0], INT64_MAX, &max, "max") < 0)
        return NULL;
    if (sr_ring_check(r) < 0)
        return NULL;
    if (max < 0) {
        PyErr_SetString(PyExc_ValueError, "max must be >= 0");
        return NULL;
    }
    /* Allocated first: a GC-tracked allocation may run the collector, and so
     * finalizers, which may reap this very ring. */
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    struct sr_cq *cq = &r->q.cq;
    uint32_t head = sr_ring_cq_head(r);
    uint32_t ready = sr_be_ready(r, head);
    if (sr_be_flush_before_reap(r, ready)) {
        if (sr_be_flush_cq(r) < 0)
            goto error;
        head = sr_ring_cq_head(r);     /* GIL was released: fresh head */
        ready = sr_be_ready(r, head);
    }
    int64_t got = 0;
    while (got < max) {
        if (ready == 0) {
            /* Drained the CQ: if the kernel parked CQEs on its overflow list,
             * flush them in and keep going (FEAT_NODROP keeps them for us). */
            if (!sr_be_needs_flush(r))
                break;
            if (sr_be_flush_cq(r) < 0)
                goto error;
            head = sr_ring_cq_head(r); /* GIL was released: fresh head */
            ready = sr_be_ready(r, head);
            if (ready == 0)
                break;
        }
        const struct io_uring_cqe *cqe = sr_cq_at(cq, head);
        SR_Completion *c = sr_ring_take_cqe(r, cqe);
        if (!c)
            goto error;
        head++;
        ready--;
        got++;
        r->st_completed++;
        /* Release as we go: a producer (SQPOLL, other CPUs) can reuse slots
         * early.  The store is cheap; it is not a syscall. */
        sr_ring_cq_release(r, head);
        if (PyList_Append(list, (PyObject *)c) < 0) {
            /* The CQE is consumed: do not lose it silently (error), and do
             * not run its user_data's finalizer here (trash). */
            sr_trash_obj(&r->ops, (PyObject *)c);
            goto error;
        }
        Py_DECREF(c);
    }
    if (got < max && ready == 0 && sr_be_dead_after_drain(r) &&
        sr_be_synth_dead(r, list, NULL, NULL, NULL, max, &got) < 0)
        goto error;
    if (r->nsynth && sr_ring_drain_synth(r, list, NULL, NULL, NULL, max, &got) < 0)
        goto error;
    sr_optable_flush(&r->ops);
    return list;
error:
    sr_optable_flush(&r->ops);
    Py_DECREF(list);
    return NULL;
}

/* An integer buffer format ('B' when the exporter gives none). */
static int sr_int_format(const char *f)
{
    if (!f)
        return 1;
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    return f[0] && strchr("bBhHiIlLqQnN", f[0]) && !f[1];
}

/* reap_into(user_data_out, res_out, flags_out=None) -> n
 * Batch reaping into caller-owned arrays: user_data as 64-bit ints (an op
 * whose user_data is not an int reports its token), res as int32, flags as
 * uint32.  Fills at most the shortest array; never blocks. */
PyObject *sr_ring_reap_into(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"user_data_out", "res_out", "flags_out"};
    PyObject *a[3];
    Py_buffer ub = {0}, rb = {0}, fb = {0};
    PyObject *result = NULL;
    if (sr_parse("reap_into", args, nargs, kwnames, names, 3, 2, a) < 0)
        return NULL;
    if (sr_ring_check(r) < 0)
        return NULL;
    const int bf = PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT;
    if (PyObject_GetBuffer(a[0], &ub, bf) < 0)
        return NULL;
    if (PyObject_GetBuffer(a[1], &rb, bf) < 0)
        goto out;
    if (a[2] && a[2] != Py_None && PyObject_GetBuffer(a[2], &fb, bf) < 0)
        goto out;
    if (ub.itemsize != 8 || rb.itemsize != 4 || (fb.obj && fb.itemsize != 4) ||
        !sr_int_format(ub.format) || !sr_int_format(rb.format) || (fb.obj && !sr_int_format(fb.format))) {
        PyErr_SetString(PyExc_TypeError,
                        "reap_into needs user_data_out with 8-byte items (array('Q')), "
                        "res_out with 4-byte items (array('i')) and flags_out with 4-byte "
                        "items (array('I'))");
        goto out;
    }
    Py_ssize_t cap = ub.len / 8;
    if (rb.len / 4 < cap) cap = rb.len / 4;
    if (fb.obj && fb.len / 4 < cap) cap = fb.len / 4;
    uint64_t *uo = ub.buf;
    int32_t *ro = rb.buf;
    uint32_t *fo = fb.obj ? fb.buf : NULL;
    Py_ssize_t got_counted = 0;

    struct sr_cq *cq = &r->q.cq;
    uint32_t head = sr_ring_cq_head(r);
    uint32_t ready = sr_be_ready(r, head);
    if (sr_be_flush_before_reap(r, ready)) {
        if (sr_be_flush_cq(r) < 0)
            goto out;
        head = sr_ring_cq_head(r);     /* GIL was released: fresh head */
        ready = sr_be_ready(r, head);
    }
    Py_ssize_t got = 0;
    while (got < cap) {
        if (ready == 0) {
            if (!sr_be_needs_flush(r))
                break;
            sr_ring_cq_release(r, head);
            r->st_completed += (uint64_t)(got - got_counted);  /* per stretch */
            got_counted = got;
            if (sr_be_flush_cq(r) < 0)
                goto out;
            /* The GIL was released: another thread may have reaped.  Never
             * write back the head from before (duplicate completions). */
            head = sr_ring_cq_head(r);
            ready = sr_be_ready(r, head);
            if (ready == 0)
                break;
        }
        const struct io_uring_cqe *cqe = sr_cq_at(cq, head);
        head++;
        ready--;
        int64_t i = sr_ring_find(r, cqe->user_data);
        uint64_t ud;
        if (sr_likely(i >= 0 && sr_slot_plain(&r->ops.slots[i]) &&
                      !(cqe->flags & IORING_CQE_F_MORE))) {
            /* The common batch case: an int user_data, nothing pinned, no
             * link bookkeeping -- what sr_ring_retire would do comes down to
             * putting the slot back. */
            ud = r->ops.slots[i].int_udata;
            sr_slot_free_plain(&r->ops, (uint32_t)i);
        } else if (sr_likely(i >= 0)) {
            sr_slot *s = &r->ops.slots[i];
            if (s->udata) {
                ud = PyLong_Check(s->udata) ? PyLong_AsUnsignedLongLongMask(s->udata)
                                            : sr_token(&r->ops, (uint32_t)i);
                if (PyErr_Occurred()) {
                    PyErr_Clear();
                    ud = sr_token(&r->ops, (uint32_t)i);
                }
            } else {
                ud = s->int_udata;
            }
            sr_be_cqe_seen(r, s, cqe->flags);
            if (!(cqe->flags & IORING_CQE_F_MORE))
                sr_ring_retire(r, (uint32_t)i);
        } else {
            ud = cqe->user_data;   /* not ours: MSG_RING from another ring */
            r->st_foreign++;
        }
        uo[got] = ud;
        ro[got] = cqe->res;
        if (fo)
            fo[got] = cqe->flags;
        got++;
    }
    sr_ring_cq_release(r, head);
    r->st_completed += (uint64_t)(got - got_counted);
    if (got < cap && ready == 0 && sr_be_dead_after_drain(r)) {
        int64_t g = got;
        if (sr_be_synth_dead(r, NULL, uo, ro, fo, cap, &g) < 0)
            goto out;
        got = (Py_ssize_t)g;
    }
    if (r->nsynth) {
        int64_t g = got;
        sr_ring_drain_synth(r, NULL, uo, ro, fo, cap, &g);
        got = (Py_ssize_t)g;
    }
    result = PyLong_FromSsize_t(got);
out:
    if (ub.obj) PyBuffer_Release(&ub);
    if (rb.obj) PyBuffer_Release(&rb);
    if (fb.obj) PyBuffer_Release(&fb);
    if (!r->closed)
        sr_optable_flush(&r->ops);   /* last: may run finalizers (see sr_ring_reap) */
    return result;
}

/* ------------------------------------------------------------------------ */
/* registration                                                              */
/* ------------------------------------------------------------------------ */

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
static PyObject *kr_register_buffers(SR_Ring *r, PyObject *arg)
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
static PyObject *kr_register_buffers_sparse(SR_Ring *r, PyObject *arg)
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
static PyObject *kr_update_buffers(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs)
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

static PyObject *kr_unregister_buffers(SR_Ring *r, PyObject *unused)
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
static PyObject *kr_register_files(SR_Ring *r, PyObject *arg)
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

static PyObject *kr_register_files_sparse(SR_Ring *r, PyObject *arg)
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
static PyObject *kr_update_files(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs)
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

static PyObject *kr_unregister_files(SR_Ring *r, PyObject *unused)
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
static PyObject *kr_register_eventfd(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
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
static PyObject *kr_enable_eventfd(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
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

static PyObject *kr_get_eventfd(SR_Ring *r, void *c)
{
    if (r->k.own_eventfd > 0)
        return PyLong_FromLong(r->k.own_eventfd);
    Py_RETURN_NONE;
}

static PyObject *kr_unregister_eventfd(SR_Ring *r, PyObject *unused)
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
static PyObject *kr_probe(SR_Ring *r, PyObject *unused)
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
static PyObject *kr_register_raw(SR_Ring *r, PyObject *args)
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

/* ------------------------------------------------------------------------ */
/* provided buffer rings                                                     */
/* ------------------------------------------------------------------------ */

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
    /* release: the entries written by bufring_push are visible before the
     * kernel can see the tail move over them.  The tail overlays the resv
     * field of entry 0, which the kernel never reads as buffer data. */
    sr_store_release((uint16_t *)(b->ring_mem + IO_URING_BUF_RING_TAIL_OFFSET), b->tail);
}

static PyObject *kr_register_buffer_ring(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
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


/* ------------------------------------------------------------------------ */
/* user backend: preparing calls                                             */
/* ------------------------------------------------------------------------ */

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

static int ur_only(SR_Ring *r, const char *what)
{
    if (r->backend != SR_BACKEND_USER) {
        PyErr_Format(PyExc_TypeError, "%s is for subsystem connections", what);
        return -1;
    }
    return 0;
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

/* _set_async(on) -> cq eventfd: while on, the server signals the eventfd
 * after every batch of completions it posts (ARMED stays set), which is what
 * an event loop's add_reader needs.  Costs one eventfd write per batch. */
static PyObject *ur_set_async(SR_Ring *r, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0 || sr_ring_check(r) < 0)
        return NULL;
    r->u.async_armed = on;
    sr_store_release(&r->u.ureg->cq_flags.v, on ? SR_CQ_ARMED : 0);
    sr_full_fence();
    return PyLong_FromLong(r->u.cq_efd);
}

static PyObject *ur_get_sock_fd(SR_Ring *r, PyObject *unused)
{
    if (sr_ring_check(r) < 0)
        return NULL;
    return PyLong_FromLong(r->u.sock_fd);
}

/* _set_opnames(tuple_of_str, kinds=b"") -- kinds[i]: handler kind of op i */
static PyObject *ur_set_opnames(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || !PyTuple_Check(args[0]) ||
        (nargs == 2 && !PyBytes_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "expected a tuple of names (and bytes of kinds)");
        return NULL;
    }
    Py_XSETREF(r->u.opnames, Py_NewRef(args[0]));
    memset(r->u.opkinds, 0, sizeof(r->u.opkinds));
    if (nargs == 2) {
        Py_ssize_t n = PyBytes_GET_SIZE(args[1]);
        memcpy(r->u.opkinds, PyBytes_AS_STRING(args[1]), (size_t)(n < 256 ? n : 256));
    }
    Py_RETURN_NONE;
}

/* _set_pool(count, size): the BufferPool the server accepted (for checks). */
static PyObject *ur_set_pool(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t count, size;
    if (nargs != 2 || sr_as_u64(args[0], 0, &count, "count") < 0 ||
        sr_as_u64(args[1], 0, &size, "size") < 0 || ur_only(r, "_set_pool") < 0)
        return NULL;
    r->u.pool_count = count;
    r->u.pool_size = size;
    Py_RETURN_NONE;
}

static PyObject *ur_get_wait_mode(SR_Ring *r, void *c)
{
    return sr_mode_name(r->u.wait_mode);
}

static int ur_set_wait_mode(SR_Ring *r, PyObject *v, void *c)
{
    if (sr_mode_parse(v, &r->u.wait_mode) < 0)
        return -1;
    if (r->u.ureg && !r->closed && r->fork_gen == sr_fork_generation)
        ur_publish_stats(r);
    return 0;
}

/* _wait_stats() -> (poll_hits, sleeps, doorbells) */
static PyObject *ur_wait_stats(SR_Ring *r, PyObject *unused)
{
    return Py_BuildValue("(KKK)", (unsigned long long)r->u.st_poll_hits,
                         (unsigned long long)r->u.st_sleeps,
                         (unsigned long long)r->u.st_doorbells);
}

static PyObject *ur_get_spin_us(SR_Ring *r, void *c)
{
    return PyFloat_FromDouble(r->u.spin_ns / 1000.0);
}

static int ur_set_spin_us(SR_Ring *r, PyObject *v, void *c)
{
    return sr_spin_us_parse(v, &r->u.spin_ns);
}

static PyObject *ur_get_peer_dead(SR_Ring *r, void *c)
{
    if (r->backend == SR_BACKEND_USER && !r->closed && !r->u.peer_dead)
        ur_peer_gone(r);
    return PyBool_FromLong(r->u.peer_dead != 0);
}

/* Live user rings.  A forked child must not keep the parent's connection
 * fds open: the subsystem would never see the connection close (EOF on the
 * attach socket is how it learns that its client is gone).  The atfork child
 * handler closes them; the ring objects in the child then refuse to work
 * (fork generation) like every other ring. */
static SR_Ring *user_rings;

static void ur_link(SR_Ring *r)
{
    r->u.fork_prev = NULL;
    r->u.fork_next = user_rings;
    if (user_rings)
        user_rings->u.fork_prev = r;
    user_rings = r;
}

static void ur_unlink(SR_Ring *r)
{
    SR_Ring *p = r->u.fork_prev, *n = r->u.fork_next;
    if (p) p->u.fork_next = n; else if (user_rings == r) user_rings = n;
    if (n) n->u.fork_prev = p;
    r->u.fork_prev = r->u.fork_next = NULL;
}

void sr_user_rings_after_fork(void)
{
    for (SR_Ring *r = user_rings; r; r = r->u.fork_next) {
        close(r->u.sock_fd);
        close(r->u.doorbell_fd);
        close(r->u.cq_efd);
        r->u.sock_fd = r->u.doorbell_fd = r->u.cq_efd = -1;
    }
}

/* UserRing(region_fd, doorbell_fd, cq_efd, sock_fd): takes ownership of the
 * four fds (they are closed with the ring, also on failure). */
static int ur_init(SR_Ring *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"region_fd", "doorbell_fd", "cq_efd", "sock_fd", NULL};
    int rfd, dfd, cfd, sfd;
    if (r->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "ring already set up");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiii:UserRing", kwlist, &rfd, &dfd, &cfd,
                                     &sfd))
        return -1;
    const char *why = NULL;
    struct stat st;
    void *base = MAP_FAILED;
    if (fstat(rfd, &st) < 0 || st.st_size < (off_t)sizeof(struct sr_uring_region)) {
        why = "region fd is not a shared-memory region of the right size";
        goto bad;
    }
    int seals = fcntl(rfd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
        why = "region is not sealed against shrinking (a peer could make us SIGBUS)";
        goto bad;
    }
    base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
    if (base == MAP_FAILED) {
        why = "cannot map the region";
        goto bad;
    }
    madvise(base, (size_t)st.st_size, MADV_DONTFORK);
    struct sr_uring_region *g = base;
    uint64_t size = (uint64_t)st.st_size;
    /* The header comes from the server: validate everything we will use. */
    uint32_t sqn = g->sq_entries, cqn = g->cq_entries, ns = g->nslots, ss = g->slot_size;
    if (g->magic != SR_URING_MAGIC || g->version != SR_URING_ABI_VERSION ||
        g->sqe_size != 128 || g->cqe_size != 16 || !sqn || (sqn & (sqn - 1)) ||
        sqn > 32768 || !cqn || (cqn & (cqn - 1)) || cqn > 65536 || !ns || ns > sqn ||
        ns > cqn || ss < 64 || ss > (64u << 20) || g->region_size != size ||
        g->sqes_off + (uint64_t)sqn * 128 > size || g->cqes_off + (uint64_t)cqn * 16 > size ||
        g->send_off + (uint64_t)ns * ss > size || g->result_off + (uint64_t)ns * ss > size ||
        g->sqes_off < sizeof(*g) || g->cqes_off < sizeof(*g) || g->send_off < sizeof(*g) ||
        g->result_off < sizeof(*g)) {
        why = "region header is invalid (version mismatch or corrupt)";
        goto bad;
    }
    memset(&r->q, 0, sizeof(r->q));
    r->q.fd = -1;
    r->q.sq_map = base;
    r->q.sq_map_len = size;
    struct sr_sq *sq = &r->q.sq;
    sq->khead = &g->sq_head.v;
    sq->ktail = &g->sq_tail.v;
    sq->kflags = &g->sq_flags.v;
    sq->sqes = (uint8_t *)base + g->sqes_off;
    sq->mask = sqn - 1;
    sq->entries = sqn;
    sq->sqe_tail = sr_load_relaxed(sq->ktail);
    sq->published = sq->sqe_tail;   /* from here on, never read back */
    sq->head_cache = sr_load_acquire(sq->khead);
    sq->sqe_shift = 1;
    struct sr_cq *cq = &r->q.cq;
    cq->khead = &g->cq_head.v;
    r->cq_head = sr_load_relaxed(cq->khead);   /* read once, at attach */
    cq->ktail = &g->cq_tail.v;
    cq->kflags = &g->cq_flags.v;
    cq->cqes = (uint8_t *)base + g->cqes_off;
    cq->mask = cqn - 1;
    cq->entries = cqn;
    if (sr_optable_init(&r->ops, ns) < 0) {
        munmap(base, (size_t)size);
        goto fail;
    }
    r->synth = PyMem_Calloc((size_t)ns * 2, sizeof(uint64_t));
    if (!r->synth) {
        sr_optable_free(&r->ops);
        munmap(base, (size_t)size);
        PyErr_NoMemory();
        goto fail;
    }
    close(rfd);   /* the mapping keeps the memory */
    r->u.ureg = g;
    r->u.ureg_len = size;
    r->u.send_area = (uint8_t *)base + g->send_off;
    r->u.result_area = (uint8_t *)base + g->result_off;
    r->u.slot_size = ss;
    r->u.doorbell_fd = dfd;
    r->u.cq_efd = cfd;
    r->u.sock_fd = sfd;
    r->backend = SR_BACKEND_USER;
    ur_link(r);
    r->u.wait_mode = SR_MODE_HYBRID;
    r->u.spin_ns = 50000;
    ur_publish_stats(r);
    r->fork_gen = sr_fork_generation;
    r->initialized = 1;
    r->closed = 0;
    return 0;
bad:
    if (base != MAP_FAILED)
        munmap(base, (size_t)st.st_size);
    PyErr_Format(SR_CorruptRingError, "cannot attach: %s", why);
fail:
    close(rfd);
    close(dfd);
    close(cfd);
    close(sfd);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* lifecycle                                                                 */
/* ------------------------------------------------------------------------ */

PyObject *sr_ring_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    SR_Ring *r = (SR_Ring *)type->tp_alloc(type, 0);
    if (!r)
        return NULL;
    r->q.fd = -1;
    r->u.doorbell_fd = r->u.cq_efd = r->u.sock_fd = -1;
    r->closed = 1;
    r->fork_gen = sr_fork_generation;
    return (PyObject *)r;
}

static int kr_init(SR_Ring *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"entries", "cq_entries", "flags", "sq_thread_cpu",
                             "sq_thread_idle", "max_inflight", "try_flags", NULL};
    PyObject *o[7] = {NULL};
    uint32_t entries, cq_entries, flags, idle, max_inflight, try_flags;
    int cpu;
    if (r->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "ring already set up");
        return -1;
    }
    /* Every size is range-checked (no silent truncation of huge ints). */
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOOOOOO:KernelRing", kwlist, &o[0], &o[1],
                                     &o[2], &o[3], &o[4], &o[5], &o[6]) ||
        sr_as_u32(o[0], 128, &entries, "entries") < 0 ||
        sr_as_u32(o[1], 0, &cq_entries, "cq_entries") < 0 ||
        sr_as_u32(o[2], 0, &flags, "flags") < 0 ||
        sr_as_int(o[3], -1, &cpu, "sq_thread_cpu") < 0 ||
        sr_as_u32(o[4], 0, &idle, "sq_thread_idle") < 0 ||
        sr_as_u32(o[5], 0, &max_inflight, "max_inflight") < 0 ||
        sr_as_u32(o[6], 0, &try_flags, "try_flags") < 0)
        return -1;
    if (cq_entries > 65536 || max_inflight > (1u << 20) || cpu < -1) {
        PyErr_SetString(PyExc_ValueError, "cq_entries must be <= 65536, max_inflight <= "
                        "2**20 and sq_thread_cpu >= -1");
        return -1;
    }
    if (entries == 0 || entries > 32768) {
        PyErr_SetString(PyExc_ValueError, "entries must be in [1, 32768]");
        return -1;
    }
    struct io_uring_params p;
    int ret;
    for (;;) {
        memset(&p, 0, sizeof(p));
        p.flags = flags | try_flags;
        if (cq_entries) {
            p.flags |= IORING_SETUP_CQSIZE;
            p.cq_entries = cq_entries;
        }
        if (cpu >= 0) {
            p.flags |= IORING_SETUP_SQ_AFF;
            p.sq_thread_cpu = (uint32_t)cpu;
        }
        p.sq_thread_idle = idle;
        Py_BEGIN_ALLOW_THREADS
        ret = sr_kring_setup(&r->q, entries, &p);
        Py_END_ALLOW_THREADS
        /* Optional flags (e.g. NO_SQARRAY on kernels before 6.6) are dropped
         * one at a time on EINVAL. */
        if (ret == -EINVAL && try_flags) {
            try_flags &= try_flags - 1;
            continue;
        }
        break;
    }
    if (ret < 0) {
        if (ret == -EPERM || ret == -EACCES) {
            /* PermissionError(errno, text): callers can branch on .errno */
            PyObject *exc = PyObject_CallFunction(
                PyExc_PermissionError, "(iN)", -ret, PyUnicode_FromFormat(
                    "io_uring_setup: %s -- io_uring is disabled here (sysctl "
                    "kernel.io_uring_disabled, or a seccomp/container policy)",
                    strerror(-ret)));
            if (exc) {
                PyErr_SetObject(PyExc_PermissionError, exc);
                Py_DECREF(exc);
            }
        }
        else if (ret == -ENOSYS)
            PyErr_SetString(PyExc_OSError, "io_uring_setup: ENOSYS -- kernel without io_uring");
        else if (ret == -ENOMEM)
            PyErr_SetString(PyExc_MemoryError,
                            "io_uring_setup: ENOMEM -- ring memory is limited by "
                            "RLIMIT_MEMLOCK on older kernels; try fewer entries");
        else
            sr_raise_errno(-ret, "io_uring_setup");
        return -1;
    }
    uint32_t nslots = max_inflight ? max_inflight : r->q.cq.entries;
    if (sr_optable_init(&r->ops, nslots) < 0) {
        sr_kring_teardown(&r->q, 1);
        return -1;
    }
    r->synth = PyMem_Calloc((size_t)nslots * 2, sizeof(uint64_t));
    if (!r->synth) {
        sr_optable_free(&r->ops);
        sr_kring_teardown(&r->q, 1);
        PyErr_NoMemory();
        return -1;
    }
    r->k.buffer_rings = PyList_New(0);
    if (!r->k.buffer_rings) {
        sr_optable_free(&r->ops);
        sr_kring_teardown(&r->q, 1);
        return -1;
    }
    r->cq_head = sr_load_relaxed(r->q.cq.khead);   /* 0 for a new ring */
    if (getrandom(&r->ud_key, sizeof(r->ud_key), GRND_NONBLOCK) != sizeof(r->ud_key))
        r->ud_key = (uint64_t)sr_now_ns() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)r;
    r->k.sqpoll = (p.flags & IORING_SETUP_SQPOLL) != 0;
    r->k.defer_taskrun = (p.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
    r->k.taskrun_flag = (p.flags & IORING_SETUP_TASKRUN_FLAG) != 0;
    r->fork_gen = sr_fork_generation;
    r->initialized = 1;
    r->closed = 0;
    return 0;
}

/* Cancel everything in flight and reap until the kernel has posted every
 * final CQE or `timeout_ns` passed.  Returns the number still in flight. */
static uint32_t kr_drain(SR_Ring *r, int64_t timeout_ns)
{
    /* A link chain still open (its last op carries LINK) would take the
     * cancel below in as its next member: the cancel would wait for the
     * chain (a blocked read, say) instead of cancelling it.  Withdraw it:
     * closing cancels it anyway, and unsubmitted ops need not run. */
    if (r->chain_open)
        sr_ring_withdraw_chain(r);
    else if (r->q.sq.sqe_tail != sr_ring_sq_published(r)) {
        /* Belt and braces: the last unpublished SQE must not carry LINK
         * either (it is still ours to edit). */
        struct sr_sq *q = &r->q.sq;
        struct io_uring_sqe *last = (struct io_uring_sqe *)(q->sqes +
            ((size_t)((q->sqe_tail - 1) & q->mask) << (6 + q->sqe_shift)));
        last->flags &= (uint8_t)~(IOSQE_IO_LINK | IOSQE_IO_HARDLINK);
    }
    sr_ring_drop_synth(r);
    if (!r->ops.live)
        return 0;
    int64_t deadline = sr_now_ns() + timeout_ns;
    struct sr_sq *sq = &r->q.sq;
    struct sr_cq *cq = &r->q.cq;
    int cancel_sent = 0;
    int64_t last_cancel = 0;
    /* Ops prepared but not yet submitted: submit them (as they are) so that
     * they, too, end with a CQE; the cancel below catches them. */
    while (r->ops.live) {
        if (!cancel_sent && !r->k.no_sync_cancel) {
            /* Preferred: cancel everything with IORING_REGISTER_SYNC_CANCEL.
             * A cancel *SQE* is ordered like any other: behind a DRAIN op
             * (which waits for the very op to be cancelled) or inside a
             * link chain it would never start.  Submit what is prepared
             * first, so that it too is cancelled. */
            uint32_t pending = kr_publish(r);
            struct io_uring_sync_cancel_reg sc;
            memset(&sc, 0, sizeof(sc));
            sc.fd = -1;
            sc.flags = IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY;
            sc.timeout.tv_sec = 0;       /* try once; the wait below reaps */
            sc.timeout.tv_nsec = 0;
            int ret;
            Py_BEGIN_ALLOW_THREADS
            if (!r->k.sqpoll && pending)
                sr_kring_enter(&r->q, pending, 0, 0, -1);
            else if (r->k.sqpoll && pending && sr_sq_needs_wakeup(sq))
                sr_kring_enter(&r->q, 0, 0, IORING_ENTER_SQ_WAKEUP, -1);
            ret = sr_kring_register(r->q.fd, IORING_REGISTER_SYNC_CANCEL, &sc, 1);
            Py_END_ALLOW_THREADS
            if (ret == -EINVAL || ret == -EOPNOTSUPP || ret == -ENOSYS) {
                r->k.no_sync_cancel = 1;   /* before 5.19: the SQE path below */
            } else {
                cancel_sent = 1;
                last_cancel = sr_now_ns();
            }
        }
        if (!cancel_sent) {
            uint32_t space = sr_sq_space(sq);
            if (space == 0) {
                kr_publish(r);
                sr_kring_enter(&r->q, sr_ring_sq_published(r) - sr_load_acquire(sq->khead),
                               0, 0, -1);
                space = sr_sq_space(sq);
            }
            if (space) {
                struct io_uring_sqe *sqe = sr_sq_get(sq, &space);
                sqe->opcode = IORING_OP_ASYNC_CANCEL;
                sqe->fd = -1;
                sqe->cancel_flags = IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY;
                /* internal: decodes to token 0, never issued (optable.h) */
                sqe->user_data = r->ud_key;
                cancel_sent = 1;
                last_cancel = sr_now_ns();
            }
        }
        int64_t left = deadline - sr_now_ns();
        if (left <= 0)
            break;
        uint32_t pending = kr_publish(r);
        uint32_t flags = IORING_ENTER_GETEVENTS;
        if (r->k.sqpoll && pending && sr_sq_needs_wakeup(sq))
            flags |= IORING_ENTER_SQ_WAKEUP;
        int ret;
        Py_BEGIN_ALLOW_THREADS
        ret = sr_kring_enter(&r->q, r->k.sqpoll ? 0 : pending, 1, flags,
                             left > 50000000 ? 50000000 : left);
        Py_END_ALLOW_THREADS
        (void)ret;
        uint32_t head = sr_ring_cq_head(r);
        uint32_t ready = sr_cq_ready(cq, head);
        for (; ready; ready--, head++) {
            const struct io_uring_cqe *cqe = sr_cq_at(cq, head);
            int64_t i = sr_ring_find(r, cqe->user_data);
            if (i >= 0 && !(cqe->flags & IORING_CQE_F_MORE))
                sr_ring_retire(r, (uint32_t)i);
        }
        sr_ring_cq_release(r, head);
        sr_ring_drop_synth(r);
        /* Ops that were not cancellable at that instant (e.g. just being
         * issued) get another cancel every 100 ms. */
        if (r->ops.live && sr_now_ns() - last_cancel > 100000000)
            cancel_sent = 0;
    }
    return r->ops.live;
}

/* Objects that the kernel may still write to after a failed drain: they are
 * kept alive forever rather than freed under the kernel. */
static PyObject *leaked_pins;

static void kr_leak_live(SR_Ring *r)
{
    if (!leaked_pins)
        leaked_pins = PyList_New(0);
    for (uint32_t k = 0; k < r->ops.nslots; k++) {
        sr_slot *s = &r->ops.slots[k];
        if (s->state != SLOT_LIVE)
            continue;
        /* Keep the export (so the memory cannot be freed or resized) by
         * moving it into a Pin-less holder: a bytes-free capsule would do, but
         * the simplest is to never release it: we forget the Py_buffer. */
        if (s->has_view)
            s->has_view = 0;      /* leak the export on purpose: never released */
        if (s->keep && leaked_pins)
            PyList_Append(leaked_pins, s->keep);
        if (s->udata && leaked_pins)
            PyList_Append(leaked_pins, s->udata);
    }
    for (uint32_t k = 0; k < r->k.nregbufs; k++)
        r->k.regbufs[k].obj = NULL;  /* same for registered buffers */
}

/* User backend, close() first half.  Nothing of ours can be written by the
 * server after this: it only ever writes the shared region (which it keeps
 * mapped on its side) and registered pools (shared memfds).  Closing the
 * socket is how the server learns we are gone. */
void ur_close_io(SR_Ring *r)
{
    if (r->u.ureg && r->fork_gen == sr_fork_generation)
        munmap(r->u.ureg, r->u.ureg_len);   /* (not mapped in a forked child) */
    r->u.ureg = NULL;
    r->q.sq_map = NULL;
    ur_unlink(r);
    if (r->u.doorbell_fd >= 0) close(r->u.doorbell_fd);
    if (r->u.cq_efd >= 0) close(r->u.cq_efd);
    if (r->u.sock_fd >= 0) close(r->u.sock_fd);
    r->u.doorbell_fd = r->u.cq_efd = r->u.sock_fd = -1;
}

/* Kernel backend, close() first half: cancel and drain what is in flight,
 * then unmap and close the ring. */
void kr_close_io(SR_Ring *r, int64_t timeout_ns)
{
    if (r->fork_gen != sr_fork_generation) {
        /* Forked child: the parent owns the in-flight ops and the rings (not
         * even mapped here: MADV_DONTFORK).  Drop our fd and our copies. */
        close(r->q.fd);
        r->q.fd = -1;
        r->q.sq_map = r->q.cq_map = r->q.sqe_map = NULL;
    } else {
        uint32_t left = kr_drain(r, timeout_ns);
        if (left) {
            PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                             "KernelRing closed with %u ops the kernel did not complete "
                             "within the timeout; their buffers are kept alive forever",
                             left);
            kr_leak_live(r);
        }
        sr_kring_teardown(&r->q, 1);
    }
    if (r->k.own_eventfd > 0) {
        close(r->k.own_eventfd);
        r->k.own_eventfd = 0;
    }
}

/* Kernel backend, close() second half (after the op table is freed). */
void kr_release(SR_Ring *r)
{
    kr_release_regbufs(r);
    if (r->k.buffer_rings) {
        kr_bufrings_detach(r);
        Py_CLEAR(r->k.buffer_rings);
    }
}

static void sr_ring_do_close(SR_Ring *r, int64_t timeout_ns)
{
    if (r->closed)
        return;
    r->closed = 1;
    sr_be_close_io(r, timeout_ns);
    /* Park what the slots hold (sr_slot_clear), then release it all at once
     * in sr_optable_free: a finalizer that runs then finds the ring closed,
     * not a table half torn down. */
    for (uint32_t k = 0; k < r->ops.nslots; k++) {
        if (r->ops.slots[k].state == SLOT_LIVE)
            sr_slot_clear(&r->ops, k);
    }
    sr_optable_free(&r->ops);
    PyMem_Free(r->synth);
    r->synth = NULL;
    r->nsynth = 0;
    sr_be_release(r);
}

/* close(timeout=5.0) */
PyObject *sr_ring_close(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1];
    int64_t ts;
    if (sr_parse("close", args, nargs, kwnames, names, 1, 0, a) < 0 ||
        sr_parse_timeout(a[0] ? a[0] : NULL, &ts) < 0)
        return NULL;
    if (!a[0])
        ts = 5000000000LL;
    if (ts < 0)
        ts = INT64_MAX / 4;
    if (r->in_enter) {
        PyErr_SetString(SR_RingBusyError,
                        "another thread is waiting in this ring; wake it (or let it time "
                        "out) before closing");
        return NULL;
    }
    sr_ring_do_close(r, ts);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* The garbage collector sees what in-flight ops hold (user_data, pins): a
 * ring that is only reachable through a cycle via its own ops (user_data =
 * a bound method of the object owning the ring) can then be collected.
 * Collecting it closes it -- cancel, wait for the final completions, then
 * release -- exactly as dropping the last reference does. */
int sr_ring_traverse(SR_Ring *r, visitproc visit, void *arg)
{
    Py_VISIT(r->k.buffer_rings);
    Py_VISIT(r->u.opnames);
    if (!r->closed && r->ops.slots) {
        for (uint32_t k = 0; k < r->ops.nslots; k++) {
            sr_slot *s = &r->ops.slots[k];
            if (s->state != SLOT_LIVE)
                continue;
            Py_VISIT(s->udata);
            Py_VISIT(s->keep);
            if (s->has_view)
                Py_VISIT(r->ops.views[k].obj);
        }
    }
    return 0;
}

int sr_ring_clear(SR_Ring *r)
{
    if (!r->closed && !r->in_enter) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (r->ops.live && r->fork_gen == sr_fork_generation)
            PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                             "unreachable %s with %u ops in flight closed by the "
                             "garbage collector", Py_TYPE(r)->tp_name, r->ops.live);
        sr_ring_do_close(r, 1000000000LL);
        if (PyErr_Occurred())
            PyErr_WriteUnraisable((PyObject *)r);
        PyErr_Restore(et, ev, tb);
    }
    Py_CLEAR(r->u.opnames);
    return 0;
}

void sr_ring_dealloc(SR_Ring *r)
{
    PyObject_GC_UnTrack(r);
    if (r->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)r);
    if (!r->closed) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (r->ops.live && r->fork_gen == sr_fork_generation)
            PyErr_WarnFormat(PyExc_ResourceWarning, 1, "unclosed %s with %u ops in flight",
                             Py_TYPE(r)->tp_name, r->ops.live);
        sr_ring_do_close(r, 1000000000LL);
        if (PyErr_Occurred())
            PyErr_WriteUnraisable((PyObject *)r);
        PyErr_Restore(et, ev, tb);
    }
    Py_CLEAR(r->k.buffer_rings);
    Py_CLEAR(r->u.opnames);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* ------------------------------------------------------------------------ */
/* properties                                                                */
/* ------------------------------------------------------------------------ */

/* _live_user_data() -> list: the user_data of every op still in flight (for
 * adapters that must fail what they were waiting for when they give up). */
PyObject *sr_ring_live_user_data(SR_Ring *r, PyObject *unused)
{
    PyObject *out = PyList_New(0);
    if (!out || r->closed)
        return out;
    for (uint32_t k = 0; k < r->ops.nslots; k++) {
        sr_slot *s = &r->ops.slots[k];
        if (s->state != SLOT_LIVE)
            continue;
        PyObject *ud = s->udata ? Py_NewRef(s->udata)
                                : PyLong_FromUnsignedLongLong(s->int_udata);
        if (!ud || PyList_Append(out, ud) < 0) {
            Py_XDECREF(ud);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(ud);
    }
    return out;
}

PyObject *ur_stats_dict(SR_Ring *r)
{
    return Py_BuildValue("{sKsKsIsKsKsK}",
                         "submitted", (unsigned long long)r->st_submitted,
                         "completed", (unsigned long long)r->st_completed,
                         "inflight", r->ops.live,
                         "sleeps", (unsigned long long)r->u.st_sleeps,
                         "doorbells", (unsigned long long)r->u.st_doorbells,
                         "sq_full_flushes", (unsigned long long)r->st_sq_full_flushes);
}

PyObject *kr_stats_dict(SR_Ring *r)
{
    uint32_t dropped = 0, overflow = 0;
    if (!r->closed && r->fork_gen == sr_fork_generation) {
        dropped = sr_load_relaxed(r->q.sq.kdropped);
        overflow = sr_load_relaxed(r->q.cq.koverflow);
    }
    return Py_BuildValue("{sKsKsIsKsKsKsKsIsI}",
                         "submitted", (unsigned long long)r->st_submitted,
                         "completed", (unsigned long long)r->st_completed,
                         "inflight", r->ops.live,
                         "enter_calls", (unsigned long long)r->st_enters,
                         "overflow_events", (unsigned long long)r->k.st_overflow,
                         "foreign_completions", (unsigned long long)r->st_foreign,
                         "sq_full_flushes", (unsigned long long)r->st_sq_full_flushes,
                         "sq_dropped", dropped, "cq_dropped", overflow);
}

PyObject *sr_ring_stats(SR_Ring *r, PyObject *unused)
{
    return sr_be_stats(r);
}

static PyObject *kr_get_fd(SR_Ring *r, void *c) { return PyLong_FromLong(r->q.fd); }
PyObject *sr_ring_get_closed(SR_Ring *r, void *c)
{
    return PyBool_FromLong(r->closed || r->fork_gen != sr_fork_generation);
}
PyObject *sr_ring_get_sq_entries(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->q.sq.entries); }
PyObject *sr_ring_get_cq_entries(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->q.cq.entries); }
static PyObject *kr_get_setup_flags(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->q.setup_flags); }
static PyObject *kr_get_features(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->q.features); }
PyObject *sr_ring_get_inflight(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->ops.live); }
PyObject *sr_ring_get_max_inflight(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->ops.nslots); }
PyObject *sr_ring_get_cq_ready(SR_Ring *r, void *c)
{
    if (sr_ring_check(r) < 0) return NULL;
    /* made-up completions (owed ops) are ready to reap too */
    return PyLong_FromUnsignedLong(sr_ring_cq_ready(r) + r->ops.owed_live);
}
PyObject *sr_ring_get_sq_space(SR_Ring *r, void *c)
{
    if (sr_ring_check(r) < 0) return NULL;
    return PyLong_FromUnsignedLong(sr_sq_space_now(&r->q.sq));
}
PyObject *sr_ring_get_sq_pending(SR_Ring *r, void *c)
{
    if (sr_ring_check(r) < 0) return NULL;
    return PyLong_FromUnsignedLong(r->q.sq.sqe_tail - sr_load_acquire(r->q.sq.khead));
}
static PyObject *kr_get_registered_buffers(SR_Ring *r, void *c)
{
    return PyLong_FromUnsignedLong(r->k.nregbufs);
}
static PyObject *kr_get_sqe_size(SR_Ring *r, void *c) { return PyLong_FromLong(64 << r->q.sq.sqe_shift); }
static PyObject *kr_get_cqe_size(SR_Ring *r, void *c) { return PyLong_FromLong(16 << r->q.cq.cqe_shift); }

static PyGetSetDef kr_getset[] = {
    {"fd", (getter)kr_get_fd, NULL, "The io_uring file descriptor."},
    {"eventfd", (getter)kr_get_eventfd, NULL, "The eventfd from enable_eventfd(), or None."},
    {"closed", (getter)sr_ring_get_closed, NULL, "True after close() (or in a forked child)."},
    {"sq_entries", (getter)sr_ring_get_sq_entries, NULL, "SQ size granted by the kernel."},
    {"cq_entries", (getter)sr_ring_get_cq_entries, NULL, "CQ size granted by the kernel."},
    {"setup_flags", (getter)kr_get_setup_flags, NULL, "IORING_SETUP_* flags in effect."},
    {"features", (getter)kr_get_features, NULL, "IORING_FEAT_* bits reported by the kernel."},
    {"inflight", (getter)sr_ring_get_inflight, NULL, "Ops prepared and not yet finally completed."},
    {"max_inflight", (getter)sr_ring_get_max_inflight, NULL, "Cap on ops in flight."},
    {"cq_ready", (getter)sr_ring_get_cq_ready, NULL, "Completions ready to reap now."},
    {"sq_space", (getter)sr_ring_get_sq_space, NULL, "Free SQ entries."},
    {"sq_pending", (getter)sr_ring_get_sq_pending, NULL,
     "SQEs prepared (or published) that the kernel has not consumed yet."},
    {"registered_buffers", (getter)kr_get_registered_buffers, NULL,
     "Size of the registered-buffer table (0: none)."},
    {"sqe_size", (getter)kr_get_sqe_size, NULL, "64, or 128 with SQE128."},
    {"cqe_size", (getter)kr_get_cqe_size, NULL, "16, or 32 with CQE32."},
    {NULL}
};


/* Docstrings carry a text signature ("name($self, ...)\n--\n\n") so that
 * inspect.signature() and help() show the real parameters. */
static PyMethodDef kr_methods[] = {
    SR_FAST("prep_nop", sr_ring_prep_nop,
         "prep_nop($self, /, user_data=None, flags=0)\n--\n\n"
         "Prepare a NOP.  Returns the op's token (unique among ops in flight).\n"
         "`flags` are SQE flags (SQE.LINK, ...)."),
    SR_FAST("prep_read", kr_prep_read,
         "prep_read($self, /, fd, buf, offset=-1, user_data=None, flags=0, rw_flags=0)\n--\n\n"
         "Read len(buf) bytes into the writable buffer `buf` (pinned until the op's final\n"
         "completion) at `offset` (-1: the fd's position).  Returns the token."),
    SR_FAST("prep_write", kr_prep_write,
         "prep_write($self, /, fd, buf, offset=-1, user_data=None, flags=0, rw_flags=0)\n--\n\n"
         "Write the bytes of `buf` (pinned until the final completion) at `offset`\n"
         "(-1: the fd's position).  Returns the token."),
    SR_FAST("prep_read_fixed", kr_prep_read_fixed,
         "prep_read_fixed($self, /, fd, buf_index, offset, nbytes, buf_offset=0, "
         "user_data=None, flags=0)\n--\n\n"
         "Read `nbytes` into registered buffer `buf_index` at `buf_offset`.  Returns the token."),
    SR_FAST("prep_write_fixed", kr_prep_write_fixed,
         "prep_write_fixed($self, /, fd, buf_index, offset, nbytes, buf_offset=0, "
         "user_data=None, flags=0)\n--\n\n"
         "Write `nbytes` from registered buffer `buf_index` at `buf_offset`.  Returns the token."),
    SR_FAST("prep_sqe", kr_prep_sqe,
         "prep_sqe($self, /, opcode, fd=-1, addr=0, len=0, off=0, op_flags=0, flags=0, "
         "ioprio=0, buf_index=0, file_index=0, addr3=0, user_data=None, keep=None, cmd=None, "
         "multishot=False)\n--\n\n"
         "Generic SQE.  `keep` is held until the op's final completion: pass the Pin of\n"
         "every address you put in the SQE.  For ASYNC_CANCEL, TIMEOUT_REMOVE and\n"
         "POLL_REMOVE, `addr` is the target op's token.  Returns the token."),
    SR_FAST("prep_nops", sr_ring_prep_nops,
         "prep_nops($self, /, count, user_data=0, flags=0)\n--\n\n"
         "Batch: `count` NOPs with user_data user_data + k.  Returns count.  If another\n"
         "thread takes the free slots while a full SQ is submitted mid-batch, raises\n"
         "RingFullError whose `prepared` says how many were prepared (they complete)."),
    SR_FAST("prep_reads", kr_prep_reads,
         "prep_reads($self, /, fd, buf, size, offsets, user_data=None, flags=0)\n--\n\n"
         "Batch: op k reads buf[k*size:(k+1)*size] from offsets[k]; user_data None -> k,\n"
         "an int -> user_data + k, or a sequence.  Returns the count (RingFullError with\n"
         "`prepared` as for prep_nops)."),
    SR_FAST("prep_writes", kr_prep_writes,
         "prep_writes($self, /, fd, buf, size, offsets, user_data=None, flags=0)\n--\n\n"
         "Batch: op k writes buf[k*size:(k+1)*size] at offsets[k] (as prep_reads)."),
    {"submit", (PyCFunction)sr_ring_submit_py, METH_NOARGS,
     "submit($self, /)\n--\n\nSubmit everything prepared; no waiting.  Returns the SQEs submitted."},
    SR_FAST("submit_and_wait", sr_ring_submit_and_wait,
         "submit_and_wait($self, /, wait_nr=1, timeout=None)\n--\n\n"
         "Submit, then wait until `wait_nr` completions are ready to reap or `timeout`\n"
         "seconds passed (a timeout is not an error).  Returns the number ready.\n"
         "timeout=None or math.inf: no timeout -- then a wait that could never be\n"
         "satisfied raises ValueError at once.  A signal whose handler returns resumes\n"
         "the wait; a handler that raises ends it with its exception."),
    SR_FAST("reap", sr_ring_reap,
         "reap($self, /, max=None)\n--\n\n"
         "Take up to `max` ready completions (list of Completion); never blocks.\n"
         "Completions posted by other rings (MSG_RING) come as foreign completions\n"
         "with their raw user_data."),
    SR_FAST("reap_into", sr_ring_reap_into,
         "reap_into($self, /, user_data_out, res_out, flags_out=None)\n--\n\n"
         "Batch reaping into caller-owned arrays (array('Q'), array('i'), array('I')).\n"
         "Returns the number filled; never blocks."),
    {"register_buffers", (PyCFunction)kr_register_buffers, METH_O,
     "register_buffers($self, buffers, /)\n--\n\n"
     "Register writable buffers as fixed buffers (exported until unregistered)."},
    {"register_buffers_sparse", (PyCFunction)kr_register_buffers_sparse, METH_O,
     "register_buffers_sparse($self, count, /)\n--\n\n"
     "Register an empty fixed-buffer table of `count` entries (fill with update_buffers)."},
    {"update_buffers", (PyCFunction)(void (*)(void))kr_update_buffers, METH_FASTCALL,
     "update_buffers($self, offset, buffers, /)\n--\n\n"
     "Replace fixed buffers from `offset`; None clears an entry.  Returns the count."},
    {"unregister_buffers", (PyCFunction)kr_unregister_buffers, METH_NOARGS,
     "unregister_buffers($self, /)\n--\n\n"
     "Drop the fixed-buffer table (RingBusyError while fixed ops are in flight)."},
    {"register_files", (PyCFunction)kr_register_files, METH_O,
     "register_files($self, fds, /)\n--\n\n"
     "Register fixed files: ints, file objects or None (an empty slot)."},
    {"register_files_sparse", (PyCFunction)kr_register_files_sparse, METH_O,
     "register_files_sparse($self, count, /)\n--\n\nRegister an empty fixed-file table."},
    {"update_files", (PyCFunction)(void (*)(void))kr_update_files, METH_FASTCALL,
     "update_files($self, offset, fds, /)\n--\n\n"
     "Replace fixed files from `offset`; -1 or None clears a slot.  Returns the count."},
    {"unregister_files", (PyCFunction)kr_unregister_files, METH_NOARGS,
     "unregister_files($self, /)\n--\n\nDrop the fixed-file table."},
    SR_FAST("register_eventfd", kr_register_eventfd,
         "register_eventfd($self, /, fd, async_only=False)\n--\n\n"
         "Have the kernel signal eventfd `fd` when it posts completions."),
    SR_FAST("enable_eventfd", kr_enable_eventfd,
         "enable_eventfd($self, /, async_only=False)\n--\n\n"
         "Create, register and own an eventfd (non-blocking, close-on-exec) that becomes\n"
         "readable when completions are posted; returns it.  Closed with the ring."),
    {"unregister_eventfd", (PyCFunction)kr_unregister_eventfd, METH_NOARGS,
     "unregister_eventfd($self, /)\n--\n\nStop signalling the registered eventfd."},
    SR_FAST("register_buffer_ring", kr_register_buffer_ring,
         "register_buffer_ring($self, /, group_id, count, size)\n--\n\n"
         "Register a provided-buffer ring of `count` buffers of `size` bytes as buffer\n"
         "group `group_id`; returns its BufferRing."),
    {"register_raw", (PyCFunction)kr_register_raw, METH_VARARGS,
     "register_raw($self, opcode, arg, nr_args, /)\n--\n\n"
     "io_uring_register(opcode, arg (bytes-like or None), nr_args) -> int."},
    {"_probe", (PyCFunction)kr_probe, METH_NOARGS,
     "_probe($self, /)\n--\n\nSupported opcodes (list of ints)."},
    {"_stats", (PyCFunction)sr_ring_stats, METH_NOARGS,
     "_stats($self, /)\n--\n\nRaw statistics (dict); use statistics()."},
    {"live_user_data", (PyCFunction)sr_ring_live_user_data, METH_NOARGS,
     "live_user_data($self, /)\n--\n\n"
     "The user_data of every op in flight (list), e.g. for an adapter that fails\n"
     "what it waited for when it gives up on the ring."},
    {"_live_user_data", (PyCFunction)sr_ring_live_user_data, METH_NOARGS,
     "_live_user_data($self, /)\n--\n\nOld name of live_user_data()."},
    SR_FAST("close", sr_ring_close,
         "close($self, /, timeout=5.0)\n--\n\n"
         "Cancel and reap in-flight ops (up to `timeout` s), then release the ring."),
    {NULL}
};

PyTypeObject SR_KernelRingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.KernelRing",
    .tp_basicsize = sizeof(SR_Ring),
    .tp_dealloc = (destructor)sr_ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "C core of subring.KernelRing (use that class).",
    .tp_traverse = (traverseproc)sr_ring_traverse,
    .tp_clear = (inquiry)sr_ring_clear,
    .tp_weaklistoffset = offsetof(SR_Ring, weakreflist),
    .tp_methods = kr_methods,
    .tp_getset = kr_getset,
    .tp_init = (initproc)kr_init,
    .tp_new = sr_ring_new,
};

/* ------------------------------------------------------------------------ */
/* UserRing: the same object, client side of a user-space subsystem          */
/* ------------------------------------------------------------------------ */

static PyObject *ur_get_slot_size(SR_Ring *r, void *c)
{
    return PyLong_FromUnsignedLong(r->u.slot_size);
}

static PyGetSetDef ur_getset[] = {
    {"slot_size", (getter)ur_get_slot_size, NULL,
     "Bytes per op for payloads and results (as the server set it up)."},
    {"closed", (getter)sr_ring_get_closed, NULL, "True after close() (or in a forked child)."},
    {"sq_entries", (getter)sr_ring_get_sq_entries, NULL, "SQ size."},
    {"cq_entries", (getter)sr_ring_get_cq_entries, NULL, "CQ size."},
    {"inflight", (getter)sr_ring_get_inflight, NULL, "Ops prepared and not yet finally completed."},
    {"max_inflight", (getter)sr_ring_get_max_inflight, NULL,
     "Cap on ops in flight (= the number of data slots)."},
    {"cq_ready", (getter)sr_ring_get_cq_ready, NULL, "Completions ready to reap now."},
    {"sq_space", (getter)sr_ring_get_sq_space, NULL, "Free SQ entries."},
    {"sq_pending", (getter)sr_ring_get_sq_pending, NULL, "SQEs the subsystem has not taken yet."},
    {"wait_mode", (getter)ur_get_wait_mode, (setter)ur_set_wait_mode,
     "'hybrid' (spin spin_us, then sleep), 'interrupt' (sleep at once) or 'poll' (spin)."},
    {"spin_us", (getter)ur_get_spin_us, (setter)ur_set_spin_us,
     "Hybrid mode: microseconds to spin before sleeping."},
    {"peer_dead", (getter)ur_get_peer_dead, NULL, "True once the subsystem is gone."},
    {NULL}
};

static PyMethodDef ur_methods[] = {
    SR_FAST("prep_nop", sr_ring_prep_nop,
         "prep_nop($self, /, user_data=None, flags=0)\n--\n\n"
         "Prepare a NOP (answered by the subsystem's C core).  Returns the token."),
    SR_FAST("prep_call", ur_prep_call,
         "prep_call($self, /, op, data=None, arg0=0, arg1=0, user_data=None)\n--\n\n"
         "Prepare a call of op index `op`.  `data` (bytes-like) is copied into shared\n"
         "memory before this returns.  Returns the token."),
    SR_FAST("prep_call_pool", ur_prep_call_pool,
         "prep_call_pool($self, /, op, buf_index, offset, length, arg0=0, arg1=0, "
         "user_data=None)\n--\n\n"
         "Prepare a call whose payload is pool buffer `buf_index`[offset:offset+length]\n"
         "(zero-copy, from the registered BufferPool).  Returns the token."),
    SR_FAST("prep_calls", ur_prep_calls,
         "prep_calls($self, /, op, data, size, count=None, user_data=None)\n--\n\n"
         "Batch: op k carries data[k*size:(k+1)*size]; user_data None -> k, an int ->\n"
         "user_data + k.  Returns the count."),
    SR_FAST("prep_records", ur_prep_records,
         "prep_records($self, /, op, data, size, count=None, user_data=None)\n--\n\n"
         "Pack `count` records of `size` bytes into as few ops as the slots allow\n"
         "(vector ops only); each op completes once, res = its number of records.\n"
         "Returns the number of ops."),
    SR_FAST("prep_nops", sr_ring_prep_nops,
         "prep_nops($self, /, count, user_data=0, flags=0)\n--\n\n"
         "Batch: `count` NOPs with user_data user_data + k.  Returns count."),
    {"submit", (PyCFunction)sr_ring_submit_py, METH_NOARGS,
     "submit($self, /)\n--\n\nPublish everything prepared; no waiting.  Returns the count."},
    SR_FAST("submit_and_wait", sr_ring_submit_and_wait,
         "submit_and_wait($self, /, wait_nr=1, timeout=None)\n--\n\n"
         "Publish, then wait until `wait_nr` completions are ready or `timeout` seconds\n"
         "passed (not an error).  Returns the number ready.  timeout=None or math.inf:\n"
         "no timeout -- a wait that could never be satisfied raises ValueError."),
    SR_FAST("reap", sr_ring_reap,
         "reap($self, /, max=None)\n--\n\n"
         "Take up to `max` ready completions (list of Completion); never blocks."),
    SR_FAST("reap_into", sr_ring_reap_into,
         "reap_into($self, /, user_data_out, res_out, flags_out=None)\n--\n\n"
         "Batch reaping into caller-owned arrays (result data dropped).  Returns n."),
    {"_set_pool", (PyCFunction)(void (*)(void))ur_set_pool, METH_FASTCALL, NULL},
    {"_set_opnames", (PyCFunction)(void (*)(void))ur_set_opnames, METH_FASTCALL, NULL},
    {"_wait_stats", (PyCFunction)ur_wait_stats, METH_NOARGS,
     "_wait_stats($self, /)\n--\n\n(poll_hits, sleeps, doorbells) of this client's waits."},
    {"_get_sock_fd", (PyCFunction)ur_get_sock_fd, METH_NOARGS, NULL},
    {"_set_async", (PyCFunction)ur_set_async, METH_O, NULL},
    {"_stats", (PyCFunction)sr_ring_stats, METH_NOARGS, "Raw statistics (dict)."},
    {"_live_user_data", (PyCFunction)sr_ring_live_user_data, METH_NOARGS, NULL},
    SR_FAST("close", sr_ring_close,
         "close($self, /, timeout=None)\n--\n\n"
         "Drop the connection (in-flight ops are abandoned)."),
    {NULL}
};

PyTypeObject SR_UserRingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.UserRing",
    .tp_basicsize = sizeof(SR_Ring),
    .tp_dealloc = (destructor)sr_ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "C core of a subsystem client ring (use subring.connect()).",
    .tp_traverse = (traverseproc)sr_ring_traverse,
    .tp_clear = (inquiry)sr_ring_clear,
    .tp_weaklistoffset = offsetof(SR_Ring, weakreflist),
    .tp_methods = ur_methods,
    .tp_getset = ur_getset,
    .tp_init = (initproc)ur_init,
    .tp_new = sr_ring_new,
};

/* ------------------------------------------------------------------------ */
/* wait_any: one waiter for many subsystem connections                       */
/* ------------------------------------------------------------------------ */

/* wait_any(rings, timeout=None, spin_us=50.0) -> list of indices of rings that
 * have completions ready or whose peer died.  Spins (without the GIL) up to
 * spin_us, then arms every ring's CQ, fences, re-checks and sleeps in one
 * ppoll() over all completion eventfds and attach sockets (invariant 3 for
 * each ring).  Returns [] on timeout.  Used by RingExecutor's completion
 * thread and by callers that drive completions themselves. */
static PyObject *sr_wait_any(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "wait_any(rings, timeout=None, spin_us=50.0)");
        return NULL;
    }
    int64_t ts;
    if (sr_parse_timeout(nargs > 1 ? args[1] : NULL, &ts) < 0)
        return NULL;
    double spin_us = 50.0;
    if (nargs > 2) {
        spin_us = PyFloat_AsDouble(args[2]);
        if (spin_us == -1 && PyErr_Occurred())
            return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "rings must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 1024) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "at most 1024 rings");
        return NULL;
    }
    SR_Ring **rs = PyMem_Calloc((size_t)n + 1, sizeof(SR_Ring *));
    struct pollfd *pf = PyMem_Calloc((size_t)(2 * n) + 1, sizeof(struct pollfd));
    uint8_t *hit = PyMem_Calloc((size_t)n + 1, 1);
    PyObject *out = NULL;
    if (!rs || !pf || !hit) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, k);
        if (!PyObject_TypeCheck(o, &SR_UserRingType)) {
            PyErr_SetString(PyExc_TypeError, "wait_any takes subsystem client rings");
            goto done;
        }
        rs[k] = (SR_Ring *)o;
        if (sr_ring_check(rs[k]) < 0)
            goto done;
    }
    int64_t now = sr_now_ns();
    int64_t deadline = ts < 0 ? INT64_MAX : now + ts;
    int64_t spin_until = now + (int64_t)(spin_us * 1000);
    int any = 0, interrupted = 0;
    for (Py_ssize_t k = 0; k < n; k++)
        rs[k]->in_enter++;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        for (Py_ssize_t k = 0; k < n; k++) {
            if (ur_cq_ready(rs[k]) || rs[k]->u.peer_dead) {
                hit[k] = 1;
                any = 1;
            }
        }
        if (any)
            break;
        now = sr_now_ns();
        if (now >= deadline)
            break;
        if (now < spin_until) {
            for (int j = 0; j < 32; j++)
                sr_cpu_relax();
            sr_spin_yield();
            continue;
        }
        for (Py_ssize_t k = 0; k < n; k++)
            sr_store_release(&rs[k]->u.ureg->cq_flags.v, SR_CQ_ARMED);
        sr_full_fence();
        for (Py_ssize_t k = 0; k < n; k++) {
            if (ur_cq_ready(rs[k]) || rs[k]->u.peer_dead) {
                hit[k] = 1;
                any = 1;
            }
        }
        if (!any) {
            for (Py_ssize_t k = 0; k < n; k++) {
                pf[2 * k] = (struct pollfd){.fd = rs[k]->u.cq_efd, .events = POLLIN};
                pf[2 * k + 1] = (struct pollfd){.fd = rs[k]->u.sock_fd, .events = POLLIN};
            }
            struct timespec t, *tp = NULL;
            if (deadline != INT64_MAX) {
                int64_t left = deadline - now;
                t.tv_sec = left / 1000000000LL;
                t.tv_nsec = left % 1000000000LL;
                tp = &t;
            }
            int m = ppoll(pf, (nfds_t)(2 * n), tp, NULL);
            if (m < 0 && errno == EINTR)
                interrupted = 1;
            for (Py_ssize_t k = 0; m > 0 && k < n; k++) {
                if (pf[2 * k].revents & POLLIN)
                    sr_eventfd_drain(rs[k]->u.cq_efd);
                if (pf[2 * k + 1].revents)
                    rs[k]->u.peer_dead = SR_PEER_GONE;
            }
        }
        for (Py_ssize_t k = 0; k < n; k++)
            if (!rs[k]->u.async_armed)
                sr_store_release(&rs[k]->u.ureg->cq_flags.v, 0);
        if (any || interrupted)
            break;
        /* woken: loop to collect what is ready (or sleep again) */
        spin_until = 0;
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n; k++)
        rs[k]->in_enter--;
    if (interrupted && PyErr_CheckSignals() < 0)
        goto done;
    out = PyList_New(0);
    for (Py_ssize_t k = 0; out && k < n; k++) {
        if (!hit[k])
            continue;
        PyObject *v = PyLong_FromSsize_t(k);
        if (!v || PyList_Append(out, v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(out);
        }
        Py_XDECREF(v);
    }
done:
    PyMem_Free(rs);
    PyMem_Free(pf);
    PyMem_Free(hit);
    Py_DECREF(seq);
    return out;
}

PyMethodDef sr_ring_functions[] = {
    {"wait_any", (PyCFunction)(void (*)(void))sr_wait_any, METH_FASTCALL,
     "wait_any(rings, timeout=None, spin_us=50.0, /)\n--\n\n"
     "The indices of the rings with completions ready or a dead peer."},
    {NULL}
};
