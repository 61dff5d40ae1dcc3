/*
 * fuse_classic.c -- the classic transport: read() a request from /dev/fuse
 * with the GIL released, dispatch it, write() the reply.  On an io_uring
 * mount one such loop still runs for what never goes through the ring
 * (FORGET, INTERRUPT).
 */
#define _GNU_SOURCE
#include "fuse.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

int fuse_dev_reply(int fd, uint64_t unique, int rc, const uint8_t *payload)
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
    uint32_t fix = op < FUSE_OPCODE_MAX ? fuse_op_in_size[op] : 0;
    uint32_t body = (uint32_t)n - sizeof(struct fuse_in_header);
    if (body < fix)
        return -EPROTO;
    r->opin = buf + sizeof(struct fuse_in_header);
    r->rest = r->opin + fix;
    r->rest_len = body - fix;
    return 0;
}

PyObject *fuse_serve_dev(FuseConn *c, PyObject *unused)
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
    int64_t gil_mark = 0;   /* fuse_gil_take's mark (0: not taken that way yet) */
    for (;;) {
        ssize_t n;
        PyThreadState *ts = fuse_gil_drop(c, gil_mark);
        n = read(fd, in, inlen);
        int rerr = n < 0 ? errno : 0;
        gil_mark = fuse_gil_take(c, ts);
        if (n < 0) {
            int e = rerr;
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
        rc = fuse_dispatch(c, &r, out, (uint32_t)outlen, NULL, 0);
        if (rc == R_NOREPLY || rc == R_DEFERRED)
            continue;
        if (rc < 0)
            c->n_err++;
        int w = fuse_dev_reply(fd, r.in->unique, rc, out);
        if (w == -ENODEV || w == -ENOTCONN)
            break;
    }
    if (gil_mark != 0)   /* back to Python code: no longer a serving loop's turn */
        __atomic_compare_exchange_n(&c->gil_holder_since, &gil_mark, 0, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED);
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
