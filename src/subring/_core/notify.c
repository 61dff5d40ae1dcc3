/*
 * notify.c -- the interrupt plane's primitives.
 *
 * subring wakes a sleeping peer through an eventfd: writing adds to its
 * counter and makes it readable; poll()/epoll/asyncio's add_reader see that.
 * A writer only writes when the peer announced it is going to sleep (the
 * NEED_WAKEUP / ARMED flags in the shared region, arm-then-recheck: see
 * abi.h), so under load neither side makes a syscall.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "core.h"

int sr_eventfd_signal(int fd)
{
    uint64_t one = 1;
    for (;;) {
        ssize_t n = write(fd, &one, sizeof(one));
        if (n == (ssize_t)sizeof(one) || (n < 0 && errno == EAGAIN))
            return 0;            /* EAGAIN: counter saturated -- already readable */
        if (n < 0 && errno == EINTR)
            continue;
        return -errno;
    }
}

void sr_eventfd_drain(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
        ;
}

int64_t sr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void sr_spin_yield(void)
{
    sched_yield();   /* returns at once when nothing else wants this CPU */
}

#ifdef SUBRING_DEBUG_HOOKS
/* See ring.h.  The bound is read once per process; the generator is
 * per-thread (xorshift64), seeded from the clock and the thread's stack. */
void sr_debug_delay(const char *where)
{
    static int64_t max_ns = -1;
    static __thread uint64_t x;
    (void)where;
    if (max_ns < 0) {
        const char *e = getenv("SUBRING_DEBUG_DELAY_NS");
        max_ns = e ? atoll(e) : 0;
    }
    if (max_ns <= 0)
        return;
    if (!x)
        x = (uint64_t)sr_now_ns() ^ (uint64_t)(uintptr_t)&x ^ 0x9e3779b97f4a7c15ULL;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    if (x & 7)
        return;
    int64_t ns = (int64_t)((x >> 3) % (uint64_t)(max_ns + 1));
    struct timespec ts = sr_timespec_from_ns(ns);
    nanosleep(&ts, NULL);
}
#endif
