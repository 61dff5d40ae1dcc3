/*
 * fuse_abi.h -- the FUSE kernel protocol (include/uapi/linux/fuse.h), the part
 * subring.fuse speaks, including FUSE over io_uring (protocol 7.42+, Linux
 * 6.14+).  The build machine's <linux/fuse.h> is older (6.1 headers) and lacks
 * the io_uring structures, so we never include it: every struct is named as in
 * the kernel uapi and its layout is pinned with static_assert.
 *
 * All structs are little-endian native layouts with natural alignment; the
 * kernel defines them with fixed-width types and explicit padding, so the
 * compiler adds none.  Types and constants only.
 */
#ifndef SUBRING_FUSE_ABI_H
#define SUBRING_FUSE_ABI_H

#include <stdint.h>
#include <stddef.h>
#include <assert.h>

#define FUSE_KERNEL_VERSION 7
/* The newest minor whose semantics this server implements (Linux 6.18). */
#define FUSE_KERNEL_MINOR_VERSION 45
/* FUSE over io_uring appeared with 7.42. */
#define FUSE_URING_MIN_MINOR 42

enum fuse_opcode {
    FUSE_LOOKUP = 1, FUSE_FORGET = 2, FUSE_GETATTR = 3, FUSE_SETATTR = 4,
    FUSE_READLINK = 5, FUSE_SYMLINK = 6, FUSE_MKNOD = 8, FUSE_MKDIR = 9,
    FUSE_UNLINK = 10, FUSE_RMDIR = 11, FUSE_RENAME = 12, FUSE_LINK = 13,
    FUSE_OPEN = 14, FUSE_READ = 15, FUSE_WRITE = 16, FUSE_STATFS = 17,
    FUSE_RELEASE = 18, FUSE_FSYNC = 20, FUSE_SETXATTR = 21, FUSE_GETXATTR = 22,
    FUSE_LISTXATTR = 23, FUSE_REMOVEXATTR = 24, FUSE_FLUSH = 25, FUSE_INIT = 26,
    FUSE_OPENDIR = 27, FUSE_READDIR = 28, FUSE_RELEASEDIR = 29, FUSE_FSYNCDIR = 30,
    FUSE_GETLK = 31, FUSE_SETLK = 32, FUSE_SETLKW = 33, FUSE_ACCESS = 34,
    FUSE_CREATE = 35, FUSE_INTERRUPT = 36, FUSE_BMAP = 37, FUSE_DESTROY = 38,
    FUSE_IOCTL = 39, FUSE_POLL = 40, FUSE_NOTIFY_REPLY = 41, FUSE_BATCH_FORGET = 42,
    FUSE_FALLOCATE = 43, FUSE_READDIRPLUS = 44, FUSE_RENAME2 = 45, FUSE_LSEEK = 46,
    FUSE_COPY_FILE_RANGE = 47, FUSE_SETUPMAPPING = 48, FUSE_REMOVEMAPPING = 49,
    FUSE_SYNCFS = 50, FUSE_TMPFILE = 51, FUSE_STATX = 52, FUSE_COPY_FILE_RANGE_64 = 53,
};
#define FUSE_OPCODE_MAX 64

/* fuse_init_in.flags / fuse_init_out.flags (low 32 bits) */
#define FUSE_ASYNC_READ          (1U << 0)
#define FUSE_ATOMIC_O_TRUNC      (1U << 3)
#define FUSE_BIG_WRITES          (1U << 5)
#define FUSE_DO_READDIRPLUS      (1U << 13)
#define FUSE_READDIRPLUS_AUTO    (1U << 14)
#define FUSE_NO_OPEN_SUPPORT     (1U << 17)
#define FUSE_PARALLEL_DIROPS     (1U << 18)
#define FUSE_MAX_PAGES           (1U << 22)
#define FUSE_NO_OPENDIR_SUPPORT  (1U << 24)
#define FUSE_INIT_EXT            (1U << 30)  /* without it flags2 is ignored */
/* flags2 = the high 32 bits of the 64-bit flag word */
#define FUSE_OVER_IO_URING_FLAGS2 (1U << (41 - 32))

/* fuse_open_out.open_flags */
#define FOPEN_DIRECT_IO   (1U << 0)
#define FOPEN_KEEP_CACHE  (1U << 1)

/* fuse_getattr_in.getattr_flags */
#define FUSE_GETATTR_FH   (1U << 0)

/* fuse_setattr_in.valid */
#define FATTR_MODE      (1U << 0)
#define FATTR_UID       (1U << 1)
#define FATTR_GID       (1U << 2)
#define FATTR_SIZE      (1U << 3)
#define FATTR_ATIME     (1U << 4)
#define FATTR_MTIME     (1U << 5)
#define FATTR_FH        (1U << 6)
#define FATTR_ATIME_NOW (1U << 7)
#define FATTR_MTIME_NOW (1U << 8)
#define FATTR_CTIME     (1U << 10)

/* fuse_fsync_in.fsync_flags */
#define FUSE_FSYNC_FDATASYNC (1U << 0)

struct fuse_in_header {
    uint32_t len, opcode;
    uint64_t unique, nodeid;
    uint32_t uid, gid, pid;
    uint16_t total_extlen, padding;
};
static_assert(sizeof(struct fuse_in_header) == 40, "fuse_in_header");
static_assert(offsetof(struct fuse_in_header, unique) == 8, "in.unique");
static_assert(offsetof(struct fuse_in_header, nodeid) == 16, "in.nodeid");
static_assert(offsetof(struct fuse_in_header, pid) == 32, "in.pid");

struct fuse_out_header {
    uint32_t len;
    int32_t  error;
    uint64_t unique;
};
static_assert(sizeof(struct fuse_out_header) == 16, "fuse_out_header");

struct fuse_attr {
    uint64_t ino, size, blocks, atime, mtime, ctime;
    uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags;
};
static_assert(sizeof(struct fuse_attr) == 88, "fuse_attr");
static_assert(offsetof(struct fuse_attr, mode) == 60, "attr.mode");

struct fuse_entry_out {
    uint64_t nodeid, generation, entry_valid, attr_valid;
    uint32_t entry_valid_nsec, attr_valid_nsec;
    struct fuse_attr attr;
};
static_assert(sizeof(struct fuse_entry_out) == 128, "fuse_entry_out");
static_assert(offsetof(struct fuse_entry_out, attr) == 40, "entry_out.attr");

struct fuse_attr_out {
    uint64_t attr_valid;
    uint32_t attr_valid_nsec, dummy;
    struct fuse_attr attr;
};
static_assert(sizeof(struct fuse_attr_out) == 104, "fuse_attr_out");

struct fuse_open_out {
    uint64_t fh;
    uint32_t open_flags;
    int32_t  backing_id;
};
static_assert(sizeof(struct fuse_open_out) == 16, "fuse_open_out");

struct fuse_kstatfs {
    uint64_t blocks, bfree, bavail, files, ffree;
    uint32_t bsize, namelen, frsize, padding, spare[6];
};
static_assert(sizeof(struct fuse_kstatfs) == 80, "fuse_kstatfs");

struct fuse_write_out { uint32_t size, padding; };
static_assert(sizeof(struct fuse_write_out) == 8, "fuse_write_out");

struct fuse_getxattr_out { uint32_t size, padding; };
static_assert(sizeof(struct fuse_getxattr_out) == 8, "fuse_getxattr_out");

struct fuse_dirent {
    uint64_t ino, off;
    uint32_t namelen, type;
    char name[];
};
static_assert(sizeof(struct fuse_dirent) == 24, "fuse_dirent");
#define FUSE_DIRENT_ALIGN(x) (((x) + 7) & ~(size_t)7)

struct fuse_direntplus {
    struct fuse_entry_out entry_out;
    struct fuse_dirent dirent;
};
static_assert(sizeof(struct fuse_direntplus) == 152, "fuse_direntplus");

struct fuse_init_in {
    uint32_t major, minor, max_readahead, flags, flags2, unused[11];
};
static_assert(sizeof(struct fuse_init_in) == 64, "fuse_init_in");

struct fuse_init_out {
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, max_stack_depth;
    uint16_t request_timeout;
    uint16_t unused[11];
};
static_assert(sizeof(struct fuse_init_out) == 64, "fuse_init_out");
static_assert(offsetof(struct fuse_init_out, max_write) == 20, "init_out.max_write");
static_assert(offsetof(struct fuse_init_out, max_pages) == 28, "init_out.max_pages");
static_assert(offsetof(struct fuse_init_out, flags2) == 32, "init_out.flags2");
static_assert(offsetof(struct fuse_init_out, request_timeout) == 40, "init_out.request_timeout");

struct fuse_forget_in { uint64_t nlookup; };
struct fuse_forget_one { uint64_t nodeid, nlookup; };
struct fuse_batch_forget_in { uint32_t count, dummy; };
static_assert(sizeof(struct fuse_forget_one) == 16, "fuse_forget_one");
static_assert(sizeof(struct fuse_batch_forget_in) == 8, "fuse_batch_forget_in");

struct fuse_getattr_in { uint32_t getattr_flags, dummy; uint64_t fh; };
static_assert(sizeof(struct fuse_getattr_in) == 16, "fuse_getattr_in");

struct fuse_setattr_in {
    uint32_t valid, padding;
    uint64_t fh, size, lock_owner, atime, mtime, ctime;
    uint32_t atimensec, mtimensec, ctimensec, mode, unused4, uid, gid, unused5;
};
static_assert(sizeof(struct fuse_setattr_in) == 88, "fuse_setattr_in");
static_assert(offsetof(struct fuse_setattr_in, mode) == 68, "setattr_in.mode");
static_assert(offsetof(struct fuse_setattr_in, uid) == 76, "setattr_in.uid");

struct fuse_mknod_in { uint32_t mode, rdev, umask, padding; };
struct fuse_mkdir_in { uint32_t mode, umask; };
struct fuse_rename_in { uint64_t newdir; };
struct fuse_rename2_in { uint64_t newdir; uint32_t flags, padding; };
struct fuse_link_in { uint64_t oldnodeid; };
struct fuse_open_in { uint32_t flags, open_flags; };
struct fuse_create_in { uint32_t flags, mode, umask, open_flags; };
static_assert(sizeof(struct fuse_mknod_in) == 16, "fuse_mknod_in");
static_assert(sizeof(struct fuse_mkdir_in) == 8, "fuse_mkdir_in");
static_assert(sizeof(struct fuse_rename2_in) == 16, "fuse_rename2_in");
static_assert(sizeof(struct fuse_create_in) == 16, "fuse_create_in");

struct fuse_read_in {
    uint64_t fh, offset;
    uint32_t size, read_flags;
    uint64_t lock_owner;
    uint32_t flags, padding;
};
static_assert(sizeof(struct fuse_read_in) == 40, "fuse_read_in");

struct fuse_write_in {
    uint64_t fh, offset;
    uint32_t size, write_flags;
    uint64_t lock_owner;
    uint32_t flags, padding;
};
static_assert(sizeof(struct fuse_write_in) == 40, "fuse_write_in");

struct fuse_release_in { uint64_t fh; uint32_t flags, release_flags; uint64_t lock_owner; };
struct fuse_flush_in { uint64_t fh; uint32_t unused, padding; uint64_t lock_owner; };
struct fuse_fsync_in { uint64_t fh; uint32_t fsync_flags, padding; };
static_assert(sizeof(struct fuse_release_in) == 24, "fuse_release_in");
static_assert(sizeof(struct fuse_flush_in) == 24, "fuse_flush_in");
static_assert(sizeof(struct fuse_fsync_in) == 16, "fuse_fsync_in");

/* Without FUSE_SETXATTR_EXT (we never ask for it) the kernel sends the
 * 8-byte compat form (FUSE_COMPAT_SETXATTR_IN_SIZE). */
struct fuse_setxattr_in { uint32_t size, flags; };
struct fuse_getxattr_in { uint32_t size, padding; };
struct fuse_access_in { uint32_t mask, padding; };
struct fuse_interrupt_in { uint64_t unique; };
static_assert(sizeof(struct fuse_setxattr_in) == 8, "compat fuse_setxattr_in");

/* Notifications, server -> kernel: written on /dev/fuse with unique = 0 and
 * the notify code in fuse_out_header.error (never through the ring). */
enum fuse_notify_code {
    FUSE_NOTIFY_POLL = 1, FUSE_NOTIFY_INVAL_INODE = 2, FUSE_NOTIFY_INVAL_ENTRY = 3,
    FUSE_NOTIFY_STORE = 4, FUSE_NOTIFY_RETRIEVE = 5, FUSE_NOTIFY_DELETE = 6,
};

struct fuse_notify_inval_inode_out { uint64_t ino; int64_t off, len; };
struct fuse_notify_inval_entry_out { uint64_t parent; uint32_t namelen, flags; };
static_assert(sizeof(struct fuse_notify_inval_inode_out) == 24, "notify_inval_inode_out");
static_assert(sizeof(struct fuse_notify_inval_entry_out) == 16, "notify_inval_entry_out");

/* ---- FUSE over io_uring (7.42) ------------------------------------------ */

/* The kernel <-> server area of each ring entry's header buffer. */
struct fuse_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;   /* kernel writes: quote it in COMMIT_AND_FETCH */
    uint32_t payload_sz;  /* kernel writes: in-args bytes; server writes: reply bytes */
    uint32_t padding;
    uint64_t reserved;
};
static_assert(sizeof(struct fuse_uring_ent_in_out) == 32, "fuse_uring_ent_in_out");

#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ 128

/* iov[0] of every ring entry. */
struct fuse_uring_req_header {
    char in_out[FUSE_URING_IN_OUT_HEADER_SZ];  /* fuse_in_header in, fuse_out_header out */
    char op_in[FUSE_URING_OP_IN_OUT_SZ];       /* the opcode's in_args[0] struct */
    struct fuse_uring_ent_in_out ring_ent_in_out;
};
static_assert(sizeof(struct fuse_uring_req_header) == 288, "fuse_uring_req_header");
static_assert(offsetof(struct fuse_uring_req_header, op_in) == 128, "req_header.op_in");
static_assert(offsetof(struct fuse_uring_req_header, ring_ent_in_out) == 256,
              "req_header.ring_ent_in_out");

enum fuse_uring_cmd {
    FUSE_IO_URING_CMD_INVALID = 0,
    FUSE_IO_URING_CMD_REGISTER = 1,
    FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

/* In the SQE128 command area (sqe offset 48). */
struct fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t  padding[6];
};
static_assert(sizeof(struct fuse_uring_cmd_req) == 24, "fuse_uring_cmd_req");
static_assert(offsetof(struct fuse_uring_cmd_req, qid) == 16, "cmd_req.qid");

#endif
