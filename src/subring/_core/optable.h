/*
 * optable.h -- the table of in-flight operations of one ring.
 *
 * Every SQE we hand to a peer gets a slot here, and the SQE's user_data is the
 * slot's *token*:  (generation << 32) | slot_index.  The slot owns, until the
 * op's final CQE (the first one without IORING_CQE_F_MORE):
 *
 *   - the caller's user_data object (any Python object) or an integer,
 *   - the memory the peer may read or write (a Py_buffer export, and/or a
 *     `keep` object such as a Pin or a tuple of Pins).
 *
 * Buffer lifetime (DESIGN.md invariant 5), the rule users rely on:
 *   the peer may write into a buffer until that op's own final CQE has been
 *   reaped -- also after a successful cancel, after close(fd), and after a
 *   link failure.  So nothing here releases a slot for any other reason than
 *   its final CQE (or ring teardown after the peer is provably done).
 *
 * Invariant 6: tokens are unique among in-flight ops and generation-tagged,
 * so a late or forged CQE for a reused slot is recognised (gen mismatch) and
 * never completes the wrong op.  Generation 0 is never issued, so token 0 is
 * free for internal use (the close()-time cancel-all).
 *
 * The table size caps the number of ops in flight (max_inflight, by default
 * the CQ size): with one CQE per op the CQ cannot overflow unless multishot
 * ops are used, and then the ring flushes the kernel's backlog.
 *
 * All of this runs with the GIL held; that is what serialises it.
 */
#ifndef SUBRING_OPTABLE_H
#define SUBRING_OPTABLE_H

#include "core.h"

enum { SLOT_FREE = 0, SLOT_LIVE = 1 };

typedef struct {
    /* hot: everything alloc/find/release touch, in the first cache line */
    PyObject *udata;      /* owned; NULL -> int_udata is the user data */
    PyObject *keep;       /* owned; extra objects pinned for the peer */
    uint64_t  int_udata;
    uint32_t  gen;
    uint32_t  chain;      /* 1 + slot of a CQE_SKIP_SUCCESS predecessor, or 0 */
    uint32_t  chain_gen;
    uint8_t   opcode;
    uint8_t   state;
    uint8_t   skip;       /* submitted with IOSQE_CQE_SKIP_SUCCESS */
    uint8_t   fixed;      /* uses a registered buffer */
    uint8_t   multishot;  /* may post several CQEs (F_MORE) */
    uint8_t   has_view;   /* `view` holds an export */
    uint8_t   linkflag;   /* 1: submitted with IOSQE_IO_LINK, 2: HARDLINK */
    uint32_t  link_next;  /* 1 + slot of the next op in its link chain, or 0 */
    uint32_t  link_next_gen;
} __attribute__((aligned(64))) sr_slot;
/* One cache line per slot: what alloc/find/release touch, nothing else (the
 * rare buffer export lives in the parallel `views` array). */
_Static_assert(sizeof(sr_slot) == 64, "sr_slot outgrew its cache line");

typedef struct {
    sr_slot  *slots;      /* 64-byte aligned, one line each */
    Py_buffer *views;     /* views[i]: slot i's buffer export while has_view */
    uint32_t *free_stack;
    uint32_t  nfree;
    uint32_t  nslots;
    uint32_t  live;       /* ops in flight */
    uint32_t  fixed_live; /* ... of which use registered buffers */
} sr_optable;

static inline uint64_t sr_token(const sr_optable *t, uint32_t i)
{
    return ((uint64_t)t->slots[i].gen << 32) | i;
}

int  sr_optable_init(sr_optable *t, uint32_t nslots);
void sr_optable_free(sr_optable *t);   /* only when no slot is live */

/* Take a free slot; -1 when all are in flight. */
static inline int64_t sr_slot_alloc(sr_optable *t, uint8_t opcode)
{
    if (sr_unlikely(t->nfree == 0))
        return -1;
    uint32_t i = t->free_stack[--t->nfree];
    sr_slot *s = &t->slots[i];
    s->gen++;
    if (sr_unlikely(s->gen == 0))
        s->gen = 1;
    s->state = SLOT_LIVE;
    s->opcode = opcode;
    s->skip = 0;
    s->fixed = 0;
    s->multishot = 0;
    s->has_view = 0;
    s->linkflag = 0;
    s->link_next = 0;
    s->chain = 0;
    t->live++;
    return i;
}

/* Undo an allocation that never reached the ring (error while preparing). */
static inline void sr_slot_abort(sr_optable *t, uint32_t i)
{
    sr_slot *s = &t->slots[i];
    Py_CLEAR(s->udata);
    Py_CLEAR(s->keep);
    if (s->has_view) {
        PyBuffer_Release(&t->views[i]);
        s->has_view = 0;
    }
    s->state = SLOT_FREE;
    s->gen--;            /* the token was never published: reuse it */
    t->live--;
    t->free_stack[t->nfree++] = i;
}

/* Decode a CQE's user_data; returns the slot index or -1 (not ours / stale). */
static inline int64_t sr_slot_find(const sr_optable *t, uint64_t ud)
{
    uint32_t i = (uint32_t)ud;
    if (sr_likely(i < t->nslots)) {
        const sr_slot *s = &t->slots[i];
        if (sr_likely(s->state == SLOT_LIVE && s->gen == (uint32_t)(ud >> 32)))
            return i;
    }
    return -1;
}

static inline void sr_slot_clear(sr_optable *t, uint32_t i)
{
    sr_slot *s = &t->slots[i];
    Py_CLEAR(s->udata);
    Py_CLEAR(s->keep);
    if (s->has_view) {
        PyBuffer_Release(&t->views[i]);
        s->has_view = 0;
    }
    if (s->fixed)
        t->fixed_live--;
    s->state = SLOT_FREE;
    t->live--;
    t->free_stack[t->nfree++] = i;
}

/* A live slot that holds nothing to release and takes part in no link
 * bookkeeping: an int user_data, no pinned objects or buffer, not multishot,
 * not skip-success, no skipped predecessors. */
static inline int sr_slot_plain(const sr_slot *s)
{
    return !s->udata && !s->keep && !(s->has_view | s->fixed | s->multishot | s->skip) &&
           !s->chain;
}

/* Free a plain slot (sr_slot_plain) after its final CQE: all that
 * sr_slot_release would do for it. */
static inline void sr_slot_free_plain(sr_optable *t, uint32_t i)
{
    t->slots[i].state = SLOT_FREE;
    t->live--;
    t->free_stack[t->nfree++] = i;
}

/* The op's final CQE was reaped: drop what it pinned and free the slot, then
 * release any CQE_SKIP_SUCCESS predecessors in its link chain (their success
 * CQE was suppressed; this op's CQE proves they finished).  The caller has
 * already taken (stolen) s->udata if it wanted it. */
static inline void sr_slot_release(sr_optable *t, uint32_t i)
{
    uint32_t chain = t->slots[i].chain, cgen = t->slots[i].chain_gen;
    sr_slot_clear(t, i);
    /* Walk back through suppressed-success predecessors.  Stop at the first
     * one that is gone (it failed, so it posted its own CQE and was freed) or
     * reused (generation mismatch). */
    while (sr_unlikely(chain)) {
        uint32_t j = chain - 1;
        sr_slot *p = &t->slots[j];
        if (p->state != SLOT_LIVE || p->gen != cgen || !p->skip)
            break;
        chain = p->chain;
        cgen = p->chain_gen;
        sr_slot_clear(t, j);
    }
}

#endif
