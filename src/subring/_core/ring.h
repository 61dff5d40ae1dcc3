/*
 * ring.h -- the index arithmetic and memory ordering of one SQ/CQ pair.
 *
 * These primitives are the only code in subring that reads or writes a ring
 * index.  They do not care who the peer is: for a KernelRing the words live in
 * the kernel's mmap'ed rings, for a user-space subsystem they live in a memfd
 * region shared with another process.  Either way the protocol is io_uring's:
 *
 *   SQ  producer = us       writes: SQEs, then *tail (store-release)
 *       consumer = peer     writes: *head (store-release); reads our tail (acquire)
 *   CQ  producer = peer     writes: CQEs, then *tail (store-release)
 *       consumer = us       writes: *head (store-release); reads its tail (acquire)
 *
 * Invariant 1 (docs/design.md): only the producer writes a tail, only the consumer a
 * head, and 0 <= tail - head <= entries.  Indices are free-running uint32 and
 * are masked with (entries - 1) only to address an entry, so wrap-around past
 * 2^32 is ordinary unsigned arithmetic.  We keep private shadow copies of our
 * own index (sqe_tail, cq_head) and read the peer's index once per batch --
 * or, for the index that only bounds our room (the SQ head for a producer,
 * the CQ head for a user-space CQ producer), only when the copy we last read
 * shows too little room: that word sits in a cache line the peer writes, and
 * a stale value only understates the room.
 *
 * Invariant 2: producer writes entries, then store-releases the tail; consumer
 * load-acquires the tail, reads entries, then store-releases the head (so the
 * producer cannot overwrite an entry we are still reading).
 */
#ifndef SUBRING_RING_H
#define SUBRING_RING_H

#include <stdint.h>
#include <string.h>
#include "abi.h"

#define sr_load_acquire(p)      __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define sr_load_relaxed(p)      __atomic_load_n((p), __ATOMIC_RELAXED)
#define sr_store_release(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define sr_full_fence()         __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* Lost wake-up hunting (tests/reliability): with -DSUBRING_DEBUG_HOOKS
 * (SUBRING_DEBUG_HOOKS=1 python3 setup.py build_ext), each hook point between
 * the steps of arm -> fence -> re-check -> sleep and publish -> fence -> read
 * flag -> wake sleeps a random 0..$SUBRING_DEBUG_DELAY_NS ns in 1 of 8 calls
 * (notify.c).  Compiled out otherwise: zero cost. */
#ifdef SUBRING_DEBUG_HOOKS
void sr_debug_delay(const char *where);
#define SR_DEBUG_DELAY(where) sr_debug_delay(where)
#else
#define SR_DEBUG_DELAY(where) ((void)0)
#endif

#define sr_likely(x)   __builtin_expect(!!(x), 1)
#define sr_unlikely(x) __builtin_expect(!!(x), 0)

/* Submission queue, seen from its producer. */
struct sr_sq {
    uint32_t *khead;      /* consumer writes; we load-acquire */
    uint32_t *ktail;      /* we store-release; consumer load-acquires */
    uint32_t *kflags;     /* consumer writes (NEED_WAKEUP, CQ_OVERFLOW, TASKRUN) */
    uint32_t *kdropped;   /* consumer writes: SQEs it found invalid */
    uint32_t *array;      /* kernel SQ index array, NULL with NO_SQARRAY */
    uint8_t  *sqes;       /* entry array, entries << (6 + sqe_shift) bytes */
    uint32_t  mask;
    uint32_t  entries;
    uint32_t  sqe_tail;   /* private: next entry to hand out (not yet visible) */
    uint32_t  published;  /* private: the tail we last stored.  Never read our
                           * own tail back from *ktail: a peer sharing the
                           * page could have scribbled on it (abi.h). */
    uint32_t  sqe_shift;  /* 0 for 64-byte SQEs, 1 for SQE128 */
    uint32_t  head_cache; /* private: the consumer's head as we last read it */
};

/* Completion queue, seen from its consumer. */
struct sr_cq {
    uint32_t *khead;      /* we store-release */
    uint32_t *ktail;      /* producer writes; we load-acquire */
    uint32_t *kflags;     /* we write (EVENTFD_DISABLED) */
    uint32_t *koverflow;  /* producer writes: CQEs it had to drop */
    uint8_t  *cqes;       /* entry array, entries << (4 + cqe_shift) bytes */
    uint32_t  mask;
    uint32_t  entries;
    uint32_t  cqe_shift;  /* 0 for 16-byte CQEs, 1 for CQE32 */
};

/* ---- SQ, producer side ----------------------------------------------- */

/* At setup / attach, once the pointers are set: take our private copies from
 * the shared words.  The only time our own tail is read from shared memory
 * (the ring is new, or the server initialised the region); relaxed is enough
 * for it (nobody else writes it).  acquire for the head: as in sr_sq_space. */
static inline void sr_sq_init_indices(struct sr_sq *sq)
{
    sq->sqe_tail = sr_load_relaxed(sq->ktail);
    sq->published = sq->sqe_tail;   /* from here on, never read back */
    sq->head_cache = sr_load_acquire(sq->khead);
}

/* The address of SQ entry `idx` (free-running index, masked here). */
static inline struct io_uring_sqe *sr_sq_entry(const struct sr_sq *sq, uint32_t idx)
{
    return (struct io_uring_sqe *)(sq->sqes +
            ((size_t)(idx & sq->mask) << (6 + sq->sqe_shift)));
}

/* The index the next SQE will get (private copy). */
static inline uint32_t sr_sq_next_index(const struct sr_sq *sq)
{
    return sq->sqe_tail;
}

/* The index of the SQE sr_sq_get handed out last (while it is unpublished,
 * still ours to edit through sr_sq_entry). */
static inline uint32_t sr_sq_last_index(const struct sr_sq *sq)
{
    return sq->sqe_tail - 1;
}

/* Take back the unpublished SQEs from index `idx` on (private copy only:
 * the consumer never saw them).  The caller checked they are unpublished. */
static inline void sr_sq_rewind(struct sr_sq *sq, uint32_t idx)
{
    sq->sqe_tail = idx;
}

/* Entries the producer may still fill, from the consumer's head as last
 * read; only when that shows less than half the ring free is the head read
 * again.  So the answer is exact below entries / 2 and at least entries / 2
 * otherwise.  The head lives in a cache line the consumer writes: for a peer
 * on another CPU, reading it on every op costs a cache-line transfer on the
 * request's critical path.  A stale head only understates the room (heads
 * never move back). */
static inline uint32_t sr_sq_space(struct sr_sq *sq)
{
    uint32_t space = sq->entries - (sq->sqe_tail - sq->head_cache);
    if (space < sq->entries / 2 + 1) {
        /* acquire: once we see the consumer's head move past an entry, the
         * consumer has finished reading it and we may overwrite it. */
        sq->head_cache = sr_load_acquire(sq->khead);
        space = sq->entries - (sq->sqe_tail - sq->head_cache);
    }
    /* A head past our tail is impossible (see sr_sq_head_sane): no room
     * rather than more room than the ring has. */
    return space > sq->entries ? 0 : space;
}

/* The same, always from the consumer's current head (for reporting). */
static inline uint32_t sr_sq_space_now(struct sr_sq *sq)
{
    sq->head_cache = sr_load_acquire(sq->khead);
    uint32_t space = sq->entries - (sq->sqe_tail - sq->head_cache);
    return space > sq->entries ? 0 : space;
}

/* Next free SQE, zeroed, or NULL when the SQ is full.  `space` is the caller's
 * cached sr_sq_space(), decremented here, so a batch reads the head once. */
static inline struct io_uring_sqe *sr_sq_get(struct sr_sq *sq, uint32_t *space)
{
    if (sr_unlikely(*space == 0))
        return NULL;
    (*space)--;
    struct io_uring_sqe *sqe = sr_sq_entry(sq, sq->sqe_tail);
    sq->sqe_tail++;
    /* Constant sizes: the compiler inlines these as a few vector stores. */
    if (sq->sqe_shift)
        memset(sqe, 0, 128);
    else
        memset(sqe, 0, 64);
    return sqe;
}

/* Make every SQE handed out so far visible to the consumer.  Returns how
 * many entries this call published (at most `entries`, whatever is in shared
 * memory: both numbers come from our private copies). */
static inline uint32_t sr_sq_publish(struct sr_sq *sq)
{
    uint32_t tail = sq->sqe_tail;
    uint32_t fresh = tail - sq->published;
    if (fresh) {
        if (sq->array) {
            /* Pre-6.6 kernels indirect through an index array: identity map.
             * Filled here, before the release below, like the entries. */
            for (uint32_t t = sq->published; t != tail; t++)
                sq->array[t & sq->mask] = t & sq->mask;
        }
        /* release: the SQE contents written above become visible before the
         * consumer can observe the new tail (invariant 2). */
        sr_store_release(sq->ktail, tail);
        sq->published = tail;
    }
    return fresh;
}

/* Entries handed out but not yet published (private copies only). */
static inline uint32_t sr_sq_unpublished(const struct sr_sq *sq)
{
    return sq->sqe_tail - sq->published;
}

/* Published entries the consumer has not taken, by the head as last read
 * (no shared read).  Used to tell a sane consumer from one whose head ran
 * past what we published: see sr_sq_head_sane. */
static inline uint32_t sr_sq_in_consumer(const struct sr_sq *sq)
{
    return sq->published - sq->head_cache;
}

/* Is the consumer's head (as last read) possible?  It may never pass what we
 * published.  A user-space peer that consumed entries we never published
 * broke the protocol (or someone scribbled on the shared head). */
static inline int sr_sq_head_sane(const struct sr_sq *sq)
{
    return sr_sq_in_consumer(sq) <= sq->entries;
}

/* Entries handed out (published or not) the consumer has not taken yet
 * (reads its head). */
static inline uint32_t sr_sq_pending(struct sr_sq *sq)
{
    sq->head_cache = sr_load_acquire(sq->khead);
    return sq->sqe_tail - sq->head_cache;
}

/* Published entries the consumer has not taken yet (reads its head): what
 * io_uring_enter is told to submit.  acquire: as in sr_sq_space. */
static inline uint32_t sr_sq_unconsumed(struct sr_sq *sq)
{
    sq->head_cache = sr_load_acquire(sq->khead);
    return sq->published - sq->head_cache;
}

/* The consumer's flag word (kernel: IORING_SQ_NEED_WAKEUP / CQ_OVERFLOW /
 * TASKRUN).  Relaxed: a hint to act on (flush, wake); where a missed flag
 * would lose a wake-up the caller fences first (sr_sq_needs_wakeup). */
static inline uint32_t sr_sq_flags(const struct sr_sq *sq)
{
    return sr_load_relaxed(sq->kflags);
}

/* The kernel's count of invalid SQEs it dropped (statistics; relaxed). */
static inline uint32_t sr_sq_dropped(const struct sr_sq *sq)
{
    return sr_load_relaxed(sq->kdropped);
}

/* After publishing, may the consumer be asleep?  (SQPOLL NEED_WAKEUP, or a
 * user-space subsystem that armed its doorbell.)  Invariant 3: the full fence
 * orders our tail store before our flag load; paired with the consumer's
 * "set NEED_WAKEUP, full fence, re-check tail" it is impossible for both of us
 * to miss each other. */
static inline int sr_sq_needs_wakeup(const struct sr_sq *sq)
{
    sr_full_fence();
    return (sr_load_relaxed(sq->kflags) & IORING_SQ_NEED_WAKEUP) != 0;
}

/* ---- CQ, consumer side ----------------------------------------------- */

/* At setup / attach: the CQ head to start our private copy from.  Relaxed:
 * nobody else writes it (we are the consumer), and the ring is new or was
 * just handed to us whole. */
static inline uint32_t sr_cq_init_head(const struct sr_cq *cq)
{
    return sr_load_relaxed(cq->khead);
}

/* The producer's tail.  acquire: pairs with its release, so every CQE below
 * the value returned is fully written.  (sr_cq_ready when the head to
 * subtract must be read after the tail: see ur_cq_ready.) */
static inline uint32_t sr_cq_tail(const struct sr_cq *cq)
{
    return sr_load_acquire(cq->ktail);
}

/* CQEs the kernel had to drop (statistics; relaxed). */
static inline uint32_t sr_cq_overflow(const struct sr_cq *cq)
{
    return sr_load_relaxed(cq->koverflow);
}

/* Write our CQ flag word (user ring: SR_CQ_ARMED, read by the server).
 * The ordering that matters is not this store's: a waiter puts a full fence
 * between arming and re-checking the tail (invariant 3, ur_wait_rings).
 * release is what this store always was; on x86 it is a plain store. */
static inline void sr_cq_set_flags(struct sr_cq *cq, uint32_t v)
{
    sr_store_release(cq->kflags, v);
}

/* Number of CQEs ready.  The acquire pairs with the producer's release of the
 * tail: every CQE below the tail we read is fully written. */
static inline uint32_t sr_cq_ready(const struct sr_cq *cq, uint32_t head)
{
    return sr_load_acquire(cq->ktail) - head;
}

static inline const struct io_uring_cqe *sr_cq_at(const struct sr_cq *cq, uint32_t idx)
{
    return (const struct io_uring_cqe *)(cq->cqes +
            ((size_t)(idx & cq->mask) << (4 + cq->cqe_shift)));
}

/* Give `head`'s entries back to the producer.  release: our reads of the CQEs
 * happen before the producer may reuse their slots (invariant 2). */
static inline void sr_cq_release(struct sr_cq *cq, uint32_t head)
{
    sr_store_release(cq->khead, head);
}


/* ---- the peer's halves: SQ consumer and CQ producer --------------------
 * Used by a user-space subsystem (the server), for which the client is
 * untrusted: the client's index is read once per batch and validated, and
 * SQEs are *copied out* before anything looks at them, so the client cannot
 * change an SQE between validation and use. */

struct sr_sq_cons {
    const uint32_t *ktail; /* client writes; we load-acquire */
    uint32_t *khead;       /* we store-release */
    const uint8_t *sqes;
    uint32_t mask, entries, sqe_shift;
    uint32_t head;         /* private: never read back from shared memory */
};

struct sr_cq_prod {
    const uint32_t *khead; /* client writes; we load-acquire */
    uint32_t *ktail;       /* we store-release */
    uint8_t *cqes;
    uint32_t mask, entries, cqe_shift;
    uint32_t tail;         /* private */
    uint32_t head_cache;   /* private: the client's head as last read and validated */
};

/* SQEs available to consume; -1 if the client's tail is impossible. */
static inline int64_t sr_sqc_avail(const struct sr_sq_cons *c)
{
    /* acquire: pairs with the client's release of the tail, so the SQEs
     * below it are fully written before we copy them. */
    uint32_t n = sr_load_acquire(c->ktail) - c->head;
    return n > c->entries ? -1 : (int64_t)n;
}

/* Copy the next SQE out of shared memory and consume it (not yet visible). */
static inline void sr_sqc_take(struct sr_sq_cons *c, void *out)
{
    size_t sz = (size_t)64 << c->sqe_shift;
    memcpy(out, c->sqes + ((size_t)(c->head & c->mask) << (6 + c->sqe_shift)), sz);
    c->head++;
}

/* SQEs the client published that we have not taken, unvalidated (for
 * reporting only; the data path uses sr_sqc_avail). */
static inline uint32_t sr_sqc_waiting(const struct sr_sq_cons *c)
{
    return sr_load_acquire(c->ktail) - c->head;
}

/* Tell the client the taken entries are free.  release: our copies of the
 * SQEs are complete before the client may overwrite those entries. */
static inline void sr_sqc_release(struct sr_sq_cons *c)
{
    sr_store_release(c->khead, c->head);
}

/* Free CQ entries; -1 if the client's head is impossible.  Reads (and
 * validates) the client's head. */
static inline int64_t sr_cqp_space(struct sr_cq_prod *p)
{
    /* acquire: the client finished reading entries below its head. */
    uint32_t head = sr_load_acquire(p->khead);
    uint32_t used = p->tail - head;
    if (used > p->entries)
        return -1;
    p->head_cache = head;
    return (int64_t)(p->entries - used);
}

/* Free CQ entries by the head as last read: a lower bound (the client's head
 * only moves forward), without touching the line the client writes.  The hot
 * path asks this first and reads the head only when it is not enough. */
static inline int64_t sr_cqp_space_cached(const struct sr_cq_prod *p)
{
    return (int64_t)(p->entries - (p->tail - p->head_cache));
}

/* Write a CQE (caller checked space); visible only after sr_cqp_publish. */
static inline void sr_cqp_put(struct sr_cq_prod *p, uint64_t user_data, int32_t res,
                              uint32_t flags)
{
    struct io_uring_cqe *cqe = (struct io_uring_cqe *)(p->cqes +
        ((size_t)(p->tail & p->mask) << (4 + p->cqe_shift)));
    cqe->user_data = user_data;
    cqe->res = res;
    cqe->flags = flags;
    p->tail++;
}

/* CQEs we posted that the client has not reaped, unvalidated (reporting). */
static inline uint32_t sr_cqp_unreaped(const struct sr_cq_prod *p)
{
    return p->tail - sr_load_acquire(p->khead);
}

/* release: CQE contents are visible before the client sees the new tail. */
static inline void sr_cqp_publish(struct sr_cq_prod *p)
{
    sr_store_release(p->ktail, p->tail);
}

/* ---- provided buffer rings (kernel_bufring.c) --------------------------
 * We produce buffers, the kernel consumes them.  The ring is struct
 * io_uring_buf[]; its 16-bit tail overlays the resv field of entry 0, which
 * the kernel never reads as buffer data. */
static inline void sr_pbuf_publish(uint8_t *ring_mem, uint16_t tail)
{
    /* release: the entries written before are visible before the kernel can
     * see the tail move over them. */
    sr_store_release((uint16_t *)(ring_mem + IO_URING_BUF_RING_TAIL_OFFSET), tail);
}

#endif /* SUBRING_RING_H */
