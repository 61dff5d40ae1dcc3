/*
 * user_wait.c -- waiting for a user-space subsystem's completions without the
 * GIL: ur_cq_ready (the one GIL-free read of a client CQ), the arm -> fence ->
 * re-check -> sleep helper, and _core.wait_any (one wait over several
 * connections, used by RingExecutor's completion thread).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <time.h>

#include "ring_backend.h"

/* CQEs visible; a server that pushed the tail past our head + entries broke
 * the protocol: treat it as dead (corrupt) rather than read garbage. */
static inline uint32_t ur_cq_ready(SR_Ring *r)
{
    /* This runs without the GIL, while threads holding it reap and advance
     * our head.  So the peer's tail is read FIRST, then our head (private
     * copy, sr_ring_cq_head; never the shared word read back).  The other order
     * let the head go stale while other threads reaped and the server posted
     * past it: tail - stale head exceeded the CQ, and a sane server was
     * failed as a protocol breaker (bug: "ClientStatistics.submitted ends 16
     * below completed under threads").  In this order the check is sound: the
     * server posted that tail only after seeing a shared head >= tail -
     * entries, and the reaper stored our private head before releasing that
     * shared head (sr_ring_cq_release), so the acquire of the tail makes a head at
     * least that new visible to the relaxed load after it. */
    uint32_t tail = sr_cq_tail(&r->q.cq);
    uint32_t head = sr_load_relaxed(&r->cq_head);   /* private copy: see ring_backend.h */
    uint32_t n = tail - head;
    /* Other threads reaped past the tail we read: nothing new for us (the
     * caller re-checks). */
    if ((int32_t)n < 0)
        return 0;
    if (sr_unlikely(n > r->q.cq.entries)) {
        r->u.peer_dead = SR_PEER_BROKE;
        return 0;
    }
    return n;
}

/* Is ring k done waiting: `min_complete` CQEs ready, or (unless
 * `ready_only`) its peer dead?  Marks every such ring in hit[]; returns
 * whether there was one.  ready_only is the spin burst's re-check: it runs
 * between pauses, and in hybrid mode on a shared CPU the burst's length is
 * the round trip (the server runs when we yield), so it does only the one
 * load it must; death is looked at once per burst. */
static inline int ur_scan(SR_Ring *const *rs, Py_ssize_t n, uint32_t min_complete,
                          uint8_t *hit, int ready_only)
{
    int any = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        /* ur_cq_ready first: it may find the peer broke the protocol */
        if (ur_cq_ready(rs[k]) >= min_complete || (!ready_only && rs[k]->u.peer_dead)) {
            hit[k] = 1;
            any = 1;
        }
    }
    return any;
}

/* Our CQ flag word: ARMED asks the server to signal cq_efd after it posts.
 * A ring an event loop watches (async_armed) stays armed. */
static void ur_arm(SR_Ring *const *rs, Py_ssize_t n)
{
    for (Py_ssize_t k = 0; k < n; k++)
        sr_cq_set_flags(&rs[k]->q.cq, SR_CQ_ARMED);
}
static void ur_disarm(SR_Ring *const *rs, Py_ssize_t n)
{
    for (Py_ssize_t k = 0; k < n; k++)
        if (!rs[k]->u.async_armed)
            sr_cq_set_flags(&rs[k]->q.cq, 0);
}

/* The one waiter of the user backend: wait without the GIL until one of the
 * `n` client rings rs[] has `min_complete` CQEs ready or a dead peer (each
 * such ring is marked in hit[]), or until `deadline` (sr_now_ns; INT64_MAX:
 * none).  Returns 1 (hit), 0 (timeout) or -EINTR (a signal: the caller runs
 * the Python handlers with the GIL; submit_and_wait then waits on until the
 * same deadline, wait_any returns).
 *
 *   spin     until `spin_until`: re-check between pauses (sr_cpu_relax),
 *            yield the CPU after each burst, and look for peer death once a
 *            millisecond (poll mode never sleeps, so only this finds it);
 *   arm      set ARMED on every ring's CQ flags;
 *   fence    full: orders the ARMED stores before the tail loads below --
 *            the server publishes its tail, fences, then reads ARMED, so at
 *            least one of us sees the other (invariant 3).  Release/acquire
 *            cannot give that (a store then a load of another word);
 *   re-check and only then
 *   sleep    in one ppoll() on every completion eventfd and attach socket
 *            (HUP / readable = the server is gone), then disarm and loop.
 *
 * `pf` has room for 2n entries.  `sleeps` counts the ppoll() calls.  Always
 * inlined: the single-ring caller gets a copy with n = 1 folded in (the
 * burst's re-check is then one acquire load and a compare, as it was before
 * the two waiters were merged; measured on the hybrid round trip).  Touches
 * only what may be touched without the GIL: the shared region (ring.h), the
 * private CQ head through ur_cq_ready, u.peer_dead and u.async_armed (see
 * their comments in ring_backend.h). */
static inline __attribute__((always_inline))
int ur_wait_rings(SR_Ring *const *rs, Py_ssize_t n, uint32_t min_complete,
                  int64_t deadline, int64_t spin_until, struct pollfd *pf,
                  uint8_t *hit, uint64_t *sleeps)
{
    int64_t now = sr_now_ns();
    int64_t next_peer_check = now + 1000000;
    for (;;) {
        if (ur_scan(rs, n, min_complete, hit, 0))
            return 1;
        now = sr_now_ns();
        if (now >= deadline)
            return 0;
        if (now < spin_until) {
            for (int j = 0; j < 64; j++) {
                sr_cpu_relax();
                if (ur_scan(rs, n, min_complete, hit, 1))
                    return 1;
            }
            sr_spin_yield();
            if (now >= next_peer_check) {
                next_peer_check = now + 1000000;
                for (Py_ssize_t k = 0; k < n; k++)
                    ur_peer_gone(rs[k]);
                if (ur_scan(rs, n, min_complete, hit, 0))
                    return 1;
            }
            continue;
        }
        ur_arm(rs, n);
        SR_DEBUG_DELAY("client: ARMED set, before the fence");
        sr_full_fence();
        if (ur_scan(rs, n, min_complete, hit, 0)) {
            ur_disarm(rs, n);
            return 1;
        }
        for (Py_ssize_t k = 0; k < n; k++) {
            pf[2 * k] = (struct pollfd){.fd = rs[k]->u.cq_efd, .events = POLLIN};
            pf[2 * k + 1] = (struct pollfd){.fd = rs[k]->u.sock_fd, .events = POLLIN};
        }
        struct timespec ts, *tsp = NULL;
        if (deadline != INT64_MAX) {
            ts = sr_timespec_from_ns(deadline - now);
            tsp = &ts;
        }
        (*sleeps)++;
        SR_DEBUG_DELAY("client: re-checked, before ppoll");
        int m = ppoll(pf, (nfds_t)(2 * n), tsp, NULL);
        int err = errno;
        ur_disarm(rs, n);
        if (m < 0)
            return err == EINTR ? -EINTR : 0;
        for (Py_ssize_t k = 0; m > 0 && k < n; k++) {
            if (pf[2 * k].revents & POLLIN)
                sr_eventfd_drain(rs[k]->u.cq_efd);
            if (pf[2 * k + 1].revents)
                rs[k]->u.peer_dead = SR_PEER_GONE;
        }
        /* woken: loop to collect what is ready (or sleep again) */
    }
}

/* One ring: wait for `min_complete` CQEs, spinning first as `mode` says.
 * 0 (ready, timeout or peer death) or -EINTR. */
int ur_wait_nogil(SR_Ring *r, uint32_t min_complete, int64_t deadline, int mode,
                  int64_t spin_ns, uint64_t *sleeps)
{
    int64_t now = sr_now_ns();
    int64_t spin_until = mode == SR_MODE_POLL ? deadline
                        : mode == SR_MODE_HYBRID ? now + spin_ns : now;
    struct pollfd pf[2];
    uint8_t hit = 0;
    int ret = ur_wait_rings(&r, 1, min_complete, deadline, spin_until, pf, &hit, sleeps);
    return ret == -EINTR ? -EINTR : 0;
}

/* wait_any(rings, timeout=None, spin_us=50.0) -> list of indices of rings that
 * have completions ready or whose peer died.  Spins (without the GIL) up to
 * spin_us, then arms every ring's CQ, fences, re-checks and sleeps in one
 * ppoll() over all completion eventfds and attach sockets (invariant 3 for
 * each ring; the helper above).  Returns [] on timeout, or when a signal
 * handler returned.  Used by RingExecutor's completion thread and by callers
 * that drive completions themselves. */
static PyObject *sr_wait_any(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "wait_any(rings, timeout=None, spin_us=50.0)");
        return NULL;
    }
    int64_t ts;
    if (sr_parse_timeout(nargs > 1 ? args[1] : NULL, &ts) < 0)
        return NULL;
    double spin_us = 50.0;
    if (nargs > 2) {
        spin_us = PyFloat_AsDouble(args[2]);
        if (spin_us == -1 && PyErr_Occurred())
            return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "rings must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 1024) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "at most 1024 rings");
        return NULL;
    }
    SR_Ring **rs = PyMem_Calloc((size_t)n + 1, sizeof(SR_Ring *));
    struct pollfd *pf = PyMem_Calloc((size_t)(2 * n) + 1, sizeof(struct pollfd));
    uint8_t *hit = PyMem_Calloc((size_t)n + 1, 1);
    PyObject *out = NULL;
    if (!rs || !pf || !hit) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, k);
        if (!PyObject_TypeCheck(o, &SR_UserRingType)) {
            PyErr_SetString(PyExc_TypeError, "wait_any takes subsystem client rings");
            goto done;
        }
        rs[k] = (SR_Ring *)o;
        if (sr_ring_check(rs[k]) < 0)
            goto done;
    }
    int64_t now = sr_now_ns();
    int64_t deadline = ts < 0 ? INT64_MAX : now + ts;
    int64_t spin_until = now + (int64_t)(spin_us * 1000);
    uint64_t sleeps = 0;
    int ret;
    for (Py_ssize_t k = 0; k < n; k++)
        rs[k]->in_enter++;
    Py_BEGIN_ALLOW_THREADS
    ret = ur_wait_rings(rs, n, 1, deadline, spin_until, pf, hit, &sleeps);
    Py_END_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n; k++)
        rs[k]->in_enter--;
    /* A signal: run the Python handlers; one that raises ends the wait with
     * its exception.  One that returns ends it too, with what is ready (as
     * wait_any always did; its callers loop anyway) -- unlike
     * submit_and_wait, which waits on until its deadline. */
    if (ret == -EINTR && PyErr_CheckSignals() < 0)
        goto done;
    out = PyList_New(0);
    for (Py_ssize_t k = 0; out && k < n; k++) {
        if (!hit[k])
            continue;
        PyObject *v = PyLong_FromSsize_t(k);
        if (!v || PyList_Append(out, v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(out);
        }
        Py_XDECREF(v);
    }
done:
    PyMem_Free(rs);
    PyMem_Free(pf);
    PyMem_Free(hit);
    Py_DECREF(seq);
    return out;
}

PyMethodDef sr_ring_functions[] = {
    {"wait_any", (PyCFunction)(void (*)(void))sr_wait_any, METH_FASTCALL,
     "wait_any(rings, timeout=None, spin_us=50.0, /)\n--\n\n"
     "The indices of the rings with completions ready or a dead peer."},
    {NULL}
};
