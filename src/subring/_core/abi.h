/*
 * abi.h -- the one ABI header of subring.
 *
 * Everything that crosses a protection boundary is defined here, and only here:
 *
 *   1. the kernel io_uring uapi (struct io_uring_sqe / io_uring_cqe / params /
 *      register arguments and the constants), named exactly as in the kernel's
 *      include/uapi/linux/io_uring.h.  The build machine's headers are older
 *      (Debian 12 ships 6.1) than the kernels we run on, so we never include
 *      <linux/io_uring.h>: this file is the project's copy, and every layout is
 *      pinned with static_assert so a typo cannot silently change the ABI.
 *
 *   2. (later) the header of user-space rings, which reuse the same SQE/CQE.
 *
 * Nothing in here allocates or touches memory: types and constants only.
 */
#ifndef SUBRING_ABI_H
#define SUBRING_ABI_H

#include <stdint.h>
#include <stddef.h>
#include <assert.h>

/* ------------------------------------------------------------------------ */
/* io_uring: submission and completion entries                               */
/* ------------------------------------------------------------------------ */

/* struct io_uring_sqe: 64 bytes (128 with IORING_SETUP_SQE128, the second half
 * being command payload for IORING_OP_URING_CMD).  Unions are flattened to the
 * names we use; offsets are asserted below. */
struct io_uring_sqe {
    uint8_t  opcode;      /* IORING_OP_* */
    uint8_t  flags;       /* IOSQE_* */
    uint16_t ioprio;      /* also accept/recv/send op flags */
    int32_t  fd;
    union {
        uint64_t off;     /* file offset */
        uint64_t addr2;
        struct {
            uint32_t cmd_op;
            uint32_t __pad1;
        };
    };
    union {
        uint64_t addr;    /* buffer / iovec / path / target user_data */
        uint64_t splice_off_in;
        struct {
            uint32_t level;
            uint32_t optname;
        };
    };
    uint32_t len;
    union {               /* per-opcode flags: one 32-bit word */
        uint32_t rw_flags;
        uint32_t fsync_flags;
        uint32_t poll32_events;
        uint32_t msg_flags;
        uint32_t timeout_flags;
        uint32_t accept_flags;
        uint32_t cancel_flags;
        uint32_t open_flags;
        uint32_t statx_flags;
        uint32_t splice_flags;
        uint32_t rename_flags;
        uint32_t unlink_flags;
        uint32_t msg_ring_flags;
        uint32_t uring_cmd_flags;
        uint32_t op_flags;  /* subring's generic name for this word */
    };
    uint64_t user_data;
    union {
        uint16_t buf_index;
        uint16_t buf_group;
    } __attribute__((packed));
    uint16_t personality;
    union {
        int32_t  splice_fd_in;
        uint32_t file_index;
        uint32_t optlen;
        struct {
            uint16_t addr_len;
            uint16_t __pad3[1];
        };
    };
    union {
        struct {
            uint64_t addr3;
            uint64_t __pad2[1];
        };
        uint8_t cmd[0];   /* 16 bytes here, 80 with SQE128 */
    };
};

static_assert(sizeof(struct io_uring_sqe) == 64, "io_uring_sqe is 64 bytes");
static_assert(offsetof(struct io_uring_sqe, opcode) == 0, "sqe.opcode");
static_assert(offsetof(struct io_uring_sqe, flags) == 1, "sqe.flags");
static_assert(offsetof(struct io_uring_sqe, ioprio) == 2, "sqe.ioprio");
static_assert(offsetof(struct io_uring_sqe, fd) == 4, "sqe.fd");
static_assert(offsetof(struct io_uring_sqe, off) == 8, "sqe.off");
static_assert(offsetof(struct io_uring_sqe, cmd_op) == 8, "sqe.cmd_op");
static_assert(offsetof(struct io_uring_sqe, addr) == 16, "sqe.addr");
static_assert(offsetof(struct io_uring_sqe, len) == 24, "sqe.len");
static_assert(offsetof(struct io_uring_sqe, rw_flags) == 28, "sqe.rw_flags");
static_assert(offsetof(struct io_uring_sqe, user_data) == 32, "sqe.user_data");
static_assert(offsetof(struct io_uring_sqe, buf_index) == 40, "sqe.buf_index");
static_assert(offsetof(struct io_uring_sqe, personality) == 42, "sqe.personality");
static_assert(offsetof(struct io_uring_sqe, splice_fd_in) == 44, "sqe.splice_fd_in");
static_assert(offsetof(struct io_uring_sqe, addr3) == 48, "sqe.addr3");
static_assert(offsetof(struct io_uring_sqe, cmd) == 48, "sqe.cmd");

/* struct io_uring_cqe: 16 bytes (32 with IORING_SETUP_CQE32: big_cqe[2]). */
struct io_uring_cqe {
    uint64_t user_data;   /* copied from the SQE */
    int32_t  res;         /* result, or -errno */
    uint32_t flags;       /* IORING_CQE_F_* ; buffer id in the upper 16 bits */
    uint64_t big_cqe[];
};
static_assert(sizeof(struct io_uring_cqe) == 16, "io_uring_cqe is 16 bytes");
static_assert(offsetof(struct io_uring_cqe, res) == 8, "cqe.res");
static_assert(offsetof(struct io_uring_cqe, flags) == 12, "cqe.flags");

/* SQE flags (sqe->flags) */
#define IOSQE_FIXED_FILE        (1U << 0)
#define IOSQE_IO_DRAIN          (1U << 1)
#define IOSQE_IO_LINK           (1U << 2)
#define IOSQE_IO_HARDLINK       (1U << 3)
#define IOSQE_ASYNC             (1U << 4)
#define IOSQE_BUFFER_SELECT     (1U << 5)
#define IOSQE_CQE_SKIP_SUCCESS  (1U << 6)

/* io_uring_setup() flags */
#define IORING_SETUP_IOPOLL          (1U << 0)
#define IORING_SETUP_SQPOLL          (1U << 1)
#define IORING_SETUP_SQ_AFF          (1U << 2)
#define IORING_SETUP_CQSIZE          (1U << 3)
#define IORING_SETUP_CLAMP           (1U << 4)
#define IORING_SETUP_ATTACH_WQ       (1U << 5)
#define IORING_SETUP_R_DISABLED      (1U << 6)
#define IORING_SETUP_SUBMIT_ALL      (1U << 7)
#define IORING_SETUP_COOP_TASKRUN    (1U << 8)
#define IORING_SETUP_TASKRUN_FLAG    (1U << 9)
#define IORING_SETUP_SQE128          (1U << 10)
#define IORING_SETUP_CQE32           (1U << 11)
#define IORING_SETUP_SINGLE_ISSUER   (1U << 12)
#define IORING_SETUP_DEFER_TASKRUN   (1U << 13)
#define IORING_SETUP_NO_MMAP         (1U << 14)
#define IORING_SETUP_REGISTERED_FD_ONLY (1U << 15)
#define IORING_SETUP_NO_SQARRAY      (1U << 16)   /* 6.6 */
#define IORING_SETUP_HYBRID_IOPOLL   (1U << 17)   /* 6.13 */

/* opcodes (enum io_uring_op) */
enum {
    IORING_OP_NOP, IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC,
    IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED, IORING_OP_POLL_ADD,
    IORING_OP_POLL_REMOVE, IORING_OP_SYNC_FILE_RANGE, IORING_OP_SENDMSG,
    IORING_OP_RECVMSG, IORING_OP_TIMEOUT, IORING_OP_TIMEOUT_REMOVE,
    IORING_OP_ACCEPT, IORING_OP_ASYNC_CANCEL, IORING_OP_LINK_TIMEOUT,
    IORING_OP_CONNECT, IORING_OP_FALLOCATE, IORING_OP_OPENAT, IORING_OP_CLOSE,
    IORING_OP_FILES_UPDATE, IORING_OP_STATX, IORING_OP_READ, IORING_OP_WRITE,
    IORING_OP_FADVISE, IORING_OP_MADVISE, IORING_OP_SEND, IORING_OP_RECV,
    IORING_OP_OPENAT2, IORING_OP_EPOLL_CTL, IORING_OP_SPLICE,
    IORING_OP_PROVIDE_BUFFERS, IORING_OP_REMOVE_BUFFERS, IORING_OP_TEE,
    IORING_OP_SHUTDOWN, IORING_OP_RENAMEAT, IORING_OP_UNLINKAT,
    IORING_OP_MKDIRAT, IORING_OP_SYMLINKAT, IORING_OP_LINKAT,
    IORING_OP_MSG_RING, IORING_OP_FSETXATTR, IORING_OP_SETXATTR,
    IORING_OP_FGETXATTR, IORING_OP_GETXATTR, IORING_OP_SOCKET,
    IORING_OP_URING_CMD, IORING_OP_SEND_ZC, IORING_OP_SENDMSG_ZC,
    IORING_OP_READ_MULTISHOT, IORING_OP_WAITID, IORING_OP_FUTEX_WAIT,
    IORING_OP_FUTEX_WAKE, IORING_OP_FUTEX_WAITV, IORING_OP_FIXED_FD_INSTALL,
    IORING_OP_FTRUNCATE, IORING_OP_BIND, IORING_OP_LISTEN, IORING_OP_RECV_ZC,
    IORING_OP_EPOLL_WAIT, IORING_OP_READV_FIXED, IORING_OP_WRITEV_FIXED,
    IORING_OP_PIPE,
    IORING_OP_LAST_KNOWN  /* first opcode this header does not know */
};
static_assert(IORING_OP_URING_CMD == 46, "URING_CMD is 46");
static_assert(IORING_OP_PIPE == 62, "PIPE is 62");

/* per-opcode flags */
#define IORING_FSYNC_DATASYNC        (1U << 0)
#define IORING_TIMEOUT_ABS           (1U << 0)
#define IORING_TIMEOUT_UPDATE        (1U << 1)
#define IORING_TIMEOUT_BOOTTIME      (1U << 2)
#define IORING_TIMEOUT_REALTIME      (1U << 3)
#define IORING_LINK_TIMEOUT_UPDATE   (1U << 4)
#define IORING_TIMEOUT_ETIME_SUCCESS (1U << 5)
#define IORING_TIMEOUT_MULTISHOT     (1U << 6)
#define IORING_POLL_ADD_MULTI        (1U << 0)   /* in sqe->len */
#define IORING_ASYNC_CANCEL_ALL      (1U << 0)
#define IORING_ASYNC_CANCEL_FD       (1U << 1)
#define IORING_ASYNC_CANCEL_ANY      (1U << 2)
#define IORING_ASYNC_CANCEL_FD_FIXED (1U << 3)
#define IORING_RECVSEND_POLL_FIRST   (1U << 0)   /* in sqe->ioprio */
#define IORING_RECV_MULTISHOT        (1U << 1)
#define IORING_RECVSEND_FIXED_BUF    (1U << 2)
#define IORING_ACCEPT_MULTISHOT      (1U << 0)   /* in sqe->ioprio */
#define IORING_MSG_DATA              0           /* in sqe->addr */
#define IORING_MSG_RING_CQE_SKIP     (1U << 0)
#define IORING_MSG_RING_FLAGS_PASS   (1U << 1)
#define IORING_FILE_INDEX_ALLOC      (~0U)
#define SPLICE_F_FD_IN_FIXED         (1U << 31)

/* CQE flags */
#define IORING_CQE_F_BUFFER          (1U << 0)
#define IORING_CQE_F_MORE            (1U << 1)
#define IORING_CQE_F_SOCK_NONEMPTY   (1U << 2)
#define IORING_CQE_F_NOTIF           (1U << 3)
#define IORING_CQE_BUFFER_SHIFT      16

/* mmap offsets */
#define IORING_OFF_SQ_RING           0ULL
#define IORING_OFF_CQ_RING           0x8000000ULL
#define IORING_OFF_SQES              0x10000000ULL

/* ------------------------------------------------------------------------ */
/* io_uring: setup, enter, register                                          */
/* ------------------------------------------------------------------------ */

struct io_sqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
};
struct io_cqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
};
struct io_uring_params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle;
    uint32_t features, wq_fd, resv[3];
    struct io_sqring_offsets sq_off;
    struct io_cqring_offsets cq_off;
};
static_assert(sizeof(struct io_sqring_offsets) == 40, "io_sqring_offsets");
static_assert(sizeof(struct io_cqring_offsets) == 40, "io_cqring_offsets");
static_assert(sizeof(struct io_uring_params) == 120, "io_uring_params");
static_assert(offsetof(struct io_uring_params, sq_off) == 40, "params.sq_off");

/* sq_ring->flags: written by the kernel, read by us */
#define IORING_SQ_NEED_WAKEUP        (1U << 0)
#define IORING_SQ_CQ_OVERFLOW        (1U << 1)
#define IORING_SQ_TASKRUN            (1U << 2)
/* cq_ring->flags: written by us */
#define IORING_CQ_EVENTFD_DISABLED   (1U << 0)

/* io_uring_enter() flags */
#define IORING_ENTER_GETEVENTS       (1U << 0)
#define IORING_ENTER_SQ_WAKEUP       (1U << 1)
#define IORING_ENTER_SQ_WAIT         (1U << 2)
#define IORING_ENTER_EXT_ARG         (1U << 3)
#define IORING_ENTER_REGISTERED_RING (1U << 4)

/* features */
#define IORING_FEAT_SINGLE_MMAP      (1U << 0)
#define IORING_FEAT_NODROP           (1U << 1)
#define IORING_FEAT_SUBMIT_STABLE    (1U << 2)
#define IORING_FEAT_RW_CUR_POS       (1U << 3)
#define IORING_FEAT_CUR_PERSONALITY  (1U << 4)
#define IORING_FEAT_FAST_POLL        (1U << 5)
#define IORING_FEAT_POLL_32BITS      (1U << 6)
#define IORING_FEAT_SQPOLL_NONFIXED  (1U << 7)
#define IORING_FEAT_EXT_ARG          (1U << 8)
#define IORING_FEAT_NATIVE_WORKERS   (1U << 9)
#define IORING_FEAT_RSRC_TAGS        (1U << 10)
#define IORING_FEAT_CQE_SKIP         (1U << 11)
#define IORING_FEAT_LINKED_FILE      (1U << 12)
#define IORING_FEAT_REG_REG_RING     (1U << 13)

/* io_uring_register() opcodes */
enum {
    IORING_REGISTER_BUFFERS = 0, IORING_UNREGISTER_BUFFERS = 1,
    IORING_REGISTER_FILES = 2, IORING_UNREGISTER_FILES = 3,
    IORING_REGISTER_EVENTFD = 4, IORING_UNREGISTER_EVENTFD = 5,
    IORING_REGISTER_FILES_UPDATE = 6, IORING_REGISTER_EVENTFD_ASYNC = 7,
    IORING_REGISTER_PROBE = 8,
    IORING_REGISTER_FILES2 = 13, IORING_REGISTER_FILES_UPDATE2 = 14,
    IORING_REGISTER_BUFFERS2 = 15, IORING_REGISTER_BUFFERS_UPDATE = 16,
    IORING_REGISTER_RING_FDS = 20, IORING_UNREGISTER_RING_FDS = 21,
    IORING_REGISTER_PBUF_RING = 22, IORING_UNREGISTER_PBUF_RING = 23,
};

#define IORING_RSRC_REGISTER_SPARSE  (1U << 0)

struct io_uring_rsrc_register {
    uint32_t nr, flags;
    uint64_t resv2;
    uint64_t data;        /* pointer to iovec[] or int32 fd[] */
    uint64_t tags;
};
struct io_uring_rsrc_update2 {
    uint32_t offset, resv;
    uint64_t data, tags;
    uint32_t nr, resv2;
};
struct io_uring_rsrc_update {  /* for IORING_REGISTER_RING_FDS */
    uint32_t offset, resv;
    uint64_t data;
};
static_assert(sizeof(struct io_uring_rsrc_register) == 32, "rsrc_register");
static_assert(sizeof(struct io_uring_rsrc_update2) == 32, "rsrc_update2");
static_assert(sizeof(struct io_uring_rsrc_update) == 16, "rsrc_update");

#define IO_URING_OP_SUPPORTED        (1U << 0)
struct io_uring_probe_op { uint8_t op, resv; uint16_t flags; uint32_t resv2; };
struct io_uring_probe {
    uint8_t last_op, ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    struct io_uring_probe_op ops[];
};
static_assert(sizeof(struct io_uring_probe_op) == 8, "probe_op");
static_assert(sizeof(struct io_uring_probe) == 16, "probe header");

/* Provided buffer rings.  The ring tail overlays the `resv` field of entry 0:
 * the application (producer) writes it, the kernel (consumer) reads it. */
struct io_uring_buf { uint64_t addr; uint32_t len; uint16_t bid, resv; };
struct io_uring_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid, flags;
    uint64_t resv[3];
};
static_assert(sizeof(struct io_uring_buf) == 16, "io_uring_buf");
static_assert(sizeof(struct io_uring_buf_reg) == 40, "io_uring_buf_reg");
#define IO_URING_BUF_RING_TAIL_OFFSET 14  /* offsetof(bufs[0].resv) */

struct io_uring_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec;  /* "pad" before 6.12 */
    uint64_t ts;             /* pointer to struct __kernel_timespec */
};
static_assert(sizeof(struct io_uring_getevents_arg) == 24, "getevents_arg");

struct sr_kernel_timespec { int64_t tv_sec; long long tv_nsec; };
static_assert(sizeof(struct sr_kernel_timespec) == 16, "__kernel_timespec");

/* IORING_REGISTER_SYNC_CANCEL (5.19): cancel through io_uring_register, not
 * an SQE -- so no DRAIN op or link chain can hold the cancel back. */
#define IORING_REGISTER_SYNC_CANCEL 24
struct io_uring_sync_cancel_reg {
    uint64_t addr;
    int32_t  fd;
    uint32_t flags;
    struct sr_kernel_timespec timeout;   /* {-1, -1}: wait without limit */
    uint8_t  opcode;
    uint8_t  pad[7];
    uint64_t pad2[3];
};
static_assert(sizeof(struct io_uring_sync_cancel_reg) == 64, "sync_cancel_reg");


/* ------------------------------------------------------------------------ */
/* user-space rings: one shared-memory region per client queue pair          */
/* ------------------------------------------------------------------------ */
/*
 * A user-space subsystem (server) and one client share a memfd region created
 * by the server, sealed against resizing (F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL,
 * so neither side can make the other SIGBUS), and passed with SCM_RIGHTS.
 *
 *   [ header (struct sr_uring_region) | SQE array | CQE array |
 *     send slots (nslots * slot_size) | result slots (nslots * slot_size) ]
 *
 * Every shared index lives on its own cache line and has exactly one writer:
 *
 *   field        writer   reader   ordering
 *   sq_tail      client   server   client store-release after writing SQEs;
 *                                  server load-acquire before reading them
 *   sq_head      server   client   server store-release after copying SQEs out;
 *                                  client load-acquire before reusing entries
 *   sq_flags     server   client   SR_SQ_NEED_WAKEUP: server sets it, full fence,
 *                                  re-checks sq_tail, then sleeps; client stores
 *                                  sq_tail, full fence, reads it, rings doorbell
 *   cq_tail      server   client   like sq_tail, other direction
 *   cq_head      client   server   like sq_head, other direction; the rest of
 *                                  its line: the client's counters (statistics
 *                                  queries only, struct sr_cq_head_line)
 *   cq_flags     client   server   SR_CQ_ARMED: client sets it, full fence,
 *                                  re-checks cq_tail, then sleeps; server stores
 *                                  cq_tail, full fence, reads it, signals eventfd
 *   state        server   client   SR_STATE_* (informational; death is detected
 *                                  through the attach socket, not this word)
 *
 * Each side keeps a private copy of the indices it writes and never reads its
 * own index back from shared memory (the peer could have scribbled on it).
 * Everything a side reads from the region is validated before use: a client
 * can corrupt only its own queue pair (docs/design.md invariant 8).
 *
 * SQE fields for user-space ops ("subring op ABI", version 1; SQEs are 128
 * bytes so that 80 bytes of payload travel inline):
 *
 *   opcode       index of the op in the subsystem's op table (sent at attach)
 *   off          arg0 (64-bit)         addr   arg1 (64-bit)
 *   len          payload length
 *   op_flags     SR_PAYLOAD_* location | SR_OPF_RESULT (write a result into the
 *                op's result slot)
 *   fd           the op's data slot (index of its send/result slot), < nslots
 *   buf_index    pool buffer index (SR_PAYLOAD_POOL)
 *   file_index   byte offset in that pool buffer (SR_PAYLOAD_POOL)
 *   cmd[0..80)   inline payload (SR_PAYLOAD_INLINE)
 *   personality  record size, with SR_OPF_RECORDS: the payload is len /
 *                personality records of that size, each one call of a vector
 *                op; the op completes once, res = the number of records
 *                (or -errno for all of them)
 *
 * CQE: user_data, res (>= 0 result / length of result data, or -errno),
 * flags: IORING_CQE_F_BUFFER + (slot << 16) when result bytes were written
 * into the op's result slot; SR_CQE_F_ERRTEXT when res < 0 and the result slot
 * holds the handler's exception text (u16 length, then UTF-8 bytes).
 */
#define SR_URING_MAGIC        0x474e5253u   /* "SRNG" little-endian */
#define SR_URING_ABI_VERSION  1
#define SR_CACHELINE          64

#define SR_SQ_NEED_WAKEUP     (1U << 0)
#define SR_CQ_ARMED           (1U << 0)
#define SR_STATE_RUNNING      1
#define SR_STATE_STOPPED      2

#define SR_PAYLOAD_NONE       0
#define SR_PAYLOAD_INLINE     1
#define SR_PAYLOAD_SLOT       2
#define SR_PAYLOAD_POOL       3
#define SR_PAYLOAD_MASK       3
#define SR_OPF_RESULT         (1U << 2)
#define SR_OPF_RECORDS        (1U << 3)     /* packed records (vector ops only) */
#define SR_RECORDS_MAX        4096          /* records in one op (bounds a Batch) */
#define SR_OPF_KNOWN          (SR_PAYLOAD_MASK | SR_OPF_RESULT | SR_OPF_RECORDS)

#define SR_INLINE_MAX         80            /* bytes of cmd[] in a 128-byte SQE */
#define SR_CQE_F_ERRTEXT      (1U << 15)

struct sr_idx { uint32_t v; uint8_t pad[SR_CACHELINE - 4]; };

/* cq_head's cache line.  The client writes cq_head on every reap, so the
 * line is the client's already: its counters ride along at no cost on the
 * data path.  The server reads them only to answer a statistics query (never
 * on the data path) and treats them as untrusted, informational numbers. */
struct sr_cq_head_line {
    uint32_t v;                /* cq_head (client writes, server reads) */
    uint32_t mode;             /* client: its wait mode, SR_MODE_* + 1 (0: unknown) */
    uint64_t submitted;        /* client: SQEs it published */
    uint64_t doorbells;        /* client: times it rang the sleeping server */
    uint64_t poll_hits;        /* client: waits satisfied without sleeping */
    uint64_t sleeps;           /* client: waits that slept */
    uint8_t  pad[SR_CACHELINE - 40];
};
static_assert(sizeof(struct sr_cq_head_line) == SR_CACHELINE, "one cache line");

struct sr_uring_region {
    /* cache lines 0-1: written once by the server before the fd is sent */
    uint32_t magic, version;
    uint32_t sq_entries, cq_entries;   /* powers of two */
    uint32_t sqe_size, cqe_size;       /* 128, 16 */
    uint32_t nslots, slot_size;        /* send/result slots */
    uint64_t sqes_off, cqes_off;       /* byte offsets from the region start */
    uint64_t send_off, result_off;
    uint64_t region_size;
    uint32_t server_pid, client_pid;
    uint8_t  hdr_pad[128 - 80];
    /* cache lines 2..8: one writer each (see table above) */
    struct sr_idx sq_tail;
    struct sr_idx sq_head;
    struct sr_idx sq_flags;
    struct sr_idx cq_tail;
    struct sr_cq_head_line cq_head;
    struct sr_idx cq_flags;
    struct sr_idx state;
};
static_assert(offsetof(struct sr_uring_region, hdr_pad) == 80, "region header fields");
static_assert(offsetof(struct sr_uring_region, sq_tail) == 128, "indices start on line 2");
static_assert(sizeof(struct sr_uring_region) == 64 * 9, "region header size");

#endif /* SUBRING_ABI_H */
