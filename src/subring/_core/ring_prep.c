/*
 * ring_prep.c -- building SQEs: publishing, link-chain bookkeeping, making
 * room in a full SQ, and the prep_* methods (single ops and batches).  Shared
 * by both backends except the kr_prep_* methods, which only KernelRing has
 * (the user ring's own builders: user_calls.c).  The inline front half every
 * prep path shares (checks, slot, SQE, token): ring_prep.h.
 */
#define _GNU_SOURCE
#include <string.h>

#include "ring_backend.h"
#include "ring_prep.h"

/* Publish prepared SQEs (shared by every backend).  Returns the number this
 * call made visible. */
uint32_t sr_ring_publish(SR_Ring *r)
{
    if (r->pending_skip) {
        /* A CQE_SKIP_SUCCESS op is the last of this submission: no successor
         * will ever bound its lifetime, so let it post its CQE after all.  Its
         * SQE is not yet visible to the kernel, so it is still ours to edit. */
        struct io_uring_sqe *sqe = sr_sq_entry(&r->q.sq, r->pending_skip_sqidx);
        sqe->flags &= ~IOSQE_CQE_SKIP_SUCCESS;
        sr_slot *ps = &r->ops.slots[r->pending_skip - 1];
        if (ps->skip) {
            ps->skip = 0;
            r->ops.skip_live--;
        }
        r->pending_skip = 0;
    }
    /* The kernel ends link chains at the end of each submission. */
    r->chain_open = 0;
    r->chain_head = 0;
    r->last_slot = 0;
    return sr_sq_publish(&r->q.sq);
}

/* Queue slot i for a made-up final completion (reap delivers it): the
 * kernel will never post one.  Idempotent. */
void sr_ring_owe(SR_Ring *r, uint32_t i)
{
    sr_slot *s = &r->ops.slots[i];
    if (s->state != SLOT_LIVE || s->owed)
        return;
    s->owed = 1;
    r->ops.owed_live++;
    /* An op is queued at most once per generation and stays live until the
     * queue entry is consumed, so the queue (2 x max_inflight) cannot fill;
     * compaction is a safety net. */
    if (r->nsynth == 2 * r->ops.nslots) {
        uint32_t w = 0;
        for (uint32_t k = 0; k < r->nsynth; k++) {
            int64_t j = sr_slot_find(&r->ops, r->synth[k]);
            if (j >= 0 && r->ops.slots[j].owed)
                r->synth[w++] = r->synth[k];
        }
        r->nsynth = w;
    }
    r->synth[r->nsynth++] = sr_token(&r->ops, i);
}

/* The SQ filled up inside a link chain, which must reach the kernel in one
 * submission.  Withdraw the part of the chain prepared so far: its SQEs are
 * not published yet (a chain is open only since the last publish), so they
 * are taken back and never run.  Their tokens were handed out, so each op
 * still gets its one final completion: -ECANCELED, made up by reap, as if the
 * kernel had failed the chain before its first op started. */
void sr_ring_withdraw_chain(SR_Ring *r)
{
    struct sr_sq *sq = &r->q.sq;
    uint32_t nxt = r->chain_head, g = r->chain_head_gen;
    if (nxt) {
        sr_slot *h = &r->ops.slots[nxt - 1];
        uint32_t unpublished = sr_sq_unpublished(sq);
        uint32_t back = sr_sq_next_index(sq) - r->chain_head_sqidx;
        if (h->state == SLOT_LIVE && h->gen == g && back <= unpublished)
            sr_sq_rewind(sq, r->chain_head_sqidx);   /* the chain's SQEs are ours again */
    }
    while (nxt) {
        sr_slot *n = &r->ops.slots[nxt - 1];
        if (n->state != SLOT_LIVE || n->gen != g)
            break;
        sr_ring_owe(r, nxt - 1);
        g = n->link_next_gen;
        nxt = n->link_next;
    }
    r->chain_open = 0;
    r->chain_head = 0;
    r->last_slot = 0;
    r->pending_skip = 0;
}

/* The SQ is full: make room by submitting, unless that would split a chain. */
int sr_ring_make_room(SR_Ring *r)
{
    if (r->chain_open) {
        sr_ring_withdraw_chain(r);
        PyErr_SetString(SR_RingFullError,
                        "submission queue full in the middle of a link chain; a chain "
                        "must fit in the SQ (use a larger ring or a shorter chain).  The "
                        "ops prepared so far in this chain were withdrawn: they will not "
                        "run, and each completes with -ECANCELED");
        return -1;
    }
    r->st_sq_full_flushes++;
    if (sr_be_submit(r, 0, -1) < 0)
        return -1;
    if (sr_sq_space(&r->q.sq) == 0 && r->k.sqpoll) {
        if (kr_enter(r, 0, IORING_ENTER_SQ_WAIT, -1) < 0)
            return -1;
    }
    if (sr_sq_space(&r->q.sq) == 0) {
        PyErr_SetString(SR_RingFullError,
                        "submission queue full and the kernel did not consume it");
        return -1;
    }
    return 0;
}

/* prep_nop(user_data=None, flags=0) */
PyObject *sr_ring_prep_nop(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"user_data", "flags"};
    PyObject *a[2];
    uint32_t flags;
    int64_t i;
    if (sr_parse("prep_nop", args, nargs, kwnames, names, 2, 0, a) < 0 ||
        sr_as_u32(a[1], 0, &flags, "flags") < 0)
        return NULL;
    struct io_uring_sqe *sqe = sr_ring_begin(r, IORING_OP_NOP, flags, &i);
    if (!sqe)
        return NULL;
    sqe->fd = -1;
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[0], (uint8_t)flags));
}

/* prep_read / prep_write (fd, buf, offset=-1, user_data=None, flags=0, rw_flags=0) */
static PyObject *kr_prep_rw(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, uint8_t opcode)
{
    static const char *const names[] = {"fd", "buf", "offset", "user_data", "flags",
                                        "rw_flags"};
    const char *fname = opcode == IORING_OP_READ ? "prep_read" : "prep_write";
    PyObject *a[6];
    int fd;
    int64_t off, i;
    uint32_t flags, rw_flags;
    if (sr_parse(fname, args, nargs, kwnames, names, 6, 2, a) < 0 ||
        sr_as_int(a[0], 0, &fd, "fd") < 0 || sr_as_i64(a[2], -1, &off, "offset") < 0 ||
        sr_as_u32(a[4], 0, &flags, "flags") < 0 ||
        sr_as_u32(a[5], 0, &rw_flags, "rw_flags") < 0)
        return NULL;
    if (off < -1) {
        PyErr_SetString(PyExc_ValueError, "offset must be >= 0, or -1 for the file position");
        return NULL;
    }
    /* Export the buffer before taking a slot and an SQE, so a bad buffer
     * leaves the ring untouched. */
    Py_buffer view;
    if (PyObject_GetBuffer(a[1], &view,
                           opcode == IORING_OP_READ ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len > UINT32_MAX) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "buffer larger than 4 GiB - 1");
        return NULL;
    }
    struct io_uring_sqe *sqe = sr_ring_begin(r, opcode, flags, &i);
    if (!sqe) {
        PyBuffer_Release(&view);
        return NULL;
    }
    r->ops.views[i] = view;   /* the slot now owns the export */
    r->ops.slots[i].has_view = 1;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)view.buf;
    sqe->len = (uint32_t)view.len;
    sqe->off = (uint64_t)off;
    sqe->rw_flags = rw_flags;
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[3], (uint8_t)flags));
}

PyObject *kr_prep_read(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rw(r, a, n, k, IORING_OP_READ);
}

PyObject *kr_prep_write(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rw(r, a, n, k, IORING_OP_WRITE);
}

/* prep_read_fixed / prep_write_fixed
 *   (fd, buf_index, offset, nbytes, buf_offset=0, user_data=None, flags=0) */
static PyObject *kr_prep_rw_fixed(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames, uint8_t opcode)
{
    static const char *const names[] = {"fd", "buf_index", "offset", "nbytes",
                                        "buf_offset", "user_data", "flags"};
    const char *fname = opcode == IORING_OP_READ_FIXED ? "prep_read_fixed"
                                                       : "prep_write_fixed";
    PyObject *a[7];
    int fd;
    int64_t off, i, boff;
    uint32_t bidx, nbytes, flags;
    if (sr_parse(fname, args, nargs, kwnames, names, 7, 4, a) < 0 ||
        sr_as_int(a[0], 0, &fd, "fd") < 0 || sr_as_u32(a[1], 0, &bidx, "buf_index") < 0 ||
        sr_as_i64(a[2], -1, &off, "offset") < 0 ||
        sr_as_u32(a[3], 0, &nbytes, "nbytes") < 0 ||
        sr_as_i64(a[4], 0, &boff, "buf_offset") < 0 ||
        sr_as_u32(a[6], 0, &flags, "flags") < 0)
        return NULL;
    if (sr_ring_check(r) < 0)
        return NULL;
    if (bidx >= r->k.nregbufs || !r->k.regbufs[bidx].obj) {
        PyErr_Format(PyExc_IndexError, "no registered buffer at index %u", bidx);
        return NULL;
    }
    if (boff < 0 || (uint64_t)boff + nbytes > (uint64_t)r->k.regbufs[bidx].len) {
        PyErr_Format(PyExc_ValueError,
                     "buf_offset %lld + nbytes %u is outside registered buffer %u "
                     "(%zd bytes)", (long long)boff, nbytes, bidx, r->k.regbufs[bidx].len);
        return NULL;
    }
    if (off < -1) {
        PyErr_SetString(PyExc_ValueError, "offset must be >= 0, or -1 for the file position");
        return NULL;
    }
    struct io_uring_sqe *sqe = sr_ring_begin(r, opcode, flags, &i);
    if (!sqe)
        return NULL;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)((char *)r->k.regbufs[bidx].buf + boff);
    sqe->len = nbytes;
    sqe->off = (uint64_t)off;
    sqe->buf_index = (uint16_t)bidx;
    r->ops.slots[i].fixed = 1;
    r->ops.fixed_live++;
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[5], (uint8_t)flags));
}

PyObject *kr_prep_read_fixed(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rw_fixed(r, a, n, k, IORING_OP_READ_FIXED);
}

PyObject *kr_prep_write_fixed(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rw_fixed(r, a, n, k, IORING_OP_WRITE_FIXED);
}

/* prep_sqe(opcode, fd=-1, addr=0, len=0, off=0, op_flags=0, flags=0, ioprio=0,
 *          buf_index=0, file_index=0, addr3=0, user_data=None, keep=None,
 *          cmd=None, multishot=False)
 * The generic builder behind the Python-level prep_* methods.  `keep` is held
 * until the op's final completion: pass the Pins of every address you give. */
PyObject *kr_prep_sqe(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {
        "opcode", "fd", "addr", "len", "off", "op_flags", "flags", "ioprio",
        "buf_index", "file_index", "addr3", "user_data", "keep", "cmd", "multishot"};
    PyObject *a[15];
    uint32_t opcode, len, op_flags, flags, ioprio, buf_index;
    int fd;
    int64_t fi;
    uint64_t addr, off, addr3;
    int64_t i;
    if (sr_parse("prep_sqe", args, nargs, kwnames, names, 15, 1, a) < 0 ||
        sr_as_u32(a[0], 0, &opcode, "opcode") < 0 || sr_as_int(a[1], -1, &fd, "fd") < 0 ||
        sr_as_u64(a[2], 0, &addr, "addr") < 0 || sr_as_u32(a[3], 0, &len, "len") < 0 ||
        sr_as_u64(a[4], 0, &off, "off") < 0 ||
        sr_as_u32(a[5], 0, &op_flags, "op_flags") < 0 ||
        sr_as_u32(a[6], 0, &flags, "flags") < 0 ||
        sr_as_u32(a[7], 0, &ioprio, "ioprio") < 0 ||
        sr_as_u32(a[8], 0, &buf_index, "buf_index") < 0 ||
        sr_as_i64(a[9], 0, &fi, "file_index") < 0 || sr_as_u64(a[10], 0, &addr3, "addr3") < 0)
        return NULL;
    if (opcode > 0xff || ioprio > 0xffff || buf_index > 0xffff || fi < INT32_MIN ||
        fi > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "opcode, ioprio, buf_index or file_index out of range");
        return NULL;
    }
    Py_buffer cmd = {0};
    if (a[13] && a[13] != Py_None) {
        if (PyObject_GetBuffer(a[13], &cmd, PyBUF_SIMPLE) < 0)
            return NULL;
    }
    int multishot = a[14] ? PyObject_IsTrue(a[14]) : 0;
    if (multishot < 0) {
        PyBuffer_Release(&cmd);
        return NULL;
    }
    if (sr_ring_check(r) < 0)
        goto fail;
    size_t cmd_max = r->q.sq.sqe_shift ? 80 : 16;
    if (cmd.obj && (size_t)cmd.len > cmd_max) {
        PyErr_Format(PyExc_ValueError, "cmd is %zd bytes; this ring's SQEs hold %zu "
                     "(use sqe128=True for 80)", cmd.len, cmd_max);
        goto fail;
    }
    if (opcode == IORING_OP_ASYNC_CANCEL || opcode == IORING_OP_TIMEOUT_REMOVE ||
        opcode == IORING_OP_POLL_REMOVE)
        addr ^= r->ud_key;    /* target token -> the user_data the kernel knows */
    struct io_uring_sqe *sqe = sr_ring_begin(r, (uint8_t)opcode, flags, &i);
    if (!sqe)
        goto fail;
    sqe->fd = fd;
    sqe->addr = addr;
    sqe->len = len;
    sqe->off = off;
    sqe->op_flags = op_flags;
    sqe->ioprio = (uint16_t)ioprio;
    sqe->buf_index = (uint16_t)buf_index;
    sqe->file_index = (uint32_t)fi;
    if (cmd.obj)
        memcpy(sqe->cmd, cmd.buf, (size_t)cmd.len);
    else
        sqe->addr3 = addr3;
    sr_slot *s = &r->ops.slots[i];
    if (a[12] && a[12] != Py_None)
        s->keep = Py_NewRef(a[12]);
    if (multishot) {
        s->multishot = 1;
        r->multishot_live++;
    }
    PyBuffer_Release(&cmd);
    return PyLong_FromUnsignedLongLong(sr_ring_bind(r, sqe, (uint32_t)i, a[11], (uint8_t)flags));
fail:
    PyBuffer_Release(&cmd);
    return NULL;
}

int sr_ring_batch_room(SR_Ring *r, Py_ssize_t n)
{
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "count must be >= 0");
        return -1;
    }
    if ((uint64_t)n > r->ops.nfree) {
        PyErr_Format(SR_RingFullError,
                     "batch of %zd ops does not fit: %u of %u slots free "
                     "(max_inflight); reap completions first", n, r->ops.nfree,
                     r->ops.nslots);
        return -1;
    }
    return 0;
}

/* A batch submits a full SQ to make room, which releases the GIL; another
 * thread may take op slots meanwhile.  Called after each such submit: if the
 * rest of the batch no longer fits, stop with RingFullError.  The first
 * `done` ops are prepared (and submitted) and complete as usual; the
 * exception's `prepared` attribute says how many. */
static int sr_ring_batch_still_fits(SR_Ring *r, Py_ssize_t done, Py_ssize_t n)
{
    if ((uint64_t)(n - done) <= r->ops.nfree)
        return 0;
    PyObject *msg = PyUnicode_FromFormat(
        "batch of %zd ops stopped after %zd: another thread took the free slots while "
        "this one submitted a full SQ (max_inflight %u); the first %zd were submitted "
        "and complete as usual", n, done, r->ops.nslots, done);
    PyObject *exc = msg ? PyObject_CallOneArg(SR_RingFullError, msg) : NULL;
    Py_XDECREF(msg);
    if (exc) {
        PyObject *k = PyLong_FromSsize_t(done);
        if (k && PyObject_SetAttrString(exc, "prepared", k) == 0)
            PyErr_SetObject(SR_RingFullError, exc);
        Py_XDECREF(k);
        Py_DECREF(exc);
    }
    return -1;
}

/* prep_nops(count, user_data=0, flags=0): NOPs whose user_data are
 * user_data + 0 .. user_data + count-1.  Returns count. */
PyObject *sr_ring_prep_nops(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"count", "user_data", "flags"};
    PyObject *a[3];
    int64_t n;
    uint64_t base;
    uint32_t flags;
    if (sr_parse("prep_nops", args, nargs, kwnames, names, 3, 1, a) < 0 ||
        sr_as_i64(a[0], 0, &n, "count") < 0 || sr_as_u64(a[1], 0, &base, "user_data") < 0 ||
        sr_as_u32(a[2], 0, &flags, "flags") < 0)
        return NULL;
    if (sr_ring_check(r) < 0 || sr_check_sqe_flags(flags) < 0 || sr_ring_batch_room(r, n) < 0)
        return NULL;
    /* Like every single-op prep (sr_ring_begin): a dead subsystem takes no more
     * work; SQEs prepared now would never be published. */
    if (sr_be_refuse_work(r, 0) < 0)
        return NULL;
    if (flags & (IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_LINK | IOSQE_IO_HARDLINK)) {
        PyErr_SetString(PyExc_ValueError, "prep_nops does not take LINK/HARDLINK/SKIP_SUCCESS");
        return NULL;
    }
    if (n == 0)
        return PyLong_FromLong(0);   /* nothing prepared: an open chain stays open */
    struct sr_sq *sq = &r->q.sq;
    uint32_t space = sr_sq_space(sq);
    uint32_t last = 0;
    for (int64_t k = 0; k < n; k++) {
        if (space == 0) {
            if (sr_ring_make_room(r) < 0 || sr_ring_batch_still_fits(r, k, n) < 0) {
                /* the first k are prepared (submitted) and complete as usual */
                return NULL;
            }
            space = sr_sq_space(sq);
        }
        struct io_uring_sqe *sqe = sr_sq_get(sq, &space);
        /* room checked above and after every GIL release */
        int64_t i = sr_slot_alloc(&r->ops, IORING_OP_NOP);
        sr_slot *s = &r->ops.slots[i];
        sqe->opcode = IORING_OP_NOP;
        sqe->fd = -1;
        sqe->flags = (uint8_t)flags;
        sqe->user_data = sr_ring_wire(r, (uint32_t)i);
        s->udata = NULL;
        s->int_udata = base + (uint64_t)k;
        if (sr_unlikely(k == 0 || r->pending_skip || r->chain_open)) {
            sr_ring_link_in(r, (uint32_t)i);   /* joins a chain the previous op left open */
            r->chain_open = 0;
        }
        last = (uint32_t)i;
    }
    /* NOPs of this batch never link (flags checked above): only the first
     * can join an open chain, and only the last is "the previous op" for
     * whatever is prepared next. */
    if (n > 0) {
        r->last_slot = last + 1;
        r->last_gen = r->ops.slots[last].gen;
    }
    r->chain_open = 0;
    return PyLong_FromLongLong(n);
}

/* prep_reads / prep_writes (fd, buf, size, offsets, user_data=None, flags=0)
 * Op k transfers buf[k*size:(k+1)*size] at file offset offsets[k].  user_data:
 * None -> k, an int -> user_data + k, or a sequence/array of ints.  One pin of
 * `buf` is shared by all ops of the batch.  Returns the number prepared. */
static PyObject *kr_prep_rws(SR_Ring *r, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames, uint8_t opcode)
{
    static const char *const names[] = {"fd", "buf", "size", "offsets", "user_data",
                                        "flags"};
    const char *fname = opcode == IORING_OP_READ ? "prep_reads" : "prep_writes";
    PyObject *a[6];
    int fd;
    uint32_t size, flags;
    uint64_t ud_base = 0;
    sr_i64_array offs = {0}, uds = {0};
    int have_uds = 0;
    SR_Pin *pin = NULL;
    PyObject *result = NULL;
    if (sr_parse(fname, args, nargs, kwnames, names, 6, 4, a) < 0 ||
        sr_as_int(a[0], 0, &fd, "fd") < 0 || sr_as_u32(a[2], 0, &size, "size") < 0 ||
        sr_as_u32(a[5], 0, &flags, "flags") < 0)
        return NULL;
    if (sr_ring_check(r) < 0 || sr_check_sqe_flags(flags) < 0)
        return NULL;
    if (flags & (IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_LINK | IOSQE_IO_HARDLINK)) {
        PyErr_Format(PyExc_ValueError, "%s does not take LINK/HARDLINK/SKIP_SUCCESS", fname);
        return NULL;
    }
    if (a[4] && a[4] != Py_None) {
        if (PyLong_Check(a[4])) {
            if (sr_as_u64(a[4], 0, &ud_base, "user_data") < 0)
                return NULL;
        } else {
            if (sr_i64_array_get(a[4], &uds, "user_data") < 0)
                return NULL;
            have_uds = 1;
        }
    }
    if (sr_i64_array_get(a[3], &offs, "offsets") < 0)
        goto out;
    Py_ssize_t n = offs.n;
    if (have_uds && uds.n != n) {
        PyErr_SetString(PyExc_ValueError, "user_data and offsets differ in length");
        goto out;
    }
    pin = sr_pin_new(a[1], opcode == IORING_OP_READ);
    if (!pin)
        goto out;
    if ((uint64_t)pin->view.len < (uint64_t)n * size) {
        PyErr_Format(PyExc_ValueError, "buf holds %zd bytes, %zd ops of %u need %llu",
                     pin->view.len, n, size, (unsigned long long)n * size);
        goto out;
    }
    if (sr_ring_batch_room(r, n) < 0)
        goto out;
    if (n == 0) {                    /* nothing prepared: an open chain stays open */
        result = PyLong_FromLong(0);
        goto out;
    }
    /* Validate every offset and user_data before preparing anything (all or
     * nothing: a bad item must not leave the first ones queued). */
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t off, ud;
        if (sr_i64_array_at(&offs, k, &off, "offsets") < 0)
            goto out;
        if (off < -1) {
            PyErr_Format(PyExc_ValueError, "offsets[%zd] = %lld is negative", k,
                         (long long)off);
            goto out;
        }
        if (have_uds && sr_i64_array_at(&uds, k, &ud, "user_data") < 0)
            goto out;
    }
    struct sr_sq *sq = &r->q.sq;
    uint32_t space = sr_sq_space(sq);
    char *base = pin->view.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t off, ud;
        if (space == 0) {
            if (sr_ring_make_room(r) < 0 || sr_ring_batch_still_fits(r, k, n) < 0)
                goto out;     /* the first k are submitted and complete as usual */
            space = sr_sq_space(sq);
        }
        sr_i64_array_at(&offs, k, &off, "offsets");
        if (have_uds) {
            sr_i64_array_at(&uds, k, &ud, "user_data");   /* validated above */
        } else {
            ud = (int64_t)(ud_base + (uint64_t)k);
        }
        struct io_uring_sqe *sqe = sr_sq_get(sq, &space);
        int64_t i = sr_slot_alloc(&r->ops, opcode);
        sr_slot *s = &r->ops.slots[i];
        sqe->opcode = opcode;
        sqe->flags = (uint8_t)flags;
        sqe->fd = fd;
        sqe->addr = (uint64_t)(uintptr_t)(base + (size_t)k * size);
        sqe->len = size;
        sqe->off = (uint64_t)off;
        sqe->user_data = sr_ring_wire(r, (uint32_t)i);
        s->udata = NULL;
        s->int_udata = (uint64_t)ud;
        s->keep = Py_NewRef((PyObject *)pin);
        sr_ring_link_in(r, (uint32_t)i);   /* joins a chain the previous op left open */
        r->chain_open = 0;
    }
    r->chain_open = 0;
    result = PyLong_FromSsize_t(n);
out:
    Py_XDECREF(pin);
    sr_i64_array_release(&offs);
    sr_i64_array_release(&uds);
    return result;
}

PyObject *kr_prep_reads(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rws(r, a, n, k, IORING_OP_READ);
}

PyObject *kr_prep_writes(SR_Ring *r, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
    return kr_prep_rws(r, a, n, k, IORING_OP_WRITE);
}
