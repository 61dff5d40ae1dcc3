/*
 * ring_prep.h -- the front half every prep path shares, inline: SQE-flag
 * checks, a slot, an SQE (flushing a full SQ when allowed), and binding the
 * two (token, user_data, link-chain bookkeeping).  Used by ring_prep.c and
 * user_calls.c; inline because it is the per-op hot path of every prep_*.
 */
#ifndef SUBRING_RING_PREP_H
#define SUBRING_RING_PREP_H

#include "ring_backend.h"

static inline int sr_check_sqe_flags(uint32_t flags)
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

static inline int64_t sr_ring_alloc(SR_Ring *r, uint8_t opcode)
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
        r->pending_skip_sqidx = sr_sq_last_index(&r->q.sq);
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
        r->chain_head_sqidx = sr_sq_last_index(&r->q.sq);
    }
    r->chain_open = linked;
    return tok;
}

/* Common front half of every single-op prep: checks, slot, SQE. */
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
        sr_sq_rewind(&r->q.sq, sr_sq_last_index(&r->q.sq));   /* the SQE we just took
                                                               * (no GIL release since) */
        return NULL;
    }
    sqe->opcode = opcode;
    return sqe;
}

#endif /* SUBRING_RING_PREP_H */
