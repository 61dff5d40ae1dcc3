/*
 * module.c -- subring._core: module init, exceptions, fork detection.
 */
#include <pthread.h>
#include "core.h"

PyObject *SR_SubringError, *SR_RingClosedError, *SR_ForkedRingError;
PyObject *SR_RingFullError, *SR_RingBusyError, *SR_PeerDiedError, *SR_CorruptRingError;

volatile uint64_t sr_fork_generation = 1;

/* Runs in the child of every fork() (os.fork, multiprocessing's fork start
 * method, subprocess with preexec_fn...).  Rings created before the fork now
 * see a different generation and refuse to run: the rings are the parent's. */
static void after_fork_child(void)
{
    sr_fork_generation++;
    sr_user_rings_after_fork();
}

static PyObject *fork_generation(PyObject *m, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(sr_fork_generation);
}

static PyMethodDef module_methods[] = {
    {"fork_generation", fork_generation, METH_NOARGS,
     "fork_generation()\n--\n\nCounter bumped in each forked child (for objects that must not "
     "cross fork)."},
    {NULL}
};

static struct PyModuleDef coremodule = {
    PyModuleDef_HEAD_INIT, "subring._core",
    "The C core of subring: ring index arithmetic, barriers and syscalls.", -1,
    module_methods,
};

static int import_error(PyObject *errors, const char *name, PyObject **out)
{
    *out = PyObject_GetAttrString(errors, name);
    return *out ? 0 : -1;
}

PyMODINIT_FUNC PyInit__core(void)
{
    static int atfork_done;
    PyObject *errors = PyImport_ImportModule("subring.errors");
    if (!errors)
        return NULL;
    if (import_error(errors, "SubringError", &SR_SubringError) < 0 ||
        import_error(errors, "RingClosedError", &SR_RingClosedError) < 0 ||
        import_error(errors, "ForkedRingError", &SR_ForkedRingError) < 0 ||
        import_error(errors, "RingFullError", &SR_RingFullError) < 0 ||
        import_error(errors, "RingBusyError", &SR_RingBusyError) < 0 ||
        import_error(errors, "PeerDiedError", &SR_PeerDiedError) < 0 ||
        import_error(errors, "CorruptRingError", &SR_CorruptRingError) < 0) {
        Py_DECREF(errors);
        return NULL;
    }
    Py_DECREF(errors);
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, after_fork_child);
        atfork_done = 1;
    }
    if (PyType_Ready(&SR_CompletionType) < 0 || PyType_Ready(&SR_PinType) < 0 ||
        PyType_Ready(&SR_BufferRingType) < 0 || PyType_Ready(&SR_KernelRingType) < 0 ||
        PyType_Ready(&SR_UserRingType) < 0 || PyType_Ready(&SR_ServerQueueType) < 0 ||
        PyType_Ready(&SR_RequestType) < 0 || PyType_Ready(&SR_ServerLoopType) < 0 ||
        PyType_Ready(&SR_BatchType) < 0 || PyType_Ready(&SR_LeaseType) < 0 ||
        PyType_Ready(&SR_SharedMapType) < 0)
        return NULL;
    if (!SR_PENDING) {
        /* The sentinel a handler returns to complete its request later. */
        SR_PENDING = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
        if (!SR_PENDING)
            return NULL;
    }
    PyObject *m = PyModule_Create(&coremodule);
    if (!m)
        return NULL;
    if (PyModule_AddFunctions(m, sr_ring_functions) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Completion", (PyObject *)&SR_CompletionType) < 0 ||
        PyModule_AddObjectRef(m, "Pin", (PyObject *)&SR_PinType) < 0 ||
        PyModule_AddObjectRef(m, "BufferRing", (PyObject *)&SR_BufferRingType) < 0 ||
        PyModule_AddObjectRef(m, "KernelRing", (PyObject *)&SR_KernelRingType) < 0 ||
        PyModule_AddObjectRef(m, "UserRing", (PyObject *)&SR_UserRingType) < 0 ||
        PyModule_AddObjectRef(m, "ServerQueue", (PyObject *)&SR_ServerQueueType) < 0 ||
        PyModule_AddObjectRef(m, "Request", (PyObject *)&SR_RequestType) < 0 ||
        PyModule_AddObjectRef(m, "ServerLoop", (PyObject *)&SR_ServerLoopType) < 0 ||
        PyModule_AddObjectRef(m, "Batch", (PyObject *)&SR_BatchType) < 0 ||
        PyModule_AddObjectRef(m, "Lease", (PyObject *)&SR_LeaseType) < 0 ||
        PyModule_AddObjectRef(m, "SharedMap", (PyObject *)&SR_SharedMapType) < 0 ||
        PyModule_AddObjectRef(m, "PENDING", SR_PENDING) < 0 ||
        PyModule_AddIntConstant(m, "URING_ABI_VERSION", SR_URING_ABI_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    { extern int sr_aiter_init(PyObject *); if (sr_aiter_init(m) < 0) { Py_DECREF(m); return NULL; } }  /* aiter.c */
    { extern int sr_fuse_init(PyObject *); if (sr_fuse_init(m) < 0) { Py_DECREF(m); return NULL; } }  /* fuse_conn.c (declared in fuse.h) */
    return m;
}
