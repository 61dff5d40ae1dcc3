/*
 * server.h -- what the three files of the server half share.
 *
 *   server_queue.c     ServerQueue: one client's queue pair -- the shared region
 *                      (created here, sealed, sent to the client), its eventfds,
 *                      a registered pool -- and what a fork child does to them.
 *   server_request.c   Request: one operation handed to a Python handler, how a
 *                      handler's outcome becomes a CQE, SQE validation.
 *   server_handlers.c  Batch and the calls of batch and vector handlers.
 *   server_loop.c      ServerLoop: consume SQEs from every queue in fair batches,
 *                      call handlers, post CQEs, notify only clients that sleep,
 *                      and sleep itself (interrupt / poll / hybrid) when idle.
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
 *
 * Threads: everything here runs with the GIL held, on the serving thread,
 * except the loop's spin/sleep (which only reads the shared indices).
 */
#ifndef SUBRING_SERVER_H
#define SUBRING_SERVER_H

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

/* ---- CQ production (hot path: inline) ----------------------------------- */

/* The client broke the protocol: the loop reports the queue, Python drops it. */
static inline void sq_mark_corrupt(SQueue *q)
{
    q->corrupt = 1;
}

/* Publish written CQEs and wake the client if (and only if) it sleeps. */
static inline void sq_flush(SQueue *q)
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
static inline void sq_post(SQueue *q, uint64_t ud, int32_t res, uint32_t flags)
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

/* Calls of SQE `sqe` (validated by srv_sqe_check): its packed records, or 1. */
static inline uint32_t sqe_calls(const struct io_uring_sqe *sqe)
{
    return (sqe->op_flags & SR_OPF_RECORDS) ? sqe->len / sqe->personality : 1;
}

/* ---- fork (see server_queue.c) ------------------------------------------ */

/* Replace `fd` by /dev/null (or close it if that fails): in a fork child. */
static inline void srv_fork_neutralize(int fd, int devnull)
{
    if (fd < 0)
        return;
    if (devnull < 0 || dup2(devnull, fd) < 0)
        close(fd);
}
void srv_atfork_once(void);                    /* server_loop.c */
void srv_queues_after_fork(int devnull);       /* server_queue.c */

/* ---- server_request.c ---------------------------------------------------- */
SRequest *srv_request_new(SQueue *q);
int srv_request_finish(SRequest *r, PyObject *result);
int srv_request_fill(SRequest *r, SQueue *q, const struct io_uring_sqe *sqe);
int srv_sqe_check(const SQueue *q, const struct io_uring_sqe *sqe);
void srv_report_handler_error(SQueue *q, int op, PyObject *ev, PyObject *tb);

/* ---- server_handlers.c --------------------------------------------------- */
int srv_call_vector(PyObject *h, SQueue *q, const struct io_uring_sqe *sqes,
                    const int *idx, int m);
int srv_call_batch(PyObject *h, PyObject *batch, int stopping);

#endif /* SUBRING_SERVER_H */
