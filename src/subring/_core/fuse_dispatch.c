/*
 * fuse_dispatch.c -- one FUSE request to one Python handler call, whatever
 * carried it: the request's fixed struct and names become int/bytes
 * arguments (build_args), the handler is called (one vectorcall), and its
 * return value is encoded into the reply buffer (fuse_reply.c).  A handler
 * that returns a coroutine gets a FusePending, which answers later from
 * whichever thread runs the coroutine.
 */
#define _GNU_SOURCE
#include "fuse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- opcode tables ---------------------------------------------------------- */

/* The handler method of each opcode (tests/project/test_abi_consistency.py
 * checks this table against subring.fuse.operations). */
const char *const fuse_op_names[FUSE_OPCODE_MAX] = {
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
const uint16_t fuse_op_in_size[FUSE_OPCODE_MAX] = {
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

/* ---- dispatch ------------------------------------------------------------- */

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
        fuse_exc_errno(c, FUSE_FORGET);   /* logged; FORGET has no reply */
    Py_XDECREF(r);
}

/* Handle one request (GIL held).  The reply payload goes to out[0..cap). */
int fuse_dispatch(FuseConn *c, struct req *r, uint8_t *out, uint32_t cap,
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
            fuse_enc_open(c, (int)op, Py_None, (struct fuse_open_out *)out);
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
    /* av[0] is free for the callee: with PY_VECTORCALL_ARGUMENTS_OFFSET a
     * bound method puts its self there instead of copying the arguments. */
    PyObject *av[7] = {0}, **a = av + 1;
    uint32_t size = 0;
    int n = build_args(c, (int)op, r, a, &size);
    PyObject *res = NULL;
    if (n >= 0)
        res = PyObject_Vectorcall(h, a, (size_t)n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    for (int i = 0; i < 6; i++)
        Py_XDECREF(a[i]);
    if (!res)
        return fuse_exc_errno(c, (int)op);
    if (Py_TYPE(res)->tp_as_async && Py_TYPE(res)->tp_as_async->am_await &&
        c->async_runner) {
        PyObject *p = pending_new(c, ring, ent, (int)op, size, r->in->unique);
        if (!p) {
            Py_DECREF(res);
            return fuse_exc_errno(c, (int)op);
        }
        PyObject *rr = PyObject_CallFunctionObjArgs(c->async_runner, res, p, NULL);
        Py_DECREF(res);
        if (!rr) {
            ((FusePending *)p)->done = 1;
            Py_DECREF(p);
            return fuse_exc_errno(c, (int)op);
        }
        Py_DECREF(rr);
        Py_DECREF(p);
        c->n_async++;
        return R_DEFERRED;
    }
    int len = fuse_encode(c, (int)op, size, res, out, cap);
    Py_DECREF(res);
    if (len == -1 && PyErr_Occurred())
        return fuse_exc_errno(c, (int)op);
    return len;
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
            fuse_dev_reply(c->fd, p->unique, rc, classic_payload);
        return;
    }
    struct fring *g = p->ring;
    if (g->stopped)
        return;     /* the ring is gone; so is the request */
    fuse_ent_reply(&g->ents[p->ent], rc);
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
    int rc = fuse_encode(c, p->op, p->size, value, buf, cap);
    if (rc == -1 && PyErr_Occurred())
        rc = fuse_exc_errno(c, p->op);
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
    int rc = fuse_exc_errno(p->conn, p->op);
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

PyTypeObject FusePendingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.FusePending",
    .tp_basicsize = sizeof(FusePending),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A FUSE request an async handler will answer (reply() or fail(), once).",
    .tp_dealloc = (destructor)pending_dealloc,
    .tp_methods = pending_methods,
    .tp_getset = pending_getset,
};

PyObject *fuse_context(PyObject *m, PyObject *unused)
{
    return Py_BuildValue("(III)", ctx_uid, ctx_gid, ctx_pid);
}
