/*
 * c_ceiling.c -- bench/kernel.py's workloads with no Python at all.
 *
 * The point is a ceiling measured on the same machine in the same run: what
 * is left here is the kernel's own cost, so subring / c_ceiling tells how much
 * of the achievable rate the Python layer keeps.  To make that comparison like
 * for like this uses subring's own ring core (kernel.c + ring.h, not liburing),
 * KernelRing's default setup flags, the same ring size, chunks and offsets,
 * and it checks results the same way the Python contenders do.
 *
 *   c_ceiling nop   SECONDS CHUNK BATCH
 *   c_ceiling read  SECONDS CHUNK PATH OFFSETS BLOCK QD
 *   c_ceiling pread SECONDS CHUNK PATH OFFSETS BLOCK
 *
 * OFFSETS is a file of native int64 offsets (Python's array('q').tofile), a
 * power-of-two count.  Prints {"ops": N, "seconds": S, "setup_flags": F}.
 * Exit 1: a wrong result; 2: bad arguments or setup failure (stderr says).
 *
 * Build: gcc -O2 -Wall -Wextra -Isrc/subring/_core bench/c_ceiling.c \
 *            src/subring/_core/kernel.c -o c_ceiling
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kernel.h"

#define RING_ENTRIES 256   /* bench/kernel.py's RING_ENTRIES */

static struct sr_kring R;
static uint32_t cq_head;              /* private shadow of the CQ head */
static uint32_t batch, qd, block;
static int fd = -1;
static int64_t *offs;
static uint64_t offs_mask, pos;       /* pos: next offset index, wraps via mask */
static uint8_t *bufs;                 /* qd blocks, one per read slot */
static int64_t *slot_off;             /* offset each slot last read */

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("c_ceiling: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* what Python's perf_counter uses */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* KernelRing's defaults: try NO_SQARRAY | SUBMIT_ALL, drop one optional flag
 * per EINVAL in the same order kernel_ring.c (kr_init) does (lowest bit first). */
static void ring_setup(void)
{
    uint32_t try_flags = IORING_SETUP_NO_SQARRAY | IORING_SETUP_SUBMIT_ALL;
    for (;;) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = try_flags;
        int ret = sr_kring_setup(&R, RING_ENTRIES, &p);
        if (ret == -EINVAL && try_flags) {
            try_flags &= try_flags - 1;
            continue;
        }
        if (ret < 0)
            die(2, "io_uring_setup: %s", strerror(-ret));
        cq_head = *R.cq.khead;
        return;
    }
}

/* Publish, enter until `want` CQEs are ready -- what submit_and_wait(want)
 * does; the loop only matters for EINTR or a short submit. */
static void submit_and_wait(uint32_t want)
{
    uint32_t ready = sr_cq_ready(&R.cq, cq_head);
    do {
        int ret = sr_kring_enter(&R, sr_sq_publish(&R.sq), want - ready,
                                 IORING_ENTER_GETEVENTS, -1);
        if (ret < 0 && ret != -EINTR)
            die(1, "io_uring_enter: %s", strerror(-ret));
        ready = sr_cq_ready(&R.cq, cq_head);
    } while (ready < want);
}

/* ---- nop: batches of `batch` NOPs, one enter per batch ------------------ */

static uint64_t nop_step(uint64_t n)
{
    for (uint64_t done = 0; done < n; done += batch) {
        uint32_t space = sr_sq_space(&R.sq);
        for (uint32_t k = 0; k < batch; k++) {
            struct io_uring_sqe *sqe = sr_sq_get(&R.sq, &space);
            if (!sqe)
                die(1, "nop: SQ full");
            sqe->opcode = IORING_OP_NOP;
            sqe->user_data = done + k;
        }
        submit_and_wait(batch);
        /* a sum, not the order: the kernel does not promise to keep it */
        uint64_t ud_sum = 0, want = batch * done + (uint64_t)batch * (batch - 1) / 2;
        for (uint32_t k = 0; k < batch; k++) {
            const struct io_uring_cqe *cqe = sr_cq_at(&R.cq, cq_head++);
            if (cqe->res != 0)
                die(1, "nop: res %d", cqe->res);
            ud_sum += cqe->user_data;
        }
        sr_cq_release(&R.cq, cq_head);
        if (ud_sum != want)
            die(1, "nop: wrong user_data");
    }
    return n;
}

/* ---- read: qd reads in flight, a slot refilled as soon as it completes -- */

static void prep_read(uint32_t slot, uint32_t *space)
{
    struct io_uring_sqe *sqe = sr_sq_get(&R.sq, space);
    if (!sqe)
        die(1, "read: SQ full");
    int64_t off = offs[pos++ & offs_mask];
    sqe->opcode = IORING_OP_READ;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)(bufs + (size_t)slot * block);
    sqe->len = block;
    sqe->off = (uint64_t)off;
    sqe->user_data = slot;
    slot_off[slot] = off;
}

static uint64_t read_step(uint64_t n)
{
    uint32_t space = sr_sq_space(&R.sq);
    for (uint32_t s = 0; s < qd; s++)
        prep_read(s, &space);
    uint64_t issued = qd, done = 0;
    while (done < n) {
        submit_and_wait(1);
        uint32_t ready = sr_cq_ready(&R.cq, cq_head);
        space = sr_sq_space(&R.sq);
        for (uint32_t k = 0; k < ready; k++) {
            const struct io_uring_cqe *cqe = sr_cq_at(&R.cq, cq_head++);
            if (cqe->res != (int32_t)block)
                die(1, "read: res %d", cqe->res);
            done++;
            if (issued < n) {
                prep_read((uint32_t)cqe->user_data, &space);
                issued++;
            }
        }
        sr_cq_release(&R.cq, cq_head);
    }
    return done;
}

/* ---- pread: the plain syscall loop, queue depth 1 ----------------------- */

static uint64_t pread_step(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        int64_t off = offs[pos++ & offs_mask];
        if (pread(fd, bufs, block, off) != (ssize_t)block)
            die(1, "pread: short read");
        slot_off[0] = off;
    }
    return n;
}

/* Untimed, after every chunk, like the Python contenders' verify(): the data
 * file's 4 KiB block i holds the u64 i, so a read that did not really happen
 * (or went to the wrong place) is caught.  Poison the word for the next chunk. */
static void verify_reads(uint32_t slots)
{
    for (uint32_t s = 0; s < slots; s++) {
        uint64_t *word = (uint64_t *)(bufs + (size_t)s * block);
        if (*word != (uint64_t)slot_off[s] / 4096)
            die(1, "slot %u does not hold the block at offset %" PRId64, s, slot_off[s]);
        *word = UINT64_MAX;
    }
}

static void open_data(const char *path, const char *offsets_path)
{
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(2, "%s: %s", path, strerror(errno));
    FILE *f = fopen(offsets_path, "rb");
    if (!f)
        die(2, "%s: %s", offsets_path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    rewind(f);
    uint64_t n = bytes > 0 ? (uint64_t)bytes / sizeof(int64_t) : 0;
    if (n == 0 || (n & (n - 1)))
        die(2, "%s: offset count %" PRIu64 " is not a power of two", offsets_path, n);
    offs = malloc(n * sizeof(int64_t));
    if (!offs || fread(offs, sizeof(int64_t), n, f) != n)
        die(2, "%s: cannot read", offsets_path);
    fclose(f);
    offs_mask = n - 1;
}

static uint32_t arg_u32(const char *s, const char *what)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v == 0 || v > 1u << 20)
        die(2, "bad %s: %s", what, s);
    return (uint32_t)v;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        die(2, "usage: c_ceiling nop|read|pread SECONDS CHUNK ...");
    const char *kind = argv[1];
    char *end;
    double seconds = strtod(argv[2], &end);
    if (*end || !(seconds >= 0))
        die(2, "bad seconds: %s", argv[2]);
    uint64_t chunk = arg_u32(argv[3], "chunk");
    uint64_t (*step)(uint64_t);
    uint32_t verify_slots = 0;

    if (!strcmp(kind, "nop") && argc == 5) {
        batch = arg_u32(argv[4], "batch");
        if (batch > RING_ENTRIES || chunk % batch)
            die(2, "batch must divide chunk and fit the ring");
        step = nop_step;
    } else if ((!strcmp(kind, "read") && argc == 8) || (!strcmp(kind, "pread") && argc == 7)) {
        open_data(argv[4], argv[5]);
        block = arg_u32(argv[6], "block");
        qd = kind[0] == 'r' ? arg_u32(argv[7], "qd") : 1;
        if (block % 4096 || qd > RING_ENTRIES || chunk < qd)
            die(2, "block must be a multiple of 4096, qd <= ring, chunk >= qd");
        /* page-aligned: the kernel's copy into them gets its best case
         * (the Python buffers are only 16-byte aligned) */
        if (posix_memalign((void **)&bufs, 4096, (size_t)qd * block))
            die(2, "out of memory");
        memset(bufs, 0, (size_t)qd * block);
        slot_off = calloc(qd, sizeof(int64_t));
        if (!slot_off)
            die(2, "out of memory");
        step = kind[0] == 'r' ? read_step : pread_step;
        verify_slots = qd;
    } else {
        die(2, "bad arguments for %s", kind);
    }
    if (step != pread_step)
        ring_setup();

    /* One untimed chunk first: faults the buffers and ring pages in, as the
     * Python side's warm-up chunk does. */
    step(chunk);
    verify_reads(verify_slots);

    uint64_t ops = 0;
    double elapsed = 0;
    while (elapsed < seconds) {
        double t0 = now();
        ops += step(chunk);
        elapsed += now() - t0;
        verify_reads(verify_slots);
    }
    printf("{\"ops\": %" PRIu64 ", \"seconds\": %.9f, \"setup_flags\": %u}\n",
           ops, elapsed, step == pread_step ? 0u : R.setup_flags);
    return 0;
}
