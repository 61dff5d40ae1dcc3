/*
 * fuse.c -- the FUSE server loops of subring.fuse (the kernel as the client).
 *
 * One FuseConn per mounted connection (the /dev/fuse fd).  Python threads call
 * into it and stay in C while they serve:
 *
 *   serve_dev()   the classic transport: read() a request from /dev/fuse with
 *                 the GIL released, dispatch it to the Python handler, write()
 *                 the reply.  On an io_uring mount one such thread still runs
 *                 for what never goes through the ring (FORGET, INTERRUPT).
 *   serve_ring()  FUSE over io_uring: a ring (SQE128) of this thread holding
 *                 `depth` entries per queue it serves; each entry is a pinned
 *                 header + payload buffer pair registered with
 *                 FUSE_IO_URING_CMD_REGISTER.  The kernel completes an entry's
 *                 command with a request in its buffers; we answer in the same
 *                 buffers and resubmit COMMIT_AND_FETCH, all answers of one
 *                 wake-up in one io_uring_enter (which also waits, GIL
 *                 released, for the next requests).
 *
 * Dispatch costs one vectorcall of the handler with int/bytes arguments; the
 * handler's plain return value (a NamedTuple, bytes, an int) is encoded
 * straight into the reply buffer.  A handler that returns a coroutine (async
 * def) is handed to the mount's asyncio runner with a FusePending; the entry
 * (or, classic, the unique id) stays held until pending.reply()/fail().
 *
 * Protocol facts: docs/fuse.md and fuse_abi.h.
 */
#define _GNU_SOURCE
#include "core.h"
#include "kernel.h"
#include "fuse_abi.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* dispatch() results other than a payload length (>= 0) or -errno (> -4096) */
#define R_NOREPLY  (-100000)   /* FORGET, INTERRUPT: the kernel expects nothing */
#define R_DEFERRED (-100001)   /* an async handler will answer later */

#define URING_UD_WAKE ((uint64_t)-1)

static const char *const op_names[FUSE_OPCODE_MAX] = {
    [FUSE_LOOKUP] = "lookup", [FUSE_FORGET] = "forget", [FUSE_GETATTR] = "getattr",
    [FUSE_SETATTR] = "setattr", [FUSE_READLINK] = "readlink", [FUSE_SYMLINK] = "symlink",
    [FUSE_MKNOD] = "mknod", [FUSE_MKDIR] = "mkdir", [FUSE_UNLINK] = "unlink",
    [FUSE_RMDIR] = "rmdir", [FUSE_RENAME] = "rename", [FUSE_LINK] = "link",
    [FUSE_OPEN] = "open", [FUSE_READ] = "read", [FUSE_WRITE] = "write",
    [FUSE_STATFS] = "statfs", [FUSE_RELEASE] = "release", [FUSE_FSYNC] = "fsync",
    [FUSE_SETXATTR] = "setxattr", [FUSE_GETXATTR] = "getxattr",
    [FUSE_LISTXATTR] = "listxattr", [FUSE_REMOVEXATTR] = "removexattr",
    [FUSE_FLUSH] = "flush", [FUSE_OPENDIR] = "opendir", [FUSE_READDIR] = "readdir",
    [FUSE_RELEASEDIR] = "releasedir", [FUSE_FSYNCDIR] = "fsyncdir",
    [FUSE_ACCESS] = "access", [FUSE_CREATE] = "create",
    [FUSE_BATCH_FORGET] = "forget", [FUSE_READDIRPLUS] = "readdirplus",
    [FUSE_RENAME2] = "rename",
};

/* Size of the opcode's fixed in-argument (in_args[0]).  On /dev/fuse it
 * follows the in header; on the ring it sits in the header's op_in area and
 * the payload holds only the rest. */
static const uint16_t op_in_size[FUSE_OPCODE_MAX] = {
    [FUSE_FORGET] = 8, [FUSE_GETATTR] = 16, [FUSE_SETATTR] = 88, [FUSE_MKNOD] = 16,
    [FUSE_MKDIR] = 8, [FUSE_RENAME] = 8, [FUSE_LINK] = 8, [FUSE_OPEN] = 8,
    [FUSE_READ] = 40, [FUSE_WRITE] = 40, [FUSE_RELEASE] = 24, [FUSE_FSYNC] = 16,
    [FUSE_SETXATTR] = 8, [FUSE_GETXATTR] = 8, [FUSE_LISTXATTR] = 8, [FUSE_FLUSH] = 24,
    [FUSE_INIT] = 64, [FUSE_OPENDIR] = 8, [FUSE_READDIR] = 40, [FUSE_RELEASEDIR] = 24,
    [FUSE_FSYNCDIR] = 16, [FUSE_ACCESS] = 8, [FUSE_CREATE] = 16, [FUSE_INTERRUPT] = 8,
    [FUSE_BATCH_FORGET] = 8, [FUSE_READDIRPLUS] = 40, [FUSE_RENAME2] = 16,
};

/* The caller of the request being handled on this thread (request_context()). */
static __thread uint32_t ctx_uid, ctx_gid, ctx_pid;

/* ---- objects ------------------------------------------------------------- */

enum { ENT_KERNEL = 0, ENT_HELD = 1, ENT_DEAD = 2 };

/* One ring entry.  Its buffers alternate between the kernel and us: the
 * kernel writes a request before completing the entry's command (we read it
 * after reaping that CQE), we write the reply before submitting
 * COMMIT_AND_FETCH (the kernel reads it during that io_uring_enter).  The
 * syscall boundaries order these accesses; no other barrier is needed.  An
 * async reply is written by the thread running pending.reply() and handed
 * to the ring thread through the mutex-guarded ready list (the mutex orders
 * the buffer writes before the ring thread's submit). */
struct fring_ent {
    struct fuse_uring_req_header *hdr;  /* kernel writes the request, we the reply */
    uint8_t *payload;
    struct iovec iov[2];   /* read by the kernel when REGISTER is issued: keep */
    uint16_t qid;
    uint8_t state;         /* written and read only by the ring's own thread */
};

/* One serve_ring() call's ring.  Freed when its loop has ended AND no
 * FusePending points at it any more (`refs`, changed only under the GIL). */
struct fring {
    struct sr_kring r;
    struct fring *next;    /* conn->rings or conn->dead (GIL) */
    void *conn;            /* the FuseConn (borrowed: the loop and every pending hold it) */
    int refs;              /* GIL */
    int stopped;           /* GIL: the loop ended; late async replies are dropped */
    int evfd;              /* wake-up: written by pending replies and stop(), read by the ring */
    uint64_t evbuf;        /* the kernel writes the eventfd count here (nobody reads it) */
    uint32_t nent, payload_size;
    struct fring_ent *ents;
    void *hdr_map; size_t hdr_len;
    void *pay_map; size_t pay_len;
    pthread_mutex_t mtx;   /* guards ready[]/nready: async completers push, the loop pops */
    uint32_t *ready, nready;
    /* Counters of this ring: written only by its serving thread (so no
     * cache line is shared between queue threads on the hot path), read
     * relaxed by statistics() and folded into the connection's totals when
     * the loop ends. */
    uint64_t n_reqs, n_errs, n_batches;
};

typedef struct {
    PyObject_HEAD
    int fd;                        /* /dev/fuse; owned (closed by close()) */
    PyObject *ops;
    PyObject *h[FUSE_OPCODE_MAX];  /* bound handler or NULL (-> ENOSYS) */
    PyObject *on_error;            /* on_error(opname, exc): logs */
    PyObject *async_runner;        /* runner(coro, pending) or NULL */
    PyObject *interrupt_hook;      /* hook(unique) on FUSE_INTERRUPT, or NULL */
    /* Set before any loop starts (construction, init()); read-only after. */
    uint32_t max_write, payload_size, proto_minor;
    uint32_t entry_s, entry_ns, attr_s, attr_ns;
    int direct_io;
    int uring;                     /* negotiated */
    int initialized;
    int stopping;                  /* atomic: set by stop(), read by the loops */
    struct fring *rings;           /* GIL: loops running */
    struct fring *dead;            /* GIL: loops ended, buffers kept until the fd closes */
    int dev_loops;                 /* GIL: serve_dev() calls running (they use fd) */
    /* statistics: updated under the GIL; the ring loops count in their
     * struct fring and add to n_ring/n_err/n_batches when they end */
    uint64_t n_dev, n_err, n_exc, n_async, n_forgets, n_interrupts, n_ring, n_batches;
} FuseConn;

typedef struct {
    PyObject_HEAD
    FuseConn *conn;
    struct fring *ring;   /* NULL: classic (answer with write()) */
    uint32_t ent;
    int op;
    uint32_t size;        /* the request's size limit (READ, READDIR, xattrs) */
    uint64_t unique;
    int done;
} FusePending;

static PyTypeObject FuseConnType, FusePendingType;

/* ---- errors ---------------------------------------------------------------- */

/* The raised exception as -errno: OSError keeps its errno (1..511), anything
 * else is EIO and goes to on_error (logged with its traceback). */
static int exc_to_errno(FuseConn *c, int op)
{
    PyObject *type, *val, *tb;
    PyErr_Fetch(&type, &val, &tb);
    PyErr_NormalizeException(&type, &val, &tb);
    int err = EIO;
    if (val && PyErr_GivenExceptionMatches(type, PyExc_OSError)) {
        PyObject *e = PyObject_GetAttrString(val, "errno");
        if (e && PyLong_Check(e)) {
            long v = PyLong_AsLong(e);
            if (v > 0 && v < 512)
                err = (int)v;
        }
        Py_XDECREF(e);
        PyErr_Clear();
    } else {
        c->n_exc++;
        if (tb && val)
            PyException_SetTraceback(val, tb);
        if (c->on_error && val) {
            const char *name = (op > 0 && op < FUSE_OPCODE_MAX && op_names[op]) ? op_names[op] : "?";
            PyObject *r = PyObject_CallFunction(c->on_error, "sO", name, val);
            if (!r)
                PyErr_WriteUnraisable(c->on_error);
            Py_XDECREF(r);
        }
    }
    Py_XDECREF(type);
    Py_XDECREF(val);
    Py_XDECREF(tb);
    return -err;
}

/* ---- encoders: Python values -> reply structs ------------------------------ */

static int get_u64(PyObject *t, Py_ssize_t i, uint64_t *out)
{
    PyObject *o = PyTuple_GET_ITEM(t, i);
    if (o == Py_None) { *out = 0; return 0; }
    unsigned long long v = PyLong_AsUnsignedLongLongMask(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static int tuple_check(PyObject *o, Py_ssize_t n, const char *what)
{
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) < n) {
        PyErr_Format(PyExc_TypeError, "expected %s (a tuple of %zd), got %.100s", what, n,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    return 0;
}

static void ns_split(int64_t ns, uint64_t *sec, uint32_t *nsec)
{
    int64_t s = ns / 1000000000LL, r = ns % 1000000000LL;
    if (r < 0) { s--; r += 1000000000LL; }
    *sec = (uint64_t)s;
    *nsec = (uint32_t)r;
}

/* Attr(ino, mode, nlink, uid, gid, rdev, size, blocks, blksize, atime_ns,
 * mtime_ns, ctime_ns) -> struct fuse_attr */
static int enc_attr(PyObject *a, struct fuse_attr *out)
{
    if (tuple_check(a, 12, "Attr") < 0)
        return -1;
    uint64_t v[12];
    for (int i = 0; i < 12; i++)
        if (get_u64(a, i, &v[i]) < 0)
            return -1;
    memset(out, 0, sizeof(*out));
    out->ino = v[0]; out->mode = (uint32_t)v[1]; out->nlink = (uint32_t)v[2];
    out->uid = (uint32_t)v[3]; out->gid = (uint32_t)v[4]; out->rdev = (uint32_t)v[5];
    out->size = v[6]; out->blocks = v[7]; out->blksize = (uint32_t)v[8];
    ns_split((int64_t)v[9], &out->atime, &out->atimensec);
    ns_split((int64_t)v[10], &out->mtime, &out->mtimensec);
    ns_split((int64_t)v[11], &out->ctime, &out->ctimensec);
    return 0;
}

/* Entry(ino, attr, generation) -> struct fuse_entry_out */
static int enc_entry(FuseConn *c, PyObject *e, struct fuse_entry_out *out)
{
    if (tuple_check(e, 3, "Entry") < 0)
        return -1;
    uint64_t ino, gen;
    if (get_u64(e, 0, &ino) < 0 || get_u64(e, 2, &gen) < 0)
        return -1;
    if (ino == 0) {           /* negative entry: "no such name", cached */
        memset(out, 0, sizeof(*out));
    } else if (enc_attr(PyTuple_GET_ITEM(e, 1), &out->attr) < 0) {
        return -1;
    }
    out->nodeid = ino;
    out->generation = gen;
    out->entry_valid = c->entry_s; out->entry_valid_nsec = c->entry_ns;
    out->attr_valid = c->attr_s;   out->attr_valid_nsec = c->attr_ns;
    return 0;
}

static int enc_open(FuseConn *c, int op, PyObject *fh, struct fuse_open_out *out)
{
    memset(out, 0, sizeof(*out));
    if (fh != Py_None) {
        unsigned long long v = PyLong_AsUnsignedLongLongMask(fh);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        out->fh = v;
    }
    if (c->direct_io && op != FUSE_OPENDIR)
        out->open_flags = FOPEN_DIRECT_IO;
    return 0;
}

static int enc_bytes(PyObject *v, uint8_t *out, uint32_t cap)
{
    if (PyBytes_CheckExact(v)) {    /* the common case: no buffer export */
        Py_ssize_t len = PyBytes_GET_SIZE(v);
        int n = len > cap ? (int)cap : (int)len;
        memcpy(out, PyBytes_AS_STRING(v), (size_t)n);
        return n;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(v, &b, PyBUF_SIMPLE) < 0)
        return -1;
    int n = b.len > cap ? (int)cap : (int)b.len;
    memcpy(out, b.buf, (size_t)n);
    PyBuffer_Release(&b);
    return n;
}

/* READDIR / READDIRPLUS: as many items as fit in `limit` bytes. */
static int enc_dir(FuseConn *c, int plus, PyObject *items, uint8_t *out, uint32_t limit)
{
    PyObject *it = PyObject_GetIter(items);
    if (!it)
        return -1;
    uint32_t used = 0;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        if (tuple_check(item, 3, "DirEntry") < 0)
            goto fail;
        PyObject *name = PyTuple_GET_ITEM(item, 0);
        if (!PyBytes_Check(name)) {
            PyErr_Format(PyExc_TypeError, "DirEntry.name must be bytes, not %.100s",
                         Py_TYPE(name)->tp_name);
            goto fail;
        }
        Py_ssize_t nl = PyBytes_GET_SIZE(name);
        if (nl == 0 || nl > 1024) {
            PyErr_SetString(PyExc_ValueError, "DirEntry.name must be 1..1024 bytes");
            goto fail;
        }
        size_t rec = FUSE_DIRENT_ALIGN((plus ? sizeof(struct fuse_direntplus)
                                              : sizeof(struct fuse_dirent)) + (size_t)nl);
        if (used + rec > limit) {   /* full: the kernel asks again from this offset */
            Py_DECREF(item);
            break;
        }
        uint64_t off;
        if (get_u64(item, 2, &off) < 0)
            goto fail;
        struct fuse_dirent *d;
        struct fuse_attr a;
        if (plus) {
            struct fuse_direntplus *dp = (struct fuse_direntplus *)(out + used);
            if (enc_entry(c, PyTuple_GET_ITEM(item, 1), &dp->entry_out) < 0)
                goto fail;
            a = dp->entry_out.attr;
            d = &dp->dirent;
        } else {
            if (enc_attr(PyTuple_GET_ITEM(item, 1), &a) < 0)
                goto fail;
            d = (struct fuse_dirent *)(out + used);
        }
        d->ino = a.ino;
        d->off = off;
        d->namelen = (uint32_t)nl;
        d->type = (a.mode >> 12) & 15;
        memcpy(d->name, PyBytes_AS_STRING(name), (size_t)nl);
        uint8_t *end = (uint8_t *)d->name + nl;
        memset(end, 0, (size_t)((out + used + rec) - end));   /* padding */
        used += (uint32_t)rec;
        Py_DECREF(item);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : (int)used;
fail:
    Py_DECREF(item);
    Py_DECREF(it);
    return -1;
}

/* xattr replies: size 0 asks for the length only; too small -> ERANGE. */
static int enc_xattr_value(const char *data, Py_ssize_t len, uint32_t size, uint8_t *out,
                           uint32_t cap)
{
    if (size == 0) {
        struct fuse_getxattr_out *g = (struct fuse_getxattr_out *)out;
        g->size = (uint32_t)len;
        g->padding = 0;
        return (int)sizeof(*g);
    }
    if ((uint64_t)len > size || (uint64_t)len > cap)
        return -ERANGE;
    memcpy(out, data, (size_t)len);
    return (int)len;
}

static int enc_listxattr(PyObject *names, uint32_t size, uint8_t *out, uint32_t cap)
{
    PyObject *seq = PySequence_Fast(names, "listxattr must return a sequence of bytes");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    uint64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(b)) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "listxattr must return a sequence of bytes");
            return -1;
        }
        total += (uint64_t)PyBytes_GET_SIZE(b) + 1;   /* each name NUL-terminated */
    }
    int r;
    if (size == 0) {
        r = enc_xattr_value(NULL, (Py_ssize_t)total, 0, out, cap);
    } else if (total > size || total > cap) {
        r = -ERANGE;
    } else {
        uint8_t *p = out;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *b = PySequence_Fast_GET_ITEM(seq, i);
            memcpy(p, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
            p += PyBytes_GET_SIZE(b);
            *p++ = 0;
        }
        r = (int)total;
    }
    Py_DECREF(seq);
    return r;
}

/* Encode handler result `res` for opcode `op` into out[0..cap).  Returns the
 * payload length or -errno, with a Python error set when it is -EIO from a
 * bad value (the caller converts it). */
static int encode(FuseConn *c, int op, uint32_t size, PyObject *res, uint8_t *out, uint32_t cap)
{
    int n;
    switch (op) {
    case FUSE_LOOKUP: case FUSE_MKNOD: case FUSE_MKDIR: case FUSE_SYMLINK: case FUSE_LINK:
        if (enc_entry(c, res, (struct fuse_entry_out *)out) < 0)
            return -1;
        return sizeof(struct fuse_entry_out);
    case FUSE_CREATE:
        if (tuple_check(res, 2, "(Entry, fh)") < 0 ||
            enc_entry(c, PyTuple_GET_ITEM(res, 0), (struct fuse_entry_out *)out) < 0 ||
            enc_open(c, op, PyTuple_GET_ITEM(res, 1),
                     (struct fuse_open_out *)(out + sizeof(struct fuse_entry_out))) < 0)
            return -1;
        return sizeof(struct fuse_entry_out) + sizeof(struct fuse_open_out);
    case FUSE_GETATTR: case FUSE_SETATTR: {
        struct fuse_attr_out *o = (struct fuse_attr_out *)out;
        if (enc_attr(res, &o->attr) < 0)
            return -1;
        o->attr_valid = c->attr_s;
        o->attr_valid_nsec = c->attr_ns;
        o->dummy = 0;
        return sizeof(*o);
    }
    case FUSE_OPEN: case FUSE_OPENDIR:
        if (enc_open(c, op, res, (struct fuse_open_out *)out) < 0)
            return -1;
        return sizeof(struct fuse_open_out);
    case FUSE_READ:
        return enc_bytes(res, out, size < cap ? size : cap);
    case FUSE_READLINK:
        return enc_bytes(res, out, cap);
    case FUSE_WRITE: {
        unsigned long long v = PyLong_AsUnsignedLongLongMask(res);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        struct fuse_write_out *w = (struct fuse_write_out *)out;
        w->size = (uint32_t)v;
        w->padding = 0;
        return sizeof(*w);
    }
    case FUSE_STATFS: {
        if (tuple_check(res, 8, "StatFS") < 0)
            return -1;
        uint64_t v[8];
        for (int i = 0; i < 8; i++)
            if (get_u64(res, i, &v[i]) < 0)
                return -1;
        struct fuse_kstatfs *s = (struct fuse_kstatfs *)out;
        memset(s, 0, sizeof(*s));
        s->blocks = v[0]; s->bfree = v[1]; s->bavail = v[2]; s->files = v[3]; s->ffree = v[4];
        s->bsize = (uint32_t)v[5]; s->namelen = (uint32_t)v[6]; s->frsize = (uint32_t)v[7];
        return sizeof(*s);
    }
    case FUSE_READDIR: case FUSE_READDIRPLUS:
        return enc_dir(c, op == FUSE_READDIRPLUS, res, out, size < cap ? size : cap);
    case FUSE_GETXATTR: {
        Py_buffer b;
        if (PyObject_GetBuffer(res, &b, PyBUF_SIMPLE) < 0)
            return -1;
        n = enc_xattr_value(b.buf, b.len, size, out, cap);
        PyBuffer_Release(&b);
        return n;
    }
    case FUSE_LISTXATTR:
        return enc_listxattr(res, size, out, cap);
    default:
        return 0;   /* unlink, rmdir, rename, release, flush, fsync, access, setxattr ... */
    }
}

/* ---- dispatch ------------------------------------------------------------- */

struct req {
    const struct fuse_in_header *in;
    const uint8_t *opin;     /* the opcode's fixed struct */
    const uint8_t *rest;     /* names, data */
    uint32_t rest_len;
};

/* Next NUL-terminated name of the request's rest as bytes. */
static PyObject *take_name(struct req *r)
{
    const uint8_t *z = memchr(r->rest, 0, r->rest_len);
    if (!z) {
        PyErr_SetString(PyExc_ValueError, "malformed request: name without NUL");
        return NULL;
    }
    size_t n = (size_t)(z - r->rest);
    PyObject *b = PyBytes_FromStringAndSize((const char *)r->rest, (Py_ssize_t)n);
    r->rest += n + 1;
    r->rest_len -= (uint32_t)(n + 1);
    return b;
}

static PyObject *u64(uint64_t v) { return PyLong_FromUnsignedLongLong(v); }

static PyObject *setattr_changes(const struct fuse_setattr_in *s)
{
    static PyObject *cls;
    if (!cls) {
        PyObject *m = PyImport_ImportModule("subring.fuse.types");
        if (!m)
            return NULL;
        cls = PyObject_GetAttrString(m, "SetAttr");
        Py_DECREF(m);
        if (!cls)
            return NULL;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
    PyObject *v[7];
    v[0] = (s->valid & FATTR_MODE) ? PyLong_FromUnsignedLong(s->mode) : Py_NewRef(Py_None);
    v[1] = (s->valid & FATTR_UID) ? PyLong_FromUnsignedLong(s->uid) : Py_NewRef(Py_None);
    v[2] = (s->valid & FATTR_GID) ? PyLong_FromUnsignedLong(s->gid) : Py_NewRef(Py_None);
    v[3] = (s->valid & FATTR_SIZE) ? u64(s->size) : Py_NewRef(Py_None);
    v[4] = (s->valid & FATTR_ATIME_NOW) ? PyLong_FromLongLong(now_ns)
         : (s->valid & FATTR_ATIME) ? PyLong_FromLongLong((int64_t)s->atime * 1000000000LL + s->atimensec)
         : Py_NewRef(Py_None);
    v[5] = (s->valid & FATTR_MTIME_NOW) ? PyLong_FromLongLong(now_ns)
         : (s->valid & FATTR_MTIME) ? PyLong_FromLongLong((int64_t)s->mtime * 1000000000LL + s->mtimensec)
         : Py_NewRef(Py_None);
    v[6] = (s->valid & FATTR_CTIME) ? PyLong_FromLongLong((int64_t)s->ctime * 1000000000LL + s->ctimensec)
         : Py_NewRef(Py_None);
    PyObject *r = NULL;
    if (v[0] && v[1] && v[2] && v[3] && v[4] && v[5] && v[6])
        r = PyObject_Vectorcall(cls, v, 7, NULL);
    for (int i = 0; i < 7; i++)
        Py_XDECREF(v[i]);
    return r;
}

/* Build the handler's arguments.  Returns the count, or -1 with an error. */
static int build_args(FuseConn *c, int op, struct req *r, PyObject **a, uint32_t *size)
{
    uint64_t ino = r->in->nodeid;
    const uint8_t *p = r->opin;
    *size = 0;
    a[0] = u64(ino);
    if (!a[0])
        return -1;
    switch (op) {
    case FUSE_LOOKUP: case FUSE_UNLINK: case FUSE_RMDIR: case FUSE_REMOVEXATTR:
        return (a[1] = take_name(r)) ? 2 : -1;
    case FUSE_GETATTR: {
        const struct fuse_getattr_in *g = (const void *)p;
        a[1] = (g->getattr_flags & FUSE_GETATTR_FH) ? u64(g->fh) : Py_NewRef(Py_None);
        return a[1] ? 2 : -1;
    }
    case FUSE_SETATTR: {
        const struct fuse_setattr_in *s = (const void *)p;
        a[1] = setattr_changes(s);
        if (!a[1])
            return -1;
        a[2] = (s->valid & FATTR_FH) ? u64(s->fh) : Py_NewRef(Py_None);
        return a[2] ? 3 : -1;
    }
    case FUSE_READLINK: case FUSE_STATFS: case FUSE_LISTXATTR:
        if (op == FUSE_LISTXATTR)
            *size = ((const struct fuse_getxattr_in *)p)->size;
        return 1;
    case FUSE_SYMLINK:
        if (!(a[1] = take_name(r)))
            return -1;
        return (a[2] = take_name(r)) ? 3 : -1;
    case FUSE_MKNOD: {
        const struct fuse_mknod_in *m = (const void *)p;
        if (!(a[1] = take_name(r)))
            return -1;
        a[2] = PyLong_FromUnsignedLong(m->mode);
        a[3] = PyLong_FromUnsignedLong(m->rdev);
        return a[2] && a[3] ? 4 : -1;
    }
    case FUSE_MKDIR: {
        const struct fuse_mkdir_in *m = (const void *)p;
        if (!(a[1] = take_name(r)))
            return -1;
        return (a[2] = PyLong_FromUnsignedLong(m->mode)) ? 3 : -1;
    }
    case FUSE_RENAME: case FUSE_RENAME2: {
        uint64_t newdir = ((const struct fuse_rename_in *)p)->newdir;
        uint32_t flags = op == FUSE_RENAME2 ? ((const struct fuse_rename2_in *)p)->flags : 0;
        if (!(a[1] = take_name(r)) || !(a[2] = u64(newdir)))
            return -1;
        if (!(a[3] = take_name(r)))
            return -1;
        return (a[4] = PyLong_FromUnsignedLong(flags)) ? 5 : -1;
    }
    case FUSE_LINK: {
        /* link(ino=the existing inode, newparent=nodeid, newname) */
        Py_DECREF(a[0]);
        a[0] = u64(((const struct fuse_link_in *)p)->oldnodeid);
        if (!a[0] || !(a[1] = u64(ino)))
            return -1;
        return (a[2] = take_name(r)) ? 3 : -1;
    }
    case FUSE_OPEN: case FUSE_OPENDIR:
        return (a[1] = PyLong_FromUnsignedLong(((const struct fuse_open_in *)p)->flags)) ? 2 : -1;
    case FUSE_READ: {
        const struct fuse_read_in *rd = (const void *)p;
        *size = rd->size;
        if (!(a[1] = u64(rd->fh)) || !(a[2] = u64(rd->offset)))
            return -1;
        return (a[3] = PyLong_FromUnsignedLong(rd->size)) ? 4 : -1;
    }
    case FUSE_READDIR: case FUSE_READDIRPLUS: {
        const struct fuse_read_in *rd = (const void *)p;
        *size = rd->size;
        if (!(a[1] = u64(rd->fh)))
            return -1;
        return (a[2] = u64(rd->offset)) ? 3 : -1;
    }
    case FUSE_WRITE: {
        const struct fuse_write_in *w = (const void *)p;
        uint32_t n = w->size <= r->rest_len ? w->size : r->rest_len;
        if (!(a[1] = u64(w->fh)) || !(a[2] = u64(w->offset)))
            return -1;
        return (a[3] = PyBytes_FromStringAndSize((const char *)r->rest, n)) ? 4 : -1;
    }
    case FUSE_RELEASE: case FUSE_RELEASEDIR:
        return (a[1] = u64(((const struct fuse_release_in *)p)->fh)) ? 2 : -1;
    case FUSE_FLUSH:
        return (a[1] = u64(((const struct fuse_flush_in *)p)->fh)) ? 2 : -1;
    case FUSE_FSYNC: case FUSE_FSYNCDIR: {
        const struct fuse_fsync_in *f = (const void *)p;
        if (!(a[1] = u64(f->fh)))
            return -1;
        a[2] = PyBool_FromLong(f->fsync_flags & FUSE_FSYNC_FDATASYNC);
        return 3;
    }
    case FUSE_SETXATTR: {
        const struct fuse_setxattr_in *s = (const void *)p;
        if (!(a[1] = take_name(r)))
            return -1;
        uint32_t n = s->size <= r->rest_len ? s->size : r->rest_len;
        if (!(a[2] = PyBytes_FromStringAndSize((const char *)r->rest, n)))
            return -1;
        return (a[3] = PyLong_FromUnsignedLong(s->flags)) ? 4 : -1;
    }
    case FUSE_GETXATTR:
        *size = ((const struct fuse_getxattr_in *)p)->size;
        return (a[1] = take_name(r)) ? 2 : -1;
    case FUSE_ACCESS:
        return (a[1] = PyLong_FromUnsignedLong(((const struct fuse_access_in *)p)->mask)) ? 2 : -1;
    case FUSE_CREATE: {
        const struct fuse_create_in *cr = (const void *)p;
        if (!(a[1] = take_name(r)))
            return -1;
        a[2] = PyLong_FromUnsignedLong(cr->mode);
        a[3] = PyLong_FromUnsignedLong(cr->flags);
        return a[2] && a[3] ? 4 : -1;
    }
    }
    PyErr_Format(PyExc_SystemError, "no argument builder for FUSE opcode %d", op);
    return -1;
}

static PyObject *pending_new(FuseConn *c, struct fring *ring, uint32_t ent, int op,
                             uint32_t size, uint64_t unique);

static void do_forget(FuseConn *c, uint64_t ino, uint64_t nlookup)
{
    c->n_forgets++;
    PyObject *h = c->h[FUSE_FORGET];
    if (!h)
        return;
    PyObject *a[2] = {u64(ino), u64(nlookup)};
    PyObject *r = (a[0] && a[1]) ? PyObject_Vectorcall(h, a, 2, NULL) : NULL;
    Py_XDECREF(a[0]);
    Py_XDECREF(a[1]);
    if (!r)
        exc_to_errno(c, FUSE_FORGET);   /* logged; FORGET has no reply */
    Py_XDECREF(r);
}

/* Handle one request (GIL held).  The reply payload goes to out[0..cap). */
static int dispatch(FuseConn *c, struct req *r, uint8_t *out, uint32_t cap,
                    struct fring *ring, uint32_t ent)
{
    uint32_t op = r->in->opcode;
    ctx_uid = r->in->uid; ctx_gid = r->in->gid; ctx_pid = r->in->pid;
    switch (op) {
    case FUSE_FORGET:
        do_forget(c, r->in->nodeid, ((const struct fuse_forget_in *)r->opin)->nlookup);
        return R_NOREPLY;
    case FUSE_BATCH_FORGET: {
        uint32_t n = ((const struct fuse_batch_forget_in *)r->opin)->count;
        const struct fuse_forget_one *f = (const void *)r->rest;
        for (uint32_t i = 0; i < n && (i + 1) * sizeof(*f) <= r->rest_len; i++)
            do_forget(c, f[i].nodeid, f[i].nlookup);
        return R_NOREPLY;
    }
    case FUSE_INTERRUPT:
        c->n_interrupts++;
        /* The caller was signalled while waiting.  A synchronous handler
         * cannot be interrupted (its reply follows anyway); an async one is
         * cancelled by the hook and answers EINTR. */
        if (c->interrupt_hook) {
            PyObject *u = u64(((const struct fuse_interrupt_in *)r->opin)->unique);
            PyObject *res = u ? PyObject_CallOneArg(c->interrupt_hook, u) : NULL;
            Py_XDECREF(u);
            if (!res)
                PyErr_WriteUnraisable(c->interrupt_hook);
            Py_XDECREF(res);
        }
        return R_NOREPLY;
    case FUSE_DESTROY:
        return 0;
    case FUSE_INIT:
        return -EPROTO;     /* only once, handled by init() */
    }
    PyObject *h = op < FUSE_OPCODE_MAX ? c->h[op] : NULL;
    if (!h) {
        if (op == FUSE_OPEN || op == FUSE_OPENDIR) {
            /* No open handler: succeed with fh 0 rather than ENOSYS, so the
             * mount's open flags (direct_io) still apply to every open. */
            enc_open(c, (int)op, Py_None, (struct fuse_open_out *)out);
            return sizeof(struct fuse_open_out);
        }
        if (op == FUSE_STATFS) {    /* df on a file system without statfs: neutral */
            struct fuse_kstatfs *s = (struct fuse_kstatfs *)out;
            memset(s, 0, sizeof(*s));
            s->bsize = 512; s->namelen = 255; s->frsize = 512;
            return sizeof(*s);
        }
        return -ENOSYS;
    }
    PyObject *a[6] = {0};
    uint32_t size = 0;
    int n = build_args(c, (int)op, r, a, &size);
    PyObject *res = NULL;
    if (n >= 0)
        res = PyObject_Vectorcall(h, a, (size_t)n, NULL);
    for (int i = 0; i < 6; i++)
        Py_XDECREF(a[i]);
    if (!res)
        return exc_to_errno(c, (int)op);
    if (Py_TYPE(res)->tp_as_async && Py_TYPE(res)->tp_as_async->am_await &&
        c->async_runner) {
        PyObject *p = pending_new(c, ring, ent, (int)op, size, r->in->unique);
        if (!p) {
            Py_DECREF(res);
            return exc_to_errno(c, (int)op);
        }
        PyObject *rr = PyObject_CallFunctionObjArgs(c->async_runner, res, p, NULL);
        Py_DECREF(res);
        if (!rr) {
            ((FusePending *)p)->done = 1;
            Py_DECREF(p);
            return exc_to_errno(c, (int)op);
        }
        Py_DECREF(rr);
        Py_DECREF(p);
        c->n_async++;
        return R_DEFERRED;
    }
    int len = encode(c, (int)op, size, res, out, cap);
    Py_DECREF(res);
    if (len == -1 && PyErr_Occurred())
        return exc_to_errno(c, (int)op);
    return len;
}

/* ---- classic transport: /dev/fuse read/write --------------------------------- */

static int dev_reply(int fd, uint64_t unique, int rc, const uint8_t *payload)
{
    struct fuse_out_header oh = {
        .len = (uint32_t)sizeof(oh) + (rc > 0 ? (uint32_t)rc : 0),
        .error = rc < 0 ? rc : 0, .unique = unique };
    struct iovec iov[2] = {{&oh, sizeof(oh)}, {(void *)payload, rc > 0 ? (size_t)rc : 0}};
    ssize_t w = writev(fd, iov, rc > 0 ? 2 : 1);
    /* ENOENT: the request was interrupted and is gone; nothing to do. */
    return (w < 0 && errno != ENOENT) ? -errno : 0;
}

/* Parse a request read from /dev/fuse into `r`.  0 or -errno. */
static int dev_parse(const uint8_t *buf, ssize_t n, struct req *r)
{
    if (n < (ssize_t)sizeof(struct fuse_in_header))
        return -EPROTO;
    r->in = (const struct fuse_in_header *)buf;
    if (r->in->len != (uint32_t)n)
        return -EPROTO;
    uint32_t op = r->in->opcode;
    uint32_t fix = op < FUSE_OPCODE_MAX ? op_in_size[op] : 0;
    uint32_t body = (uint32_t)n - sizeof(struct fuse_in_header);
    if (body < fix)
        return -EPROTO;
    r->opin = buf + sizeof(struct fuse_in_header);
    r->rest = r->opin + fix;
    r->rest_len = body - fix;
    return 0;
}

static PyObject *conn_serve_dev(FuseConn *c, PyObject *unused)
{
    if (c->fd < 0 || !c->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "serve_dev(): the connection is not initialized");
        return NULL;
    }
    size_t inlen = c->max_write + 8192, outlen = c->payload_size;
    uint8_t *in = malloc(inlen), *out = malloc(outlen);
    if (!in || !out) {
        free(in); free(out);
        return PyErr_NoMemory();
    }
    int fd = c->fd, err = 0;
    Py_INCREF(c);
    c->dev_loops++;
    for (;;) {
        ssize_t n;
        Py_BEGIN_ALLOW_THREADS
        n = read(fd, in, inlen);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            int e = errno;
            if (e == EINTR || e == EAGAIN || e == ENOENT)
                continue;          /* ENOENT: that request was interrupted */
            if (e == ENODEV || e == ENOTCONN || e == ECONNABORTED)
                break;             /* unmounted / aborted: serving is over */
            err = e;
            break;
        }
        struct req r;
        int rc = dev_parse(in, n, &r);
        if (rc < 0) {
            err = EPROTO;
            break;
        }
        c->n_dev++;
        rc = dispatch(c, &r, out, (uint32_t)outlen, NULL, 0);
        if (rc == R_NOREPLY || rc == R_DEFERRED)
            continue;
        if (rc < 0)
            c->n_err++;
        int w = dev_reply(fd, r.in->unique, rc, out);
        if (w == -ENODEV || w == -ENOTCONN)
            break;
    }
    free(in);
    free(out);
    c->dev_loops--;
    Py_DECREF(c);
    if (err) {
        errno = err;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/dev/fuse");
    }
    Py_RETURN_NONE;
}

/* ---- io_uring transport ------------------------------------------------------ */

static void fring_free(struct fring *g)
{
    if (g->r.fd >= 0)
        sr_kring_teardown(&g->r, 1);
    if (g->evfd >= 0)
        close(g->evfd);
    if (g->hdr_map)
        munmap(g->hdr_map, g->hdr_len);
    if (g->pay_map)
        munmap(g->pay_map, g->pay_len);
    pthread_mutex_destroy(&g->mtx);
    free(g->ents);
    free(g->ready);
    free(g);
}

static void conn_free_dead(FuseConn *c);

/* GIL held.  The buffers stay mapped until the connection's fd is closed:
 * after the ring fd is closed the kernel cancels its commands
 * asynchronously, and nothing may ever be mapped at an address the
 * connection could still copy a request to. */
static void fring_unref(struct fring *g)
{
    if (--g->refs != 0)
        return;
    FuseConn *c = g->conn;
    g->next = c->dead;
    c->dead = g;
    if (c->fd < 0)
        conn_free_dead(c);
}

static void *map_anon(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* A forked child (subprocess without vfork) must not share these pages
     * copy-on-write while the kernel writes requests into them. */
    madvise(p, len, MADV_DONTFORK);
    return p;
}

static int fring_setup(FuseConn *c, struct fring *g, const uint16_t *qids, uint32_t nq,
                       uint32_t depth)
{
    g->r.fd = -1;
    g->evfd = -1;
    pthread_mutex_init(&g->mtx, NULL);
    g->nent = nq * depth;
    g->payload_size = c->payload_size;
    g->ents = calloc(g->nent, sizeof(*g->ents));
    g->ready = calloc(g->nent, sizeof(*g->ready));
    if (!g->ents || !g->ready)
        return -ENOMEM;
    /* One page per header (as libfuse): the kernel's 288 bytes, aligned. */
    g->hdr_len = (size_t)g->nent * 4096;
    g->pay_len = (size_t)g->nent * g->payload_size;
    g->hdr_map = map_anon(g->hdr_len);
    g->pay_map = map_anon(g->pay_len);
    if (!g->hdr_map || !g->pay_map)
        return -ENOMEM;
    for (uint32_t i = 0; i < g->nent; i++) {
        struct fring_ent *e = &g->ents[i];
        e->hdr = (struct fuse_uring_req_header *)((uint8_t *)g->hdr_map + (size_t)i * 4096);
        e->payload = (uint8_t *)g->pay_map + (size_t)i * g->payload_size;
        e->iov[0].iov_base = e->hdr;
        e->iov[0].iov_len = sizeof(struct fuse_uring_req_header);
        e->iov[1].iov_base = e->payload;
        e->iov[1].iov_len = g->payload_size;
        e->qid = qids[i / depth];
        e->state = ENT_KERNEL;
    }
    g->evfd = eventfd(0, EFD_CLOEXEC);
    if (g->evfd < 0)
        return -errno;
    /* SQE128 is required (fuse_uring_cmd_req lives in the big SQE).
     * SINGLE_ISSUER|DEFER_TASKRUN: the kernel copies requests in while we
     * wait in io_uring_enter, with no extra task-work wake-up -- the best
     * setting measured (notes §8).  Older kernels: plain SQE128. */
    uint32_t want[3] = {
        IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_NO_SQARRAY,
        IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SQE128 };
    int rc = -EINVAL;
    for (int i = 0; i < 3; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = want[i];
        rc = sr_kring_setup(&g->r, g->nent + 2, &p);
        if (rc == 0)
            break;
        if (rc != -EINVAL)
            return rc;
    }
    return rc;
}

static struct io_uring_sqe *ring_sqe(struct fring *g)
{
    uint32_t space = sr_sq_space(&g->r.sq);
    /* Never full: each entry has at most one command in the kernel, plus one
     * eventfd read, and the SQ holds nent + 2. */
    return sr_sq_get(&g->r.sq, &space);
}

static void prep_cmd(FuseConn *c, struct fring *g, uint32_t i, uint32_t cmd_op)
{
    struct fring_ent *e = &g->ents[i];
    struct io_uring_sqe *sqe = ring_sqe(g);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = c->fd;
    sqe->cmd_op = cmd_op;
    sqe->user_data = (uint64_t)i;
    struct fuse_uring_cmd_req *req = (struct fuse_uring_cmd_req *)sqe->cmd;
    req->qid = e->qid;
    if (cmd_op == FUSE_IO_URING_CMD_REGISTER) {
        sqe->addr = (uint64_t)(uintptr_t)e->iov;
        sqe->len = 2;
    } else {
        req->commit_id = e->hdr->ring_ent_in_out.commit_id;
    }
    e->state = ENT_KERNEL;
}

static void prep_wake(struct fring *g)
{
    struct io_uring_sqe *sqe = ring_sqe(g);
    sqe->opcode = IORING_OP_READ;
    sqe->fd = g->evfd;
    sqe->addr = (uint64_t)(uintptr_t)&g->evbuf;
    sqe->len = sizeof(g->evbuf);
    sqe->user_data = URING_UD_WAKE;
}

/* Write the reply of entry `e` (header + payload_sz); the payload is there. */
static void ent_reply(struct fring_ent *e, int rc)
{
    struct fuse_out_header *oh = (struct fuse_out_header *)e->hdr->in_out;
    uint64_t unique = ((struct fuse_in_header *)e->hdr->in_out)->unique;
    oh->len = (uint32_t)sizeof(*oh) + (rc > 0 ? (uint32_t)rc : 0);
    oh->error = rc < 0 ? rc : 0;
    oh->unique = unique;
    /* The kernel reads payload_sz from this memory inside COMMIT_AND_FETCH,
     * after the io_uring_enter that submits it: program order suffices. */
    e->hdr->ring_ent_in_out.payload_sz = rc > 0 ? (uint32_t)rc : 0;
}

static PyObject *conn_serve_ring(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"qids", "depth", "cpu"};
    PyObject *v[3] = {0};
    if (sr_parse("serve_ring", args, nargs, kwnames, names, 3, 2, v) < 0)
        return NULL;
    uint32_t depth;
    int cpu;
    if (sr_as_u32(v[1], 8, &depth, "depth") < 0 || sr_as_int(v[2], -1, &cpu, "cpu") < 0)
        return NULL;
    if (!c->initialized || !c->uring || c->fd < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "serve_ring(): io_uring was not negotiated on this connection");
        return NULL;
    }
    if (depth < 1 || depth > 1024) {
        PyErr_SetString(PyExc_ValueError, "depth must be 1..1024");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(v[0], "qids must be a sequence of ints");
    if (!seq)
        return NULL;
    Py_ssize_t nq = PySequence_Fast_GET_SIZE(seq);
    if (nq < 1 || nq > 4096) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "qids must name 1..4096 queues");
        return NULL;
    }
    uint16_t *qids = malloc(sizeof(uint16_t) * (size_t)nq);
    if (!qids) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < nq; i++) {
        long q = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if ((q == -1 && PyErr_Occurred()) || q < 0 || q > 65535) {
            Py_DECREF(seq);
            free(qids);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a qid is out of range");
            return NULL;
        }
        qids[i] = (uint16_t)q;
    }
    Py_DECREF(seq);
    if (cpu >= 0) {
        /* Pin this thread to its queue's CPU: a caller on that CPU is then
         * answered without a cross-CPU wake-up (the lever on a VM). */
        cpu_set_t set;
        CPU_ZERO(&set);
        if (cpu < CPU_SETSIZE)
            CPU_SET(cpu, &set);
        /* Best effort: a possible-but-offline CPU, or one outside our cpuset,
         * refuses (EINVAL).  Its queue then gets few or no requests, and an
         * unpinned thread still serves it correctly. */
        (void)sched_setaffinity(0, sizeof(set), &set);
    }
    struct fring *g = calloc(1, sizeof(*g));
    if (!g) {
        free(qids);
        return PyErr_NoMemory();
    }
    int rc = fring_setup(c, g, qids, (uint32_t)nq, depth);
    free(qids);
    if (rc < 0) {
        fring_free(g);
        return sr_raise_errno(-rc, "FUSE io_uring setup");
    }
    g->refs = 1;
    g->conn = c;
    g->next = c->rings;
    c->rings = g;
    Py_INCREF(c);

    for (uint32_t i = 0; i < g->nent; i++)
        prep_cmd(c, g, i, FUSE_IO_URING_CMD_REGISTER);
    prep_wake(g);

    uint32_t to_submit = 0, cq_head = *g->r.cq.khead, alive = g->nent;
    int fatal = 0, saw_gone = 0;
    const char *fatal_what = NULL;
    uint64_t ring_reqs = 0, errs = 0;
    PyThreadState *ts = PyEval_SaveThread();
    int have_gil = 0;
    for (;;) {
        to_submit += sr_sq_publish(&g->r.sq);
        /* Submit the batch of commits and wait for the next requests (the
         * kernel copies them in during this call with DEFER_TASKRUN). */
        /* No timeout: an armed timer costs an hrtimer start/cancel in every
         * wait; stop() and teardown both complete a CQE (eventfd / ENOTCONN). */
        int n = sr_kring_enter(&g->r, to_submit, 1, IORING_ENTER_GETEVENTS, -1);
        __atomic_store_n(&g->n_batches, g->n_batches + 1, __ATOMIC_RELAXED);
        if (n < 0 && n != -EINTR && n != -ETIME && n != -EAGAIN && n != -EBUSY) {
            fatal = -n;
            fatal_what = "io_uring_enter";
            break;
        }
        if (n > 0)
            to_submit -= (uint32_t)n < to_submit ? (uint32_t)n : to_submit;
        uint32_t ready = sr_cq_ready(&g->r.cq, cq_head);
        int stop = 0;
        for (uint32_t k = 0; k < ready; k++) {
            const struct io_uring_cqe *cqe = sr_cq_at(&g->r.cq, cq_head + k);
            uint64_t ud = cqe->user_data;
            int32_t res = cqe->res;
            if (ud == URING_UD_WAKE) {
                /* Async answers are ready (or stop): queue their commits. */
                if (__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE))
                    stop = 1;
                pthread_mutex_lock(&g->mtx);
                uint32_t nr = g->nready;
                for (uint32_t j = 0; j < nr; j++)
                    if (g->ents[g->ready[j]].state == ENT_HELD)
                        prep_cmd(c, g, g->ready[j], FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
                g->nready = 0;
                pthread_mutex_unlock(&g->mtx);
                prep_wake(g);
                continue;
            }
            if (ud >= g->nent)
                continue;
            struct fring_ent *e = &g->ents[ud];
            if (res == -EAGAIN || res == -EINTR) {   /* REGISTER raced INIT: again */
                prep_cmd(c, g, (uint32_t)ud, FUSE_IO_URING_CMD_REGISTER);
                continue;
            }
            if (res < 0) {
                e->state = ENT_DEAD;
                alive--;
                if (res == -ENOTCONN || res == -ECONNABORTED || res == -ENODEV ||
                    res == -ECANCELED) {
                    saw_gone = 1;      /* unmounted / aborted */
                } else if (!fatal) {
                    /* Anything else (EINVAL, EOPNOTSUPP...) leaves the kernel
                     * waiting for a ring that will never be ready: fatal. */
                    fatal = -res;
                    fatal_what = "FUSE io_uring command";
                }
                continue;
            }
            /* A request is in the entry's buffers. */
            if (!have_gil) {
                PyEval_RestoreThread(ts);
                have_gil = 1;
            }
            struct req r;
            r.in = (const struct fuse_in_header *)e->hdr->in_out;
            r.opin = (const uint8_t *)e->hdr->op_in;
            /* Copy out everything the handler reads before the reply
             * overwrites the payload: build_args turns names and data into
             * bytes objects first, so `rest` may point into it. */
            r.rest = e->payload;
            r.rest_len = e->hdr->ring_ent_in_out.payload_sz;
            if (r.rest_len > g->payload_size)
                r.rest_len = g->payload_size;
            ring_reqs++;
            int rc = dispatch(c, &r, e->payload, g->payload_size, g, (uint32_t)ud);
            if (rc == R_DEFERRED) {
                e->state = ENT_HELD;
                continue;
            }
            if (rc == R_NOREPLY)
                rc = 0;
            if (rc < 0)
                errs++;
            ent_reply(e, rc);
            prep_cmd(c, g, (uint32_t)ud, FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
        }
        /* release: we are done reading these CQEs. */
        cq_head += ready;
        sr_cq_release(&g->r.cq, cq_head);
        if (have_gil) {
            __atomic_store_n(&g->n_reqs, g->n_reqs + ring_reqs, __ATOMIC_RELAXED);
            __atomic_store_n(&g->n_errs, g->n_errs + errs, __ATOMIC_RELAXED);
            ring_reqs = errs = 0;
            ts = PyEval_SaveThread();
            have_gil = 0;
        }
        if (fatal || stop)
            break;
        if (saw_gone) {
            /* Done once no entry is still with the kernel (HELD ones are
             * answered into nothing: their connection is gone). */
            int in_kernel = 0;
            for (uint32_t i = 0; i < g->nent; i++)
                if (g->ents[i].state == ENT_KERNEL) { in_kernel = 1; break; }
            if (!in_kernel)
                break;
        }
        (void)alive;
    }
    PyEval_RestoreThread(ts);
    /* Unlink from the connection; closing the ring cancels what the kernel
     * still holds (the kernel releases those entries itself). */
    struct fring **pp = &c->rings;
    while (*pp && *pp != g)
        pp = &(*pp)->next;
    if (*pp)
        *pp = g->next;
    c->n_ring += g->n_reqs;
    c->n_err += g->n_errs;
    c->n_batches += g->n_batches;
    g->stopped = 1;
    sr_kring_teardown(&g->r, 1);
    g->r.fd = -1;
    fring_unref(g);
    Py_DECREF(c);
    if (fatal) {
        errno = fatal;
        return PyErr_Format(PyExc_OSError, "%s failed: %s (the mount cannot be served)",
                            fatal_what, strerror(fatal));
    }
    Py_RETURN_NONE;
}

/* ---- FusePending: the answer of an async handler ---------------------------- */

static PyObject *pending_new(FuseConn *c, struct fring *ring, uint32_t ent, int op,
                             uint32_t size, uint64_t unique)
{
    FusePending *p = PyObject_New(FusePending, &FusePendingType);
    if (!p)
        return NULL;
    p->conn = (FuseConn *)Py_NewRef(c);
    p->ring = ring;
    if (ring)
        ring->refs++;
    p->ent = ent;
    p->op = op;
    p->size = size;
    p->unique = unique;
    p->done = 0;
    return (PyObject *)p;
}

/* rc: payload length or -errno; for the ring the payload is already in place. */
static void pending_send(FusePending *p, int rc, const uint8_t *classic_payload)
{
    FuseConn *c = p->conn;
    p->done = 1;
    if (rc < 0)
        c->n_err++;
    if (!p->ring) {
        if (c->fd >= 0)
            dev_reply(c->fd, p->unique, rc, classic_payload);
        return;
    }
    struct fring *g = p->ring;
    if (g->stopped)
        return;     /* the ring is gone; so is the request */
    ent_reply(&g->ents[p->ent], rc);
    pthread_mutex_lock(&g->mtx);
    g->ready[g->nready++] = p->ent;
    pthread_mutex_unlock(&g->mtx);
    sr_eventfd_signal(g->evfd);
}

static PyObject *pending_reply(FusePending *p, PyObject *value)
{
    if (p->done) {
        PyErr_SetString(PyExc_RuntimeError, "this request was already answered");
        return NULL;
    }
    FuseConn *c = p->conn;
    uint8_t *buf, *heap = NULL;
    uint32_t cap;
    if (p->ring) {
        if (p->ring->stopped) {
            p->done = 1;
            Py_RETURN_NONE;
        }
        buf = p->ring->ents[p->ent].payload;
        cap = p->ring->payload_size;
    } else {
        cap = c->payload_size;
        buf = heap = malloc(cap);
        if (!buf)
            return PyErr_NoMemory();
    }
    int rc = encode(c, p->op, p->size, value, buf, cap);
    if (rc == -1 && PyErr_Occurred())
        rc = exc_to_errno(c, p->op);
    pending_send(p, rc, buf);
    free(heap);
    Py_RETURN_NONE;
}

static PyObject *pending_fail(FusePending *p, PyObject *exc)
{
    if (p->done) {
        PyErr_SetString(PyExc_RuntimeError, "this request was already answered");
        return NULL;
    }
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "fail() takes an exception instance");
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    int rc = exc_to_errno(p->conn, p->op);
    pending_send(p, rc, NULL);
    Py_RETURN_NONE;
}

static void pending_dealloc(FusePending *p)
{
    if (!p->done) {
        /* Dropped unanswered (the runner lost it): never leave the caller
         * hanging. */
        pending_send(p, -EIO, NULL);
    }
    if (p->ring)
        fring_unref(p->ring);
    Py_XDECREF(p->conn);
    PyObject_Free(p);
}

static PyMethodDef pending_methods[] = {
    {"reply", (PyCFunction)pending_reply, METH_O,
     "reply($self, value, /)\n--\n\nAnswer the request with the handler's return value."},
    {"fail", (PyCFunction)pending_fail, METH_O,
     "fail($self, exc, /)\n--\n\nAnswer the request with an error (OSError: its errno; "
     "anything else: EIO, logged)."},
    {NULL}
};

static PyObject *pending_get_unique(FusePending *p, void *unused)
{
    return PyLong_FromUnsignedLongLong(p->unique);
}

static PyGetSetDef pending_getset[] = {
    {"unique", (getter)pending_get_unique, NULL,
     "The kernel's id of the request (what FUSE_INTERRUPT names).", NULL},
    {NULL}
};

static PyTypeObject FusePendingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.FusePending",
    .tp_basicsize = sizeof(FusePending),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A FUSE request an async handler will answer (reply() or fail(), once).",
    .tp_dealloc = (destructor)pending_dealloc,
    .tp_methods = pending_methods,
    .tp_getset = pending_getset,
};

/* ---- FuseConn ---------------------------------------------------------------- */

static PyObject *conn_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "ops", "max_write", "direct_io", "attr_timeout",
                             "entry_timeout", "on_error", NULL};
    int fd, direct_io = 0;
    unsigned int max_write = 131072;
    double attr_t = 1.0, entry_t = 1.0;
    PyObject *ops, *on_error = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|$IpddO:FuseConn", kwlist, &fd, &ops,
                                     &max_write, &direct_io, &attr_t, &entry_t, &on_error))
        return NULL;
    if (max_write < 4096 || max_write > (1U << 20) || max_write % 4096) {
        PyErr_SetString(PyExc_ValueError, "max_write must be a multiple of 4096 in 4 KiB..1 MiB");
        return NULL;
    }
    if (!(attr_t >= 0 && entry_t >= 0 && attr_t < 1e9 && entry_t < 1e9)) {
        PyErr_SetString(PyExc_ValueError, "timeouts must be in [0, 1e9) seconds");
        return NULL;
    }
    FuseConn *c = (FuseConn *)type->tp_alloc(type, 0);
    if (!c)
        return NULL;
    c->fd = fd;
    c->ops = Py_NewRef(ops);
    c->on_error = on_error == Py_None ? NULL : Py_NewRef(on_error);
    c->max_write = max_write;
    c->payload_size = max_write < 8192 ? 8192 : max_write;
    c->direct_io = direct_io;
    c->entry_s = (uint32_t)entry_t;
    c->entry_ns = (uint32_t)((entry_t - (double)c->entry_s) * 1e9);
    c->attr_s = (uint32_t)attr_t;
    c->attr_ns = (uint32_t)((attr_t - (double)c->attr_s) * 1e9);
    for (int op = 1; op < FUSE_OPCODE_MAX; op++) {
        if (!op_names[op])
            continue;
        PyObject *h = PyObject_GetAttrString(ops, op_names[op]);
        if (!h) {
            PyErr_Clear();
            continue;
        }
        if (!PyCallable_Check(h)) {
            Py_DECREF(h);
            continue;
        }
        c->h[op] = h;
    }
    return (PyObject *)c;
}

static int conn_traverse(FuseConn *c, visitproc visit, void *arg)
{
    Py_VISIT(c->ops);
    Py_VISIT(c->on_error);
    Py_VISIT(c->async_runner);
    Py_VISIT(c->interrupt_hook);
    for (int i = 0; i < FUSE_OPCODE_MAX; i++)
        Py_VISIT(c->h[i]);
    return 0;
}

static int conn_clear(FuseConn *c)
{
    Py_CLEAR(c->ops);
    Py_CLEAR(c->on_error);
    Py_CLEAR(c->async_runner);
    Py_CLEAR(c->interrupt_hook);
    for (int i = 0; i < FUSE_OPCODE_MAX; i++)
        Py_CLEAR(c->h[i]);
    return 0;
}

static void conn_free_dead(FuseConn *c)
{
    while (c->dead) {
        struct fring *g = c->dead;
        c->dead = g->next;
        fring_free(g);
    }
}

static void conn_dealloc(FuseConn *c)
{
    PyObject_GC_UnTrack(c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    conn_free_dead(c);
    conn_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *conn_init(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"want_uring", "timeout"};
    PyObject *v[2] = {0};
    if (sr_parse("init", args, nargs, kwnames, names, 2, 1, v) < 0)
        return NULL;
    int want = PyObject_IsTrue(v[0]);
    if (want < 0)
        return NULL;
    double timeout = v[1] && v[1] != Py_None ? PyFloat_AsDouble(v[1]) : -1.0;
    if (PyErr_Occurred())
        return NULL;
    if (c->initialized || c->fd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "init(): already initialized or closed");
        return NULL;
    }
    size_t len = c->max_write + 8192;
    uint8_t *buf = malloc(len);
    if (!buf)
        return PyErr_NoMemory();
    ssize_t n;
    int e = 0;
    Py_BEGIN_ALLOW_THREADS
    struct pollfd pfd = {c->fd, POLLIN, 0};
    int pr;
    do pr = poll(&pfd, 1, timeout < 0 ? -1 : (int)(timeout * 1000));
    while (pr < 0 && errno == EINTR);
    if (pr == 0) {
        n = -1; e = ETIMEDOUT;
    } else {
        do n = read(c->fd, buf, len);
        while (n < 0 && errno == EINTR);
        if (n < 0) e = errno;
    }
    Py_END_ALLOW_THREADS
    if (n < 0) {
        free(buf);
        errno = e;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/dev/fuse (FUSE_INIT)");
    }
    const struct fuse_in_header *in = (const void *)buf;
    if (n < (ssize_t)(sizeof(*in) + 48) || in->opcode != FUSE_INIT) {
        free(buf);
        PyErr_Format(PyExc_OSError, "expected FUSE_INIT, got opcode %u (%zd bytes)",
                     n >= 8 ? in->opcode : 0, n);
        return NULL;
    }
    const struct fuse_init_in *ii = (const void *)(buf + sizeof(*in));
    uint32_t kflags2 = (ii->flags & FUSE_INIT_EXT) ? ii->flags2 : 0;
    struct fuse_init_out o;
    memset(&o, 0, sizeof(o));
    o.major = FUSE_KERNEL_VERSION;
    if (ii->major != FUSE_KERNEL_VERSION || ii->minor < 12) {
        /* Answer with our major only; the kernel then gives up. */
        dev_reply(c->fd, in->unique, sizeof(o), (const uint8_t *)&o);
        PyErr_Format(PyExc_OSError, "unsupported FUSE protocol %u.%u", ii->major, ii->minor);
        free(buf);
        return NULL;
    }
    o.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor : FUSE_KERNEL_MINOR_VERSION;
    o.max_readahead = ii->max_readahead;
    uint32_t want_flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_INIT_EXT |
                          FUSE_NO_OPEN_SUPPORT | FUSE_NO_OPENDIR_SUPPORT |
                          FUSE_PARALLEL_DIROPS | FUSE_ATOMIC_O_TRUNC;
    if (c->h[FUSE_READDIRPLUS])
        want_flags |= FUSE_DO_READDIRPLUS;
    o.flags = ii->flags & want_flags;
    int uring = want && (kflags2 & FUSE_OVER_IO_URING_FLAGS2) &&
                o.minor >= FUSE_URING_MIN_MINOR && (o.flags & FUSE_INIT_EXT);
    o.flags2 = uring ? FUSE_OVER_IO_URING_FLAGS2 : 0;
    o.max_background = 64;
    o.congestion_threshold = 48;
    o.max_write = c->max_write;
    o.time_gran = 1;
    o.max_pages = (uint16_t)(c->max_write / 4096);
    /* The kernel applies the INIT reply inside this write(): once it returns,
     * REGISTER is accepted (earlier ones complete -EAGAIN). */
    int w = dev_reply(c->fd, in->unique, sizeof(o), (const uint8_t *)&o);
    uint32_t kmajor = ii->major, kminor = ii->minor;
    free(buf);
    if (w < 0) {
        errno = -w;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/dev/fuse (INIT reply)");
    }
    c->initialized = 1;
    c->uring = uring;
    c->proto_minor = o.minor;
    return Py_BuildValue("{s:O,s:O,s:I,s:I,s:I,s:I,s:I,s:I}",
                         "uring", uring ? Py_True : Py_False,
                         "kernel_offers_uring", (kflags2 & FUSE_OVER_IO_URING_FLAGS2) ? Py_True : Py_False,
                         "major", kmajor, "kernel_minor", kminor, "minor", o.minor,
                         "flags", o.flags, "flags2", o.flags2, "max_write", o.max_write);
}

/* Write one notification (GIL released: the kernel may take inode locks,
 * and a handler serving a request on another thread may need the GIL to
 * let that happen). */
static PyObject *notify(FuseConn *c, int code, struct iovec *iov, int n, size_t len)
{
    if (c->fd < 0 || !c->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "the connection is not serving");
        return NULL;
    }
    struct fuse_out_header oh = {.len = (uint32_t)(sizeof(oh) + len), .error = code, .unique = 0};
    iov[0].iov_base = &oh;
    iov[0].iov_len = sizeof(oh);
    ssize_t w;
    int e = 0, fd = c->fd;
    Py_BEGIN_ALLOW_THREADS
    w = writev(fd, iov, n);
    if (w < 0) e = errno;
    Py_END_ALLOW_THREADS
    if (w < 0) {
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *conn_notify_inval_inode(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    static const char *const names[] = {"ino", "offset", "length"};
    PyObject *v[3] = {0};
    if (sr_parse("notify_inval_inode", args, nargs, kwnames, names, 3, 1, v) < 0)
        return NULL;
    struct fuse_notify_inval_inode_out o;
    int64_t off, len;
    if (sr_as_u64(v[0], 0, &o.ino, "ino") < 0 || sr_as_i64(v[1], 0, &off, "offset") < 0 ||
        sr_as_i64(v[2], 0, &len, "length") < 0)
        return NULL;
    o.off = off;
    o.len = len;
    struct iovec iov[2] = {{0}, {&o, sizeof(o)}};
    return notify(c, FUSE_NOTIFY_INVAL_INODE, iov, 2, sizeof(o));
}

static PyObject *conn_notify_inval_entry(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    static const char *const names[] = {"parent", "name"};
    PyObject *v[2] = {0};
    if (sr_parse("notify_inval_entry", args, nargs, kwnames, names, 2, 2, v) < 0)
        return NULL;
    struct fuse_notify_inval_entry_out o = {0};
    if (sr_as_u64(v[0], 0, &o.parent, "parent") < 0)
        return NULL;
    if (!PyBytes_Check(v[1]) || PyBytes_GET_SIZE(v[1]) == 0 || PyBytes_GET_SIZE(v[1]) > 1024 ||
        memchr(PyBytes_AS_STRING(v[1]), 0, (size_t)PyBytes_GET_SIZE(v[1])) ||
        memchr(PyBytes_AS_STRING(v[1]), '/', (size_t)PyBytes_GET_SIZE(v[1]))) {
        PyErr_SetString(PyExc_ValueError, "name must be 1..1024 bytes without NUL or '/'");
        return NULL;
    }
    o.namelen = (uint32_t)PyBytes_GET_SIZE(v[1]);
    static const char nul = 0;
    struct iovec iov[4] = {{0}, {&o, sizeof(o)},
                           {PyBytes_AS_STRING(v[1]), o.namelen}, {(void *)&nul, 1}};
    return notify(c, FUSE_NOTIFY_INVAL_ENTRY, iov, 4, sizeof(o) + o.namelen + 1);
}

static PyObject *conn_stop(FuseConn *c, PyObject *unused)
{
    /* release: a loop that sees the wake-up also sees the flag. */
    __atomic_store_n(&c->stopping, 1, __ATOMIC_RELEASE);
    for (struct fring *g = c->rings; g; g = g->next)
        sr_eventfd_signal(g->evfd);
    Py_RETURN_NONE;
}

static PyObject *conn_close(FuseConn *c, PyObject *unused)
{
    if (c->rings || c->dev_loops) {
        /* They use the fd number: closing it now could make them read or
         * write whatever file reuses it. */
        PyErr_SetString(PyExc_RuntimeError, "close(): serving loops are still running");
        return NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    conn_free_dead(c);
    Py_RETURN_NONE;
}

static PyObject *conn_set_async_runner(FuseConn *c, PyObject *const *args, Py_ssize_t nargs,
                                       PyObject *kwnames)
{
    static const char *const names[] = {"runner", "interrupt"};
    PyObject *v[2] = {0};
    if (sr_parse("set_async_runner", args, nargs, kwnames, names, 2, 1, v) < 0)
        return NULL;
    for (int i = 0; i < 2; i++)
        if (v[i] && v[i] != Py_None && !PyCallable_Check(v[i])) {
            PyErr_SetString(PyExc_TypeError, "set_async_runner() takes callables or None");
            return NULL;
        }
    Py_XSETREF(c->async_runner, v[0] == Py_None ? NULL : Py_NewRef(v[0]));
    Py_XSETREF(c->interrupt_hook, !v[1] || v[1] == Py_None ? NULL : Py_NewRef(v[1]));
    Py_RETURN_NONE;
}

static PyObject *conn_statistics(FuseConn *c, PyObject *unused)
{
    uint64_t ring = c->n_ring, err = c->n_err, batches = c->n_batches;
    for (struct fring *g = c->rings; g; g = g->next) {   /* live loops (GIL: list stable) */
        ring += __atomic_load_n(&g->n_reqs, __ATOMIC_RELAXED);
        err += __atomic_load_n(&g->n_errs, __ATOMIC_RELAXED);
        batches += __atomic_load_n(&g->n_batches, __ATOMIC_RELAXED);
    }
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}",
        "requests", (unsigned long long)(ring + c->n_dev),
        "ring_requests", (unsigned long long)ring,
        "dev_requests", (unsigned long long)c->n_dev,
        "error_replies", (unsigned long long)err,
        "handler_exceptions", (unsigned long long)c->n_exc,
        "async_requests", (unsigned long long)c->n_async,
        "forgets", (unsigned long long)c->n_forgets,
        "interrupts", (unsigned long long)c->n_interrupts,
        "batches", (unsigned long long)batches);
}

static PyObject *conn_get_uring(FuseConn *c, void *unused)
{
    return PyBool_FromLong(c->uring);
}

static PyObject *conn_get_fd(FuseConn *c, void *unused)
{
    return PyLong_FromLong(c->fd);
}

static PyGetSetDef conn_getset[] = {
    {"uring", (getter)conn_get_uring, NULL, "True when FUSE over io_uring was negotiated.", NULL},
    {"fd", (getter)conn_get_fd, NULL, "The /dev/fuse fd (-1 after close()).", NULL},
    {NULL}
};

static PyMethodDef conn_methods[] = {
    {"init", (PyCFunction)(void (*)(void))conn_init, METH_FASTCALL | METH_KEYWORDS,
     "init($self, want_uring, timeout=None)\n--\n\n"
     "Read FUSE_INIT from /dev/fuse and answer it, offering io_uring when\n"
     "want_uring and the kernel does.  Returns what was negotiated."},
    {"serve_dev", (PyCFunction)conn_serve_dev, METH_NOARGS,
     "serve_dev($self)\n--\n\n"
     "Serve requests read from /dev/fuse until the connection ends."},
    {"serve_ring", (PyCFunction)(void (*)(void))conn_serve_ring, METH_FASTCALL | METH_KEYWORDS,
     "serve_ring($self, qids, depth, cpu=-1)\n--\n\n"
     "Register depth io_uring entries on each queue in qids and serve them\n"
     "until the connection ends or stop(); cpu >= 0 pins this thread first."},
    {"notify_inval_inode", (PyCFunction)(void (*)(void))conn_notify_inval_inode,
     METH_FASTCALL | METH_KEYWORDS,
     "notify_inval_inode($self, ino, offset=0, length=0)\n--\n\n"
     "Tell the kernel to drop cached attributes of ino and its cached data in\n"
     "[offset, offset+length) (length 0: to the end; offset < 0: attributes only)."},
    {"notify_inval_entry", (PyCFunction)(void (*)(void))conn_notify_inval_entry,
     METH_FASTCALL | METH_KEYWORDS,
     "notify_inval_entry($self, parent, name)\n--\n\n"
     "Tell the kernel to forget its cached lookup of name in directory parent."},
    {"stop", (PyCFunction)conn_stop, METH_NOARGS,
     "stop($self)\n--\n\nMake every serve_ring() loop return."},
    {"close", (PyCFunction)conn_close, METH_NOARGS,
     "close($self)\n--\n\nClose the /dev/fuse fd (after the loops ended)."},
    {"set_async_runner", (PyCFunction)(void (*)(void))conn_set_async_runner,
     METH_FASTCALL | METH_KEYWORDS,
     "set_async_runner($self, runner, interrupt=None)\n--\n\n"
     "runner(coroutine, pending) runs an async handler; pending.reply/fail answer.\n"
     "interrupt(unique) is called when the kernel interrupts request `unique`."},
    {"statistics", (PyCFunction)conn_statistics, METH_NOARGS,
     "statistics($self)\n--\n\nCounters as a dict."},
    {NULL}
};

static PyTypeObject FuseConnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.FuseConn",
    .tp_basicsize = sizeof(FuseConn),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FuseConn(fd, ops, *, max_write=131072, direct_io=False, attr_timeout=1.0, "
              "entry_timeout=1.0, on_error=None)\n--\n\n"
              "One FUSE connection (a /dev/fuse fd, owned) served by the C loops.",
    .tp_new = conn_new,
    .tp_dealloc = (destructor)conn_dealloc,
    .tp_traverse = (traverseproc)conn_traverse,
    .tp_clear = (inquiry)conn_clear,
    .tp_methods = conn_methods,
    .tp_getset = conn_getset,
};

/* ---- module functions: mount, umount, watchdog, context ---------------------- */

static PyObject *fuse_mount(PyObject *m, PyObject *args)
{
    PyObject *src, *target;
    const char *fstype, *data;
    unsigned long flags;
    if (!PyArg_ParseTuple(args, "O&O&skz:fuse_mount", PyUnicode_FSConverter, &src,
                          PyUnicode_FSConverter, &target, &fstype, &flags, &data))
        return NULL;
    int r, e = 0;
    Py_BEGIN_ALLOW_THREADS
    r = mount(PyBytes_AS_STRING(src), PyBytes_AS_STRING(target), fstype, flags, data);
    if (r < 0) e = errno;
    Py_END_ALLOW_THREADS
    PyObject *ret = NULL;
    if (r < 0) {
        errno = e;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, target);
    } else {
        ret = Py_NewRef(Py_None);
    }
    Py_DECREF(src);
    Py_DECREF(target);
    return ret;
}

static PyObject *fuse_umount(PyObject *m, PyObject *args)
{
    PyObject *target;
    int flags = 0;
    if (!PyArg_ParseTuple(args, "O&|i:fuse_umount", PyUnicode_FSConverter, &target, &flags))
        return NULL;
    int r, e = 0;
    Py_BEGIN_ALLOW_THREADS
    r = umount2(PyBytes_AS_STRING(target), flags);
    if (r < 0) e = errno;
    Py_END_ALLOW_THREADS
    PyObject *ret = NULL;
    if (r < 0) {
        errno = e;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, target);
    } else {
        ret = Py_NewRef(Py_None);
    }
    Py_DECREF(target);
    return ret;
}

/* Fork a process that lazily unmounts `target` if we die without saying
 * "unmounted" (one byte) on the pipe: EOF means our last reference to the
 * write end went away, i.e. this process is gone (SIGKILL included).  The
 * child closes every other fd first -- above all /dev/fuse, whose last
 * reference must die with the server so the kernel aborts the connection
 * (callers get ENOTCONN instead of hanging) -- and only makes syscalls, which
 * is what is safe in the child of a multi-threaded process. */
static PyObject *fuse_watchdog(PyObject *m, PyObject *arg)
{
    PyObject *target;
    if (!PyUnicode_FSConverter(arg, &target))
        return NULL;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        Py_DECREF(target);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    const char *path = PyBytes_AS_STRING(target);
    pid_t pid = fork();
    if (pid == 0) {
        int rfd = p[0];
        if (rfd > 3)
            syscall(SYS_close_range, 3, (unsigned)rfd - 1, 0);
        syscall(SYS_close_range, (unsigned)rfd + 1, ~0U, 0);
        if (rfd != 0) close(0);
        if (rfd != 1) close(1);
        if (rfd != 2) close(2);
        setsid();                 /* not killed with the server's process group */
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        char ch;
        ssize_t n;
        do n = read(rfd, &ch, 1);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            umount2(path, MNT_DETACH);
        _exit(0);
    }
    int e = errno;
    close(p[0]);
    Py_DECREF(target);
    if (pid < 0) {
        close(p[1]);
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(ii)", (int)pid, p[1]);
}

static PyObject *fuse_context(PyObject *m, PyObject *unused)
{
    return Py_BuildValue("(III)", ctx_uid, ctx_gid, ctx_pid);
}

static PyMethodDef fuse_functions[] = {
    {"fuse_mount", fuse_mount, METH_VARARGS,
     "fuse_mount(source, target, fstype, flags, data)\n--\n\nmount(2) (GIL released)."},
    {"fuse_umount", fuse_umount, METH_VARARGS,
     "fuse_umount(target, flags=0)\n--\n\numount2(2) (GIL released)."},
    {"fuse_watchdog", fuse_watchdog, METH_O,
     "fuse_watchdog(target, /)\n--\n\n"
     "Fork a process that unmounts target (MNT_DETACH) if this process dies.\n"
     "Returns (pid, write_fd): write one byte and close it after a clean unmount."},
    {"fuse_context", fuse_context, METH_NOARGS,
     "fuse_context()\n--\n\n(uid, gid, pid) of the request being handled on this thread."},
    {NULL}
};

/* Called from the module init (module.c). */
int sr_fuse_init(PyObject *module)
{
    if (PyType_Ready(&FuseConnType) < 0 || PyType_Ready(&FusePendingType) < 0)
        return -1;
    if (PyModule_AddFunctions(module, fuse_functions) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "FuseConn", (PyObject *)&FuseConnType) < 0 ||
        PyModule_AddObjectRef(module, "FusePending", (PyObject *)&FusePendingType) < 0)
        return -1;
    return 0;
}
