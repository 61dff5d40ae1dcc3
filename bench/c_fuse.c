/*
 * c_fuse.c -- the C ceiling for bench/fuse.py: the benchmark's file system
 * served with no Python, no libfuse and no liburing (raw syscalls only).
 *
 * The tree is the one bench/fuse_fs.py serves: a root directory (node 1)
 * holding one read-only file "data.bin" (node 2) of FILE_BYTES bytes whose
 * 4 KiB block number b is the little-endian u64 b repeated.  Every reply
 * carries zero entry/attr timeouts and every open FOPEN_DIRECT_IO, so each
 * stat() and each read() reaches this server.
 *
 *   c_fuse MOUNTPOINT TRANSPORT THREADS FILE_BYTES [DEPTH [POLL_US]]
 *
 *   TRANSPORT  uring    FUSE over io_uring: SQE128 URING_CMD REGISTER /
 *                       COMMIT_AND_FETCH on /dev/fuse (Linux 6.14+, the
 *                       fuse module's enable_uring must be Y at mount time)
 *              classic  read(2) a request from /dev/fuse, writev(2) the reply
 *   THREADS    single     one thread serves every queue (uring: one ring
 *                         holding every queue's entries)
 *              per-queue  one thread per possible CPU, pinned to it (uring:
 *                         a ring per thread holding that CPU's queue;
 *                         classic: that many threads reading /dev/fuse)
 *   DEPTH      ring entries per queue (default 2)
 *   POLL_US    uring: after answering, poll for the next request this long,
 *              yielding the CPU, before sleeping (default 0) -- the same
 *              technique, for the same reason, as subring.fuse's poll_us
 *              (src/subring/_core/fuse_uring.c, fring_wait)
 *
 * The program mounts MOUNTPOINT itself (mount(2) with the /dev/fuse fd; root
 * only), answers FUSE_INIT, registers its ring entries, then prints one line
 * "READY transport=... threads=... queues=N depth=D ring_flags=0x... [poll_us=P]" on
 * stdout.  It exits 0 once the mount is gone (its requests end with ENODEV /
 * ENOTCONN); the caller unmounts.  It dies with its parent (PDEATHSIG).
 * At exit it prints "c_fuse: served N requests (M on the ring)" on stderr.
 * Exit 2: setup failure; 3: io_uring asked for but not offered by the kernel
 * (stderr says why).  With the uring transport a separate thread keeps
 * reading /dev/fuse for what never goes through the ring (FORGET,
 * INTERRUPT, and everything if the kernel fell back).
 *
 * The FUSE and FUSE-over-io_uring ABI (include/uapi/linux/fuse.h, protocol
 * 7.42+) is defined below with static_asserts: the system headers here are
 * older and lack it.
 *
 * Build: gcc -O2 -Wall -Wextra -pthread bench/c_fuse.c -o c_fuse
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------
 * FUSE ABI (include/uapi/linux/fuse.h)
 * ------------------------------------------------------------------- */

enum {
    OP_LOOKUP = 1, OP_FORGET = 2, OP_GETATTR = 3, OP_OPEN = 14, OP_READ = 15,
    OP_STATFS = 17, OP_RELEASE = 18, OP_FLUSH = 25, OP_INIT = 26, OP_OPENDIR = 27,
    OP_READDIR = 28, OP_RELEASEDIR = 29, OP_ACCESS = 34, OP_INTERRUPT = 36,
    OP_DESTROY = 38, OP_BATCH_FORGET = 42,
};

#define F_ASYNC_READ      (1u << 0)
#define F_PARALLEL_DIROPS (1u << 18)          /* LOOKUPs in one directory run in parallel */
#define F_INIT_EXT        (1u << 30)          /* without it flags2 is ignored */
#define F_MAX_PAGES       (1u << 22)
#define F2_OVER_IO_URING  (1u << 9)           /* FUSE_OVER_IO_URING = 1ULL << 41 */
#define FOPEN_DIRECT_IO_  (1u << 0)
#define URING_CMD_REGISTER 1
#define URING_CMD_COMMIT_AND_FETCH 2

struct cf_in_header { uint32_t len, opcode; uint64_t unique, nodeid;
                      uint32_t uid, gid, pid; uint16_t total_extlen, padding; };
struct cf_out_header { uint32_t len; int32_t error; uint64_t unique; };
struct cf_init_in { uint32_t major, minor, max_readahead, flags, flags2, unused[11]; };
struct cf_init_out {
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, max_stack_depth;
    uint16_t request_timeout, unused[11];
};
struct cf_attr { uint64_t ino, size, blocks, atime, mtime, ctime;
                 uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev,
                          blksize, flags; };
struct cf_entry_out { uint64_t nodeid, generation, entry_valid, attr_valid;
                      uint32_t entry_valid_nsec, attr_valid_nsec; struct cf_attr attr; };
struct cf_attr_out { uint64_t attr_valid; uint32_t attr_valid_nsec, dummy; struct cf_attr attr; };
struct cf_open_out { uint64_t fh; uint32_t open_flags; int32_t backing_id; };
struct cf_read_in { uint64_t fh, offset; uint32_t size, read_flags; uint64_t lock_owner;
                    uint32_t flags, padding; };
struct cf_kstatfs { uint64_t blocks, bfree, bavail, files, ffree;
                    uint32_t bsize, namelen, frsize, padding, spare[6]; };
struct cf_dirent { uint64_t ino, off; uint32_t namelen, type; char name[]; };

/* FUSE over io_uring (protocol 7.42) */
struct cf_ent_in_out { uint64_t flags, commit_id; uint32_t payload_sz, padding; uint64_t reserved; };
struct cf_req_header { char in_out[128]; char op_in[128]; struct cf_ent_in_out ent; };
struct cf_cmd_req { uint64_t flags, commit_id; uint16_t qid; uint8_t padding[6]; };

static_assert(sizeof(struct cf_in_header) == 40, "fuse_in_header");
static_assert(sizeof(struct cf_out_header) == 16, "fuse_out_header");
static_assert(sizeof(struct cf_init_in) == 64, "fuse_init_in");
static_assert(sizeof(struct cf_init_out) == 64, "fuse_init_out");
static_assert(offsetof(struct cf_init_out, flags2) == 32, "fuse_init_out.flags2");
static_assert(sizeof(struct cf_attr) == 88, "fuse_attr");
static_assert(sizeof(struct cf_entry_out) == 128, "fuse_entry_out");
static_assert(sizeof(struct cf_attr_out) == 104, "fuse_attr_out");
static_assert(sizeof(struct cf_open_out) == 16, "fuse_open_out");
static_assert(sizeof(struct cf_read_in) == 40, "fuse_read_in");
static_assert(sizeof(struct cf_kstatfs) == 80, "fuse_kstatfs");
static_assert(sizeof(struct cf_dirent) == 24, "fuse_dirent");
static_assert(sizeof(struct cf_ent_in_out) == 32, "fuse_uring_ent_in_out");
static_assert(sizeof(struct cf_req_header) == 288, "fuse_uring_req_header");
static_assert(offsetof(struct cf_req_header, ent) == 256, "ring_ent_in_out offset");
static_assert(sizeof(struct cf_cmd_req) == 24, "fuse_uring_cmd_req");
static_assert(offsetof(struct io_uring_sqe, cmd) == 48, "SQE128 command area");

/* ---------------------------------------------------------------------
 * the tree
 * ------------------------------------------------------------------- */

#define ROOT_ID 1
#define FILE_ID 2
#define FILE_NAME "data.bin"
#define MAX_WRITE (128u * 1024)
#define MAX_PAGES 32u
#define PAYLOAD_SZ (MAX_WRITE)                 /* max(8192, max_write, max_pages*4096) */
#define CLASSIC_BUF (MAX_WRITE + 4096)         /* >= 40 + 40 + max_write */

static uint8_t *data;                          /* the file's bytes, read-only after setup */
static uint64_t file_size;
static int fuse_fd = -1;
static unsigned nr_queues, depth = 2;
static long poll_ns;                           /* POLL_US * 1000; 0: sleep at once */
static int per_queue;
static uint64_t n_requests;                    /* answered, all threads (relaxed atomic) */
static uint64_t n_ring;                        /* of which came through the ring */

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("c_fuse: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static void fill_attr(struct cf_attr *a, uint64_t node)
{
    memset(a, 0, sizeof(*a));
    a->ino = node;
    a->blksize = 4096;
    if (node == ROOT_ID) {
        a->mode = S_IFDIR | 0755;
        a->nlink = 2;
    } else {
        a->mode = S_IFREG | 0444;
        a->nlink = 1;
        a->size = file_size;
        a->blocks = (file_size + 511) / 512;
    }
}

static size_t add_dirent(char *out, size_t room, uint64_t ino, uint64_t next,
                         uint32_t type, const char *name)
{
    size_t namelen = strlen(name);
    size_t rec = (sizeof(struct cf_dirent) + namelen + 7) & ~(size_t)7;
    if (rec > room)
        return 0;
    struct cf_dirent *d = (struct cf_dirent *)out;
    d->ino = ino;
    d->off = next;
    d->namelen = (uint32_t)namelen;
    d->type = type;
    memcpy(d->name, name, namelen);
    memset(d->name + namelen, 0, rec - sizeof(*d) - namelen);
    return rec;
}

/* Answer one request.  op_in: the opcode's fixed input struct; rest/rest_len:
 * the further in-arguments (LOOKUP's name).  The reply payload goes to out
 * (which may be the same memory as rest: rest is consumed before out is
 * written).  Returns the payload length, -errno for an error reply, or
 * NO_REPLY. */
#define NO_REPLY (-100000)
static int handle(const struct cf_in_header *ih, const void *op_in, const char *rest,
                  size_t rest_len, char *out)
{
    /* only a statistic printed at exit: no ordering needed */
    __atomic_fetch_add(&n_requests, 1, __ATOMIC_RELAXED);
    switch (ih->opcode) {
    case OP_LOOKUP: {
        if (ih->nodeid != ROOT_ID || rest_len < sizeof(FILE_NAME)
            || memcmp(rest, FILE_NAME, sizeof(FILE_NAME)) != 0)
            return -ENOENT;
        struct cf_entry_out *e = (struct cf_entry_out *)out;
        memset(e, 0, sizeof(*e));
        e->nodeid = FILE_ID;
        fill_attr(&e->attr, FILE_ID);
        return sizeof(*e);
    }
    case OP_GETATTR: {
        if (ih->nodeid != ROOT_ID && ih->nodeid != FILE_ID)
            return -ENOENT;
        struct cf_attr_out *a = (struct cf_attr_out *)out;
        memset(a, 0, sizeof(*a));
        fill_attr(&a->attr, ih->nodeid);
        return sizeof(*a);
    }
    case OP_OPEN:
    case OP_OPENDIR: {
        if (ih->opcode == OP_OPEN && ih->nodeid != FILE_ID)
            return ih->nodeid == ROOT_ID ? -EISDIR : -ENOENT;
        if (ih->opcode == OP_OPENDIR && ih->nodeid != ROOT_ID)
            return -ENOTDIR;
        struct cf_open_out *o = (struct cf_open_out *)out;
        memset(o, 0, sizeof(*o));
        o->fh = ih->nodeid;
        o->open_flags = ih->opcode == OP_OPEN ? FOPEN_DIRECT_IO_ : 0;
        return sizeof(*o);
    }
    case OP_READ: {
        const struct cf_read_in *r = op_in;
        if (ih->nodeid != FILE_ID)
            return -EISDIR;
        if (r->offset >= file_size)
            return 0;
        uint64_t n = file_size - r->offset;
        if (n > r->size)
            n = r->size;
        if (n > PAYLOAD_SZ)
            n = PAYLOAD_SZ;
        memcpy(out, data + r->offset, n);
        return (int)n;
    }
    case OP_READDIR: {
        const struct cf_read_in *r = op_in;
        if (ih->nodeid != ROOT_ID)
            return -ENOTDIR;
        static const char *const names[] = {".", "..", FILE_NAME};
        static const uint64_t inos[] = {ROOT_ID, ROOT_ID, FILE_ID};
        static const uint32_t types[] = {S_IFDIR >> 12, S_IFDIR >> 12, S_IFREG >> 12};
        size_t used = 0, room = r->size < PAYLOAD_SZ ? r->size : PAYLOAD_SZ;
        for (uint64_t i = r->offset; i < 3; i++) {
            size_t rec = add_dirent(out + used, room - used, inos[i], i + 1, types[i], names[i]);
            if (!rec)
                break;
            used += rec;
        }
        return (int)used;
    }
    case OP_STATFS: {
        struct cf_kstatfs *s = (struct cf_kstatfs *)out;
        memset(s, 0, sizeof(*s));
        s->blocks = (file_size + 4095) / 4096;
        s->files = 2;
        s->bsize = s->frsize = 4096;
        s->namelen = 255;
        return sizeof(*s);
    }
    case OP_RELEASE:
    case OP_RELEASEDIR:
    case OP_FLUSH:
    case OP_ACCESS:
    case OP_DESTROY:
        return 0;
    case OP_FORGET:
    case OP_BATCH_FORGET:
    case OP_INTERRUPT:          /* every request is answered at once anyway */
        return NO_REPLY;
    default:
        return -ENOSYS;         /* STATX, GETXATTR, ...: the kernel falls back */
    }
}

/* Size of the fixed input struct the classic transport puts before the
 * further arguments (for the ring this struct is in op_in instead). */
static size_t op_in_size(uint32_t opcode)
{
    switch (opcode) {
    case OP_READ:
    case OP_READDIR:
        return sizeof(struct cf_read_in);
    default:
        return 0;               /* LOOKUP has none; the others ignore their input */
    }
}

/* ---------------------------------------------------------------------
 * classic transport: read(2) a request, writev(2) the reply
 * ------------------------------------------------------------------- */

/* One request from /dev/fuse; returns 0 to go on, -1 when the mount is gone. */
static int classic_one(char *in, char *out)
{
    ssize_t n = read(fuse_fd, in, CLASSIC_BUF);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == ENOENT)
            return 0;           /* ENOENT: the request was interrupted meanwhile */
        if (errno == ENODEV)
            return -1;          /* unmounted */
        die(2, "read /dev/fuse: %s", strerror(errno));
    }
    if ((size_t)n < sizeof(struct cf_in_header))
        die(2, "short request (%zd bytes)", n);
    const struct cf_in_header *ih = (const struct cf_in_header *)in;
    size_t fixed = op_in_size(ih->opcode);
    size_t hl = sizeof(*ih);
    const char *rest = in + hl + fixed;
    size_t rest_len = (size_t)n > hl + fixed ? (size_t)n - hl - fixed : 0;
    int r = handle(ih, in + hl, rest, rest_len, out);
    if (r == NO_REPLY)
        return 0;
    struct cf_out_header oh = {0};
    oh.unique = ih->unique;
    oh.error = r < 0 ? r : 0;
    struct iovec iov[2] = {{&oh, sizeof(oh)}, {out, r > 0 ? (size_t)r : 0}};
    oh.len = (uint32_t)(sizeof(oh) + iov[1].iov_len);
    if (writev(fuse_fd, iov, 2) < 0 && errno != ENOENT) {
        if (errno == ENODEV)
            return -1;
        die(2, "writev /dev/fuse: %s", strerror(errno));
    }
    return 0;
}

static void *classic_thread(void *arg)
{
    (void)arg;
    char *in = malloc(CLASSIC_BUF), *out = malloc(PAYLOAD_SZ);
    if (!in || !out)
        die(2, "out of memory");
    while (classic_one(in, out) == 0)
        ;
    free(in);
    free(out);
    return NULL;
}

/* ---------------------------------------------------------------------
 * io_uring: the ring itself (raw io_uring_setup / io_uring_enter, mmap)
 * ------------------------------------------------------------------- */

struct ring {
    int fd;
    unsigned flags;                       /* the setup flags it got */
    /* SQ: we write the SQEs and the tail, the kernel reads them and writes head */
    unsigned *sq_head, *sq_tail, sq_mask, *sq_array;
    uint8_t *sqes;                        /* 128-byte entries (SQE128) */
    unsigned sq_local;                    /* our private tail: SQEs prepared */
    unsigned sq_published;                /* tail value last stored to *sq_tail */
    /* CQ: the kernel writes CQEs and the tail, we read them and write head */
    unsigned *cq_head, *cq_tail, cq_mask;
    struct io_uring_cqe *cqes;
};

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned submit, unsigned wait, unsigned flags)
{
    return (int)syscall(__NR_io_uring_enter, fd, submit, wait, flags, NULL, 0);
}

#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)     /* Linux 6.6; newer than the headers here */
#endif

/* SQE128 is required (without it every fuse command fails -EINVAL and the
 * mount hangs); SINGLE_ISSUER|DEFER_TASKRUN is the best setting measured for
 * this traffic (task work runs only in our own io_uring_enter), and
 * NO_SQARRAY saves an indirection.  The optional flags are dropped in the
 * same order as subring.fuse's ring (src/subring/_core/fuse_uring.c), so the two
 * rings are set up alike. */
static void ring_init(struct ring *r, unsigned entries)
{
    static const unsigned tries[] = {
        IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
            | IORING_SETUP_NO_SQARRAY,
        IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SQE128,
    };
    struct io_uring_params p;
    int fd = -1;
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        memset(&p, 0, sizeof(p));
        p.flags = tries[i];
        fd = sys_setup(entries, &p);
        if (fd >= 0 || errno != EINVAL)
            break;
    }
    if (fd < 0)
        die(2, "io_uring_setup: %s", strerror(errno));
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->flags = p.flags;
    int no_array = (p.flags & IORING_SETUP_NO_SQARRAY) != 0;
    /* without the index array the SQ ring ends where the array would start */
    size_t sq_sz = p.sq_off.array + (no_array ? 0 : p.sq_entries * sizeof(unsigned));
    size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (!(p.features & IORING_FEAT_SINGLE_MMAP))
        die(2, "io_uring without IORING_FEAT_SINGLE_MMAP");
    size_t sz = sq_sz > cq_sz ? sq_sz : cq_sz;
    uint8_t *sq = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                       IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        die(2, "mmap SQ ring: %s", strerror(errno));
    r->sqes = mmap(NULL, p.sq_entries * 128, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        die(2, "mmap SQEs: %s", strerror(errno));
    r->sq_head = (unsigned *)(sq + p.sq_off.head);
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = no_array ? NULL : (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(sq + p.cq_off.head);
    r->cq_tail = (unsigned *)(sq + p.cq_off.tail);
    r->cq_mask = *(unsigned *)(sq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(sq + p.cq_off.cqes);
    /* identity index array, written once before any SQE is published */
    for (unsigned i = 0; r->sq_array && i < p.sq_entries; i++)
        r->sq_array[i] = i;
    r->sq_local = r->sq_published = *r->sq_tail;
}

/* The next free 128-byte SQE, zeroed.  The ring is sized so that it never
 * runs out: each entry has at most one command outstanding, and the kernel
 * consumes every published SQE inside io_uring_enter. */
static struct io_uring_sqe *ring_sqe(struct ring *r)
{
    /* acquire: the kernel's head store means it is done reading those SQEs */
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (r->sq_local - head > r->sq_mask)
        die(2, "SQ overflow");
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)(r->sqes + 128u * (r->sq_local & r->sq_mask));
    memset(sqe, 0, 128);
    r->sq_local++;
    return sqe;
}

/* Publish prepared SQEs and wait for at least `wait` CQEs. */
static void ring_enter(struct ring *r, unsigned wait)
{
    unsigned pending = r->sq_local - r->sq_published;
    /* release: the SQE contents must be visible before the kernel sees the tail */
    __atomic_store_n(r->sq_tail, r->sq_local, __ATOMIC_RELEASE);
    r->sq_published = r->sq_local;
    for (;;) {
        int ret = sys_enter(r->fd, pending, wait, wait ? IORING_ENTER_GETEVENTS : 0);
        if (ret >= 0) {
            pending -= (unsigned)ret < pending ? (unsigned)ret : pending;
            if (!pending)
                return;
            continue;
        }
        if (errno == EINTR || errno == EAGAIN || errno == EBUSY)
            continue;           /* a signal (SIGCHLD...), or CQ back-pressure */
        die(2, "io_uring_enter: %s", strerror(errno));
    }
}

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Publish prepared SQEs, then wait for at least one CQE -- polling first for
 * poll_ns: sched_yield() (the reader we just woke may want this CPU), then
 * io_uring_enter(GETEVENTS, 0) to run our deferred task work, until a CQE
 * shows up or time is up.  Keeping this CPU busy for a while after an answer
 * keeps the scheduler from moving the reader to it (see fring_wait in
 * src/subring/_core/fuse_uring.c). */
static void ring_wait(struct ring *r)
{
    if (poll_ns <= 0) {
        ring_enter(r, 1);
        return;
    }
    ring_enter(r, 0);
    long until = now_ns() + poll_ns;
    /* acquire: CQE contents are valid once we see the kernel's tail */
    while (__atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) == *r->cq_head) {
        if (now_ns() >= until) {
            ring_enter(r, 1);
            return;
        }
        sched_yield();
        if (sys_enter(r->fd, 0, 0, IORING_ENTER_GETEVENTS) < 0 && errno != EINTR
            && errno != EAGAIN && errno != EBUSY)
            die(2, "io_uring_enter: %s", strerror(errno));
    }
}

/* ---------------------------------------------------------------------
 * io_uring transport: entries, REGISTER, COMMIT_AND_FETCH
 * ------------------------------------------------------------------- */

struct entry {
    struct cf_req_header *hdr;            /* page-aligned, pinned for the entry's life */
    char *payload;
    struct iovec iov[2];                  /* kept alive: the kernel imports it at issue */
    uint16_t qid;
};

static void prep_cmd(struct ring *r, struct entry *e, uint64_t ud, int op)
{
    struct io_uring_sqe *sqe = ring_sqe(r);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fuse_fd;
    sqe->cmd_op = (uint32_t)op;
    sqe->user_data = ud;
    struct cf_cmd_req *req = (struct cf_cmd_req *)sqe->cmd;
    req->qid = e->qid;
    if (op == URING_CMD_REGISTER) {
        sqe->addr = (uint64_t)(uintptr_t)e->iov;
        sqe->len = 2;
    } else {
        /* the kernel wrote commit_id into the entry's header with the request */
        req->commit_id = e->hdr->ent.commit_id;
    }
}

/* Serve the entries ents[0..n) of one ring until the mount goes away.
 * user_data = entry index + 1. */
static void uring_serve(struct ring *r, struct entry *ents, unsigned n, pthread_barrier_t *ready)
{
    for (unsigned i = 0; i < n; i++)
        prep_cmd(r, &ents[i], i + 1, URING_CMD_REGISTER);
    ring_enter(r, 0);          /* REGISTERs issue now; they complete with the first request */
    if (ready) {
        pthread_barrier_wait(ready);
    } else {
        printf("READY transport=uring threads=single queues=%u depth=%u ring_flags=%#x "
               "poll_us=%g\n", nr_queues, depth, r->flags, (double)poll_ns / 1000.0);
        fflush(stdout);
    }
    unsigned live = n;         /* entries still registered */
    while (live) {
        ring_wait(r);
        /* acquire: CQE contents are valid once we see the kernel's tail */
        unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
        unsigned head = *r->cq_head;          /* only we write the head */
        for (; head != tail; head++) {
            struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
            uint64_t i = cqe->user_data - 1;
            if (i >= n)
                die(2, "unexpected CQE user_data %llu", (unsigned long long)cqe->user_data);
            struct entry *e = &ents[i];
            if (cqe->res == -EAGAIN || cqe->res == -EINTR) {
                prep_cmd(r, e, i + 1, URING_CMD_REGISTER);
                continue;
            }
            if (cqe->res == -ENOTCONN || cqe->res == -ECONNABORTED || cqe->res == -ENODEV
                || cqe->res == -ECANCELED) {
                live--;                       /* teardown */
                continue;
            }
            if (cqe->res < 0)
                die(2, "fuse uring command on queue %u: %s (treated as fatal: the mount "
                    "would hang)", e->qid, strerror(-cqe->res));
            /* a request is in e's buffers: header in in_out/op_in, args in payload */
            struct cf_in_header ih;
            memcpy(&ih, e->hdr->in_out, sizeof(ih));
            uint32_t psz = e->hdr->ent.payload_sz;
            __atomic_fetch_add(&n_ring, 1, __ATOMIC_RELAXED);   /* statistic only */
            int res = handle(&ih, e->hdr->op_in, e->payload, psz, e->payload);
            if (res == NO_REPLY)
                res = 0;      /* never on the ring; answer anyway so the entry moves on */
            struct cf_out_header oh = {0};
            oh.error = res < 0 ? res : 0;
            oh.unique = ih.unique;
            oh.len = (uint32_t)(sizeof(oh) + (res > 0 ? (unsigned)res : 0));
            memcpy(e->hdr->in_out, &oh, sizeof(oh));
            e->hdr->ent.payload_sz = res > 0 ? (uint32_t)res : 0;
            prep_cmd(r, e, i + 1, URING_CMD_COMMIT_AND_FETCH);
        }
        /* release: the kernel may reuse the CQ slots only after we have read them */
        __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    }
}

static struct entry *make_entries(unsigned qid_first, unsigned qid_count)
{
    unsigned n = qid_count * depth;
    struct entry *ents = calloc(n, sizeof(*ents));
    if (!ents)
        die(2, "out of memory");
    for (unsigned i = 0; i < n; i++) {
        struct entry *e = &ents[i];
        if (posix_memalign((void **)&e->hdr, 4096, 4096)
            || posix_memalign((void **)&e->payload, 4096, PAYLOAD_SZ))
            die(2, "out of memory");
        memset(e->hdr, 0, 4096);
        memset(e->payload, 0, PAYLOAD_SZ);
        e->iov[0] = (struct iovec){e->hdr, sizeof(struct cf_req_header)};
        e->iov[1] = (struct iovec){e->payload, PAYLOAD_SZ};
        e->qid = (uint16_t)(qid_first + i / depth);
    }
    return ents;
}

static unsigned ring_flags_seen;
static pthread_barrier_t ready_barrier;

static void pin_to(unsigned cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    /* best effort: a CPU outside our cpuset stays unpinned */
    (void)sched_setaffinity(0, sizeof(set), &set);
}

static void *uring_queue_thread(void *arg)
{
    unsigned qid = (unsigned)(uintptr_t)arg;
    pin_to(qid);
    /* created here: with SINGLE_ISSUER|DEFER_TASKRUN only this thread may
     * submit, and requests are copied in by this thread's task work */
    struct ring r;
    ring_init(&r, depth + 4);
    ring_flags_seen = r.flags;
    struct entry *ents = make_entries(qid, 1);
    uring_serve(&r, ents, depth, &ready_barrier);
    return NULL;
}

static void *dev_thread(void *arg)
{
    return classic_thread(arg);          /* FORGET, INTERRUPT, fallback */
}

/* ---------------------------------------------------------------------
 * setup
 * ------------------------------------------------------------------- */

static unsigned possible_cpus(void)
{
    /* the kernel makes one queue per *possible* CPU: count the ranges */
    FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
    if (!f)
        die(2, "cannot read /sys/devices/system/cpu/possible: %s", strerror(errno));
    char buf[256];
    if (!fgets(buf, sizeof(buf), f))
        die(2, "empty /sys/devices/system/cpu/possible");
    fclose(f);
    unsigned count = 0;
    for (char *s = buf; *s && *s != '\n';) {
        char *end;
        unsigned a = (unsigned)strtoul(s, &end, 10), b = a;
        if (*end == '-')
            b = (unsigned)strtoul(end + 1, &end, 10);
        count += b - a + 1;
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s != ',')
            break;
    }
    return count ? count : 1;
}

static void do_init(int want_uring)
{
    char *buf = malloc(CLASSIC_BUF);
    if (!buf)
        die(2, "out of memory");
    ssize_t n;
    do
        n = read(fuse_fd, buf, CLASSIC_BUF);     /* INIT never goes through the ring */
    while (n < 0 && errno == EINTR);
    if (n < (ssize_t)(sizeof(struct cf_in_header) + 16))
        die(2, "reading FUSE_INIT: %s", n < 0 ? strerror(errno) : "short request");
    struct cf_in_header *ih = (struct cf_in_header *)buf;
    if (ih->opcode != OP_INIT)
        die(2, "first request is opcode %u, not INIT", ih->opcode);
    struct cf_init_in in = {0};
    memcpy(&in, buf + sizeof(*ih), (size_t)n - sizeof(*ih) < sizeof(in)
           ? (size_t)n - sizeof(*ih) : sizeof(in));
    int offered = (in.flags & F_INIT_EXT) && (in.flags2 & F2_OVER_IO_URING);
    if (in.major != 7)
        die(2, "FUSE major %u", in.major);
    if (want_uring && (!offered || in.minor < 42))
        die(3, "the kernel did not offer FUSE over io_uring (protocol 7.%u, flags2 %#x; "
            "is /sys/module/fuse/parameters/enable_uring Y?)", in.minor, in.flags2);
    struct cf_init_out out = {0};
    out.major = 7;
    out.minor = in.minor < 45 ? in.minor : 45;
    out.max_readahead = in.max_readahead;
    /* what libfuse and subring.fuse ask for too (among what matters here),
     * so that two readers' LOOKUPs are not serialized by a per-directory lock */
    out.flags = in.flags & (F_ASYNC_READ | F_PARALLEL_DIROPS | F_MAX_PAGES | F_INIT_EXT);
    out.flags2 = want_uring ? F2_OVER_IO_URING : 0;
    out.max_background = 64;
    out.congestion_threshold = 48;
    out.max_write = MAX_WRITE;
    out.time_gran = 1;
    out.max_pages = MAX_PAGES;
    struct cf_out_header oh = {sizeof(oh) + sizeof(out), 0, ih->unique};
    struct iovec iov[2] = {{&oh, sizeof(oh)}, {&out, sizeof(out)}};
    /* the kernel processes the reply inside this write: afterwards REGISTER works */
    if (writev(fuse_fd, iov, 2) < 0)
        die(2, "INIT reply: %s", strerror(errno));
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc < 5)
        die(2, "usage: c_fuse MOUNTPOINT uring|classic single|per-queue FILE_BYTES "
            "[DEPTH [POLL_US]]");
    const char *mnt = argv[1];
    int want_uring = strcmp(argv[2], "uring") == 0;
    if (!want_uring && strcmp(argv[2], "classic") != 0)
        die(2, "transport must be uring or classic, not %s", argv[2]);
    per_queue = strcmp(argv[3], "per-queue") == 0;
    if (!per_queue && strcmp(argv[3], "single") != 0)
        die(2, "threads must be single or per-queue, not %s", argv[3]);
    file_size = strtoull(argv[4], NULL, 0);
    if (argc > 5)
        depth = (unsigned)strtoul(argv[5], NULL, 0);
    if (argc > 6) {
        char *end;
        double us = strtod(argv[6], &end);
        if (end == argv[6] || *end || !(us >= 0 && us <= 10000))   /* NaN fails too */
            die(2, "POLL_US must be a number in [0, 10000], not %s", argv[6]);
        poll_ns = (long)(us * 1000.0);
    }
    if (!file_size || file_size % 4096 || !depth || depth > 64)
        die(2, "bad FILE_BYTES or DEPTH");
    prctl(PR_SET_PDEATHSIG, SIGKILL);      /* never outlive the benchmark */

    data = malloc(file_size);
    if (!data)
        die(2, "out of memory");
    for (uint64_t b = 0; b < file_size / 4096; b++)
        for (unsigned k = 0; k < 4096 / 8; k++)
            memcpy(data + b * 4096 + k * 8, &b, 8);   /* little-endian u64 b */
    nr_queues = possible_cpus();

    fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fuse_fd < 0)
        die(2, "open /dev/fuse: %s", strerror(errno));
    char opts[128];
    snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=%u,group_id=%u",
             fuse_fd, (unsigned)getuid(), (unsigned)getgid());
    if (mount("c_fuse", mnt, "fuse.c_fuse", MS_NOSUID | MS_NODEV, opts) < 0)
        die(2, "mount %s: %s", mnt, strerror(errno));
    do_init(want_uring);

    unsigned nthreads = per_queue ? nr_queues : 1;
    pthread_t *tids = calloc(nthreads + 1, sizeof(pthread_t));
    if (!tids)
        die(2, "out of memory");
    if (!want_uring) {
        printf("READY transport=classic threads=%s queues=%u depth=0 ring_flags=0x0\n",
               per_queue ? "per-queue" : "single", nr_queues);
        fflush(stdout);
        if (!per_queue) {
            classic_thread(NULL);
            goto done;
        }
        for (unsigned q = 0; q < nthreads; q++) {
            /* pin each reader thread to one CPU, like the ring's per-queue threads */
            pthread_attr_t at;
            cpu_set_t set;
            pthread_attr_init(&at);
            CPU_ZERO(&set);
            CPU_SET(q, &set);
            pthread_attr_setaffinity_np(&at, sizeof(set), &set);
            if (pthread_create(&tids[q], &at, classic_thread, NULL))
                die(2, "pthread_create failed");
            pthread_attr_destroy(&at);
        }
        for (unsigned q = 0; q < nthreads; q++)
            pthread_join(tids[q], NULL);
        goto done;
    }

    if (pthread_create(&tids[nthreads], NULL, dev_thread, NULL))
        die(2, "pthread_create failed");
    if (per_queue) {
        pthread_barrier_init(&ready_barrier, NULL, nthreads + 1);
        for (unsigned q = 0; q < nthreads; q++)
            if (pthread_create(&tids[q], NULL, uring_queue_thread, (void *)(uintptr_t)q))
                die(2, "pthread_create failed");
        pthread_barrier_wait(&ready_barrier);
        printf("READY transport=uring threads=per-queue queues=%u depth=%u ring_flags=%#x "
               "poll_us=%g\n", nr_queues, depth, ring_flags_seen, (double)poll_ns / 1000.0);
        fflush(stdout);
        for (unsigned q = 0; q < nthreads; q++)
            pthread_join(tids[q], NULL);
    } else {
        struct ring r;
        ring_init(&r, nr_queues * depth + 4);
        struct entry *ents = make_entries(0, nr_queues);
        uring_serve(&r, ents, nr_queues * depth, NULL);
    }
    /* the ring is done (ENOTCONN on every entry): the /dev/fuse reader ends
     * with ENODEV; exit without waiting for it */
done:
    fprintf(stderr, "c_fuse: served %llu requests (%llu on the ring)\n",
            (unsigned long long)__atomic_load_n(&n_requests, __ATOMIC_RELAXED),
            (unsigned long long)__atomic_load_n(&n_ring, __ATOMIC_RELAXED));
    return 0;
}
