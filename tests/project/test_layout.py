"""The C core's layout rules (issue 9): files split by role, ring.h owns the indices.

- No C file under src/subring/_core is longer than MAX_LINES: a file that grows
  past it holds more than one role and should be split (ring_backend.h lists
  who does what).
- Only ring.h touches a ring index.  A .c file may *set up* the pointers to the
  index words (kernel.c after io_uring_setup, user_ring.c / server_queue.c
  after mapping a region), but reads and writes go through ring.h's accessors,
  which carry the memory ordering and its reason.  So in a .c file:
    * `khead` / `ktail` (and the flag / counter words `kflags`, `kdropped`,
      `koverflow`) appear only as the member being assigned
      (`sq->khead = ...`, `.ktail = &...`);
    * the shared region's index words (`sq_head.v`, `sq_tail.v`, `cq_head.v`,
      `cq_tail.v`, abi.h) appear only with their address taken (`&g->sq_tail.v`);
    * no entry address is computed by hand (`sqes + ...` / `cqes + ...`:
      sr_sq_entry / sr_cq_at).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "src" / "subring" / "_core"
MAX_LINES = 1100

# Files still being split by another piece of work, with the reason.  Remove an
# entry as soon as that work lands.
TOO_LONG_ALLOWED: set[str] = set()
INDEX_RULE_ALLOWED: set[str] = set()

_MEMBER = re.compile(r"\bk(head|tail|flags|dropped|overflow)\b")
_MEMBER_ASSIGNED = re.compile(r"\bk(head|tail|flags|dropped|overflow)\b\s*=(?!=)")
_REGION_WORD = re.compile(r"\b(sq|cq)_(head|tail)\.v\b")
_REGION_WORD_ADDRESS = re.compile(r"=\s*&\s*[\w\[\]>.-]*\b(sq|cq)_(head|tail)\.v\b")
# (not `cq_off.cqes + ...`: a mapping length from io_uring_params, kernel.c)
_ENTRY_BY_HAND = re.compile(r"(?<!_off)(\.|->)(sqes|cqes)\s*\+")


def _c_files() -> list[Path]:
    files = sorted(CORE.glob("*.c"))
    assert files, f"no C files under {CORE}"
    return files


def _code(line: str) -> str:
    """The line without its comments and string literals (good enough for the
    core's style: no comment markers inside strings)."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"/\*.*?\*/", "", line)
    line = re.sub(r"//.*", "", line)
    if line.lstrip().startswith(("*", "/*")):
        return ""
    return line


def index_violations(path: Path) -> list[str]:
    """Lines of `path` that touch a ring index outside ring.h."""
    out = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = _code(raw)
        if len(_MEMBER.findall(line)) > len(_MEMBER_ASSIGNED.findall(line)):
            out.append(f"{path.name}:{n}: reads a k* index/flag word: {raw.strip()}")
        if len(_REGION_WORD.findall(line)) > len(_REGION_WORD_ADDRESS.findall(line)):
            out.append(f"{path.name}:{n}: touches a region index word: {raw.strip()}")
        if _ENTRY_BY_HAND.search(line):
            out.append(f"{path.name}:{n}: computes an entry address: {raw.strip()}")
    return out


@pytest.mark.parametrize("path", _c_files(), ids=lambda p: p.name)
def test_c_file_is_at_most_max_lines(path: Path) -> None:
    n = len(path.read_text().splitlines())
    if path.name in TOO_LONG_ALLOWED:
        pytest.skip(f"{path.name} ({n} lines) is allow-listed: being split elsewhere")
    assert n <= MAX_LINES, (
        f"{path.name} has {n} lines (> {MAX_LINES}): split it by role "
        "(see the file list in ring_backend.h)")


def test_too_long_allow_list_is_not_stale() -> None:
    """An allow-listed file that is gone or short again must leave the list."""
    for name in TOO_LONG_ALLOWED:
        p = CORE / name
        if p.exists():
            assert len(p.read_text().splitlines()) > MAX_LINES, f"{name}: drop it from the list"


@pytest.mark.parametrize("path", _c_files(), ids=lambda p: p.name)
def test_only_ring_h_touches_ring_indices(path: Path) -> None:
    if path.name in INDEX_RULE_ALLOWED:
        pytest.skip(f"{path.name} is allow-listed (see INDEX_RULE_ALLOWED)")
    assert index_violations(path) == []


def test_the_index_rule_catches_what_it_should(tmp_path: Path) -> None:
    """The patterns are not vacuous: each kind of direct access is caught, and
    pointer setup is not."""
    bad = tmp_path / "bad.c"
    bad.write_text(
        "uint32_t h = sr_load_acquire(r->q.sq.khead);\n"
        "to_submit = published - *sq->ktail;\n"
        "x = sr_load_acquire(&g->sq_tail.v) - q->sq.head;\n"
        "sqe = (void *)(sq->sqes + (idx << 6));\n"
        "if (a == cq->khead) {}\n"
        "p = cq->cqes + off;\n")
    assert [v.split(":")[1] for v in index_violations(bad)] == ["1", "2", "3", "4", "5", "6"]
    good = tmp_path / "good.c"
    good.write_text(
        "sq->khead    = (uint32_t *)(sqb + p->sq_off.head);\n"
        "q->sq = (struct sr_sq_cons){.ktail = &g->sq_tail.v, .khead = &g->sq_head.v,\n"
        "/* a comment about ->khead and sq_tail.v */\n"
        'PyErr_SetString(e, "ktail");\n'
        "size_t cq_len = p->cq_off.cqes + ((size_t)n << 4);\n")
    assert index_violations(good) == []
