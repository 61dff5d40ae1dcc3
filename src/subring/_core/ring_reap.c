/*
 * ring_reap.c -- completions: taking a CQE apart into a Completion (or into
 * caller arrays), retiring its op, and the completions we make up because the
 * peer never will (withdrawn chains, SKIP_SUCCESS chains, a dead subsystem).
 * Shared by both backends; the backend-specific steps go through sr_be_*
 * (ring_backend.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "ring_backend.h"

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
/* Where a reap starts: the CQ head and the CQEs ready there, after the flush
 * the backend may need first (DEFER_TASKRUN, overflow).  The flush releases
 * the GIL -- another thread may reap meanwhile -- so the head is read again
 * after it, never kept from before.  Returns the count ready, or -1. */
static inline int64_t sr_ring_reap_start(SR_Ring *r, uint32_t *head)
{
    *head = sr_ring_cq_head(r);
    uint32_t ready = sr_be_ready(r, *head);
    if (sr_be_flush_before_reap(r, ready)) {
        if (sr_be_flush_cq(r) < 0)
            return -1;
        *head = sr_ring_cq_head(r);
        ready = sr_be_ready(r, *head);
    }
    return ready;
}

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
    uint32_t head;
    int64_t start = sr_ring_reap_start(r, &head);
    if (start < 0)
        goto error;
    uint32_t ready = (uint32_t)start;
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
    uint32_t head;
    int64_t start = sr_ring_reap_start(r, &head);
    if (start < 0)
        goto out;
    uint32_t ready = (uint32_t)start;
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
