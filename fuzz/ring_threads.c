/*
 * ring_threads.c -- ring.h's queue pair driven by two real threads, across
 * the 2^32 index wrap, with the interrupt protocol of invariant 3 in both
 * directions (arm flag -> full fence -> re-check -> sleep on an eventfd;
 * publish -> full fence -> read flag -> wake), random delays between the
 * steps, and no timeout on the sleeps: a lost wake-up hangs, and the caller
 * (tests/reliability/test_fuzz_properties.py, scripts/sanitize.sh) kills it
 * and reports the indices this program prints on SIGALRM.
 *
 * Built plain and with -fsanitize=thread (ThreadSanitizer understands the
 * __atomic builtins ring.h uses, so a missing acquire/release shows up as a
 * data race on the entries).  libc only.
 *
 *   ring_threads OPS START LOG2_ENTRIES SEED
 * Exit 0 and "ok N" on success; 1 and a message on a protocol violation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"

#define SQ_NEED_WAKEUP 1u
#define CQ_ARMED 1u

static uint32_t sq_head, sq_tail, sq_flags, cq_head, cq_tail, cq_flags;
static uint8_t *sqes, *cqes;
static uint32_t entries;
static uint64_t nops;
static int doorbell, cq_efd;
static volatile uint64_t client_done, server_done;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}

static void jitter(uint64_t *s)
{
    uint64_t r = rnd(s);
    if ((r & 7) == 0) {
        struct timespec ts = {0, (long)(r >> 40) % 20000};
        nanosleep(&ts, NULL);
    } else if ((r & 7) == 1) {
        sched_yield();
    }
}

static void sleep_on(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, -1) < 0 && errno == EINTR)
        ;
    uint64_t v;
    if (read(fd, &v, 8) < 0 && errno != EAGAIN) { perror("read"); exit(1); }
}

static void ring_bell(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, 8) < 0) { perror("write"); exit(1); }
}

/* The server: consume SQEs, post one CQE each; sleep when idle. */
static void *server(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 7919 + 1;
    uint32_t start = sq_head;
    struct sr_sq_cons sc = {.ktail = &sq_tail, .khead = &sq_head, .sqes = sqes,
                            .mask = entries - 1, .entries = entries, .sqe_shift = 1,
                            .head = start};
    struct sr_cq_prod cp = {.khead = &cq_head, .ktail = &cq_tail, .cqes = cqes,
                            .mask = entries - 1, .entries = entries, .tail = start,
                            .head_cache = start};
    uint8_t copy[128];
    uint64_t next = 0;
    while (next < nops) {
        int64_t avail = sr_sqc_avail(&sc);
        int64_t space = sr_cqp_space(&cp);
        if (avail < 0 || space < 0) { fprintf(stderr, "server: impossible index\n"); exit(1); }
        int64_t n = avail < space ? avail : space;
        if (n == 0) {
            /* arm, fence, re-check, sleep (invariant 3, consumer side); the
             * delay before arming widens the window a missing re-check loses */
            jitter(&seed);
            sr_store_release(&sq_flags, SQ_NEED_WAKEUP);
            jitter(&seed);
            sr_full_fence();
            jitter(&seed);
            avail = sr_sqc_avail(&sc);
            space = sr_cqp_space(&cp);
            if (avail == 0 || space == 0)
                sleep_on(doorbell);
            sr_store_release(&sq_flags, 0);
            continue;
        }
        for (int64_t k = 0; k < n; k++) {
            sr_sqc_take(&sc, copy);
            uint64_t ud;
            memcpy(&ud, copy + 32, 8);
            if (ud != next) { fprintf(stderr, "server: sqe %" PRIu64 " != %" PRIu64 "\n", ud, next); exit(1); }
            next++;
            sr_cqp_put(&cp, ud, (int32_t)(ud & 0x7fffffff), 0);
        }
        sr_sqc_release(&sc);
        jitter(&seed);
        sr_cqp_publish(&cp);
        /* publish, fence, read the flag, wake (invariant 3, producer side);
         * the client also waits when the SQ is full, so every publish of
         * either index is followed by this check */
        sr_full_fence();
        if (sr_load_relaxed(&cq_flags) & CQ_ARMED)
            ring_bell(cq_efd);
        server_done = next;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) { fprintf(stderr, "usage: ring_threads OPS START LOG2 SEED\n"); return 2; }
    nops = strtoull(argv[1], NULL, 0);
    uint32_t start = (uint32_t)strtoull(argv[2], NULL, 0);
    int log2 = atoi(argv[3]);
    entries = 1u << (log2 < 0 ? 0 : log2 > 12 ? 12 : log2);
    uint64_t seed = strtoull(argv[4], NULL, 0) | 1;
    sq_head = sq_tail = cq_head = cq_tail = start;
    sqes = calloc(entries, 128);
    cqes = calloc(entries, 16);
    doorbell = eventfd(0, EFD_NONBLOCK);
    cq_efd = eventfd(0, EFD_NONBLOCK);
    if (!sqes || !cqes || doorbell < 0 || cq_efd < 0) { perror("setup"); return 2; }
    pthread_t t;
    pthread_create(&t, NULL, server, (void *)(uintptr_t)seed);
    struct sr_sq sq = {.khead = &sq_head, .ktail = &sq_tail, .kflags = &sq_flags,
                       .sqes = sqes, .mask = entries - 1, .entries = entries,
                       .sqe_tail = start, .sqe_shift = 1, .head_cache = start};
    struct sr_cq cq = {.khead = &cq_head, .ktail = &cq_tail, .cqes = cqes,
                       .mask = entries - 1, .entries = entries};
    uint32_t head = start;
    uint64_t sent = 0, got = 0;
    while (got < nops) {
        uint32_t space = sr_sq_space(&sq);
        uint32_t burst = (uint32_t)(rnd(&seed) % (entries + 1));
        for (uint32_t k = 0; k < burst && sent < nops; k++) {
            struct io_uring_sqe *s = sr_sq_get(&sq, &space);
            if (!s)
                break;
            s->user_data = sent++;
        }
        if (sr_sq_publish(&sq)) {
            jitter(&seed);
            if (sr_sq_needs_wakeup(&sq))     /* full fence, then the flag */
                ring_bell(doorbell);
        }
        uint32_t ready = sr_cq_ready(&cq, head);
        if (ready > entries) { fprintf(stderr, "client: cq ready %u\n", ready); return 1; }
        if (!ready) {
            /* nothing to reap: arm, fence, re-check, sleep */
            if (sr_sq_pending(&sq) == 0 && sent == got) continue;
            jitter(&seed);
            sr_store_release(&cq_flags, CQ_ARMED);
            jitter(&seed);
            sr_full_fence();
            if (sr_cq_ready(&cq, head) == 0)
                sleep_on(cq_efd);
            sr_store_release(&cq_flags, 0);
            continue;
        }
        for (uint32_t k = 0; k < ready; k++) {
            const struct io_uring_cqe *c = sr_cq_at(&cq, head + k);
            if (c->user_data != got || c->res != (int32_t)(got & 0x7fffffff)) {
                fprintf(stderr, "client: cqe %" PRIu64 " != %" PRIu64 "\n", (uint64_t)c->user_data, got);
                return 1;
            }
            got++;
        }
        head += ready;
        sr_cq_release(&cq, head);
        client_done = got;
        /* the server may sleep waiting for CQ room: wake it like a new SQE */
        if (sr_sq_needs_wakeup(&sq))
            ring_bell(doorbell);
    }
    pthread_join(t, NULL);
    printf("ok %" PRIu64 " start=%u end=%u\n", got, start, head);
    return 0;
}
