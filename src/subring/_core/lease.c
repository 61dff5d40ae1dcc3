/*
 * lease.c -- Lease: lend a piece of shared memory to Python code and learn
 * when the last user is done with it.
 *
 * The executor hands large results to the caller as views of its shared
 * arena instead of copying them out (a 1 MiB copy into fresh memory costs a
 * copy plus 256 page faults in the caller's process).  The arena range may be
 * reused only once nothing can reach it any more.  A memoryview cannot tell
 * us that: slices and re-exports of a memoryview reference the underlying
 * buffer, not the memoryview, so a finalizer on it fires too early.  A Lease
 * is itself the exporter: every consumer (memoryview, NumPy array, slices of
 * those) holds a reference to the Lease through Py_buffer.obj, so the Lease
 * is deallocated exactly when the last view is released -- and only then is
 * `on_release` called.
 *
 * Ownership: the Lease holds one export of `buffer` (taken at creation,
 * released at deallocation), so the mapping behind it stays alive as long as
 * any view of the Lease does, even after its pool was "closed".
 */
#include "core.h"
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    Py_buffer src;          /* our export of the lent memory */
    PyObject *on_release;   /* called with no arguments at deallocation */
    PyObject *weakrefs;
} SR_Lease;

static PyObject *lease_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"buffer", "on_release", NULL};
    PyObject *buf, *cb;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:Lease", kwlist, &buf, &cb))
        return NULL;
    if (!PyCallable_Check(cb)) {
        PyErr_SetString(PyExc_TypeError, "on_release must be callable");
        return NULL;
    }
    SR_Lease *l = (SR_Lease *)type->tp_alloc(type, 0);
    if (!l)
        return NULL;
    if (PyObject_GetBuffer(buf, &l->src, PyBUF_WRITABLE) < 0) {
        l->src.obj = NULL;
        Py_DECREF(l);
        return NULL;
    }
    l->on_release = Py_NewRef(cb);
    return (PyObject *)l;
}

static void lease_dealloc(SR_Lease *l)
{
    if (l->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)l);
    if (l->src.obj)
        PyBuffer_Release(&l->src);
    PyObject *cb = l->on_release;
    l->on_release = NULL;
    if (cb) {
        /* Deallocation can happen anywhere (inside another call, while an
         * exception is set): keep the caller's error state intact. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyObject *r = PyObject_CallNoArgs(cb);
        if (r)
            Py_DECREF(r);
        else
            PyErr_WriteUnraisable(cb);
        PyErr_Restore(et, ev, tb);
        Py_DECREF(cb);
    }
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static int lease_getbuffer(SR_Lease *l, Py_buffer *view, int flags)
{
    if (!l->src.obj) {
        PyErr_SetString(PyExc_ValueError, "lease has no buffer");
        return -1;
    }
    /* view->obj = this Lease (a new reference): the consumer keeps us alive. */
    return PyBuffer_FillInfo(view, (PyObject *)l, l->src.buf, l->src.len, 0, flags);
}

static PyBufferProcs lease_as_buffer = {
    .bf_getbuffer = (getbufferproc)lease_getbuffer,
};

static Py_ssize_t lease_length(SR_Lease *l)
{
    return l->src.len;
}

static PySequenceMethods lease_as_sequence = {
    .sq_length = (lenfunc)lease_length,
};

PyTypeObject SR_LeaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.Lease",
    .tp_basicsize = sizeof(SR_Lease),
    .tp_dealloc = (destructor)lease_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Lease(buffer, on_release): a writable buffer exporter over `buffer`\n"
              "whose on_release() runs when the last view of it is gone.",
    .tp_as_buffer = &lease_as_buffer,
    .tp_as_sequence = &lease_as_sequence,
    .tp_weaklistoffset = offsetof(SR_Lease, weakrefs),
    .tp_new = lease_new,
};

/* ------------------------------------------------------------------------ */
/* SharedMap                                                                 */
/* ------------------------------------------------------------------------ */
/*
 * SharedMap(fd, size): a MAP_SHARED mapping of `fd` that does not keep the fd.
 *
 * Python's mmap.mmap dup()s the file descriptor and keeps it open as long as
 * the mapping lives.  For memory lent out by a Lease that can be long after
 * its owner was closed, and a descriptor held by "some result array" looks,
 * rightly, like a leak.  A mapping does not need its descriptor: SharedMap
 * maps once and keeps nothing but the address.  It is unmapped when the
 * SharedMap object dies, which cannot happen while a view of it exists
 * (every export holds a reference through Py_buffer.obj).
 */
typedef struct {
    PyObject_HEAD
    void *addr;
    Py_ssize_t size;
    Py_ssize_t exports;
} SR_SharedMap;

static PyObject *smap_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "size", NULL};
    int fd;
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "in:SharedMap", kwlist, &fd, &size))
        return NULL;
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "size must be > 0");
        return NULL;
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    SR_SharedMap *m = (SR_SharedMap *)type->tp_alloc(type, 0);
    if (!m) {
        munmap(p, (size_t)size);
        return NULL;
    }
    m->addr = p;
    m->size = size;
    return (PyObject *)m;
}

static void smap_dealloc(SR_SharedMap *m)
{
    if (m->addr)
        munmap(m->addr, (size_t)m->size);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static int smap_getbuffer(SR_SharedMap *m, Py_buffer *view, int flags)
{
    if (PyBuffer_FillInfo(view, (PyObject *)m, m->addr, m->size, 0, flags) < 0)
        return -1;
    m->exports++;
    return 0;
}

static void smap_releasebuffer(SR_SharedMap *m, Py_buffer *view)
{
    m->exports--;
}

static PyBufferProcs smap_as_buffer = {
    .bf_getbuffer = (getbufferproc)smap_getbuffer,
    .bf_releasebuffer = (releasebufferproc)smap_releasebuffer,
};

/* discard(offset, length): give the pages back to the kernel (MADV_REMOVE:
 * the memfd's backing pages are freed; they read as zeros afterwards). */
static PyObject *smap_discard(SR_SharedMap *m, PyObject *args)
{
    Py_ssize_t off, len;
    if (!PyArg_ParseTuple(args, "nn:discard", &off, &len))
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    if (off < 0 || len < 0 || off > m->size || len > m->size - off || off % page) {
        PyErr_SetString(PyExc_ValueError, "discard range must be page-aligned and inside the map");
        return NULL;
    }
    len -= len % page;
    if (len && madvise((char *)m->addr + off, (size_t)len, MADV_REMOVE) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* privatize(offset, length): make the pages covering the range a private
 * copy of what they hold now (used in a fork child: its views of lent
 * memory must keep their contents when the parent reuses the range). */
static PyObject *smap_privatize(SR_SharedMap *m, PyObject *args)
{
    Py_ssize_t off, len;
    if (!PyArg_ParseTuple(args, "nn:privatize", &off, &len))
        return NULL;
    if (off < 0 || len < 0 || off > m->size || len > m->size - off) {
        PyErr_SetString(PyExc_ValueError, "privatize range must be inside the map");
        return NULL;
    }
    if (!len)
        Py_RETURN_NONE;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t start = (size_t)off / page * page;
    size_t end = ((size_t)(off + len) + page - 1) / page * page;
    if (end > (size_t)m->size)
        end = (size_t)m->size;        /* the map is a whole number of pages anyway */
    char *base = (char *)m->addr + start;
    size_t n = end - start;
    void *tmp = malloc(n);
    if (!tmp)
        return PyErr_NoMemory();
    memcpy(tmp, base, n);
    /* Replace the shared pages with private anonymous ones at the same
     * address (views keep pointing here), then put the contents back.  Only
     * this thread runs in a fork child, so nobody sees the gap. */
    if (mmap(base, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
             -1, 0) == MAP_FAILED) {
        free(tmp);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    memcpy(base, tmp, n);
    free(tmp);
    Py_RETURN_NONE;
}

static PyObject *smap_get_exports(SR_SharedMap *m, void *c)
{
    return PyLong_FromSsize_t(m->exports);
}

static Py_ssize_t smap_length(SR_SharedMap *m)
{
    return m->size;
}

static PySequenceMethods smap_as_sequence = {
    .sq_length = (lenfunc)smap_length,
};

static PyMethodDef smap_methods[] = {
    {"discard", (PyCFunction)smap_discard, METH_VARARGS,
     "discard($self, offset, length, /)\n--\n\nFree the backing pages of a page-aligned range."},
    {"privatize", (PyCFunction)smap_privatize, METH_VARARGS,
     "privatize($self, offset, length, /)\n--\n\nThe pages covering the range become a "
     "private copy (no longer shared with other processes)."},
    {NULL}
};

static PyGetSetDef smap_getset[] = {
    {"exports", (getter)smap_get_exports, NULL, "Buffer views currently exported."},
    {NULL}
};

PyTypeObject SR_SharedMapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.SharedMap",
    .tp_basicsize = sizeof(SR_SharedMap),
    .tp_dealloc = (destructor)smap_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SharedMap(fd, size): a shared read-write mapping of fd that keeps no\n"
              "descriptor; unmapped when the object and every view of it are gone.",
    .tp_as_buffer = &smap_as_buffer,
    .tp_as_sequence = &smap_as_sequence,
    .tp_methods = smap_methods,
    .tp_getset = smap_getset,
    .tp_new = smap_new,
};
