/* aiter.c -- LineIter: ``async for line in f`` without a coroutine per line.
 *
 * subring.aio reads a file's lines in batches: a chunk is read through the
 * ring, cut into raw lines in bulk, and the lines are handed out one by one.
 * Handing one out needs no I/O, yet a Python ``__anext__`` (or an async
 * generator) costs a coroutine frame per line -- more than the built-in
 * file's whole per-line cost.  LineIter is the async iterator instead:
 *
 *   __anext__  with a buffered line: returns a LineReady, an awaitable that
 *              is done at once (its am_send returns the line as the result
 *              of the await, without raising StopIteration; its
 *              tp_iternext does raise StopIteration(line) for any consumer
 *              that iterates it, e.g. ``yield from``);
 *              with none left: returns ``refill(self)``, a real coroutine
 *              (AsyncFile._refill) that reads and splits the next batch,
 *              calls ``self.reset(it, decode)`` with it, and returns its
 *              first line (or raises StopAsyncIteration at end of file).
 *
 * ``it`` is the file's iterator over the raw lines of the current batch (a
 * list iterator, or a LineCut, below: the file clears the batch whenever it
 * is dropped, so a stale iterator runs dry and the next __anext__ refills);
 * from a LineCut the line is cut and decoded in one step; ``decode`` is
 * None (binary: the raw line is the line), ``bytes.decode`` (UTF-8, strict:
 * decoded here in C) or any callable raw -> str.
 *
 * Only the loop thread touches these objects (they hold no locks; the GIL
 * serialises any other use).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* ---- LineReady: an awaitable that is already done ---------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *value;         /* the line; NULL once taken by the await */
} LineReady;

static PyTypeObject LineReadyType;

static void ready_dealloc(LineReady *self)
{
    Py_CLEAR(self->value);
    PyObject_Free(self);
}

static PyObject *ready_await(PyObject *self)
{
    return Py_NewRef(self);          /* its own iterator */
}

static PyObject *ready_take(LineReady *self)
{
    PyObject *v = self->value;
    if (v == NULL)
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot reuse already awaited __anext__() of a LineIter");
    self->value = NULL;
    return v;
}

static PyObject *ready_iternext(LineReady *self)
{
    PyObject *v = ready_take(self);
    if (v == NULL)
        return NULL;
    /* StopIteration(v): wrap it in an exception instance first, since a
     * bare tuple would become the exception's args and an exception
     * instance would be raised as itself. */
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, v);
    Py_DECREF(v);
    if (exc == NULL)
        return NULL;
    PyErr_SetObject(PyExc_StopIteration, exc);
    Py_DECREF(exc);
    return NULL;
}

/* The await protocol's fast path (SEND calls am_send): the line is the
 * await's result, no exception raised and caught. */
static PySendResult ready_send(PyObject *self, PyObject *arg, PyObject **result)
{
    PyObject *v = ready_take((LineReady *)self);
    *result = v;
    return v == NULL ? PYGEN_ERROR : PYGEN_RETURN;
}

static PyObject *ready_send_method(PyObject *self, PyObject *arg)
{
    return ready_iternext((LineReady *)self);
}

static PyObject *ready_throw(PyObject *self, PyObject *args)
{
    PyObject *typ, *val = NULL, *tb = NULL;
    if (!PyArg_UnpackTuple(args, "throw", 1, 3, &typ, &val, &tb))
        return NULL;
    Py_CLEAR(((LineReady *)self)->value);
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    } else {
        PyErr_SetString(PyExc_TypeError, "throw() needs an exception");
    }
    return NULL;
}

static PyObject *ready_close(PyObject *self, PyObject *unused)
{
    Py_CLEAR(((LineReady *)self)->value);
    Py_RETURN_NONE;
}

static PyMethodDef ready_methods[] = {
    {"send", ready_send_method, METH_O, "send($self, value, /)\n--\n\nFinish: raise StopIteration(line)."},
    {"throw", ready_throw, METH_VARARGS, "throw($self, typ, val=None, tb=None, /)\n--\n\nRaise the exception."},
    {"close", ready_close, METH_NOARGS, "close($self, /)\n--\n\nDrop the line."},
    {NULL}
};

static PyAsyncMethods ready_async = {
    .am_await = ready_await,
    .am_send = ready_send,
};

static PyTypeObject LineReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.LineReady",
    .tp_basicsize = sizeof(LineReady),
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An awaitable that is already done: awaiting it returns the next line.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)ready_iternext,
    .tp_methods = ready_methods,
};

/* ---- LineCut: a batch cut at \n on demand ----------------------------------- */

/* The batch of lines when lines end at b"\n" only (binary files; UTF-8
 * text whose lines end at \n): the region of the file's bytes, and how far
 * it has been taken.  No list of lines is made: ``next()`` cuts the next
 * line off (as bytes, for readline()), and LineIter cuts it straight into
 * the line it hands out (a str decoded from the region for text) -- one
 * object per line.  ``consumed`` is the byte count taken (the file's
 * position); ``clear()`` ends the batch (its iterators run dry). */
typedef struct {
    PyObject_HEAD
    PyObject *region;        /* bytes; NULL once cleared */
    Py_ssize_t pos;          /* bytes taken */
    int text;                /* LineIter hands out str (UTF-8, strict) */
} LineCut;

static PyTypeObject LineCutType;

/* The next line as bytes (as_text == 0) or str, or NULL without an error
 * set at the end.  The line is taken even if decoding it fails. */
static PyObject *cut_take(LineCut *self, int as_text)
{
    if (self->region == NULL)
        return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(self->region);
    if (self->pos >= n)
        return NULL;
    const char *p = PyBytes_AS_STRING(self->region) + self->pos;
    const char *e = memchr(p, '\n', (size_t)(n - self->pos));
    Py_ssize_t len = e != NULL ? (Py_ssize_t)(e - p) + 1 : n - self->pos;
    self->pos += len;
    if (as_text)
        return PyUnicode_DecodeUTF8(p, len, "strict");
    return PyBytes_FromStringAndSize(p, len);
}

static PyObject *cut_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"region", "text", NULL};
    PyObject *region;
    int text = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!|p:LineCut", kwlist, &PyBytes_Type,
                                     &region, &text))
        return NULL;
    LineCut *self = (LineCut *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->region = Py_NewRef(region);
    self->text = text;
    return (PyObject *)self;
}

static void cut_dealloc(LineCut *self)
{
    Py_CLEAR(self->region);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *cut_iternext(LineCut *self)
{
    return cut_take(self, 0);           /* NULL, no error: StopIteration */
}

static int cut_bool(LineCut *self)
{
    return self->region != NULL;        /* a batch until cleared (like a list of lines) */
}

static PyObject *cut_clear(LineCut *self, PyObject *unused)
{
    Py_CLEAR(self->region);
    Py_RETURN_NONE;
}

static PyObject *cut_consumed(LineCut *self, void *closure)
{
    return PyLong_FromSsize_t(self->pos);
}

static PyMethodDef cut_methods[] = {
    {"clear", (PyCFunction)cut_clear, METH_NOARGS,
     "clear($self, /)\n--\n\nEnd the batch: no more lines (iterators over it run dry)."},
    {NULL}
};

static PyGetSetDef cut_getset[] = {
    {"consumed", (getter)cut_consumed, NULL, "Bytes of the region taken so far.", NULL},
    {NULL}
};

static PyNumberMethods cut_number = {
    .nb_bool = (inquiry)cut_bool,
};

static PyTypeObject LineCutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.LineCut",
    .tp_basicsize = sizeof(LineCut),
    .tp_dealloc = (destructor)cut_dealloc,
    .tp_as_number = &cut_number,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "LineCut(region, text=False)\n--\n\n"
              "A batch of lines ending at b'\\n': iterating gives each line as bytes;\n"
              "a LineIter over it gives str lines (UTF-8, strict) if ``text``.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)cut_iternext,
    .tp_methods = cut_methods,
    .tp_getset = cut_getset,
    .tp_new = cut_new,
};

/* ---- LineIter ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *it;            /* iterator over the batch's raw lines */
    PyObject *decode;        /* None, bytes.decode or a callable */
    PyObject *refill;        /* refill(self) -> coroutine */
    LineReady *ready;        /* reused while nobody else holds it */
    int utf8;                /* decode is bytes.decode: decode here */
    int binary;              /* decode is None */
} LineIter;

static PyObject *bytes_decode;   /* bytes.decode (the method descriptor) */

static int liter_set(LineIter *self, PyObject *it, PyObject *decode)
{
    if (!PyIter_Check(it)) {
        PyErr_SetString(PyExc_TypeError, "LineIter: it must be an iterator");
        return -1;
    }
    if (decode != Py_None && !PyCallable_Check(decode)) {
        PyErr_SetString(PyExc_TypeError, "LineIter: decode must be None or callable");
        return -1;
    }
    Py_XSETREF(self->it, Py_NewRef(it));
    Py_XSETREF(self->decode, Py_NewRef(decode));
    self->binary = decode == Py_None;
    self->utf8 = decode == bytes_decode;
    return 0;
}

static PyObject *liter_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"it", "decode", "refill", NULL};
    PyObject *it, *decode, *refill;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO:LineIter", kwlist, &it, &decode, &refill))
        return NULL;
    if (!PyCallable_Check(refill)) {
        PyErr_SetString(PyExc_TypeError, "LineIter: refill must be callable");
        return NULL;
    }
    LineIter *self = (LineIter *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (liter_set(self, it, decode) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->refill = Py_NewRef(refill);
    return (PyObject *)self;
}

static int liter_traverse(LineIter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->it);
    Py_VISIT(self->decode);
    Py_VISIT(self->refill);
    return 0;
}

static int liter_clear(LineIter *self)
{
    Py_CLEAR(self->it);
    Py_CLEAR(self->decode);
    Py_CLEAR(self->refill);
    Py_CLEAR(self->ready);
    return 0;
}

static void liter_dealloc(LineIter *self)
{
    PyObject_GC_UnTrack(self);
    liter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *liter_anext(LineIter *self)
{
    if (self->it == NULL) {                      /* (cleared by the GC) */
        PyErr_SetNone(PyExc_StopAsyncIteration);
        return NULL;
    }
    PyObject *raw, *line;
    if (Py_IS_TYPE(self->it, &LineCutType)) {      /* cut straight into the line */
        LineCut *cut = (LineCut *)self->it;
        line = cut_take(cut, cut->text);
        if (line == NULL) {
            if (PyErr_Occurred())
                return NULL;
            return PyObject_CallOneArg(self->refill, (PyObject *)self);
        }
        goto ready;
    }
    raw = Py_TYPE(self->it)->tp_iternext(self->it);
    if (raw == NULL) {
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_StopIteration))
                return NULL;
            PyErr_Clear();
        }
        /* the batch ran dry: the refill coroutine does the I/O */
        return PyObject_CallOneArg(self->refill, (PyObject *)self);
    }
    if (self->binary) {
        line = raw;
    } else if (self->utf8 && PyBytes_CheckExact(raw)) {
        line = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), "strict");
        Py_DECREF(raw);
    } else {
        line = PyObject_CallOneArg(self->decode, raw);
        Py_DECREF(raw);
    }
    if (line == NULL)
        return NULL;
ready:;
    LineReady *r = self->ready;
    if (r != NULL && Py_REFCNT(r) == 1) {        /* nobody else holds it: reuse */
        Py_XSETREF(r->value, line);
        return Py_NewRef(r);
    }
    r = PyObject_New(LineReady, &LineReadyType);
    if (r == NULL) {
        Py_DECREF(line);
        return NULL;
    }
    r->value = line;
    Py_XSETREF(self->ready, (LineReady *)Py_NewRef(r));
    return (PyObject *)r;
}

static PyObject *liter_reset(LineIter *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "reset() takes exactly 2 arguments (it, decode)");
        return NULL;
    }
    if (liter_set(self, args[0], args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef liter_methods[] = {
    {"reset", (PyCFunction)(void (*)(void))liter_reset, METH_FASTCALL,
     "reset($self, it, decode, /)\n--\n\n"
     "Hand out the lines of a new batch: raw lines from ``it``, decoded by\n"
     "``decode`` (None: binary)."},
    {NULL}
};

static PyAsyncMethods liter_async = {
    .am_aiter = PyObject_SelfIter,
    .am_anext = (unaryfunc)liter_anext,
};

static PyTypeObject LineIterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subring._core.LineIter",
    .tp_basicsize = sizeof(LineIter),
    .tp_dealloc = (destructor)liter_dealloc,
    .tp_as_async = &liter_async,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "LineIter(it, decode, refill)\n--\n\n"
              "Async iterator over a file's lines.  Buffered lines are handed out\n"
              "through an awaitable that is done at once (no coroutine per line);\n"
              "when ``it`` runs dry, ``__anext__`` returns the coroutine\n"
              "``refill(self)``, which must call ``reset`` and return the next line\n"
              "(or raise StopAsyncIteration).",
    .tp_traverse = (traverseproc)liter_traverse,
    .tp_clear = (inquiry)liter_clear,
    .tp_methods = liter_methods,
    .tp_new = liter_new,
};

int sr_aiter_init(PyObject *module)
{
    if (PyType_Ready(&LineReadyType) < 0 || PyType_Ready(&LineIterType) < 0 ||
        PyType_Ready(&LineCutType) < 0)
        return -1;
    bytes_decode = PyObject_GetAttrString((PyObject *)&PyBytes_Type, "decode");
    if (bytes_decode == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "LineIter", (PyObject *)&LineIterType) < 0 ||
        PyModule_AddObjectRef(module, "LineReady", (PyObject *)&LineReadyType) < 0 ||
        PyModule_AddObjectRef(module, "LineCut", (PyObject *)&LineCutType) < 0)
        return -1;
    return 0;
}
