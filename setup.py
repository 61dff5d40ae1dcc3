"""Build the C core (subring._core).  Depends only on libc and kernel headers."""
import os

from setuptools import Extension, setup

core = Extension(
    "subring._core",
    sources=[
        "src/subring/_core/module.c",
        "src/subring/_core/objects.c",
        "src/subring/_core/kernel.c",
        "src/subring/_core/pykring.c",
        "src/subring/_core/server_queue.c",
        "src/subring/_core/server_request.c",
        "src/subring/_core/server_handlers.c",
        "src/subring/_core/server_loop.c",
        "src/subring/_core/notify.c",
        "src/subring/_core/lease.c",
        "src/subring/_core/aiter.c",
        "src/subring/_core/fuse_conn.c",
        "src/subring/_core/fuse_classic.c",
        "src/subring/_core/fuse_uring.c",
        "src/subring/_core/fuse_dispatch.c",
        "src/subring/_core/fuse_reply.c",
    ],
    depends=[
        "src/subring/_core/abi.h",
        "src/subring/_core/arch.h",
        "src/subring/_core/ring.h",
        "src/subring/_core/server.h",
        "src/subring/_core/core.h",
        "src/subring/_core/optable.h",
        "src/subring/_core/kernel.h",
        "src/subring/_core/fuse_abi.h",
        "src/subring/_core/fuse.h",
    ],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
    # SUBRING_DEBUG_HOOKS=1: random delays between the wake-up protocol's steps (ring.h)
    define_macros=[("SUBRING_DEBUG_HOOKS", "1")] if os.environ.get("SUBRING_DEBUG_HOOKS") else [],
)

setup(ext_modules=[core])
