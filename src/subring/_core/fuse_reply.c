/*
 * fuse_reply.c -- what a handler's outcome becomes: a raised exception an
 * errno (fuse_exc_errno), a returned Python value the reply struct the kernel
 * reads (fuse_encode).  No transport here: the caller says where the reply
 * goes (a ring entry's payload buffer or a classic write buffer).
 */
#define _GNU_SOURCE
#include "fuse.h"

#include <errno.h>
#include <string.h>

/* ---- errors ---------------------------------------------------------------- */

/* The raised exception as -errno: OSError keeps its errno (1..511), anything
 * else is EIO and goes to on_error (logged with its traceback). */
int fuse_exc_errno(FuseConn *c, int op)
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
            const char *name = (op > 0 && op < FUSE_OPCODE_MAX && fuse_op_names[op]) ? fuse_op_names[op] : "?";
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

/* The first n items of a tuple (a NamedTuple such as Attr) as integers. */
static int get_u64s(PyObject *t, int n, const char *what, uint64_t *v)
{
    if (tuple_check(t, n, what) < 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (get_u64(t, i, &v[i]) < 0)
            return -1;
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
    uint64_t v[12];
    if (get_u64s(a, 12, "Attr", v) < 0)
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

int fuse_enc_open(FuseConn *c, int op, PyObject *fh, struct fuse_open_out *out)
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
int fuse_encode(FuseConn *c, int op, uint32_t size, PyObject *res, uint8_t *out, uint32_t cap)
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
            fuse_enc_open(c, op, PyTuple_GET_ITEM(res, 1),
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
        if (fuse_enc_open(c, op, res, (struct fuse_open_out *)out) < 0)
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
        uint64_t v[8];
        if (get_u64s(res, 8, "StatFS", v) < 0)
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
