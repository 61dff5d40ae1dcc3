/*
 * c_pingpong.c -- the floor under bench/ipc.py's blocking round trips.
 *
 * A round trip in which neither side spins costs two wake-ups of a process
 * blocked in the kernel.  On a small VM that wake-up -- above all of a
 * process whose CPU has gone idle -- is most of the cost, whatever the
 * mechanism.  This program measures it with no Python at all, in the same
 * run, so bench/ipc.py can say how close each Python contender gets to what
 * the machine allows.
 *
 * A parent and a forked child do round trips, one in flight, both blocking:
 *
 *   pipe     1 byte over a pipe each way (read/write)
 *   eventfd  an 8-byte counter over an eventfd each way -- what subring's
 *            interrupt mode sleeps on (it ppoll()s, then reads)
 *   futex    FUTEX_WAIT / FUTEX_WAKE on one word of a MAP_SHARED anonymous
 *            page holding a sequence number: odd = request, even = reply
 *
 *   c_pingpong MECH N WARM MAX_S MIN_N CPUS
 *
 * WARM untimed round trips (at most MAX_S seconds of them), then up to N
 * timed ones -- fewer (but at least MIN_N) if they take longer than MAX_S
 * seconds, like bench/ipc.py's loops.
 * CPUS: -1 leaves both processes to the scheduler; "A" pins both to CPU A;
 * "A,B" pins the parent to A and the child to B (a wake-up that always
 * crosses CPUs).  Prints one JSON object: {"mechanism", "cpus", "n", "p50_us", "p99_us",
 * "mean_us", "max_us", "same_cpu_frac"}; the last is the share of timed round
 * trips after which the parent ran on the CPU the child replied from -- when
 * the scheduler puts both on one CPU, a wake-up is local and cheap, so an
 * unpinned run can be bimodal and this says which mode it was in.
 * Exit 1: a wrong reply; 2: bad arguments or a failed syscall (stderr says);
 * 3: it took too long (10 s + 3 x MAX_S; the child is killed and reaped).
 *
 * Build: gcc -O2 -Wall -Wextra bench/c_pingpong.c -o c_pingpong -lm
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum mech { PIPE, EVENTFD, FUTEX };

static enum mech mech;
static pid_t child = -1;
static int to_child[2] = {-1, -1}, to_parent[2] = {-1, -1};  /* pipe: [r, w] */
static int efd_req = -1, efd_rep = -1;
/* One MAP_SHARED page: the futex sequence number (futex only), the stop flag
 * (futex only) and the CPU the child last replied from (all mechanisms). */
static struct shared {
    uint32_t seq, stop;
    int32_t child_cpu;
} *sh;

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("c_pingpong: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    /* the parent never leaves a child behind, whatever went wrong */
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    exit(code);
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0)
        die(2, "cannot pin to CPU %d: %s", cpu, strerror(errno));
}

/* Out of time: do what die() does, with async-signal-safe calls only. */
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "c_pingpong: timed out\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing better to do */
    }
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    _exit(3);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* what Python's perf_counter uses */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Shared, not FUTEX_PRIVATE: the two processes have different mms. */
static void futex_wait(uint32_t *w, uint32_t expected)
{
    if (syscall(SYS_futex, w, FUTEX_WAIT, expected, NULL, NULL, 0) < 0 &&
        errno != EAGAIN && errno != EINTR)
        die(2, "FUTEX_WAIT: %s", strerror(errno));
}

static void futex_wake(uint32_t *w)
{
    if (syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0) < 0)
        die(2, "FUTEX_WAKE: %s", strerror(errno));
}

/* Wait until *w is no longer `old`.  FUTEX_WAIT returns at once if the word
 * already changed, so a wake that comes before we sleep is never lost. */
static uint32_t futex_await_change(uint32_t *w, uint32_t old)
{
    uint32_t v;
    while ((v = __atomic_load_n(w, __ATOMIC_ACQUIRE)) == old)
        futex_wait(w, old);
    return v;
}

static void xwrite(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n)
        die(2, "write: %s", strerror(errno));
}

/* 0 on end of file (the other side is gone) */
static int xread(int fd, void *p, size_t n)
{
    ssize_t r = read(fd, p, n);
    if (r == 0)
        return 0;
    if (r != (ssize_t)n)
        die(2, "read: %s", r < 0 ? strerror(errno) : "short read");
    return 1;
}

/* A relaxed store to a line the parent reads only after the reply: a few
 * tens of ns inside a round trip of microseconds. */
static void note_cpu(void)
{
    __atomic_store_n(&sh->child_cpu, sched_getcpu(), __ATOMIC_RELAXED);
}

/* The echo side.  `stop` (a message of value 2, or an odd sequence number
 * after the parent set sh->stop) is echoed too, then the child leaves. */
static void serve(void)
{
    if (mech == PIPE) {
        uint8_t b;
        while (xread(to_child[0], &b, 1)) {
            note_cpu();
            xwrite(to_parent[1], &b, 1);
            if (b == 2)
                break;
        }
    } else if (mech == EVENTFD) {
        uint64_t v;
        while (xread(efd_req, &v, sizeof v)) {
            note_cpu();
            xwrite(efd_rep, &v, sizeof v);
            if (v == 2)
                break;
        }
    } else {
        uint32_t s = 0;
        for (;;) {
            s = futex_await_change(&sh->seq, s);     /* odd: a request */
            uint32_t stop = __atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE);
            note_cpu();
            __atomic_store_n(&sh->seq, ++s, __ATOMIC_RELEASE);
            futex_wake(&sh->seq);
            if (stop)
                break;
        }
    }
}

/* One round trip from the parent; `stop` asks the child to leave after it. */
static void round_trip(int stop)
{
    static uint32_t s;                 /* the parent's copy of sh->seq */
    if (mech == PIPE) {
        uint8_t b = stop ? 2 : 1, r;
        xwrite(to_child[1], &b, 1);
        if (!xread(to_parent[0], &r, 1) || r != b)
            die(1, "pipe: bad or no reply");
    } else if (mech == EVENTFD) {
        uint64_t v = stop ? 2 : 1, r;
        xwrite(efd_req, &v, sizeof v);
        if (!xread(efd_rep, &r, sizeof r) || r != v)
            die(1, "eventfd: bad or no reply");
    } else {
        if (stop)
            __atomic_store_n(&sh->stop, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&sh->seq, ++s, __ATOMIC_RELEASE);
        futex_wake(&sh->seq);
        uint32_t r = futex_await_change(&sh->seq, s);
        if (r != ++s)
            die(1, "futex: sequence %u, expected %u", r, s);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* bench/ipc.py's pct(): index round(p * (n - 1)), rounding half to even
 * like Python's round() (rint, default rounding mode). */
static double pct_us(const int64_t *s, size_t n, double p)
{
    size_t k = (size_t)rint(p * (double)(n - 1));
    return (double)s[k < n ? k : n - 1] / 1e3;
}

int main(int argc, char **argv)
{
    if (argc != 7)
        die(2, "usage: c_pingpong pipe|eventfd|futex N WARM MAX_S MIN_N CPU");
    if (!strcmp(argv[1], "pipe"))
        mech = PIPE;
    else if (!strcmp(argv[1], "eventfd"))
        mech = EVENTFD;
    else if (!strcmp(argv[1], "futex"))
        mech = FUTEX;
    else
        die(2, "unknown mechanism %s", argv[1]);
    long n = atol(argv[2]), warm = atol(argv[3]), min_n = atol(argv[5]);
    double max_s = atof(argv[4]);
    int cpu = -1, child_cpu = -1;
    if (sscanf(argv[6], "%d,%d", &cpu, &child_cpu) < 1)
        die(2, "bad CPUS %s", argv[6]);
    if (child_cpu < 0)
        child_cpu = cpu;
    /* checked here: a child that cannot pin itself would leave us waiting */
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) < 0)
        die(2, "sched_getaffinity: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        int c = i ? child_cpu : cpu;
        if (c >= CPU_SETSIZE || (c >= 0 && !CPU_ISSET(c, &allowed)))
            die(2, "CPU %d is not available", c);
    }
    if (n < 1 || warm < 0 || min_n < 0 || !(max_s > 0))
        die(2, "bad N / WARM / MAX_S / MIN_N");

    /* Nothing may hang, not even on a machine too busy to finish: the warm-up
     * and the timed loop each stop at MAX_S (past MIN_N), so this is slack.
     * Alarms are not inherited across fork: the child sets its own. */
    unsigned limit = 10 + (unsigned)ceil(3 * max_s);
    signal(SIGALRM, on_alarm);
    alarm(limit);

    if (cpu >= 0)
        pin(cpu);
    if (mech == PIPE) {
        if (pipe(to_child) < 0 || pipe(to_parent) < 0)
            die(2, "pipe: %s", strerror(errno));
    } else if (mech == EVENTFD) {
        /* blocking, counter mode: each read takes exactly the one value */
        if ((efd_req = eventfd(0, EFD_CLOEXEC)) < 0 ||
            (efd_rep = eventfd(0, EFD_CLOEXEC)) < 0)
            die(2, "eventfd: %s", strerror(errno));
    }
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        die(2, "mmap: %s", strerror(errno));
    int64_t *lat = malloc((size_t)n * sizeof *lat);
    if (lat == NULL)
        die(2, "out of memory");
    fflush(NULL);

    pid_t parent = getpid();
    child = fork();
    if (child < 0)
        die(2, "fork: %s", strerror(errno));
    if (child == 0) {
        child = -1;
        /* die with the parent (checking getppid closes the race in which it
         * died before the prctl) */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(2);
        alarm(limit);
        if (child_cpu != cpu)
            pin(child_cpu);
        if (mech == PIPE) {           /* so a dead peer reads as end of file */
            close(to_child[1]);
            close(to_parent[0]);
        }
        serve();
        _exit(0);
    }
    if (mech == PIPE) {
        close(to_child[0]);
        close(to_parent[1]);
    }

    int64_t t_end = now_ns() + (int64_t)(max_s * 1e9);
    for (long i = 0; i < warm && now_ns() < t_end; i++)
        round_trip(0);
    long got = 0, same = 0;
    t_end = now_ns() + (int64_t)(max_s * 1e9);
    while (got < n) {
        int64_t t = now_ns();
        round_trip(0);
        int64_t t2 = now_ns();
        lat[got++] = t2 - t;
        same += sched_getcpu() == __atomic_load_n(&sh->child_cpu, __ATOMIC_RELAXED);
        if (t2 > t_end && got >= min_n)
            break;
    }
    round_trip(1);

    int st;
    pid_t w = waitpid(child, &st, 0);
    child = -1;
    if (w < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die(2, "the child did not exit cleanly (status %#x)", w < 0 ? -1 : st);

    double sum = 0;
    for (long i = 0; i < got; i++)
        sum += (double)lat[i];
    qsort(lat, (size_t)got, sizeof *lat, cmp_i64);
    printf("{\"mechanism\": \"%s\", \"cpus\": \"%s\", \"n\": %ld, \"p50_us\": %.3f, "
           "\"p99_us\": %.3f, \"mean_us\": %.3f, \"max_us\": %.3f, \"same_cpu_frac\": %.4f}\n",
           argv[1], argv[6], got, pct_us(lat, (size_t)got, 0.50), pct_us(lat, (size_t)got, 0.99),
           sum / (double)got / 1e3, (double)lat[got - 1] / 1e3, (double)same / (double)got);
    free(lat);
    return 0;
}
