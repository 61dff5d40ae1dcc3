"""ABI facts that Python repeats from the C core agree with the C definitions.

The C side is the source of truth: ``src/subring/_core/abi.h`` (io_uring uapi
copy + the user-ring region), the opcode-name table in the core's C files,
and, with the FUSE package, ``fuse_abi.h`` / ``fuse_dispatch.c``.  Each Python copy is
checked name by name and number by number:

* ``subring.ops``: opcodes, SQE / setup / feature / CQE flags, per-op flags;
* the attach reply's ``abi`` and the region header's version;
* the test helpers' copy of the region layout and ring constants;
* ``subring.fuse``: operation names, mount flags;
* abi.h and fuse_abi.h themselves against the build machine's kernel uapi
  headers, for every name both define (those are older, so only a subset).

Values are read from the headers textually *and* through the C compiler
(``test_header_reader_agrees_with_the_compiler``), so a reader bug cannot hide
a mismatch.
"""

from __future__ import annotations

import enum
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cheaders import (
    c_compiler,
    c_string_array,
    compile_values,
    header_names,
    parse_constants,
)

import subring
from subring import ops

CORE = Path(subring.__file__).resolve().parent / "_core"
ABI_H = CORE / "abi.h"
TESTS = Path(__file__).resolve().parents[1]

needs_cc = pytest.mark.skipif(c_compiler() is None, reason="no C compiler on this machine")


@pytest.fixture(scope="module")
def abi() -> dict[str, int]:
    return parse_constants(ABI_H)


def _load_test_module(name: str) -> ModuleType:
    """A helper module of the test suite, wherever the suite keeps it."""
    if name in sys.modules:
        return sys.modules[name]
    found = sorted(TESTS.rglob(f"{name}.py"))
    if not found:
        pytest.skip(f"{name}.py not found under tests/")
    spec = importlib.util.spec_from_file_location(name, found[0])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------
# the header reader itself
# ---------------------------------------------------------------------------

@needs_cc
def test_header_reader_agrees_with_the_compiler(abi: dict[str, int], tmp_path: Path) -> None:
    assert len(abi) > 150, "abi.h reader found too few constants"
    got = compile_values(sorted(abi), ['"abi.h"'], tmp_path, [CORE])
    assert {n: got[n] for n in abi} == abi


# ---------------------------------------------------------------------------
# subring.ops vs abi.h
# ---------------------------------------------------------------------------

def _c_group(abi: dict[str, int], prefix: str, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    return {n[len(prefix):]: v for n, v in abi.items()
            if n.startswith(prefix) and n not in exclude}


def test_opcodes_agree_name_by_name(abi: dict[str, int]) -> None:
    c = _c_group(abi, "IORING_OP_", exclude=("IORING_OP_LAST_KNOWN",))
    py = {m.name: m.value for m in ops.Op}
    assert py == c
    assert abi["IORING_OP_LAST_KNOWN"] == max(c.values()) + 1


def test_opcode_name_table_in_c_agrees_with_ops() -> None:
    """The C table behind Completion.opname and error messages."""
    tables = [p for p in sorted(CORE.glob("*.c")) if "opnames[IORING_OP_LAST_KNOWN]" in
              p.read_text().replace(" ", "")]
    assert len(tables) == 1, f"expected one opnames[] table, found {tables}"
    names = [s.strip().strip('"') for s in c_string_array(tables[0], "opnames").split(",")
             if s.strip()]
    assert names == [m.name.lower() for m in sorted(ops.Op)]


# Python member name -> C name, where they are not PREFIX + member name.
SQE_ALIASES = {"DRAIN": "IO_DRAIN", "LINK": "IO_LINK", "HARDLINK": "IO_HARDLINK",
               "SKIP_SUCCESS": "CQE_SKIP_SUCCESS"}
# Feature bits newer than abi.h: reported by the kernel, never used by the core.
# Remove a name here when abi.h gains it (the test then checks its value).
FEATURES_NOT_IN_ABI_H = {"RECVSEND_BUNDLE", "MIN_TIMEOUT", "RW_ATTR", "NO_IOWAIT"}


@pytest.mark.parametrize("flag, prefix, aliases, python_only", [
    (ops.SQE, "IOSQE_", SQE_ALIASES, set()),
    (ops.Setup, "IORING_SETUP_", {}, set()),
    (ops.Feature, "IORING_FEAT_", {}, FEATURES_NOT_IN_ABI_H),
    (ops.CQEFlag, "IORING_CQE_F_", {}, set()),
], ids=["SQE", "Setup", "Feature", "CQEFlag"])
def test_flag_enums_agree_name_by_name(abi: dict[str, int], flag: type[enum.IntFlag],
                                       prefix: str, aliases: dict[str, str],
                                       python_only: set[str]) -> None:
    c = _c_group(abi, prefix)
    py = {aliases.get(m.name, m.name): m.value for m in flag.__members__.values()}
    assert python_only <= py.keys()
    assert not python_only & c.keys(), f"now in abi.h, drop from the exception list: " \
                                       f"{python_only & c.keys()}"
    assert {n: v for n, v in py.items() if n not in python_only} == c
    # the newer bits at least do not reuse a bit abi.h names
    assert not {py[n] for n in python_only} & set(c.values())


def _module_int_constants() -> dict[str, int]:
    return {n: v for n, v in vars(ops).items()
            if n.isupper() and type(v) is int}


def test_per_op_flags_agree(abi: dict[str, int]) -> None:
    """Every plain int constant in subring.ops that abi.h also defines (as
    IORING_<name> or <name>) has the same value; the rest are listed."""
    checked, not_in_abi = [], []
    for name, value in _module_int_constants().items():
        cname = next((c for c in (f"IORING_{name}", name) if c in abi), None)
        if cname is None:
            not_in_abi.append(name)
            continue
        assert value == abi[cname], f"ops.{name} = {value:#x}, {cname} = {abi[cname]:#x}"
        checked.append(name)
    assert len(checked) >= 20
    # statx(2) masks come from <linux/stat.h>, not abi.h: checked below.
    assert sorted(not_in_abi) == ["STATX_ALL", "STATX_BASIC_STATS", "STATX_BTIME"]


@needs_cc
def test_statx_constants_and_layout_agree_with_linux_stat_h(tmp_path: Path) -> None:
    want = {"STATX_BASIC_STATS": ops.STATX_BASIC_STATS, "STATX_BTIME": ops.STATX_BTIME,
            "STATX_ALL": ops.STATX_ALL}
    got = compile_values(list(want), ["<linux/stat.h>"], tmp_path)
    assert got == want
    # KernelRing.Statx reads fields at fixed offsets of struct statx.
    from subring.kernel import Statx

    fields = {"stx_mask": 0, "stx_blksize": 4, "stx_attributes": 8, "stx_nlink": 16,
              "stx_uid": 20, "stx_gid": 24, "stx_mode": 28, "stx_ino": 32, "stx_size": 40,
              "stx_blocks": 48, "stx_atime": 64, "stx_btime": 80, "stx_ctime": 96,
              "stx_mtime": 112, "stx_rdev_major": 128, "stx_rdev_minor": 132,
              "stx_dev_major": 136, "stx_dev_minor": 140}
    exprs = [f"offsetof(struct statx, {f})" for f in fields] + ["sizeof(struct statx)"]
    got = compile_values(exprs, ["<linux/stat.h>"], tmp_path)
    assert {f: got[f"offsetof(struct statx, {f})"] for f in fields} == fields
    assert got["sizeof(struct statx)"] == len(Statx())
    # and the reader's offsets are those: a known statx decoded at those offsets
    import struct
    s = Statx()
    struct.pack_into("I", s, fields["stx_uid"], 1234)
    struct.pack_into("H", s, fields["stx_mode"], 0o100644)
    struct.pack_into("qI", s, fields["stx_mtime"], 17, 500_000_000)
    assert (s.uid, s.mode, s.mtime) == (1234, 0o100644, 17.5)


# ---------------------------------------------------------------------------
# the attach ABI version
# ---------------------------------------------------------------------------

def test_attach_abi_version_agrees_with_the_region_header(abi: dict[str, int],
                                                           tmp_path: Path) -> None:
    """The server's attach reply names the same ring ABI version that the C
    core writes into (and demands from) the region header."""
    helpers = _load_test_module("subsys_helpers")
    version = abi["SR_URING_ABI_VERSION"]
    with helpers.start_server(tmp_path / "abi.sock") as _srv:
        raw = helpers.RawClient(str(tmp_path / "abi.sock"))
        try:
            assert raw.reply["abi"] == version
            assert (raw.magic, raw.version) == (abi["SR_URING_MAGIC"], version)
        finally:
            raw.close()
    from subring import _core
    from subring.subsystem import attach
    assert _core.URING_ABI_VERSION == attach.ABI_VERSION == version


# ---------------------------------------------------------------------------
# the test helpers' copy of the region layout
# ---------------------------------------------------------------------------

REGION_INDICES = {"OFF_SQ_TAIL": "sq_tail", "OFF_SQ_HEAD": "sq_head",
                  "OFF_SQ_FLAGS": "sq_flags", "OFF_CQ_TAIL": "cq_tail",
                  "OFF_CQ_HEAD": "cq_head", "OFF_CQ_FLAGS": "cq_flags", "OFF_STATE": "state"}
HDR_FIELDS = ["magic", "version", "sq_entries", "cq_entries", "sqe_size", "cqe_size",
              "nslots", "slot_size", "sqes_off", "cqes_off", "send_off", "result_off",
              "region_size", "server_pid", "client_pid"]
SQE_FIELDS = ["opcode", "flags", "ioprio", "fd", "off", "addr", "len", "op_flags",
              "user_data", "buf_index", "personality", "file_index", "addr3", "__pad2"]
CQE_FIELDS = ["user_data", "res", "flags"]


def _struct_offsets(fmt: str) -> list[int]:
    """Byte offset of each field of a struct.Struct format ('<' + codes)."""
    import struct
    codes = fmt.lstrip("<>=!@")
    return [struct.calcsize(fmt[0] + codes[:i]) for i in range(len(codes))]


@needs_cc
def test_region_layout_in_test_helpers_agrees_with_abi_h(tmp_path: Path) -> None:
    h = _load_test_module("subsys_helpers")
    exprs = [f"offsetof(struct sr_uring_region, {f})" for f in REGION_INDICES.values()]
    exprs += [f"offsetof(struct sr_uring_region, {f})" for f in HDR_FIELDS]
    exprs += [f"offsetof(struct io_uring_sqe, {f})" for f in SQE_FIELDS]
    exprs += [f"offsetof(struct io_uring_cqe, {f})" for f in CQE_FIELDS]
    got = compile_values(exprs, ['"abi.h"'], tmp_path, [CORE])
    for py, field in REGION_INDICES.items():
        assert getattr(h, py) == got[f"offsetof(struct sr_uring_region, {field})"], py
    assert _struct_offsets(h.HDR.format) == [
        got[f"offsetof(struct sr_uring_region, {f})"] for f in HDR_FIELDS]
    assert _struct_offsets(h.SQE.format) == [
        got[f"offsetof(struct io_uring_sqe, {f})"] for f in SQE_FIELDS]
    assert _struct_offsets(h.CQE.format) == [
        got[f"offsetof(struct io_uring_cqe, {f})"] for f in CQE_FIELDS]


def _helper_constants() -> list[str]:
    try:
        h = _load_test_module("subsys_helpers")
    except pytest.skip.Exception:
        return []
    return sorted(n for n, v in vars(h).items()
                  if n.startswith(("SR_", "IORING_")) and type(v) is int)


@pytest.mark.parametrize("name", _helper_constants())
def test_ring_constants_in_test_helpers_agree_with_abi_h(abi: dict[str, int], name: str) -> None:
    h = _load_test_module("subsys_helpers")
    assert getattr(h, name) == abi[name]


# ---------------------------------------------------------------------------
# abi.h vs the build machine's kernel uapi header
# ---------------------------------------------------------------------------

@needs_cc
def test_abi_h_agrees_with_the_system_io_uring_h(abi: dict[str, int], tmp_path: Path) -> None:
    """abi.h is a copy of include/uapi/linux/io_uring.h (newer than the build
    machine's); every name both define has the same value."""
    try:
        system = header_names("<linux/io_uring.h>", tmp_path)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"<linux/io_uring.h> not usable here: {e}")
    common = sorted(n for n in abi if n in system)
    assert len(common) > 100, "too few common names: the comparison would prove little"
    got = compile_values(common, ["<linux/io_uring.h>"], tmp_path)
    assert {n: abi[n] for n in common} == got


# ---------------------------------------------------------------------------
# FUSE: subring.fuse vs fuse_abi.h / fuse_dispatch.c
# ---------------------------------------------------------------------------

FUSE_ABI_H = CORE / "fuse_abi.h"
FUSE_C = CORE / "fuse_dispatch.c"   # fuse_op_names[]


def _fuse() -> ModuleType:
    if not FUSE_ABI_H.exists() or importlib.util.find_spec("subring.fuse") is None:
        pytest.skip("subring.fuse is not part of this tree")
    import subring.fuse
    return subring.fuse


def test_fuse_operation_names_agree_with_the_c_table() -> None:
    _fuse()
    from subring.fuse.operations import OPERATIONS

    consts = parse_constants(FUSE_ABI_H)
    table: dict[str, int] = {}   # name -> lowest opcode naming it
    for entry in c_string_array(FUSE_C, "fuse_op_names").split(","):
        if not entry.strip():
            continue
        key, _, name = entry.partition("=")
        opcode = consts[key.strip().strip("[]").strip()]
        name = name.strip().strip('"')
        table[name] = min(opcode, table.get(name, opcode))
    assert set(OPERATIONS) == set(table)
    assert list(OPERATIONS) == sorted(table, key=table.__getitem__), "not in FUSE order"


@needs_cc
def test_fuse_abi_h_agrees_with_the_system_fuse_h(tmp_path: Path) -> None:
    _fuse()
    consts = parse_constants(FUSE_ABI_H)
    try:
        system = header_names("<linux/fuse.h>", tmp_path)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"<linux/fuse.h> not usable here: {e}")
    # The minor version is ours to choose (the newest we implement), not a copy.
    common = sorted(n for n in consts if n in system and n != "FUSE_KERNEL_MINOR_VERSION")
    assert len(common) > 40
    got = compile_values(common, ["<linux/fuse.h>"], tmp_path)
    assert {n: consts[n] for n in common} == got


@needs_cc
def test_fuse_mount_flags_agree_with_sys_mount_h(tmp_path: Path) -> None:
    _fuse()
    from subring.fuse import session

    names = [n for n in ("MS_RDONLY", "MS_NOSUID", "MS_NODEV", "MNT_FORCE", "MNT_DETACH")
             if hasattr(session, n)]
    if not names:
        pytest.skip("subring.fuse.session keeps no mount flags")
    got = compile_values(names, ["<sys/mount.h>"], tmp_path)
    assert {n: getattr(session, n) for n in names} == got
