/*
 * kernel_ring.c -- the kernel backend: io_uring_enter (with signal and
 * timeout handling), submit, flushing the CQ backlog, setup, the close-time
 * cancel-and-drain, and the _core.KernelRing type.  Registration:
 * kernel_register.c; provided buffer rings: kernel_bufring.c; the raw
 * syscalls: kernel.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "ring_backend.h"

/* Kernel backend: publish, and return the published-but-unconsumed count.
 * The kernel's head is cheap to read (this CPU wrote it in our last enter);
 * a subsystem's is a cache line on another CPU, and nothing on the user path
 * needs more than what the call published (ur_publish). */
static uint32_t kr_publish(SR_Ring *r)
{
    uint32_t fresh = sr_ring_publish(r);
    if (r->k.sqpoll)      /* consumed without an enter: counted here */
        r->st_submitted += fresh;
    return sr_sq_pending(&r->q.sq);
}

/* io_uring_enter with the GIL released.  Returns the number of SQEs
 * submitted (>= 0; also on timeout), or -1 with an exception set.
 *
 * Signals: a wait the kernel cuts short is resumed after running the Python
 * signal handlers (PyErr_CheckSignals, with the GIL; a handler that raises
 * ends the wait with its exception), with what is left of the timeout.  The
 * kernel reports the interruption as -EINTR -- unless the same call also
 * submitted SQEs: then it returns the count submitted and says nothing.  So
 * a wait (GETEVENTS, min_complete > 0) that returns with fewer completions
 * ready than asked, while no other thread consumed any, was interrupted too
 * and is resumed the same way. */
int kr_enter(SR_Ring *r, uint32_t min_complete, uint32_t flags, int64_t ts_ns)
{
    int64_t deadline = ts_ns >= 0 ? sr_now_ns() + ts_ns : -1;
    int waiting = (flags & IORING_ENTER_GETEVENTS) && min_complete;
    int submitted = 0;
    for (;;) {
        uint32_t to_submit = 0;
        if (!r->k.sqpoll)
            to_submit = sr_sq_unconsumed(&r->q.sq);
        uint32_t head0 = sr_ring_cq_head(r);
        int ret;
        r->in_enter++;
        r->st_enters++;
        Py_BEGIN_ALLOW_THREADS
        ret = sr_kring_enter(&r->q, to_submit, min_complete, flags, ts_ns);
        Py_END_ALLOW_THREADS
        r->in_enter--;
        if (ret >= 0) {
            if (!r->k.sqpoll)
                r->st_submitted += (uint32_t)ret;
            submitted += ret;
            int again = 0;
            /* Without SUBMIT_ALL (kernels before 5.18) the kernel stops at
             * the first SQE it rejects, and then does not wait either: go on
             * with the rest (the rejected one already has its error CQE). */
            if (!r->k.sqpoll && ret > 0 && (uint32_t)ret < to_submit)
                again = 1;
            /* An interrupted wait that also submitted (see above). */
            if (!again && waiting && sr_ring_cq_ready(r) < min_complete &&
                sr_ring_cq_head(r) == head0) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
                again = 1;
            }
            if (!again)
                return submitted;
        } else if (ret == -ETIME) {
            return submitted;
        } else if (ret == -EINTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
        } else if (ret == -EBUSY || ret == -EAGAIN) {
            PyErr_SetString(SR_RingBusyError,
                            "the kernel refused new submissions until completions are "
                            "reaped (completion backlog); reap and retry -- nothing was lost");
            return -1;
        } else if (ret == -EEXIST) {
            PyErr_SetString(PyExc_RuntimeError,
                            "io_uring_enter: EEXIST -- this ring was set up with "
                            "single_issuer and is being used from another thread");
            return -1;
        } else {
            sr_raise_errno(-ret, "io_uring_enter");
            return -1;
        }
        if (deadline >= 0) {
            ts_ns = deadline - sr_now_ns();
            if (ts_ns <= 0) {
                if (!waiting)
                    ts_ns = 0;        /* still submit the rest, without waiting */
                else
                    return submitted; /* the timeout passed: not an error */
            }
        }
    }
}

int kr_flush_cq(SR_Ring *r)
{
    if (sr_sq_flags(&r->q.sq) & IORING_SQ_CQ_OVERFLOW)
        r->k.st_overflow++;
    return kr_enter(r, 0, IORING_ENTER_GETEVENTS, -1) < 0 ? -1 : 0;
}

/* Kernel backend: submit everything prepared; wait for `wait_nr` CQEs (0:
 * don't wait). */
int kr_submit(SR_Ring *r, uint32_t wait_nr, int64_t ts_ns)
{
    uint32_t pending = kr_publish(r);
    uint32_t flags = wait_nr ? IORING_ENTER_GETEVENTS : 0;
    if (r->k.sqpoll) {
        /* The SQ thread consumes the ring by itself; only wake it if it went
         * to sleep (full fence inside, see ring.h). */
        if (pending && sr_sq_needs_wakeup(&r->q.sq))
            flags |= IORING_ENTER_SQ_WAKEUP;
        if (!flags)
            return (int)pending;
        return kr_enter(r, wait_nr, flags, ts_ns);
    }
    if (!pending && !wait_nr)
        return 0;
    return kr_enter(r, wait_nr, flags, ts_ns);
}

static int kr_init(SR_Ring *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"entries", "cq_entries", "flags", "sq_thread_cpu",
                             "sq_thread_idle", "max_inflight", "try_flags", NULL};
    PyObject *o[7] = {NULL};
    uint32_t entries, cq_entries, flags, idle, max_inflight, try_flags;
    int cpu;
    if (r->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "ring already set up");
        return -1;
    }
    /* Every size is range-checked (no silent truncation of huge ints). */
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOOOOOO:KernelRing", kwlist, &o[0], &o[1],
                                     &o[2], &o[3], &o[4], &o[5], &o[6]) ||
        sr_as_u32(o[0], 128, &entries, "entries") < 0 ||
        sr_as_u32(o[1], 0, &cq_entries, "cq_entries") < 0 ||
        sr_as_u32(o[2], 0, &flags, "flags") < 0 ||
        sr_as_int(o[3], -1, &cpu, "sq_thread_cpu") < 0 ||
        sr_as_u32(o[4], 0, &idle, "sq_thread_idle") < 0 ||
        sr_as_u32(o[5], 0, &max_inflight, "max_inflight") < 0 ||
        sr_as_u32(o[6], 0, &try_flags, "try_flags") < 0)
        return -1;
    if (cq_entries > 65536 || max_inflight > (1u << 20) || cpu < -1) {
        PyErr_SetString(PyExc_ValueError, "cq_entries must be <= 65536, max_inflight <= "
                        "2**20 and sq_thread_cpu >= -1");
        return -1;
    }
    if (entries == 0 || entries > 32768) {
        PyErr_SetString(PyExc_ValueError, "entries must be in [1, 32768]");
        return -1;
    }
    struct io_uring_params p;
    int ret;
    for (;;) {
        memset(&p, 0, sizeof(p));
        p.flags = flags | try_flags;
        if (cq_entries) {
            p.flags |= IORING_SETUP_CQSIZE;
            p.cq_entries = cq_entries;
        }
        if (cpu >= 0) {
            p.flags |= IORING_SETUP_SQ_AFF;
            p.sq_thread_cpu = (uint32_t)cpu;
        }
        p.sq_thread_idle = idle;
        Py_BEGIN_ALLOW_THREADS
        ret = sr_kring_setup(&r->q, entries, &p);
        Py_END_ALLOW_THREADS
        /* Optional flags (e.g. NO_SQARRAY on kernels before 6.6) are dropped
         * one at a time on EINVAL. */
        if (ret == -EINVAL && try_flags) {
            try_flags &= try_flags - 1;
            continue;
        }
        break;
    }
    if (ret < 0) {
        if (ret == -EPERM || ret == -EACCES) {
            /* PermissionError(errno, text): callers can branch on .errno */
            PyObject *exc = PyObject_CallFunction(
                PyExc_PermissionError, "(iN)", -ret, PyUnicode_FromFormat(
                    "io_uring_setup: %s -- io_uring is disabled here (sysctl "
                    "kernel.io_uring_disabled, or a seccomp/container policy)",
                    strerror(-ret)));
            if (exc) {
                PyErr_SetObject(PyExc_PermissionError, exc);
                Py_DECREF(exc);
            }
        }
        else if (ret == -ENOSYS)
            PyErr_SetString(PyExc_OSError, "io_uring_setup: ENOSYS -- kernel without io_uring");
        else if (ret == -ENOMEM)
            PyErr_SetString(PyExc_MemoryError,
                            "io_uring_setup: ENOMEM -- ring memory is limited by "
                            "RLIMIT_MEMLOCK on older kernels; try fewer entries");
        else
            sr_raise_errno(-ret, "io_uring_setup");
        return -1;
    }
    uint32_t nslots = max_inflight ? max_inflight : r->q.cq.entries;
    if (sr_optable_init(&r->ops, nslots) < 0) {
        sr_kring_teardown(&r->q, 1);
        return -1;
    }
    r->synth = PyMem_Calloc((size_t)nslots * 2, sizeof(uint64_t));
    if (!r->synth) {
        sr_optable_free(&r->ops);
        sr_kring_teardown(&r->q, 1);
        PyErr_NoMemory();
        return -1;
    }
    r->k.buffer_rings = PyList_New(0);
    if (!r->k.buffer_rings) {
        sr_optable_free(&r->ops);
        sr_kring_teardown(&r->q, 1);
        return -1;
    }
    r->cq_head = sr_cq_init_head(&r->q.cq);   /* 0 for a new ring */
    if (getrandom(&r->ud_key, sizeof(r->ud_key), GRND_NONBLOCK) != sizeof(r->ud_key))
        r->ud_key = (uint64_t)sr_now_ns() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)r;
    r->k.sqpoll = (p.flags & IORING_SETUP_SQPOLL) != 0;
    r->k.defer_taskrun = (p.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
    r->k.taskrun_flag = (p.flags & IORING_SETUP_TASKRUN_FLAG) != 0;
    r->fork_gen = sr_fork_generation;
    r->initialized = 1;
    r->closed = 0;
    return 0;
}

/* Cancel everything in flight and reap until the kernel has posted every
 * final CQE or `timeout_ns` passed.  Returns the number still in flight. */
static uint32_t kr_drain(SR_Ring *r, int64_t timeout_ns)
{
    /* A link chain still open (its last op carries LINK) would take the
     * cancel below in as its next member: the cancel would wait for the
     * chain (a blocked read, say) instead of cancelling it.  Withdraw it:
     * closing cancels it anyway, and unsubmitted ops need not run. */
    if (r->chain_open)
        sr_ring_withdraw_chain(r);
    else if (sr_sq_unpublished(&r->q.sq)) {
        /* Belt and braces: the last unpublished SQE must not carry LINK
         * either (it is still ours to edit). */
        struct sr_sq *q = &r->q.sq;
        struct io_uring_sqe *last = sr_sq_entry(q, sr_sq_last_index(q));
        last->flags &= (uint8_t)~(IOSQE_IO_LINK | IOSQE_IO_HARDLINK);
    }
    sr_ring_drop_synth(r);
    if (!r->ops.live)
        return 0;
    int64_t deadline = sr_now_ns() + timeout_ns;
    struct sr_sq *sq = &r->q.sq;
    struct sr_cq *cq = &r->q.cq;
    int cancel_sent = 0;
    int64_t last_cancel = 0;
    /* Ops prepared but not yet submitted: submit them (as they are) so that
     * they, too, end with a CQE; the cancel below catches them. */
    while (r->ops.live) {
        if (!cancel_sent && !r->k.no_sync_cancel) {
            /* Preferred: cancel everything with IORING_REGISTER_SYNC_CANCEL.
             * A cancel *SQE* is ordered like any other: behind a DRAIN op
             * (which waits for the very op to be cancelled) or inside a
             * link chain it would never start.  Submit what is prepared
             * first, so that it too is cancelled. */
            uint32_t pending = kr_publish(r);
            struct io_uring_sync_cancel_reg sc;
            memset(&sc, 0, sizeof(sc));
            sc.fd = -1;
            sc.flags = IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY;
            sc.timeout.tv_sec = 0;       /* try once; the wait below reaps */
            sc.timeout.tv_nsec = 0;
            int ret;
            Py_BEGIN_ALLOW_THREADS
            if (!r->k.sqpoll && pending)
                sr_kring_enter(&r->q, pending, 0, 0, -1);
            else if (r->k.sqpoll && pending && sr_sq_needs_wakeup(sq))
                sr_kring_enter(&r->q, 0, 0, IORING_ENTER_SQ_WAKEUP, -1);
            ret = sr_kring_register(r->q.fd, IORING_REGISTER_SYNC_CANCEL, &sc, 1);
            Py_END_ALLOW_THREADS
            if (ret == -EINVAL || ret == -EOPNOTSUPP || ret == -ENOSYS) {
                r->k.no_sync_cancel = 1;   /* before 5.19: the SQE path below */
            } else {
                cancel_sent = 1;
                last_cancel = sr_now_ns();
            }
        }
        if (!cancel_sent) {
            uint32_t space = sr_sq_space(sq);
            if (space == 0) {
                kr_publish(r);
                sr_kring_enter(&r->q, sr_sq_unconsumed(sq),
                               0, 0, -1);
                space = sr_sq_space(sq);
            }
            if (space) {
                struct io_uring_sqe *sqe = sr_sq_get(sq, &space);
                sqe->opcode = IORING_OP_ASYNC_CANCEL;
                sqe->fd = -1;
                sqe->cancel_flags = IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY;
                /* internal: decodes to token 0, never issued (optable.h) */
                sqe->user_data = r->ud_key;
                cancel_sent = 1;
                last_cancel = sr_now_ns();
            }
        }
        int64_t left = deadline - sr_now_ns();
        if (left <= 0)
            break;
        uint32_t pending = kr_publish(r);
        uint32_t flags = IORING_ENTER_GETEVENTS;
        if (r->k.sqpoll && pending && sr_sq_needs_wakeup(sq))
            flags |= IORING_ENTER_SQ_WAKEUP;
        int ret;
        Py_BEGIN_ALLOW_THREADS
        ret = sr_kring_enter(&r->q, r->k.sqpoll ? 0 : pending, 1, flags,
                             left > 50000000 ? 50000000 : left);
        Py_END_ALLOW_THREADS
        (void)ret;
        uint32_t head = sr_ring_cq_head(r);
        uint32_t ready = sr_cq_ready(cq, head);
        for (; ready; ready--, head++) {
            const struct io_uring_cqe *cqe = sr_cq_at(cq, head);
            int64_t i = sr_ring_find(r, cqe->user_data);
            if (i >= 0 && !(cqe->flags & IORING_CQE_F_MORE))
                sr_ring_retire(r, (uint32_t)i);
        }
        sr_ring_cq_release(r, head);
        sr_ring_drop_synth(r);
        /* Ops that were not cancellable at that instant (e.g. just being
         * issued) get another cancel every 100 ms. */
        if (r->ops.live && sr_now_ns() - last_cancel > 100000000)
            cancel_sent = 0;
    }
    return r->ops.live;
}

/* Objects that the kernel may still write to after a failed drain: they are
 * kept alive forever rather than freed under the kernel. */
static PyObject *leaked_pins;

static void kr_leak_live(SR_Ring *r)
{
    if (!leaked_pins)
        leaked_pins = PyList_New(0);
    for (uint32_t k = 0; k < r->ops.nslots; k++) {
        sr_slot *s = &r->ops.slots[k];
        if (s->state != SLOT_LIVE)
            continue;
        /* Keep the export (so the memory cannot be freed or resized) by
         * moving it into a Pin-less holder: a bytes-free capsule would do, but
         * the simplest is to never release it: we forget the Py_buffer. */
        if (s->has_view)
            s->has_view = 0;      /* leak the export on purpose: never released */
        if (s->keep && leaked_pins)
            PyList_Append(leaked_pins, s->keep);
        if (s->udata && leaked_pins)
            PyList_Append(leaked_pins, s->udata);
    }
    for (uint32_t k = 0; k < r->k.nregbufs; k++)
        r->k.regbufs[k].obj = NULL;  /* same for registered buffers */
}

/* Kernel backend, close() first half: cancel and drain what is in flight,
 * then unmap and close the ring. */
void kr_close_io(SR_Ring *r, int64_t timeout_ns)
{
    if (r->fork_gen != sr_fork_generation) {
        /* Forked child: the parent owns the in-flight ops and the rings (not
         * even mapped here: MADV_DONTFORK).  Drop our fd and our copies. */
        close(r->q.fd);
        r->q.fd = -1;
        r->q.sq_map = r->q.cq_map = r->q.sqe_map = NULL;
    } else {
        uint32_t left = kr_drain(r, timeout_ns);
        if (left) {
            PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                             "KernelRing closed with %u ops the kernel did not complete "
                             "within the timeout; their buffers are kept alive forever",
                             left);
            kr_leak_live(r);
        }
        sr_kring_teardown(&r->q, 1);
    }
    if (r->k.own_eventfd > 0) {
        close(r->k.own_eventfd);
        r->k.own_eventfd = 0;
    }
}

/* Kernel backend, close() second half (after the op table is freed). */
void kr_release(SR_Ring *r)
{
    kr_release_regbufs(r);
    if (r->k.buffer_rings) {
        kr_bufrings_detach(r);
        Py_CLEAR(r->k.buffer_rings);
    }
}

PyObject *kr_stats_dict(SR_Ring *r)
{
    uint32_t dropped = 0, overflow = 0;
    if (!r->closed && r->fork_gen == sr_fork_generation) {
        dropped = sr_sq_dropped(&r->q.sq);
        overflow = sr_cq_overflow(&r->q.cq);
    }
    return Py_BuildValue("{sKsKsIsKsKsKsKsIsI}",
                         "submitted", (unsigned long long)r->st_submitted,
                         "completed", (unsigned long long)r->st_completed,
                         "inflight", r->ops.live,
                         "enter_calls", (unsigned long long)r->st_enters,
                         "overflow_events", (unsigned long long)r->k.st_overflow,
                         "foreign_completions", (unsigned long long)r->st_foreign,
                         "sq_full_flushes", (unsigned long long)r->st_sq_full_flushes,
                         "sq_dropped", dropped, "cq_dropped", overflow);
}

static PyObject *kr_get_fd(SR_Ring *r, void *c) { return PyLong_FromLong(r->q.fd); }

static PyObject *kr_get_setup_flags(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->q.setup_flags); }

static PyObject *kr_get_features(SR_Ring *r, void *c) { return PyLong_FromUnsignedLong(r->q.features); }

static PyObject *kr_get_registered_buffers(SR_Ring *r, void *c)
{
    return PyLong_FromUnsignedLong(r->k.nregbufs);
}

static PyObject *kr_get_sqe_size(SR_Ring *r, void *c) { return PyLong_FromLong(64 << r->q.sq.sqe_shift); }

static PyObject *kr_get_cqe_size(SR_Ring *r, void *c) { return PyLong_FromLong(16 << r->q.cq.cqe_shift); }

static PyGetSetDef kr_getset[] = {
    {"fd", (getter)kr_get_fd, NULL, "The io_uring file descriptor."},
    {"eventfd", (getter)kr_get_eventfd, NULL, "The eventfd from enable_eventfd(), or None."},
    {"closed", (getter)sr_ring_get_closed, NULL, "True after close() (or in a forked child)."},
    {"sq_entries", (getter)sr_ring_get_sq_entries, NULL, "SQ size granted by the kernel."},
    {"cq_entries", (getter)sr_ring_get_cq_entries, NULL, "CQ size granted by the kernel."},
    {"setup_flags", (getter)kr_get_setup_flags, NULL, "IORING_SETUP_* flags in effect."},
    {"features", (getter)kr_get_features, NULL, "IORING_FEAT_* bits reported by the kernel."},
    {"inflight", (getter)sr_ring_get_inflight, NULL, "Ops prepared and not yet finally completed."},
    {"max_inflight", (getter)sr_ring_get_max_inflight, NULL, "Cap on ops in flight."},
    {"cq_ready", (getter)sr_ring_get_cq_ready, NULL, "Completions ready to reap now."},
    {"sq_space", (getter)sr_ring_get_sq_space, NULL, "Free SQ entries."},
    {"sq_pending", (getter)sr_ring_get_sq_pending, NULL,
     "SQEs prepared (or published) that the kernel has not consumed yet."},
    {"registered_buffers", (getter)kr_get_registered_buffers, NULL,
     "Size of the registered-buffer table (0: none)."},
    {"sqe_size", (getter)kr_get_sqe_size, NULL, "64, or 128 with SQE128."},
    {"cqe_size", (getter)kr_get_cqe_size, NULL, "16, or 32 with CQE32."},
    {NULL}
};

/* Docstrings carry a text signature ("name($self, ...)\n--\n\n") so that
 * inspect.signature() and help() show the real parameters. */
static PyMethodDef kr_methods[] = {
    SR_FAST("prep_nop", sr_ring_prep_nop,
         "prep_nop($self, /, user_data=None, flags=0)\n--\n\n"
         "Prepare a NOP.  Returns the op's token (unique among ops in flight).\n"
         "`flags` are SQE flags (SQE.LINK, ...)."),
    SR_FAST("prep_read", kr_prep_read,
         "prep_read($self, /, fd, buf, offset=-1, user_data=None, flags=0, rw_flags=0)\n--\n\n"
         "Read len(buf) bytes into the writable buffer `buf` (pinned until the op's final\n"
         "completion) at `offset` (-1: the fd's position).  Returns the token."),
    SR_FAST("prep_write", kr_prep_write,
         "prep_write($self, /, fd, buf, offset=-1, user_data=None, flags=0, rw_flags=0)\n--\n\n"
         "Write the bytes of `buf` (pinned until the final completion) at `offset`\n"
         "(-1: the fd's position).  Returns the token."),
    SR_FAST("prep_read_fixed", kr_prep_read_fixed,
         "prep_read_fixed($self, /, fd, buf_index, offset, nbytes, buf_offset=0, "
         "user_data=None, flags=0)\n--\n\n"
         "Read `nbytes` into registered buffer `buf_index` at `buf_offset`.  Returns the token."),
    SR_FAST("prep_write_fixed", kr_prep_write_fixed,
         "prep_write_fixed($self, /, fd, buf_index, offset, nbytes, buf_offset=0, "
         "user_data=None, flags=0)\n--\n\n"
         "Write `nbytes` from registered buffer `buf_index` at `buf_offset`.  Returns the token."),
    SR_FAST("prep_sqe", kr_prep_sqe,
         "prep_sqe($self, /, opcode, fd=-1, addr=0, len=0, off=0, op_flags=0, flags=0, "
         "ioprio=0, buf_index=0, file_index=0, addr3=0, user_data=None, keep=None, cmd=None, "
         "multishot=False)\n--\n\n"
         "Generic SQE.  `keep` is held until the op's final completion: pass the Pin of\n"
         "every address you put in the SQE.  For ASYNC_CANCEL, TIMEOUT_REMOVE and\n"
         "POLL_REMOVE, `addr` is the target op's token.  Returns the token."),
    SR_FAST("prep_nops", sr_ring_prep_nops,
         "prep_nops($self, /, count, user_data=0, flags=0)\n--\n\n"
         "Batch: `count` NOPs with user_data user_data + k.  Returns count.  If another\n"
         "thread takes the free slots while a full SQ is submitted mid-batch, raises\n"
         "RingFullError whose `prepared` says how many were prepared (they complete)."),
    SR_FAST("prep_reads", kr_prep_reads,
         "prep_reads($self, /, fd, buf, size, offsets, user_data=None, flags=0)\n--\n\n"
         "Batch: op k reads buf[k*size:(k+1)*size] from offsets[k]; user_data None -> k,\n"
         "an int -> user_data + k, or a sequence.  Returns the count (RingFullError with\n"
         "`prepared` as for prep_nops)."),
    SR_FAST("prep_writes", kr_prep_writes,
         "prep_writes($self, /, fd, buf, size, offsets, user_data=None, flags=0)\n--\n\n"
         "Batch: op k writes buf[k*size:(k+1)*size] at offsets[k] (as prep_reads)."),
    {"submit", (PyCFunction)sr_ring_submit_py, METH_NOARGS,
     "submit($self, /)\n--\n\nSubmit everything prepared; no waiting.  Returns the SQEs submitted."},
    SR_FAST("submit_and_wait", sr_ring_submit_and_wait,
         "submit_and_wait($self, /, wait_nr=1, timeout=None)\n--\n\n"
         "Submit, then wait until `wait_nr` completions are ready to reap or `timeout`\n"
         "seconds passed (a timeout is not an error).  Returns the number ready.\n"
         "timeout=None or math.inf: no timeout -- then a wait that could never be\n"
         "satisfied raises ValueError at once.  A signal whose handler returns resumes\n"
         "the wait; a handler that raises ends it with its exception."),
    SR_FAST("reap", sr_ring_reap,
         "reap($self, /, max=None)\n--\n\n"
         "Take up to `max` ready completions (list of Completion); never blocks.\n"
         "Completions posted by other rings (MSG_RING) come as foreign completions\n"
         "with their raw user_data."),
    SR_FAST("reap_into", sr_ring_reap_into,
         "reap_into($self, /, user_data_out, res_out, flags_out=None)\n--\n\n"
         "Batch reaping into caller-owned arrays (array('Q'), array('i'), array('I')).\n"
         "Returns the number filled; never blocks."),
    {"register_buffers", (PyCFunction)kr_register_buffers, METH_O,
     "register_buffers($self, buffers, /)\n--\n\n"
     "Register writable buffers as fixed buffers (exported until unregistered)."},
    {"register_buffers_sparse", (PyCFunction)kr_register_buffers_sparse, METH_O,
     "register_buffers_sparse($self, count, /)\n--\n\n"
     "Register an empty fixed-buffer table of `count` entries (fill with update_buffers)."},
    {"update_buffers", (PyCFunction)(void (*)(void))kr_update_buffers, METH_FASTCALL,
     "update_buffers($self, offset, buffers, /)\n--\n\n"
     "Replace fixed buffers from `offset`; None clears an entry.  Returns the count."},
    {"unregister_buffers", (PyCFunction)kr_unregister_buffers, METH_NOARGS,
     "unregister_buffers($self, /)\n--\n\n"
     "Drop the fixed-buffer table (RingBusyError while fixed ops are in flight)."},
    {"register_files", (PyCFunction)kr_register_files, METH_O,
     "register_files($self, fds, /)\n--\n\n"
     "Register fixed files: ints, file objects or None (an empty slot)."},
    {"register_files_sparse", (PyCFunction)kr_register_files_sparse, METH_O,
     "register_files_sparse($self, count, /)\n--\n\nRegister an empty fixed-file table."},
    {"update_files", (PyCFunction)(void (*)(void))kr_update_files, METH_FASTCALL,
     "update_files($self, offset, fds, /)\n--\n\n"
     "Replace fixed files from `offset`; -1 or None clears a slot.  Returns the count."},
    {"unregister_files", (PyCFunction)kr_unregister_files, METH_NOARGS,
     "unregister_files($self, /)\n--\n\nDrop the fixed-file table."},
    SR_FAST("register_eventfd", kr_register_eventfd,
         "register_eventfd($self, /, fd, async_only=False)\n--\n\n"
         "Have the kernel signal eventfd `fd` when it posts completions."),
    SR_FAST("enable_eventfd", kr_enable_eventfd,
         "enable_eventfd($self, /, async_only=False)\n--\n\n"
         "Create, register and own an eventfd (non-blocking, close-on-exec) that becomes\n"
         "readable when completions are posted; returns it.  Closed with the ring."),
    {"unregister_eventfd", (PyCFunction)kr_unregister_eventfd, METH_NOARGS,
     "unregister_eventfd($self, /)\n--\n\nStop signalling the registered eventfd."},
    SR_FAST("register_buffer_ring", kr_register_buffer_ring,
         "register_buffer_ring($self, /, group_id, count, size)\n--\n\n"
         "Register a provided-buffer ring of `count` buffers of `size` bytes as buffer\n"
         "group `group_id`; returns its BufferRing."),
    {"register_raw", (PyCFunction)kr_register_raw, METH_VARARGS,
     "register_raw($self, opcode, arg, nr_args, /)\n--\n\n"
     "io_uring_register(opcode, arg (bytes-like or None), nr_args) -> int."},
    {"_probe", (PyCFunction)kr_probe, METH_NOARGS,
     "_probe($self, /)\n--\n\nSupported opcodes (list of ints)."},
    {"_stats", (PyCFunction)sr_ring_stats, METH_NOARGS,
     "_stats($self, /)\n--\n\nRaw statistics (dict); use statistics()."},
    {"live_user_data", (PyCFunction)sr_ring_live_user_data, METH_NOARGS,
     "live_user_data($self, /)\n--\n\n"
     "The user_data of every op in flight (list), e.g. for an adapter that fails\n"
     "what it waited for when it gives up on the ring."},
    {"_live_user_data", (PyCFunction)sr_ring_live_user_data, METH_NOARGS,
     "_live_user_data($self, /)\n--\n\nOld name of live_user_data()."},
    SR_FAST("close", sr_ring_close,
         "close($self, /, timeout=5.0)\n--\n\n"
         "Cancel and reap in-flight ops (up to `timeout` s), then release the ring."),
    {NULL}
};

PyTypeObject SR_KernelRingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.KernelRing",
    .tp_basicsize = sizeof(SR_Ring),
    .tp_dealloc = (destructor)sr_ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "C core of subring.KernelRing (use that class).",
    .tp_traverse = (traverseproc)sr_ring_traverse,
    .tp_clear = (inquiry)sr_ring_clear,
    .tp_weaklistoffset = offsetof(SR_Ring, weakreflist),
    .tp_methods = kr_methods,
    .tp_getset = kr_getset,
    .tp_init = (initproc)kr_init,
    .tp_new = sr_ring_new,
};
