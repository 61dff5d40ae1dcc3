/*
 * user_ring.c -- the user backend: this ring is a client of a user-space
 * subsystem.  Attaching to the shared region, publishing with the doorbell,
 * submit-and-wait, peer death and protocol breakage (with the completions we
 * make up for them), and the _core.UserRing type.  Preparing calls:
 * user_calls.c; the wait itself: user_wait.c.
 *
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
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ring_backend.h"

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
    __atomic_store_n(&l->mode, (uint32_t)r->u.mode + 1, __ATOMIC_RELAXED);
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
         * sr_ring_publish) must be ordered before the load of sq_flags, or we
         * and a server going to sleep could both miss each other.  Full
         * fence: release/acquire never orders a store before a later load. */
        sr_full_fence();
        if (sr_sq_flags(&r->q.sq) & SR_SQ_NEED_WAKEUP) {
            r->u.st_doorbells++;
            sr_eventfd_signal(r->u.doorbell_fd);
            ur_publish_stats(r);    /* next to a syscall: free */
        }
    }
    return fresh;
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
        int mode = r->u.mode;
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

/* Raise PeerDiedError for a ring whose subsystem is gone or broke the
 * protocol (sr_be_refuse_work); returns -1. */
int ur_refuse_dead(SR_Ring *r)
{
    PyErr_SetString(SR_PeerDiedError, r->u.peer_dead == SR_PEER_BROKE
                    ? "the subsystem broke the ring protocol; the connection was failed"
                    : "the subsystem is gone (process exited or closed the connection); "
                      "reconnect to submit more");
    return -1;
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
    sq->sqe_shift = 1;
    sr_sq_init_indices(sq);         /* private copies: never read back (ring.h) */
    struct sr_cq *cq = &r->q.cq;
    cq->khead = &g->cq_head.v;
    r->cq_head = sr_cq_init_head(cq);   /* read once, at attach */
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
    r->u.mode = SR_MODE_HYBRID;
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

/* _set_async(on) -> cq eventfd: while on, the server signals the eventfd
 * after every batch of completions it posts (ARMED stays set), which is what
 * an event loop's add_reader needs.  Costs one eventfd write per batch. */
static PyObject *ur_set_async(SR_Ring *r, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0 || sr_ring_check(r) < 0)
        return NULL;
    r->u.async_armed = on;
    sr_cq_set_flags(&r->q.cq, on ? SR_CQ_ARMED : 0);
    /* Full fence: the caller next watches cq_efd and then looks at the CQ;
     * ARMED must be visible to the server before that look reads the tail
     * (a store-then-load order only a full fence gives), else a completion
     * posted in between is neither seen nor signalled (invariant 3). */
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

static PyObject *ur_get_mode(SR_Ring *r, void *c)
{
    return sr_mode_name(r->u.mode);
}

static int ur_set_mode(SR_Ring *r, PyObject *v, void *c)
{
    if (sr_mode_parse(v, &r->u.mode) < 0)
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
    {"mode", (getter)ur_get_mode, (setter)ur_set_mode,
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
