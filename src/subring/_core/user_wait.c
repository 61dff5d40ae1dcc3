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
    uint32_t tail = sr_load_acquire(r->q.cq.ktail);
    uint32_t head = sr_load_relaxed(&r->cq_head);
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

/* Wait without the GIL.  Returns 0 (condition, timeout or peer death) or
 * -EINTR. */
int ur_wait_nogil(SR_Ring *r, uint32_t min_complete, int64_t deadline, int mode,
                         int64_t spin_ns, uint64_t *sleeps)
{
    int64_t now = sr_now_ns();
    int64_t spin_until = mode == SR_MODE_POLL ? deadline
                        : mode == SR_MODE_HYBRID ? now + spin_ns : now;
    int64_t next_peer_check = now + 1000000;
    for (;;) {
        if (ur_cq_ready(r) >= min_complete || r->u.peer_dead)
            return 0;
        now = sr_now_ns();
        if (now >= deadline)
            return 0;
        if (now < spin_until) {
            for (int k = 0; k < 64; k++) {
                sr_cpu_relax();
                if (ur_cq_ready(r) >= min_complete)
                    return 0;
            }
            sr_spin_yield();
            if (now >= next_peer_check) {   /* poll mode never sleeps: look for death */
                next_peer_check = now + 1000000;
                if (ur_peer_gone(r))
                    return 0;
            }
            continue;
        }
        /* Arm, fence, re-check (invariant 3, wait side).  We are the only
         * writer of cq_flags. */
        sr_store_release(&r->u.ureg->cq_flags.v, SR_CQ_ARMED);
        SR_DEBUG_DELAY("client: ARMED set, before the fence");
        sr_full_fence();
        if (ur_cq_ready(r) >= min_complete || r->u.peer_dead) {
            if (!r->u.async_armed)
                sr_store_release(&r->u.ureg->cq_flags.v, 0);
            return 0;
        }
        struct pollfd pf[2] = {{.fd = r->u.cq_efd, .events = POLLIN},
                               {.fd = r->u.sock_fd, .events = POLLIN}};
        struct timespec ts, *tsp = NULL;
        if (deadline != INT64_MAX) {
            int64_t left = deadline - now;
            ts.tv_sec = left / 1000000000LL;
            ts.tv_nsec = left % 1000000000LL;
            tsp = &ts;
        }
        (*sleeps)++;
        SR_DEBUG_DELAY("client: re-checked, before ppoll");
        int n = ppoll(pf, 2, tsp, NULL);
        int err = errno;
        if (!r->u.async_armed)
            sr_store_release(&r->u.ureg->cq_flags.v, 0);
        if (n < 0) {
            if (err == EINTR)
                return -EINTR;
            return 0;
        }
        if (pf[0].revents & POLLIN)
            sr_eventfd_drain(r->u.cq_efd);
        if (pf[1].revents)
            r->u.peer_dead = SR_PEER_GONE;
    }
}

/* wait_any(rings, timeout=None, spin_us=50.0) -> list of indices of rings that
 * have completions ready or whose peer died.  Spins (without the GIL) up to
 * spin_us, then arms every ring's CQ, fences, re-checks and sleeps in one
 * ppoll() over all completion eventfds and attach sockets (invariant 3 for
 * each ring).  Returns [] on timeout.  Used by RingExecutor's completion
 * thread and by callers that drive completions themselves. */
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
    int any = 0, interrupted = 0;
    for (Py_ssize_t k = 0; k < n; k++)
        rs[k]->in_enter++;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        for (Py_ssize_t k = 0; k < n; k++) {
            if (ur_cq_ready(rs[k]) || rs[k]->u.peer_dead) {
                hit[k] = 1;
                any = 1;
            }
        }
        if (any)
            break;
        now = sr_now_ns();
        if (now >= deadline)
            break;
        if (now < spin_until) {
            for (int j = 0; j < 32; j++)
                sr_cpu_relax();
            sr_spin_yield();
            continue;
        }
        for (Py_ssize_t k = 0; k < n; k++)
            sr_store_release(&rs[k]->u.ureg->cq_flags.v, SR_CQ_ARMED);
        sr_full_fence();
        for (Py_ssize_t k = 0; k < n; k++) {
            if (ur_cq_ready(rs[k]) || rs[k]->u.peer_dead) {
                hit[k] = 1;
                any = 1;
            }
        }
        if (!any) {
            for (Py_ssize_t k = 0; k < n; k++) {
                pf[2 * k] = (struct pollfd){.fd = rs[k]->u.cq_efd, .events = POLLIN};
                pf[2 * k + 1] = (struct pollfd){.fd = rs[k]->u.sock_fd, .events = POLLIN};
            }
            struct timespec t, *tp = NULL;
            if (deadline != INT64_MAX) {
                int64_t left = deadline - now;
                t.tv_sec = left / 1000000000LL;
                t.tv_nsec = left % 1000000000LL;
                tp = &t;
            }
            int m = ppoll(pf, (nfds_t)(2 * n), tp, NULL);
            if (m < 0 && errno == EINTR)
                interrupted = 1;
            for (Py_ssize_t k = 0; m > 0 && k < n; k++) {
                if (pf[2 * k].revents & POLLIN)
                    sr_eventfd_drain(rs[k]->u.cq_efd);
                if (pf[2 * k + 1].revents)
                    rs[k]->u.peer_dead = SR_PEER_GONE;
            }
        }
        for (Py_ssize_t k = 0; k < n; k++)
            if (!rs[k]->u.async_armed)
                sr_store_release(&rs[k]->u.ureg->cq_flags.v, 0);
        if (any || interrupted)
            break;
        /* woken: loop to collect what is ready (or sleep again) */
        spin_until = 0;
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n; k++)
        rs[k]->in_enter--;
    if (interrupted && PyErr_CheckSignals() < 0)
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
