"""The C core compiles for aarch64 (scripts/cross_compile.sh), with no warning
that the host compiler does not also give.

Needs Debian's cross compiler (``apt-get install gcc-aarch64-linux-gnu
libc6-dev-arm64-cross``, or ``scripts/cross_compile.sh --install``); skipped
with that reason when it is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cross_compile.sh"
CORE = ROOT / "src" / "subring" / "_core"
CROSS_CC = "aarch64-linux-gnu-gcc"
EM_AARCH64 = 183   # ELF e_machine

needs_cross_cc = pytest.mark.skipif(
    shutil.which(CROSS_CC) is None,
    reason=f"{CROSS_CC} not installed (Debian: apt-get install gcc-aarch64-linux-gnu "
           "libc6-dev-arm64-cross, or scripts/cross_compile.sh --install)")


def run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["sh", str(SCRIPT), *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def elf_machine(path: Path) -> tuple[int, int, int]:
    """(EI_CLASS, EI_DATA, e_machine) of an ELF file: 2 = 64-bit, 1 = little-endian."""
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path.name} is not an ELF object"
    return head[4], head[5], int.from_bytes(head[18:20], "little")


@needs_cross_cc
@pytest.mark.timeout(900)
def test_core_compiles_for_aarch64_without_new_warnings(tmp_path: Path) -> None:
    res = run_script("--outdir", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "aarch64-only 0" in res.stdout, res.stdout
    sources = sorted(p.stem for p in CORE.glob("*.c"))
    objects = sorted(p.stem for p in tmp_path.glob("*.o"))
    assert objects == sources
    for obj in tmp_path.glob("*.o"):
        assert elf_machine(obj) == (2, 1, EM_AARCH64), obj.name


@needs_cross_cc
@pytest.mark.timeout(300)
def test_an_aarch64_only_warning_fails_the_check(tmp_path: Path) -> None:
    # char is unsigned on aarch64: this comparison is "always false" there only.
    src = tmp_path / "src"
    src.mkdir()
    (src / "signed_char.c").write_text(
        "#include <stdio.h>\n"
        "int sr_sample(void) { char c = (char)getchar(); return c < 0; }\n")
    res = run_script("--src", str(src), "--outdir", str(tmp_path / "obj"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "signed_char.c:2" in res.stderr and "aarch64-only 1" in res.stdout


@needs_cross_cc
@pytest.mark.timeout(300)
def test_an_x86_only_builtin_fails_the_check(tmp_path: Path) -> None:
    # What core.h did before arch.h: on aarch64 this is an undeclared function
    # (only a warning in C) that would fail at import as an undefined symbol.
    src = tmp_path / "src"
    src.mkdir()
    (src / "spin.c").write_text("void sr_spin(void) { __builtin_ia32_pause(); }\n")
    res = run_script("--src", str(src), "--outdir", str(tmp_path / "obj"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "spin.c: FAILED" in res.stdout and "__builtin_ia32_pause" in res.stderr


def test_a_missing_cross_compiler_is_reported_not_crashed(tmp_path: Path) -> None:
    res = run_script("--cc", str(tmp_path / "no-such-gcc"), timeout=60)
    assert res.returncode == 2
    assert "not found" in res.stderr and "--install" in res.stderr
