/*
 * fuse.h -- what the files of the FUSE server (subring.fuse's C half) share.
 * The kernel is the client here: it sends file-system requests, a Python
 * handler answers them.
 *
 *   fuse_conn.c      FuseConn: one mounted connection (the /dev/fuse fd, owned),
 *                    FUSE_INIT, stop/close, notifications, statistics; the
 *                    module functions mount, umount, watchdog.
 *   fuse_classic.c   serve_dev(): the classic transport, read() a request from
 *                    /dev/fuse with the GIL released, dispatch, write() the
 *                    reply.  On an io_uring mount one such loop still runs for
 *                    what never goes through the ring (FORGET, INTERRUPT).
 *   fuse_uring.c     serve_ring(): FUSE over io_uring.  A ring (SQE128) of the
 *                    serving thread holds `depth` entries per queue; the kernel
 *                    completes an entry's command with a request in its pinned
 *                    buffers, we answer in the same buffers with
 *                    COMMIT_AND_FETCH, all answers of one wake-up in one
 *                    io_uring_enter (which also waits, GIL released).
 *   fuse_dispatch.c  a request -> the handler's arguments -> one vectorcall ->
 *                    the encoded reply; FusePending, the later answer of an
 *                    async handler (the entry -- or, classic, the unique id --
 *                    stays held until pending.reply()/fail()).
 *   fuse_reply.c     Python values -> reply structs; exceptions -> errno.
 *
 * Calls go one way: conn -> transports -> dispatch -> reply.  The two ways
 * back (a FusePending answers through its transport; a ring's buffers are
 * freed with the connection) are the functions declared below, so no file
 * includes another's internals.
 *
 * Protocol facts: docs/fuse.md and fuse_abi.h.
 */
#ifndef SUBRING_FUSE_H
#define SUBRING_FUSE_H

#include <pthread.h>
#include <sys/uio.h>

#include "core.h"
#include "kernel.h"
#include "fuse_abi.h"

/* fuse_dispatch() results other than a payload length (>= 0) or -errno (> -4096) */
#define R_NOREPLY  (-100000)   /* FORGET, INTERRUPT: the kernel expects nothing */
#define R_DEFERRED (-100001)   /* an async handler will answer later */

enum { ENT_KERNEL = 0, ENT_HELD = 1, ENT_DEAD = 2 };

/* One ring entry.  Its buffers alternate between the kernel and us: the
 * kernel writes a request before completing the entry's command (we read it
 * after reaping that CQE), we write the reply before submitting
 * COMMIT_AND_FETCH (the kernel reads it during that io_uring_enter).  The
 * syscall boundaries order these accesses; no other barrier is needed.  An
 * async reply is written by the thread running pending.reply() and handed
 * to the ring thread through the mutex-guarded ready list (the mutex orders
 * the buffer writes before the ring thread's submit). */
struct fring_ent {
    struct fuse_uring_req_header *hdr;  /* kernel writes the request, we the reply */
    uint8_t *payload;
    struct iovec iov[2];   /* read by the kernel when REGISTER is issued: keep */
    uint16_t qid;
    uint8_t state;         /* written and read only by the ring's own thread */
};

/* One serve_ring() call's ring.  Freed when its loop has ended AND no
 * FusePending points at it any more (`refs`, changed only under the GIL). */
struct fring {
    struct sr_kring r;
    struct fring *next;    /* conn->rings or conn->dead (GIL) */
    void *conn;            /* the FuseConn (borrowed: the loop and every pending hold it) */
    int refs;              /* GIL */
    int stopped;           /* GIL: the loop ended; late async replies are dropped */
    int evfd;              /* wake-up: written by pending replies and stop(), read by the ring */
    uint64_t evbuf;        /* the kernel writes the eventfd count here (nobody reads it) */
    uint32_t nent, payload_size;
    struct fring_ent *ents;
    void *hdr_map; size_t hdr_len;
    void *pay_map; size_t pay_len;
    pthread_mutex_t mtx;   /* guards ready[]/nready: async completers push, the loop pops */
    uint32_t *ready, nready;
    /* Counters of this ring: written only by its serving thread (so no
     * cache line is shared between queue threads on the hot path), read
     * relaxed by statistics() and folded into the connection's totals when
     * the loop ends. */
    uint64_t n_reqs, n_errs, n_batches;
    uint64_t n_poll_hits, n_poll_timeouts;   /* fring_wait()'s polls */
};

typedef struct {
    PyObject_HEAD
    int fd;                        /* /dev/fuse; owned (closed by close()) */
    PyObject *ops;
    PyObject *h[FUSE_OPCODE_MAX];  /* bound handler or NULL (-> ENOSYS) */
    PyObject *on_error;            /* on_error(opname, exc): logs */
    PyObject *async_runner;        /* runner(coro, pending) or NULL */
    PyObject *interrupt_hook;      /* hook(unique) on FUSE_INTERRUPT, or NULL */
    /* Set before any loop starts (construction, init()); read-only after. */
    uint32_t max_write, payload_size, proto_minor;
    uint32_t entry_s, entry_ns, attr_s, attr_ns;
    int direct_io;
    int uring;                     /* negotiated */
    int initialized;
    int stopping;                  /* atomic: set by stop(), read by the loops */
    struct fring *rings;           /* GIL: loops running */
    struct fring *dead;            /* GIL: loops ended, buffers kept until the fd closes */
    int dev_loops;                 /* GIL: serve_dev() calls running (they use fd) */
    /* statistics: updated under the GIL; the ring loops count in their
     * struct fring and add to n_ring/n_err/n_batches when they end */
    uint64_t n_dev, n_err, n_exc, n_async, n_forgets, n_interrupts, n_ring, n_batches;
    /* When the serving loop that holds the GIL took it (sr_now_ns, never
     * 0), or 0: no serving loop holds it.  Written by that loop after it
     * takes the GIL and cleared (if still its own) after it drops it; read
     * by loops about to take the GIL.  A hint for fuse_gil_take(), never a
     * lock: it can say 0 while a serving loop's handler holds the GIL, or
     * name a loop whose handler let the GIL go for a while. */
    int64_t gil_holder_since;
    int64_t gil_spin_ns;           /* set at construction: fuse_gil_take()'s limit */
    int64_t poll_ns;               /* set at construction: fring_wait()'s poll limit */
    uint64_t n_gil_spins, n_gil_spin_timeouts;   /* GIL */
    uint64_t n_poll_hits, n_poll_timeouts;       /* GIL: the ended ring loops' polls */
} FuseConn;

typedef struct {
    PyObject_HEAD
    FuseConn *conn;
    struct fring *ring;   /* NULL: classic (answer with write()) */
    uint32_t ent;
    int op;
    uint32_t size;        /* the request's size limit (READ, READDIR, xattrs) */
    uint64_t unique;
    int done;
} FusePending;

/* One request as the transports hand it to fuse_dispatch(): on /dev/fuse
 * everything follows the in header in one buffer; on the ring the fixed
 * struct sits in the header's op_in area and `rest` is the payload buffer. */
struct req {
    const struct fuse_in_header *in;
    const uint8_t *opin;     /* the opcode's fixed struct */
    const uint8_t *rest;     /* names, data */
    uint32_t rest_len;
};


/* ---- the GIL between serving loops ---------------------------------------- */
/* The default spin limit, measured (docs/fuse.md, "The GIL between serving
 * threads"): a handler holds the GIL ~0.7 us, a batch a few of those. */
#define FUSE_GIL_SPIN_US 20.0
/* The default for how long a ring loop polls for the next request before it
 * sleeps, measured (docs/fuse.md, "Polling keeps the caller on its CPU"). */
#define FUSE_POLL_US 50.0

/* Take the GIL in a serving loop; returns the value to hand back to
 * fuse_gil_drop().  While another serving loop holds the GIL -- for well
 * under a microsecond per request -- spin on its release, until gil_spin_ns
 * after that loop took it, before calling into CPython: a thread that
 * blocks in take_gil sleeps on a futex, and its CPU (whose caller is itself
 * waiting for this answer) goes idle; waking it is then a cross-CPU wake-up
 * of an idle vCPU, tens of microseconds on a VM without halt-polling.  The
 * spin holds nothing, so it cannot deadlock; a holder that has been in for
 * longer than the limit (a slow handler, one blocked in I/O), or a thread
 * that is not a serving loop, gets CPython's ordinary wait.  All accesses
 * to gil_holder_since are relaxed: it is a hint, and the GIL itself orders
 * everything it protects. */
static inline int64_t fuse_gil_take(FuseConn *c, PyThreadState *ts)
{
    int spun = 0, timed_out = 0;
    int64_t since = c->gil_spin_ns > 0
                    ? __atomic_load_n(&c->gil_holder_since, __ATOMIC_RELAXED) : 0;
    if (since != 0) {
        int64_t until = since + c->gil_spin_ns;
        if (sr_now_ns() < until) {
            unsigned i = 0;
            spun = 1;
            while (__atomic_load_n(&c->gil_holder_since, __ATOMIC_RELAXED) == since) {
                sr_cpu_relax();
                if ((++i & 31) == 0 && sr_now_ns() >= until) {
                    timed_out = 1;
                    break;
                }
            }
        }
    }
    PyEval_RestoreThread(ts);
    int64_t mine = 0;
    if (c->gil_spin_ns > 0) {
        mine = sr_now_ns() | 1;
        __atomic_store_n(&c->gil_holder_since, mine, __ATOMIC_RELAXED);
    }
    c->n_gil_spins += (uint64_t)spun;
    c->n_gil_spin_timeouts += (uint64_t)timed_out;
    return mine;
}

/* Release the GIL in a serving loop (`mine`: what fuse_gil_take returned,
 * 0 if this loop never took it that way).  The mark is cleared after the
 * release, so a spinner that sees it go finds the GIL free; and only if it
 * is still ours, not that of a loop that took the GIL meanwhile. */
static inline PyThreadState *fuse_gil_drop(FuseConn *c, int64_t mine)
{
    PyThreadState *ts = PyEval_SaveThread();
    if (mine != 0)
        __atomic_compare_exchange_n(&c->gil_holder_since, &mine, 0, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED);
    return ts;
}

/* ---- fuse_dispatch.c ------------------------------------------------------ */
extern const char *const fuse_op_names[FUSE_OPCODE_MAX];   /* handler method names */
extern const uint16_t fuse_op_in_size[FUSE_OPCODE_MAX];    /* size of in_args[0] */
extern PyTypeObject FusePendingType;
/* Handle one request (GIL held); the reply payload goes to out[0..cap).
 * Returns its length, -errno, R_NOREPLY or R_DEFERRED.  `ring`/`ent` name the
 * entry an async handler's FusePending answers into (NULL: classic). */
int fuse_dispatch(FuseConn *c, struct req *r, uint8_t *out, uint32_t cap,
                  struct fring *ring, uint32_t ent);
/* fuse_context(): (uid, gid, pid) of the request handled on this thread. */
PyObject *fuse_context(PyObject *m, PyObject *unused);

/* ---- fuse_reply.c --------------------------------------------------------- */
/* The raised exception (cleared) as -errno; non-OSError ones are logged. */
int fuse_exc_errno(FuseConn *c, int op);
/* Encode a handler's return value for `op` into out[0..cap): length or
 * -errno; -1 with a Python error set for a value of the wrong shape. */
int fuse_encode(FuseConn *c, int op, uint32_t size, PyObject *res, uint8_t *out, uint32_t cap);
int fuse_enc_open(FuseConn *c, int op, PyObject *fh, struct fuse_open_out *out);

/* ---- fuse_classic.c ------------------------------------------------------- */
/* writev() one reply (rc: payload length or -errno).  0 or -errno. */
int fuse_dev_reply(int fd, uint64_t unique, int rc, const uint8_t *payload);
PyObject *fuse_serve_dev(FuseConn *c, PyObject *unused);

/* ---- fuse_uring.c --------------------------------------------------------- */
/* Write the reply header of entry `e` (its payload is already in place). */
void fuse_ent_reply(struct fring_ent *e, int rc);
void fring_unref(struct fring *g);    /* GIL */
void fring_free(struct fring *g);
PyObject *fuse_serve_ring(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames);

/* ---- fuse_conn.c ---------------------------------------------------------- */
/* Free the rings whose loops ended (only once the fd is closed: see fring_unref). */
void fuse_conn_free_dead(FuseConn *c);
/* Add FuseConn, FusePending and the fuse_* functions to the module (module.c). */
int sr_fuse_init(PyObject *module);

#endif
