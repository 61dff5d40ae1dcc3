"""io_uring opcodes and flags, named as in the kernel's ``<linux/io_uring.h>``.

These are the numbers of the ABI that every subring peer speaks; the C core's
``abi.h`` holds the same values with ``static_assert`` checks.  The enums are
``IntEnum``/``IntFlag`` so they print nicely and can be passed anywhere an int
is expected.
"""

from __future__ import annotations

import enum


class Op(enum.IntEnum):
    """``IORING_OP_*`` opcodes."""

    NOP = 0
    READV = 1
    WRITEV = 2
    FSYNC = 3
    READ_FIXED = 4
    WRITE_FIXED = 5
    POLL_ADD = 6
    POLL_REMOVE = 7
    SYNC_FILE_RANGE = 8
    SENDMSG = 9
    RECVMSG = 10
    TIMEOUT = 11
    TIMEOUT_REMOVE = 12
    ACCEPT = 13
    ASYNC_CANCEL = 14
    LINK_TIMEOUT = 15
    CONNECT = 16
    FALLOCATE = 17
    OPENAT = 18
    CLOSE = 19
    FILES_UPDATE = 20
    STATX = 21
    READ = 22
    WRITE = 23
    FADVISE = 24
    MADVISE = 25
    SEND = 26
    RECV = 27
    OPENAT2 = 28
    EPOLL_CTL = 29
    SPLICE = 30
    PROVIDE_BUFFERS = 31
    REMOVE_BUFFERS = 32
    TEE = 33
    SHUTDOWN = 34
    RENAMEAT = 35
    UNLINKAT = 36
    MKDIRAT = 37
    SYMLINKAT = 38
    LINKAT = 39
    MSG_RING = 40
    FSETXATTR = 41
    SETXATTR = 42
    FGETXATTR = 43
    GETXATTR = 44
    SOCKET = 45
    URING_CMD = 46
    SEND_ZC = 47
    SENDMSG_ZC = 48
    READ_MULTISHOT = 49
    WAITID = 50
    FUTEX_WAIT = 51
    FUTEX_WAKE = 52
    FUTEX_WAITV = 53
    FIXED_FD_INSTALL = 54
    FTRUNCATE = 55
    BIND = 56
    LISTEN = 57
    RECV_ZC = 58
    EPOLL_WAIT = 59
    READV_FIXED = 60
    WRITEV_FIXED = 61
    PIPE = 62


class SQE(enum.IntFlag):
    """``IOSQE_*``: per-SQE flags, the ``flags=`` argument of every ``prep_*``."""

    FIXED_FILE = 1 << 0      # fd is an index into the registered files
    DRAIN = 1 << 1           # start only after all earlier ops completed
    LINK = 1 << 2            # next op starts after this one succeeds
    HARDLINK = 1 << 3        # next op starts after this one, even if it failed
    ASYNC = 1 << 4           # always punt to a kernel worker
    BUFFER_SELECT = 1 << 5   # pick a buffer from a provided-buffer group
    SKIP_SUCCESS = 1 << 6    # IOSQE_CQE_SKIP_SUCCESS: no CQE if it succeeds


FIXED_FILE = SQE.FIXED_FILE
DRAIN = SQE.DRAIN
LINK = SQE.LINK
HARDLINK = SQE.HARDLINK
ASYNC = SQE.ASYNC
BUFFER_SELECT = SQE.BUFFER_SELECT
SKIP_SUCCESS = SQE.SKIP_SUCCESS


class Setup(enum.IntFlag):
    """``IORING_SETUP_*`` flags (KernelRing takes them as keyword arguments)."""

    IOPOLL = 1 << 0
    SQPOLL = 1 << 1
    SQ_AFF = 1 << 2
    CQSIZE = 1 << 3
    CLAMP = 1 << 4
    ATTACH_WQ = 1 << 5
    R_DISABLED = 1 << 6
    SUBMIT_ALL = 1 << 7
    COOP_TASKRUN = 1 << 8
    TASKRUN_FLAG = 1 << 9
    SQE128 = 1 << 10
    CQE32 = 1 << 11
    SINGLE_ISSUER = 1 << 12
    DEFER_TASKRUN = 1 << 13
    NO_MMAP = 1 << 14
    REGISTERED_FD_ONLY = 1 << 15
    NO_SQARRAY = 1 << 16
    HYBRID_IOPOLL = 1 << 17


class Feature(enum.IntFlag):
    """``IORING_FEAT_*`` bits reported by the kernel at setup."""

    SINGLE_MMAP = 1 << 0
    NODROP = 1 << 1
    SUBMIT_STABLE = 1 << 2
    RW_CUR_POS = 1 << 3
    CUR_PERSONALITY = 1 << 4
    FAST_POLL = 1 << 5
    POLL_32BITS = 1 << 6
    SQPOLL_NONFIXED = 1 << 7
    EXT_ARG = 1 << 8
    NATIVE_WORKERS = 1 << 9
    RSRC_TAGS = 1 << 10
    CQE_SKIP = 1 << 11
    LINKED_FILE = 1 << 12
    REG_REG_RING = 1 << 13
    RECVSEND_BUNDLE = 1 << 14
    MIN_TIMEOUT = 1 << 15
    RW_ATTR = 1 << 16
    NO_IOWAIT = 1 << 17


class CQEFlag(enum.IntFlag):
    """``IORING_CQE_F_*``: ``Completion.flags``."""

    BUFFER = 1 << 0          # upper 16 bits hold a provided-buffer id
    MORE = 1 << 1            # a multishot op will post more completions
    SOCK_NONEMPTY = 1 << 2   # more data is waiting on the socket
    NOTIF = 1 << 3           # zero-copy send notification


CQE_BUFFER_SHIFT = 16

# sqe->fsync_flags
FSYNC_DATASYNC = 1 << 0
# sqe->timeout_flags
TIMEOUT_ABS = 1 << 0
TIMEOUT_UPDATE = 1 << 1
TIMEOUT_BOOTTIME = 1 << 2
TIMEOUT_REALTIME = 1 << 3
LINK_TIMEOUT_UPDATE = 1 << 4
TIMEOUT_ETIME_SUCCESS = 1 << 5
TIMEOUT_MULTISHOT = 1 << 6
# poll_add command flags (in sqe->len)
POLL_ADD_MULTI = 1 << 0
# sqe->cancel_flags
ASYNC_CANCEL_ALL = 1 << 0
ASYNC_CANCEL_FD = 1 << 1
ASYNC_CANCEL_ANY = 1 << 2
ASYNC_CANCEL_FD_FIXED = 1 << 3
# send/recv flags (in sqe->ioprio)
RECVSEND_POLL_FIRST = 1 << 0
RECV_MULTISHOT = 1 << 1
RECVSEND_FIXED_BUF = 1 << 2
# accept flags (in sqe->ioprio)
ACCEPT_MULTISHOT = 1 << 0
# msg_ring
MSG_DATA = 0
MSG_RING_CQE_SKIP = 1 << 0
MSG_RING_FLAGS_PASS = 1 << 1
# direct descriptors
FILE_INDEX_ALLOC = 0xFFFFFFFF
SPLICE_F_FD_IN_FIXED = 1 << 31

# statx(2)
STATX_BASIC_STATS = 0x7FF
STATX_BTIME = 0x800
STATX_ALL = 0xFFF
