/*
 * ring_backend.h -- the ring object and its backend seam.
 *
 * One Python type family, two (soon three) peers.  _core.KernelRing talks to
 * the kernel's io_uring; _core.UserRing is the client side of a user-space
 * subsystem's shared-memory ring.  Both are an SR_Ring: the same op table, the
 * same SQ/CQ index code (ring.h) and the same prep / submit / reap paths.
 * What differs per peer is small and is named here, once:
 *
 *   SR_Ring           the common part: queue pair, op table, link-chain and
 *                     synthesised-completion bookkeeping, common statistics
 *   r->k (sr_kr_state)  kernel-backend-only state (kernel_ring.c and friends)
 *   r->u (sr_ur_state)  user-backend-only state (user_ring.c and friends)
 *   sr_be_*()         the backend operations the shared code calls
 *
 * Files (every shared file includes this header; backends never include each
 * other):
 *   ring_object.c     lifecycle, properties, submit / submit_and_wait
 *   ring_prep.c       building SQEs, single and batch (+ ring_prep.h: the
 *                     inline front half every prep path shares)
 *   ring_reap.c       taking CQEs apart, made-up completions, reap / reap_into
 *   kernel_ring.c     kr_: enter, flush, submit, drain, setup, the KernelRing type
 *   kernel_register.c kr_: io_uring_register (buffers, files, eventfd, probe)
 *   kernel_bufring.c  kr_/bufring_: provided buffer rings (_core.BufferRing)
 *   user_ring.c       ur_: attach, publish + doorbell, peer death, UserRing type
 *   user_calls.c      ur_: prep_call / prep_call_pool / prep_calls / prep_records
 *   user_wait.c       ur_: the one arm -> fence -> re-check -> sleep helper;
 *                     _core.wait_any
 *
 * Dispatch: static inline functions that test r->backend, not a const ops
 * struct of function pointers.  Both were built and measured, alternating
 * A/B/A/B on the same (loaded, 2-core, shared) machine, 3 runs each of
 * bench/kernel.py --quick and bench/ipc.py --quick; medians of the same-run
 * ratios, inline test vs ops struct (higher is better):
 *     kernel  nop1_vs_c 0.38 vs 0.39, nop256_vs_c 0.80 vs 0.86,
 *             read_qd32_vs_c 0.84 vs 0.70, read_qd32_batch_vs_c 0.90 vs 0.72
 *     ipc     msg64_vs_pipe 7.2 vs 6.7, msg64_batch_vs_best 45 vs 44,
 *             rtt64_vs_best 2.77 vs 2.94, rtt64_interrupt_vs_pipe 3.19 vs 3.29
 * Run-to-run spread is +-15% or more here; the ranges of the two overlap on
 * every row but one, read_qd32_vs_c (per-op reads, the reap path with one
 * CQE per op), where the inline test won (0.75..0.96 vs 0.69..0.73).  The
 * code says the same: the per-CQE checks (sr_be_ready,
 * sr_be_cqe_seen) and the per-reap ones (sr_be_needs_flush,
 * sr_be_flush_before_reap) stay inline in the reap loop, where an indirect
 * call could not be inlined and costs a call per CQE; the test on a field
 * every ring has anyway needs no table to keep in step with the enum.  A
 * third backend adds its enum value, its state sub-struct and a branch in
 * each sr_be_* function below -- all in this one place.
 */
#ifndef SUBRING_RING_BACKEND_H
#define SUBRING_RING_BACKEND_H

#include <sys/uio.h>
#include "core.h"
#include "kernel.h"
#include "optable.h"

typedef enum {
    SR_BACKEND_KERNEL = 0,   /* _core.KernelRing: the kernel's io_uring */
    SR_BACKEND_USER = 1,     /* _core.UserRing: client of a user-space subsystem */
    /* Slot for the third peer: the kernel calling *us* through FUSE over
     * io_uring (fuse_uring.c, docs/fuse.md).  There the roles flip -- the kernel
     * is the client and we answer its requests -- so it will bring its own
     * state sub-struct (like k / u below) and its own case in every sr_be_*
     * function.  Not a valid value yet: no SR_Ring is created with it. */
    SR_BACKEND_FUSE = 2,
} sr_backend;

/* The subsystem at the other end of a UserRing (r->u.peer_dead). */
typedef enum {
    SR_PEER_ALIVE = 0,  /* as far as we know */
    SR_PEER_GONE = 1,   /* exited or closed the connection (attach socket HUP/readable):
                         * ops in flight complete with -ECONNRESET */
    SR_PEER_BROKE = 2,  /* broke the ring protocol (impossible index or completion);
                         * we shut the connection down; ops complete with -EPROTO */
} sr_peer_state;

/* Kernel-backend-only state. */
struct sr_kr_state {
    int sqpoll;              /* IORING_SETUP_SQPOLL: a kernel thread consumes the SQ */
    int defer_taskrun;       /* IORING_SETUP_DEFER_TASKRUN: completions need an enter */
    int taskrun_flag;
    int no_sync_cancel;      /* the kernel lacks IORING_REGISTER_SYNC_CANCEL */
    /* registered buffers: the ring holds their exports until unregistered */
    Py_buffer *regbufs;
    uint32_t nregbufs;
    int files_registered;
    int eventfd_registered;
    int own_eventfd;         /* eventfd created by enable_eventfd(), closed with the ring */
    PyObject *buffer_rings;  /* list of BufferRing created on this ring */
    uint64_t st_overflow;    /* CQ overflow flushes (GIL held) */
};

/* User-backend-only state (a client of a user-space subsystem). */
struct sr_ur_state {
    struct sr_uring_region *ureg;
    size_t ureg_len;
    int doorbell_fd;         /* the server's eventfd: we signal it if it sleeps */
    int cq_efd;              /* ours: the server signals it if we are ARMED */
    int sock_fd;             /* attach socket: readable/HUP = server gone */
    /* sr_peer_state.  Written without the GIL by a waiter (user_wait.c:
     * ppoll saw the attach socket HUP/readable or ur_peer_gone polled it ->
     * GONE; ur_cq_ready saw an impossible CQ tail -> BROKE) and with the GIL
     * by the reap and prep paths (ur_peer_gone, sr_be_ready,
     * ur_protocol_broken); read by all of them.  A plain int: every writer
     * only moves it away from ALIVE, and a reader that sees a stale value
     * just looks again on its next pass (the waiter re-checks every loop,
     * reap re-polls the socket once a millisecond).  GONE and BROKE may
     * overwrite each other in a race (a waiter's HUP against a reaper's
     * BROKE); that only changes the errno the made-up completions carry
     * (ECONNRESET / EPROTO): both end the connection. */
    int peer_dead;
    int mode;                /* SR_MODE_* (GIL held; copied before a wait) */
    int64_t spin_ns;         /* hybrid: spin this long before sleeping (as mode) */
    uint8_t *send_area, *result_area;
    uint32_t slot_size;
    uint64_t pool_count, pool_size;   /* a registered BufferPool, if any */
    uint64_t st_doorbells, st_sleeps, st_poll_hits;   /* GIL held */
    int64_t next_peer_check;  /* reap: the next time we may poll the socket (GIL held) */
    PyObject *opnames;       /* tuple: op index -> name (from the attach reply) */
    uint8_t opkinds[256];    /* op index -> 0 per-op, 1 batch, 2 vector handler */
    /* An event loop watches cq_efd: keep ARMED set in cq_flags.  Written with
     * the GIL (ur_set_async); read without it by a waiter when it disarms
     * after a sleep (ur_wait_rings).  A waiter and _set_async in another
     * thread may race: the worst case is ARMED left set (one spare eventfd
     * write per batch by the server) or cleared until the loop's next
     * _set_async -- never a lost wake-up for the waiter itself, which arms
     * and re-checks on its own. */
    int async_armed;
    struct SR_Ring *fork_prev, *fork_next;  /* live user rings (sr_user_rings_after_fork) */
};

typedef struct SR_Ring {
    PyObject_HEAD
    /* The queue pair.  Kernel backend: the io_uring itself (fd, maps, flags:
     * kernel.h, shared with fuse_uring.c).  User backend: only q.sq, q.cq and
     * q.sq_map are used; they point into the shared region (fd = -1). */
    struct sr_kring q;
    sr_optable ops;
    sr_backend backend;
    int initialized;
    int closed;
    uint64_t fork_gen;
    /* Threads currently waiting in this ring (enter / wait, GIL released).
     * Changed and read only with the GIL held: close() refuses while > 0.
     * That is what lets a waiter read without the GIL what only close()
     * changes (q.sq / q.cq pointers and sizes, u.cq_efd, u.sock_fd). */
    int in_enter;
    /* link-chain bookkeeping (GIL held) */
    int chain_open;          /* last prepared SQE carries LINK/HARDLINK */
    uint32_t pending_skip;   /* 1 + slot of a SKIP_SUCCESS op with no successor yet */
    uint32_t pending_skip_gen;
    uint32_t pending_skip_sqidx;
    uint32_t multishot_live;
    uint32_t last_slot;      /* 1 + slot of the last op prepared (for link chains) */
    uint32_t last_gen;
    uint32_t chain_head;     /* 1 + slot of the first op of the open chain, or 0 */
    uint32_t chain_head_gen;
    uint32_t chain_head_sqidx;  /* its SQ index (sqe_tail when it was prepared) */
    /* Kernel backend: the SQE user_data is the op's token XOR this random
     * per-ring key, and a CQE names one of our ops only if its user_data
     * XOR the key decodes to a live slot of the right generation.  Tokens are
     * predictable (they are returned to Python); the wire form is not, so a
     * CQE another ring posts with MSG_RING -- whatever user_data it carries,
     * even one of our tokens -- is a foreign completion and never releases
     * an op.  0 for the user backend (a subsystem is trusted with its
     * client's tokens: it answers them).  Common, not in k: every prep path
     * and every reap path applies it. */
    uint64_t ud_key;
    /* Our CQ head: a private copy of the only index we write on the CQ.
     * Reaping never reads its own index back from shared memory (a peer
     * could scribble on it); every store goes through sr_ring_cq_release.
     * Written with the GIL (reap), read without it by a user-ring waiter
     * (ur_cq_ready): atomic relaxed on both sides, see there. */
    uint32_t cq_head;
    uint64_t *synth;         /* tokens of ops whose final completion we must make up,
                              * oldest first (2 x max_inflight entries) */
    uint32_t nsynth;
    /* statistics (only ever touched with the GIL held) */
    uint64_t st_submitted, st_completed, st_enters, st_foreign;
    uint64_t st_sq_full_flushes;
    struct sr_kr_state k;    /* SR_BACKEND_KERNEL only */
    struct sr_ur_state u;    /* SR_BACKEND_USER only */
    PyObject *weakreflist;
} SR_Ring;

/* ======================================================================== */
/* common inline helpers                                                     */
/* ======================================================================== */

static inline int sr_ring_check(SR_Ring *r)
{
    if (sr_unlikely(r->closed || r->fork_gen != sr_fork_generation)) {
        if (!r->initialized)
            PyErr_SetString(SR_RingClosedError, "ring was never set up");
        else if (r->fork_gen != sr_fork_generation)
            PyErr_SetString(SR_ForkedRingError,
                            "this ring belongs to the parent process: it cannot be used "
                            "after fork(); create a new ring in the child");
        else
            PyErr_SetString(SR_RingClosedError, "ring is closed");
        return -1;
    }
    return 0;
}

/* The SQ tail as we last published it: ring.h's private copy (`published`),
 * never our own index read back from memory the peer can write (a client
 * that scribbles on it must not change what we believe we published). */
static inline uint32_t sr_ring_sq_published(const SR_Ring *r)
{
    return r->q.sq.published;
}

static inline uint32_t sr_ring_cq_head(const SR_Ring *r)
{
    return r->cq_head;
}

/* Give CQEs up to `head` back to the producer (release: see ring.h). */
static inline void sr_ring_cq_release(SR_Ring *r, uint32_t head)
{
    /* relaxed store: ur_cq_ready reads this copy without the GIL (atomic, so
     * the read is never torn); the shared word below carries the ordering. */
    __atomic_store_n(&r->cq_head, head, __ATOMIC_RELAXED);
    sr_cq_release(&r->q.cq, head);
}

/* CQEs visible in the CQ, unvalidated (see sr_be_ready for the checked form). */
static inline uint32_t sr_ring_cq_ready(SR_Ring *r)
{
    return sr_cq_ready(&r->q.cq, sr_ring_cq_head(r));
}

/* The SQE user_data of slot i (see ud_key), and the reverse lookup. */
static inline uint64_t sr_ring_wire(const SR_Ring *r, uint32_t i)
{
    return sr_token(&r->ops, i) ^ r->ud_key;
}
static inline int64_t sr_ring_find(const SR_Ring *r, uint64_t wire_ud)
{
    return sr_slot_find(&r->ops, wire_ud ^ r->ud_key);
}

/* ======================================================================== */
/* shared functions (ring_object.c, ring_prep.c, ring_reap.c)                */
/* ======================================================================== */

/* ring_prep.c */
uint32_t sr_ring_publish(SR_Ring *r);
void sr_ring_owe(SR_Ring *r, uint32_t i);
void sr_ring_withdraw_chain(SR_Ring *r);
int sr_ring_make_room(SR_Ring *r);
int sr_ring_batch_room(SR_Ring *r, Py_ssize_t n);
PyObject *sr_ring_prep_nop(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames);
PyObject *sr_ring_prep_nops(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);
PyObject *kr_prep_read(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k);
PyObject *kr_prep_write(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k);
PyObject *kr_prep_read_fixed(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k);
PyObject *kr_prep_write_fixed(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k);
PyObject *kr_prep_sqe(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames);
PyObject *kr_prep_reads(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k);
PyObject *kr_prep_writes(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k);

/* ring_reap.c */
void sr_ring_retire(SR_Ring *r, uint32_t i);
int sr_ring_synth_one(SR_Ring *r, uint32_t k, int err, PyObject *list, uint64_t *uo,
                      int32_t *ro, uint32_t *fo, int64_t *got);
void sr_ring_drop_synth(SR_Ring *r);
PyObject *sr_ring_reap(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames);
PyObject *sr_ring_reap_into(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);

/* ring_object.c */
PyObject *sr_ring_new(PyTypeObject *type, PyObject *args, PyObject *kw);
void sr_ring_dealloc(SR_Ring *r);
int sr_ring_traverse(SR_Ring *r, visitproc visit, void *arg);
int sr_ring_clear(SR_Ring *r);
PyObject *sr_ring_close(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames);
PyObject *sr_ring_submit_py(SR_Ring *r, PyObject *unused);
PyObject *sr_ring_submit_and_wait(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames);
PyObject *sr_ring_live_user_data(SR_Ring *r, PyObject *unused);
PyObject *sr_ring_stats(SR_Ring *r, PyObject *unused);
PyObject *sr_ring_get_closed(SR_Ring *r, void *c);
PyObject *sr_ring_get_sq_entries(SR_Ring *r, void *c);
PyObject *sr_ring_get_cq_entries(SR_Ring *r, void *c);
PyObject *sr_ring_get_inflight(SR_Ring *r, void *c);
PyObject *sr_ring_get_max_inflight(SR_Ring *r, void *c);
PyObject *sr_ring_get_cq_ready(SR_Ring *r, void *c);
PyObject *sr_ring_get_sq_space(SR_Ring *r, void *c);
PyObject *sr_ring_get_sq_pending(SR_Ring *r, void *c);

#define SR_FAST(name, fn, doc) \
    {name, (PyCFunction)(void (*)(void))fn, METH_FASTCALL | METH_KEYWORDS, doc}

/* ======================================================================== */
/* kernel backend (kernel_ring.c, kernel_register.c, kernel_bufring.c)       */
/* ======================================================================== */

int kr_enter(SR_Ring *r, uint32_t min_complete, uint32_t flags, int64_t ts_ns);
int kr_submit(SR_Ring *r, uint32_t wait_nr, int64_t ts_ns);
int kr_flush_cq(SR_Ring *r);
void kr_close_io(SR_Ring *r, int64_t timeout_ns);
void kr_release(SR_Ring *r);
PyObject *kr_stats_dict(SR_Ring *r);
void kr_release_regbufs(SR_Ring *r);
void kr_buffer_delivered(SR_Ring *r, uint16_t bgid, uint32_t bid);
void kr_bufrings_detach(SR_Ring *r);
/* kernel_register.c (KernelRing methods) */
PyObject *kr_register_buffers(SR_Ring *r, PyObject *arg);
PyObject *kr_register_buffers_sparse(SR_Ring *r, PyObject *arg);
PyObject *kr_update_buffers(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs);
PyObject *kr_unregister_buffers(SR_Ring *r, PyObject *unused);
PyObject *kr_register_files(SR_Ring *r, PyObject *arg);
PyObject *kr_register_files_sparse(SR_Ring *r, PyObject *arg);
PyObject *kr_update_files(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs);
PyObject *kr_unregister_files(SR_Ring *r, PyObject *unused);
PyObject *kr_register_eventfd(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames);
PyObject *kr_enable_eventfd(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);
PyObject *kr_get_eventfd(SR_Ring *r, void *c);
PyObject *kr_unregister_eventfd(SR_Ring *r, PyObject *unused);
PyObject *kr_probe(SR_Ring *r, PyObject *unused);
PyObject *kr_register_raw(SR_Ring *r, PyObject *args);
/* kernel_bufring.c */
PyObject *kr_register_buffer_ring(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames);

/* Does the kernel hold completions we cannot see without entering?  (CQ
 * overflow backlog, or task work that posts CQEs.)  Relaxed: a hint only --
 * a flag seen late means one more reap finds the CQEs after the next enter. */
static inline int kr_needs_flush(SR_Ring *r)
{
    return (sr_sq_flags(&r->q.sq) & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) != 0;
}

/* A CQE of a buffer-select op names the provided buffer the kernel filled:
 * from now on it is the application's, until BufferRing.recycle(). */
static inline void kr_note_buffer(SR_Ring *r, const sr_slot *s, uint32_t cqe_flags)
{
    if (sr_unlikely(s->bufsel) && (cqe_flags & IORING_CQE_F_BUFFER))
        kr_buffer_delivered(r, s->bgid, cqe_flags >> IORING_CQE_BUFFER_SHIFT);
}

/* ======================================================================== */
/* user backend (user_ring.c, user_calls.c, user_wait.c)                     */
/* ======================================================================== */

uint32_t ur_publish(SR_Ring *r);
int ur_submit(SR_Ring *r, uint32_t wait_nr, int64_t ts_ns);
int ur_peer_gone(SR_Ring *r);
void ur_protocol_broken(SR_Ring *r);
void ur_publish_stats(SR_Ring *r);
int ur_refuse_dead(SR_Ring *r);
int ur_dead_after_drain(SR_Ring *r);
int ur_synth_dead(SR_Ring *r, PyObject *list, uint64_t *uo, int32_t *ro, uint32_t *fo,
                  int64_t max, int64_t *got);
int ur_cqe_data(SR_Ring *r, uint32_t i, const struct io_uring_cqe *cqe, SR_Completion *c);
void ur_close_io(SR_Ring *r);
PyObject *ur_stats_dict(SR_Ring *r);
/* user_wait.c: wait without the GIL for `min_complete` CQEs on one ring;
 * 0 (ready, timeout or peer death) or -EINTR. */
int ur_wait_nogil(SR_Ring *r, uint32_t min_complete, int64_t deadline, int mode,
                  int64_t spin_ns, uint64_t *sleeps);
/* user_calls.c */
PyObject *ur_prep_call(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames);
PyObject *ur_prep_call_pool(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);
PyObject *ur_prep_calls(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames);
PyObject *ur_prep_records(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames);

/* Belt and braces for the UserRing-only methods. */
static inline int ur_only(SR_Ring *r, const char *what)
{
    if (r->backend != SR_BACKEND_USER) {
        PyErr_Format(PyExc_TypeError, "%s is for subsystem connections", what);
        return -1;
    }
    return 0;
}

/* The name of a subsystem op (an index outside the table: "op<N>"). */
static inline PyObject *ur_opname(SR_Ring *r, unsigned opcode)
{
    if (opcode < (unsigned)PyTuple_GET_SIZE(r->u.opnames))
        return Py_NewRef(PyTuple_GET_ITEM(r->u.opnames, opcode));
    PyObject *n = PyUnicode_FromFormat("op%u", opcode);
    if (!n)
        PyErr_Clear();
    return n;
}

/* ======================================================================== */
/* the seam: backend operations the shared code calls                        */
/* ======================================================================== */

/* Submit everything prepared; wait for `wait_nr` CQEs (0: don't wait).
 * Returns >= 0, or -1 with an exception set. */
static inline int sr_be_submit(SR_Ring *r, uint32_t wait_nr, int64_t ts_ns)
{
    return r->backend == SR_BACKEND_USER ? ur_submit(r, wait_nr, ts_ns)
                                         : kr_submit(r, wait_nr, ts_ns);
}

/* Does the peer hold completions that only a flush (an enter) makes visible? */
static inline int sr_be_needs_flush(SR_Ring *r)
{
    return r->backend == SR_BACKEND_KERNEL && kr_needs_flush(r);
}

/* Should a reap flush before it looks?  `ready`: CQEs visible now.  With
 * DEFER_TASKRUN the kernel posts completions only inside an enter. */
static inline int sr_be_flush_before_reap(SR_Ring *r, uint32_t ready)
{
    if (r->backend != SR_BACKEND_KERNEL)
        return 0;
    return (ready == 0 && r->k.defer_taskrun && r->ops.live) || kr_needs_flush(r);
}

/* Make the peer's backlog visible (GIL released inside); 0 or -1. */
static inline int sr_be_flush_cq(SR_Ring *r)
{
    return r->backend == SR_BACKEND_KERNEL ? kr_flush_cq(r) : 0;
}

/* CQEs ready at `head`.  The user backend validates the peer's tail: a
 * subsystem that pushed it past our head + entries broke the protocol and is
 * treated as such rather than read as garbage. */
static inline uint32_t sr_be_ready(SR_Ring *r, uint32_t head)
{
    uint32_t n = sr_cq_ready(&r->q.cq, head);
    if (r->backend == SR_BACKEND_USER && sr_unlikely(n > r->q.cq.entries)) {
        r->u.peer_dead = SR_PEER_BROKE;
        return 0;
    }
    return n;
}

/* Once per CQE of a live op: backend bookkeeping (kernel: provided buffers). */
static inline void sr_be_cqe_seen(SR_Ring *r, const sr_slot *s, uint32_t cqe_flags)
{
    if (r->backend == SR_BACKEND_KERNEL)
        kr_note_buffer(r, s, cqe_flags);
}

/* Result data a CQE carries beyond res (user: the op's result slot), into
 * c->data.  0, or -1 with an exception set. */
static inline int sr_be_cqe_data(SR_Ring *r, uint32_t i, const struct io_uring_cqe *cqe,
                                 SR_Completion *c)
{
    if (r->backend == SR_BACKEND_USER &&
        (cqe->flags & (IORING_CQE_F_BUFFER | SR_CQE_F_ERRTEXT)))
        return ur_cqe_data(r, i, cqe, c);
    return 0;
}

/* The op's name for a Completion, or NULL (the kernel's opcodes are named by
 * the Completion itself). */
static inline PyObject *sr_be_opname(SR_Ring *r, unsigned opcode)
{
    return r->u.opnames ? ur_opname(r, opcode) : NULL;
}

/* May a new op be prepared?  0, or -1 with PeerDiedError set (a dead
 * subsystem takes no more work).  `look`: also poll for death when nothing is
 * in flight (a single prep; batches only trust what is known). */
static inline int sr_be_refuse_work(SR_Ring *r, int look)
{
    if (r->backend == SR_BACKEND_USER &&
        (r->u.peer_dead || (look && r->ops.live == 0 && ur_peer_gone(r))))
        return ur_refuse_dead(r);
    return 0;
}

/* After the CQ is drained: will the peer never post the rest?  Then
 * sr_be_synth_dead makes up every live op's final completion. */
static inline int sr_be_dead_after_drain(SR_Ring *r)
{
    return r->backend == SR_BACKEND_USER ? ur_dead_after_drain(r) : 0;
}

static inline int sr_be_synth_dead(SR_Ring *r, PyObject *list, uint64_t *uo, int32_t *ro,
                                   uint32_t *fo, int64_t max, int64_t *got)
{
    return r->backend == SR_BACKEND_USER ? ur_synth_dead(r, list, uo, ro, fo, max, got) : 0;
}

/* close(), first half: stop the I/O (kernel: cancel and drain, unmap; user:
 * unmap and drop the connection).  The op table is still intact. */
static inline void sr_be_close_io(SR_Ring *r, int64_t timeout_ns)
{
    if (r->backend == SR_BACKEND_USER)
        ur_close_io(r);
    else
        kr_close_io(r, timeout_ns);
}

/* close(), second half, after the op table is freed: backend resources. */
static inline void sr_be_release(SR_Ring *r)
{
    if (r->backend == SR_BACKEND_KERNEL)
        kr_release(r);
}

static inline PyObject *sr_be_stats(SR_Ring *r)
{
    return r->backend == SR_BACKEND_USER ? ur_stats_dict(r) : kr_stats_dict(r);
}

#endif /* SUBRING_RING_BACKEND_H */
