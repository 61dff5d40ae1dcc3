/*
 * core.h -- declarations shared by the CPython half of the C core.
 */
#ifndef SUBRING_CORE_H
#define SUBRING_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>
#include "arch.h"   /* sr_cpu_relax */
#include "ring.h"

/* ---- exceptions (defined in subring/errors.py, imported at module init) -- */
extern PyObject *SR_SubringError;     /* base */
extern PyObject *SR_RingClosedError;  /* used after close() */
extern PyObject *SR_ForkedRingError;  /* used in a child after fork() */
extern PyObject *SR_RingFullError;    /* no room: SQ full inside a link chain, or max_inflight */
extern PyObject *SR_RingBusyError;    /* resource in use by in-flight ops */
extern PyObject *SR_PeerDiedError;    /* the subsystem on the other side is gone */
extern PyObject *SR_CorruptRingError; /* the peer broke the ring protocol */

/* Incremented in the child by a pthread_atfork handler.  A ring remembers the
 * value it was created under; a mismatch means "this is a forked copy". */
extern volatile uint64_t sr_fork_generation;

/* ---- objects.c ---------------------------------------------------------- */
extern PyTypeObject SR_CompletionType;
extern PyTypeObject SR_PinType;
extern PyTypeObject SR_BufferRingType;
extern PyTypeObject SR_LeaseType;      /* lease.c */
extern PyTypeObject SR_SharedMapType;  /* lease.c */

typedef struct {
    PyObject_HEAD
    PyObject *user_data;    /* never NULL */
    PyObject *res_obj;      /* res as an int object: T_OBJECT_EX members get
                             * CPython 3.11's specialised attribute load */
    int32_t   res;
    uint32_t  flags;
    uint8_t   opcode;
    uint8_t   has_big;      /* CQE32: big[] is valid */
    uint64_t  big[2];
    PyObject *data;         /* user rings: result bytes, or error text (str) */
    PyObject *opname;       /* user rings: the op's name from the subsystem's table */
} SR_Completion;

/* A pinned buffer export: holds a Py_buffer until the Pin dies.  In-flight ops
 * hold Pins (or their own Py_buffer) so memory the peer may still write stays
 * alive and un-resizable (bytearray refuses to resize while exported). */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
} SR_Pin;

SR_Completion *sr_completion_alloc(void);
SR_Completion *sr_completion_new(PyObject *user_data_stolen, int32_t res,
                                 uint32_t flags, uint8_t opcode,
                                 const uint64_t *big);
SR_Pin *sr_pin_new(PyObject *obj, int writable);
const char *sr_opcode_name(unsigned opcode);
/* Raise an OSError subclass for -err with "what: strerror" as message. */
PyObject *sr_raise_errno(int err, const char *what);

/* ---- interrupt-plane modes, shared by clients and servers ----------------
 * 0 hybrid (spin, then sleep), 1 interrupt (sleep at once), 2 poll (spin). */
enum { SR_MODE_HYBRID = 0, SR_MODE_INTERRUPT = 1, SR_MODE_POLL = 2 };
PyObject *sr_mode_name(int mode);
int sr_mode_parse(PyObject *v, int *mode);          /* 0, or -1 with ValueError */
int sr_spin_us_parse(PyObject *v, int64_t *spin_ns); /* 0, or -1 with an error */

/* ---- argument parsing for METH_FASTCALL|METH_KEYWORDS --------------------
 * Fills out[0..n) from positionals then keywords; missing ones stay NULL.
 * `nreq` leading names are required.  Returns 0 or -1 with TypeError set. */
int sr_parse(const char *fname, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames, const char *const *names, int n, int nreq,
             PyObject **out);
/* Integer conversion helpers: NULL -> default. Return -1 with error set. */
int sr_as_i64(PyObject *o, int64_t dflt, int64_t *out, const char *what);
int sr_as_u64(PyObject *o, uint64_t dflt, uint64_t *out, const char *what);
int sr_as_int(PyObject *o, int dflt, int *out, const char *what);
int sr_as_u32(PyObject *o, uint32_t dflt, uint32_t *out, const char *what);
/* timeout argument: None or math.inf -> -1 (no timeout), seconds -> ns. */
int sr_parse_timeout(PyObject *o, int64_t *ns);
/* Read an array of 64-bit integers from a buffer (itemsize 8) or a sequence. */
typedef struct {
    Py_buffer view;
    PyObject *seq;
    Py_ssize_t n;
} sr_i64_array;
int sr_i64_array_get(PyObject *o, sr_i64_array *arr, const char *what);
int sr_i64_array_at(sr_i64_array *arr, Py_ssize_t k, int64_t *out, const char *what);
void sr_i64_array_release(sr_i64_array *arr);
/* An integer buffer format ('B' when the exporter gives none)? */
int sr_int_format(const char *f);

/* ---- the ring object (ring_backend.h; wait_any: user_wait.c) ---------- */
extern PyTypeObject SR_KernelRingType;
extern PyTypeObject SR_UserRingType;
extern PyMethodDef sr_ring_functions[];
void sr_user_rings_after_fork(void);

/* ---- server_*.c (the server half; its shared internals: server.h) ------- */
extern PyTypeObject SR_ServerQueueType;
extern PyTypeObject SR_RequestType;
extern PyTypeObject SR_ServerLoopType;
extern PyTypeObject SR_BatchType;
extern PyObject *SR_PENDING;

/* ---- notify.c ----------------------------------------------------------- */
int sr_eventfd_signal(int fd);          /* write 1; EAGAIN (counter full) is fine */
void sr_eventfd_drain(int fd);          /* read until empty (fd is non-blocking) */
int64_t sr_now_ns(void);                /* CLOCK_MONOTONIC */
/* A non-negative duration in ns as a libc timespec (ppoll, nanosleep).  The
 * kernel ring's io_uring_enter timeout is the kernel's own 64-bit type and is
 * filled in kernel.c. */
static inline struct timespec sr_timespec_from_ns(int64_t ns)
{
    return (struct timespec){.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
}
/* Between spin bursts: let a peer that shares our CPU run.  Without it a
 * client and a server on the same CPU each spin out their whole budget while
 * the other cannot make progress (hybrid round trips of 2 x spin_us). */
void sr_spin_yield(void);

#endif
