/*
 * ring_object.c -- the ring object's life and its common Python face: the
 * SR_Ring constructor, close() (drain through the backend, then the op table),
 * GC support, submit / submit_and_wait, statistics and the properties both
 * ring types share.  Declarations: ring_backend.h.
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
#include <string.h>

#include "ring_backend.h"

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
 * its flag when it is submitted (sr_ring_publish), so it counts. */
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
    if (wait_nr && ready >= kwait && sr_sq_unpublished(&r->q.sq) == 0 &&
        !r->pending_skip) {
        /* nothing to do: no syscall */
        return PyLong_FromUnsignedLong(ready + made_up);
    }
    if (sr_be_submit(r, kwait, ts) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(sr_ring_cq_ready(r) + r->ops.owed_live);
}

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

PyObject *sr_ring_stats(SR_Ring *r, PyObject *unused)
{
    return sr_be_stats(r);
}

PyObject *sr_ring_get_closed(SR_Ring *r, void *c)
{
    return PyBool_FromLong(r->closed || r->fork_gen != sr_fork_generation);
}

PyObject *sr_ring_get_sq_entries(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->q.sq.entries); }

PyObject *sr_ring_get_cq_entries(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->q.cq.entries); }

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
    return PyLong_FromUnsignedLong(sr_sq_pending(&r->q.sq));
}
