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
 * Buffer lifetime (docs/design.md invariant 5), the rule users rely on:
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
    uint8_t   owed;       /* queued for a made-up final completion (r->synth):
                           * the kernel will post none, and a successor's CQE
                           * must not release it silently */
    uint32_t  link_next;  /* 1 + slot of the next op in its link chain, or 0 */
    uint32_t  link_next_gen;
    uint16_t  bgid;       /* buffer group of an IOSQE_BUFFER_SELECT op */
    uint8_t   bufsel;     /* submitted with IOSQE_BUFFER_SELECT */
} __attribute__((aligned(64))) sr_slot;
/* One cache line per slot: what alloc/find/release touch, nothing else (the
 * rare buffer export lives in the parallel `views` array). */
_Static_assert(sizeof(sr_slot) == 64, "sr_slot outgrew its cache line");

/* Objects and buffer exports whose release is deferred until the op table
 * is consistent again.  Releasing a reference can run arbitrary Python code
 * (a `keep` object's __del__, a weakref callback, a buffer exporter), and
 * that code may re-enter the ring: reap(), close()...  So the table never
 * drops a reference in the middle of an update: it parks it here, and the
 * ring method that changed the table empties the trash as its last step
 * (sr_optable_flush), when nothing it holds on the C stack can go stale. */
typedef struct {
    PyObject **objs;
    Py_buffer *views;
    uint32_t   nobjs, capobjs;
    uint32_t   nviews, capviews;
} sr_trash;

typedef struct {
    sr_slot  *slots;      /* 64-byte aligned, one line each */
    Py_buffer *views;     /* views[i]: slot i's buffer export while has_view */
    uint32_t *free_stack;
    uint32_t  nfree;
    uint32_t  nslots;
    uint32_t  live;       /* ops in flight */
    uint32_t  fixed_live; /* ... of which use registered buffers */
    uint32_t  skip_live;  /* ... of which carry IOSQE_CQE_SKIP_SUCCESS (they post
                           * a CQE only if they fail) */
    uint32_t  owed_live;  /* ... of which are owed a made-up completion */
    sr_trash  trash;
} sr_optable;

static inline uint64_t sr_token(const sr_optable *t, uint32_t i)
{
    return ((uint64_t)t->slots[i].gen << 32) | i;
}

int  sr_optable_init(sr_optable *t, uint32_t nslots);
void sr_optable_free(sr_optable *t);   /* only when no slot is live; flushes the trash */
/* Release everything parked in the trash.  Re-entrant: each item is taken
 * off the trash before it is released, and a nested flush (or close, which
 * flushes and frees) leaves the outer loop nothing to do. */
void sr_optable_flush(sr_optable *t);
int  sr_trash_grow(sr_optable *t, int views);

/* Park a reference (stolen) for release at the next flush.  Without memory
 * to park it, the reference is leaked: a leak is safe, running a finalizer
 * in the middle of a table update is not. */
static inline void sr_trash_obj(sr_optable *t, PyObject *o)
{
    if (!o)
        return;
    if (sr_unlikely(t->trash.nobjs == t->trash.capobjs) && sr_trash_grow(t, 0) < 0)
        return;
    t->trash.objs[t->trash.nobjs++] = o;
}

static inline void sr_trash_view(sr_optable *t, Py_buffer *v)
{
    if (sr_unlikely(t->trash.nviews == t->trash.capviews) && sr_trash_grow(t, 1) < 0)
        return;
    t->trash.views[t->trash.nviews++] = *v;
    v->obj = NULL;
}

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
    s->owed = 0;
    s->bufsel = 0;
    s->link_next = 0;
    s->chain = 0;
    t->live++;
    return i;
}

/* Undo an allocation that never reached the ring (error while preparing;
 * its token was never handed out).  The table is consistent before anything
 * is released, and callers return right after. */
static inline void sr_slot_abort(sr_optable *t, uint32_t i)
{
    sr_slot *s = &t->slots[i];
    PyObject *u = s->udata, *k = s->keep;
    Py_buffer v = {0};
    s->udata = s->keep = NULL;
    if (s->has_view) {
        v = t->views[i];
        s->has_view = 0;
    }
    s->state = SLOT_FREE;
    s->gen--;            /* the token was never published: reuse it */
    if (s->gen == 0)
        s->gen = UINT32_MAX;
    t->live--;
    t->free_stack[t->nfree++] = i;
    if (v.obj)
        PyBuffer_Release(&v);
    Py_XDECREF(u);
    Py_XDECREF(k);
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

/* Free slot i.  What it held goes to the trash (see sr_trash): nothing
 * here can run Python code. */
static inline void sr_slot_clear(sr_optable *t, uint32_t i)
{
    sr_slot *s = &t->slots[i];
    PyObject *u = s->udata, *k = s->keep;
    s->udata = s->keep = NULL;
    if (s->has_view) {
        sr_trash_view(t, &t->views[i]);
        s->has_view = 0;
    }
    if (s->fixed)
        t->fixed_live--;
    if (s->skip)
        t->skip_live--;
    if (s->owed)
        t->owed_live--;
    s->skip = s->owed = 0;
    s->state = SLOT_FREE;
    t->live--;
    t->free_stack[t->nfree++] = i;
    sr_trash_obj(t, u);
    sr_trash_obj(t, k);
}

/* A live slot that holds nothing to release and takes part in no link
 * bookkeeping: an int user_data, no pinned objects or buffer, not multishot,
 * not skip-success, no skipped predecessors. */
static inline int sr_slot_plain(const sr_slot *s)
{
    return !s->udata && !s->keep &&
           !(s->has_view | s->fixed | s->multishot | s->skip | s->owed | s->bufsel) &&
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
     * one that is gone (it failed, so it posted its own CQE and was freed),
     * reused (generation mismatch), or owed a made-up completion (it was
     * cancelled with its chain: it did not succeed, and it gets its own
     * final completion from the synth queue). */
    while (sr_unlikely(chain)) {
        uint32_t j = chain - 1;
        sr_slot *p = &t->slots[j];
        if (p->state != SLOT_LIVE || p->gen != cgen || !p->skip || p->owed)
            break;
        chain = p->chain;
        cgen = p->chain_gen;
        sr_slot_clear(t, j);
    }
}

#endif
