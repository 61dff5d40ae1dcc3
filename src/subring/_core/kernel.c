/*
 * kernel.c -- io_uring_setup / enter / register through syscall(2).
 *
 * How the kernel lays out a ring (io_uring_setup(2)): the call returns an fd
 * and fills io_uring_params with offsets.  Three regions are mapped from the
 * fd: the SQ ring (head, tail, mask, entries, flags, dropped, [index array]),
 * the CQ ring (head, tail, mask, entries, overflow, flags, CQEs) and the SQE
 * array.  With IORING_FEAT_SINGLE_MMAP (5.4+) the SQ and CQ rings share one
 * mapping.  With IORING_SETUP_NO_SQARRAY (6.6+) there is no index array and the
 * kernel consumes SQEs in ring order, which is what user-space rings do too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernel.h"

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#define __NR_io_uring_enter 426
#define __NR_io_uring_register 427
#endif

static int sys_setup(uint32_t entries, struct io_uring_params *p)
{
    long r = syscall(__NR_io_uring_setup, entries, p);
    return r < 0 ? -errno : (int)r;
}

int sr_kring_register(int fd, unsigned opcode, const void *arg, unsigned nr_args)
{
    long r = syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
    return r < 0 ? -errno : (int)r;
}

int sr_kring_enter(struct sr_kring *r, uint32_t to_submit, uint32_t min_complete,
                   uint32_t flags, int64_t ts_ns)
{
    long ret;
    if (ts_ns >= 0 && (flags & IORING_ENTER_GETEVENTS)) {
        struct sr_kernel_timespec ts = {
            .tv_sec = ts_ns / 1000000000LL, .tv_nsec = ts_ns % 1000000000LL };
        struct io_uring_getevents_arg arg = { .ts = (uint64_t)(uintptr_t)&ts };
        ret = syscall(__NR_io_uring_enter, r->fd, to_submit, min_complete,
                      flags | IORING_ENTER_EXT_ARG, &arg, sizeof(arg));
    } else {
        ret = syscall(__NR_io_uring_enter, r->fd, to_submit, min_complete,
                      flags, NULL, (size_t)0);
    }
    return ret < 0 ? -errno : (int)ret;
}

static void *map(int fd, size_t len, uint64_t off)
{
    /* MAP_POPULATE: fault the ring pages in now, not on the first submit. */
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                   (off_t)off);
    if (p == MAP_FAILED)
        return NULL;
    /* A forked child must never touch the parent's rings: with DONTFORK the
     * pages are simply absent in the child (module.c also refuses to use a
     * ring whose fork generation changed, with a clear error). */
    madvise(p, len, MADV_DONTFORK);
    return p;
}

void sr_kring_teardown(struct sr_kring *r, int close_fd)
{
    if (r->sqe_map) munmap(r->sqe_map, r->sqe_map_len);
    if (r->cq_map && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_map_len);
    if (r->sq_map) munmap(r->sq_map, r->sq_map_len);
    r->sqe_map = r->cq_map = r->sq_map = NULL;
    if (close_fd && r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

int sr_kring_setup(struct sr_kring *r, uint32_t entries, struct io_uring_params *p)
{
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    int fd = sys_setup(entries, p);
    if (fd < 0)
        return fd;
    r->fd = fd;
    r->setup_flags = p->flags;
    r->features = p->features;

    uint32_t sqe_shift = (p->flags & IORING_SETUP_SQE128) ? 1 : 0;
    uint32_t cqe_shift = (p->flags & IORING_SETUP_CQE32) ? 1 : 0;

    /* With NO_SQARRAY sq_off.array is 0 and the SQ ring ends after `dropped`. */
    size_t sq_len = (p->flags & IORING_SETUP_NO_SQARRAY)
        ? p->sq_off.dropped + sizeof(uint32_t)
        : p->sq_off.array + p->sq_entries * sizeof(uint32_t);
    size_t cq_len = p->cq_off.cqes + ((size_t)p->cq_entries << (4 + cqe_shift));
    if (p->features & IORING_FEAT_SINGLE_MMAP) {
        if (cq_len > sq_len) sq_len = cq_len;
        cq_len = sq_len;
    }
    r->sq_map_len = sq_len;
    r->sq_map = map(fd, sq_len, IORING_OFF_SQ_RING);
    if (!r->sq_map) goto fail;
    if (p->features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_map = r->sq_map;
        r->cq_map_len = sq_len;
    } else {
        r->cq_map_len = cq_len;
        r->cq_map = map(fd, cq_len, IORING_OFF_CQ_RING);
        if (!r->cq_map) goto fail;
    }
    r->sqe_map_len = (size_t)p->sq_entries << (6 + sqe_shift);
    r->sqe_map = map(fd, r->sqe_map_len, IORING_OFF_SQES);
    if (!r->sqe_map) goto fail;

    uint8_t *sqb = r->sq_map, *cqb = r->cq_map;
    struct sr_sq *sq = &r->sq;
    sq->khead    = (uint32_t *)(sqb + p->sq_off.head);
    sq->ktail    = (uint32_t *)(sqb + p->sq_off.tail);
    sq->kflags   = (uint32_t *)(sqb + p->sq_off.flags);
    sq->kdropped = (uint32_t *)(sqb + p->sq_off.dropped);
    sq->array    = (p->flags & IORING_SETUP_NO_SQARRAY) ? NULL
                   : (uint32_t *)(sqb + p->sq_off.array);
    sq->sqes     = r->sqe_map;
    sq->mask     = *(uint32_t *)(sqb + p->sq_off.ring_mask);
    sq->entries  = *(uint32_t *)(sqb + p->sq_off.ring_entries);
    sq->sqe_shift = sqe_shift;
    sr_sq_init_indices(sq);         /* private copies: never read back (ring.h) */

    struct sr_cq *cq = &r->cq;
    cq->khead     = (uint32_t *)(cqb + p->cq_off.head);
    cq->ktail     = (uint32_t *)(cqb + p->cq_off.tail);
    cq->kflags    = p->cq_off.flags ? (uint32_t *)(cqb + p->cq_off.flags) : NULL;
    cq->koverflow = (uint32_t *)(cqb + p->cq_off.overflow);
    cq->cqes      = cqb + p->cq_off.cqes;
    cq->mask      = *(uint32_t *)(cqb + p->cq_off.ring_mask);
    cq->entries   = *(uint32_t *)(cqb + p->cq_off.ring_entries);
    cq->cqe_shift = cqe_shift;
    return 0;

fail:;
    int err = -errno;
    sr_kring_teardown(r, 1);
    return err ? err : -ENOMEM;
}
