"""Build the C core (subring._core).  Depends only on libc and kernel headers."""
from setuptools import Extension, setup

core = Extension(
    "subring._core",
    sources=[
        "src/subring/_core/module.c",
        "src/subring/_core/objects.c",
        "src/subring/_core/kernel.c",
        "src/subring/_core/pykring.c",
        "src/subring/_core/pyserver.c",
        "src/subring/_core/notify.c",
        "src/subring/_core/lease.c",
    ],
    depends=[
        "src/subring/_core/abi.h",
        "src/subring/_core/arch.h",
        "src/subring/_core/ring.h",
        "src/subring/_core/core.h",
        "src/subring/_core/optable.h",
        "src/subring/_core/kernel.h",
    ],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
)

setup(ext_modules=[core])
