/*
 * kernel.h -- the kernel io_uring peer: raw io_uring_setup / enter / register.
 *
 * No liburing: three syscalls and two or three mmaps.  Pure C, no Python.
 */
#ifndef SUBRING_KERNEL_H
#define SUBRING_KERNEL_H

#include "ring.h"

struct sr_kring {
    int fd;
    uint32_t setup_flags;     /* as granted by the kernel */
    uint32_t features;
    struct sr_sq sq;
    struct sr_cq cq;
    void  *sq_map;  size_t sq_map_len;   /* SQ ring (and CQ ring if SINGLE_MMAP) */
    void  *cq_map;  size_t cq_map_len;   /* == sq_map when SINGLE_MMAP */
    void  *sqe_map; size_t sqe_map_len;
};

/* Returns 0 or -errno.  `p` is in/out (flags, sq_thread_*, cq_entries). */
int sr_kring_setup(struct sr_kring *r, uint32_t entries, struct io_uring_params *p);
/* Unmaps and closes.  `close_fd` = 0 keeps the fd (for a forked child that only
 * wants to drop its reference, see module.c). */
void sr_kring_teardown(struct sr_kring *r, int close_fd);

/* io_uring_enter; returns >= 0 or -errno.  `ts_ns` < 0: no timeout.  Uses
 * IORING_ENTER_EXT_ARG for the timeout (needs FEAT_EXT_ARG, 5.11+). */
int sr_kring_enter(struct sr_kring *r, uint32_t to_submit, uint32_t min_complete,
                   uint32_t flags, int64_t ts_ns);
/* io_uring_register; returns >= 0 or -errno. */
int sr_kring_register(int fd, unsigned opcode, const void *arg, unsigned nr_args);

#endif
