"""Build and load fuzz/ring_model.c (ring.h's index arithmetic against a
64-bit model) as a ctypes library; None when no C compiler is available."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile

from reliab_util import ROOT

SRC = ROOT / "fuzz" / "ring_model.c"
CORE = ROOT / "src" / "subring" / "_core"


def build(out_dir: str | None = None, extra: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        return None
    out_dir = out_dir or tempfile.mkdtemp(prefix="ring-model-")
    lib = os.path.join(out_dir, "ring_model.so")
    # under scripts/sanitize.sh the model is built with the same sanitizers
    extra = (*extra, *os.environ.get("SUBRING_SANITIZE_CFLAGS", "").split())
    subprocess.run([cc, "-O1", "-g", "-std=gnu11", "-Wall", "-Werror", "-shared", "-fPIC",
                    f"-I{CORE}", *extra, "-o", lib, str(SRC)], check=True,
                   capture_output=True, timeout=120)
    so = ctypes.CDLL(lib)
    so.sr_model_run.restype = ctypes.c_int
    so.sr_model_run.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_char_p,
                                ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    so.sr_model_validate.restype = None
    so.sr_model_validate.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                                     ctypes.c_uint32, ctypes.POINTER(ctypes.c_int64),
                                     ctypes.POINTER(ctypes.c_int64)]
    return so


def run(so, start: int, log2_entries: int, prog: bytes) -> tuple[int, str]:
    err = ctypes.create_string_buffer(256)
    rc = so.sr_model_run(start, log2_entries, prog, len(prog), err, len(err))
    return rc, err.value.decode()


def validate(so, start: int, log2_entries: int, sq_delta: int, cq_delta: int):
    a, s = ctypes.c_int64(), ctypes.c_int64()
    so.sr_model_validate(start, log2_entries, sq_delta, cq_delta, ctypes.byref(a),
                         ctypes.byref(s))
    return a.value, s.value


THREADS_SRC = ROOT / "fuzz" / "ring_threads.c"


def build_threads(out_dir: str, sanitize: str = "") -> str | None:
    """fuzz/ring_threads.c as an executable (``sanitize``: e.g. "thread");
    None without a compiler or that sanitizer's runtime."""
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        return None
    exe = os.path.join(out_dir, f"ring_threads{'-' + sanitize if sanitize else ''}")
    flags = [f"-fsanitize={sanitize}", "-Wno-tsan"] if sanitize else []
    r = subprocess.run([cc, "-O1", "-g", "-std=gnu11", "-pthread", f"-I{CORE}", *flags,
                        "-o", exe, str(THREADS_SRC)], capture_output=True, timeout=120,
                       check=False)
    return exe if r.returncode == 0 else None
