"""subring.aio.open and the module helpers, compared with the builtin ``open``,
``os.*`` and (where they should match) aiofiles, on the same data.

Each scenario runs the same steps against the builtin file (the reference),
against ``subring.aio.open`` and -- if importable -- against ``aiofiles.open``,
on separate copies of the same initial file, and compares every returned value
and the final file contents.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import io
import os
import random
import shutil
import sys

import pytest

import subring.aio as aio
from subring.aio import AsyncRing
from subring.aio import files as _files

pytestmark = pytest.mark.timeout(60)

try:
    import aiofiles
except ImportError:  # pragma: no cover - depends on the environment
    aiofiles = None

CHUNK = 1 << 16     # a 64 KiB boundary (boundaries of files.BATCH / LINE_FILL: see below)


def run(fn, *args, timeout: float = 20.0):
    """Run ``fn(*args)`` in a fresh loop, bounded; always close the loop's
    default ring (see test_aio_close: it is not closed by itself)."""

    async def main():
        try:
            async with asyncio.timeout(timeout):
                return await fn(*args)
        finally:
            await aio.close_default_ring()

    return asyncio.run(main())


@pytest.fixture(params=["subring", "aiofiles"])
def impl(request):
    if request.param == "aiofiles" and aiofiles is None:
        pytest.skip("aiofiles is not importable")
    return request.param


def _async_open(impl: str):
    return aio.open if impl == "subring" else aiofiles.open


# ---------------------------------------------------------------------------
# running the same steps on a builtin file and an async file
# ---------------------------------------------------------------------------

def _sync_steps(f, steps):
    out = []
    for name, *args in steps:
        try:
            if name == "iter":
                out.append(list(f))
            elif name == "readinto":
                buf = bytearray(args[0])
                out.append((f.readinto(buf), bytes(buf)))
            else:
                out.append(getattr(f, name)(*args))
        except Exception as e:          # compare the kind of failure too
            out.append(("raised", _kind(e)))
    return out


async def _async_steps(f, steps):
    out = []
    for name, *args in steps:
        try:
            if name == "iter":
                out.append([line async for line in f])
            elif name == "readinto":
                buf = bytearray(args[0])
                out.append((await f.readinto(buf), bytes(buf)))
            else:
                out.append(await getattr(f, name)(*args))
        except Exception as e:
            out.append(("raised", _kind(e)))
    return out


def _kind(e: BaseException):
    return type(e).__name__, getattr(e, "errno", None)


def _compare(tmp_path, initial: bytes | None, mode: str, steps, impl: str, **kw):
    """Run ``steps`` on the builtin file and the async one; compare."""
    ref_path = tmp_path / "ref.dat"
    test_path = tmp_path / f"{impl}.dat"
    for p in (ref_path, test_path):
        if p.exists():
            p.unlink()
        if initial is not None:
            p.write_bytes(initial)
    with open(ref_path, mode, **kw) as f:
        expected = _sync_steps(f, steps)

    async def main():
        async with _async_open(impl)(test_path, mode, **kw) as f:
            return await _async_steps(f, steps)

    got = run(main)
    assert got == expected
    assert test_path.read_bytes() == ref_path.read_bytes()
    return got


INITIAL = ("first line\nsecond, with ümlaut and € and 😀\n\nfourth\r\nfifth\rsixth\n"
           "no newline at the end").encode()


# ---------------------------------------------------------------------------
# modes
# ---------------------------------------------------------------------------

MODE_STEPS = {
    "r": [("read", 4), ("readline",), ("read", 0), ("read", 7), ("readline",), ("read",),
          ("read",)],
    "rb": [("read", 4), ("readline",), ("read", 0), ("read", 7), ("tell",), ("readline",),
           ("read",), ("read",), ("tell",)],
    "w": [("write", "héllo\n"), ("write", "wörld"), ("write", ""), ("tell",)],
    "wb": [("write", b"abc"), ("write", bytearray(b"def")), ("write", memoryview(b"ghi")),
           ("tell",)],
    "a": [("write", "more ü\n"), ("write", "again"), ("tell",)],
    "ab": [("tell",), ("write", b"more"), ("tell",), ("write", b"!"), ("tell",)],
    "r+": [("read",), ("write", "tail\n"), ("seek", 0), ("read",)],
    "rb+": [("read", 3), ("write", b"XY"), ("tell",), ("seek", 0), ("read", 10),
            ("seek", 0, os.SEEK_END), ("write", b"END"), ("seek", 0), ("read",)],
    "w+": [("write", "abc\ndef\n"), ("seek", 0), ("readline",), ("readline",), ("read",)],
    "wb+": [("write", b"abc\ndef\n"), ("seek", 0), ("readline",), ("read",), ("tell",)],
    "a+": [("write", "zz"), ("seek", 0), ("read",)],
    # (no write after a read here: CPython's BufferedRandom then reports its
    # buffer, not the O_APPEND file, so the builtin is no reference for it)
    "ab+": [("write", b"zz"), ("seek", 0), ("read", 5), ("tell",)],
}


@pytest.mark.parametrize("mode", list(MODE_STEPS))
def test_modes_match_builtin(tmp_path, impl, mode):
    _compare(tmp_path, INITIAL, mode, MODE_STEPS[mode], impl)


@pytest.mark.parametrize("mode", ["x", "xb", "x+"])
def test_mode_x(tmp_path, impl, mode):
    data = "created" if "b" not in mode else b"created"
    _compare(tmp_path, None, mode, [("write", data)], impl)
    # an existing file: FileExistsError, file untouched
    p = tmp_path / "exists"
    p.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        open(p, mode)

    async def main():
        with pytest.raises(FileExistsError):
            await _async_open(impl)(p, mode)

    run(main)
    assert p.read_bytes() == b"old"


def test_w_truncates_and_creates(tmp_path):
    p = tmp_path / "t"
    p.write_bytes(b"x" * 1000)

    async def main():
        async with aio.open(p, "w") as f:
            assert await f.write("short") == 5
        async with aio.open(tmp_path / "new", "wb") as f:
            assert await f.write(b"") == 0

    run(main)
    assert p.read_bytes() == b"short"
    assert (tmp_path / "new").read_bytes() == b""


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

READ_STEPS = {
    "rb": [("read", 1), ("readline",), ("readinto", 5), ("readline",), ("read", 3),
           ("readlines",), ("read",), ("readline",), ("readinto", 4)],
    "r": [("read", 1), ("readline",), ("read", 3), ("readlines",), ("read",), ("readline",)],
}


@pytest.mark.parametrize("mode", list(READ_STEPS))
def test_read_apis_match_builtin(tmp_path, impl, mode):
    _compare(tmp_path, INITIAL, mode, READ_STEPS[mode], impl)


@pytest.mark.parametrize("mode", ["r", "rb"])
def test_async_for_and_readlines_match_builtin(tmp_path, impl, mode):
    _compare(tmp_path, INITIAL, mode, [("iter",)], impl)
    _compare(tmp_path, INITIAL, mode, [("readline",), ("iter",)], impl)
    _compare(tmp_path, INITIAL, mode, [("readlines",)], impl)
    _compare(tmp_path, b"", mode, [("readlines",), ("read",), ("readline",), ("iter",)], impl)
    _compare(tmp_path, b"\n\n\n", mode, [("iter",)], impl)


def test_readinto_binary(tmp_path):
    data = bytes(range(256)) * 40
    p = tmp_path / "b"
    p.write_bytes(data)

    async def main():
        async with aio.open(p, "rb") as f:
            buf = bytearray(1000)
            assert await f.readinto(buf) == 1000 and buf == data[:1000]
            line = await f.readline()                       # fills read-ahead
            assert line == data[1000:1000 + data[1000:].index(b"\n") + 1]
            pos = 1000 + len(line)
            mv = memoryview(bytearray(300))
            assert await f.readinto(mv) == 300 and mv.tobytes() == data[pos:pos + 300]
            big = bytearray(len(data))
            n = await f.readinto(big)
            assert n == len(data) - pos - 300 and big[:n] == data[pos + 300:]
            assert await f.readinto(bytearray(10)) == 0     # EOF

    run(main)


# ---------------------------------------------------------------------------
# seek / tell / pread / pwrite / stat / fsync / truncate
# ---------------------------------------------------------------------------

def test_seek_tell_binary_match_builtin(tmp_path, impl):
    steps = [("seek", 10), ("tell",), ("read", 5), ("tell",), ("seek", -3, os.SEEK_CUR),
             ("tell",), ("read", 2), ("seek", -4, os.SEEK_END), ("tell",), ("read",),
             ("tell",), ("seek", 0, os.SEEK_CUR), ("seek", 100, os.SEEK_END), ("read",),
             ("tell",), ("seek", 0), ("readline",), ("tell",), ("seek", 2, os.SEEK_CUR),
             ("read", 3), ("seek", -1), ("tell",)]
    _compare(tmp_path, INITIAL, "rb", steps, impl)


def test_seek_tell_text_match_builtin(tmp_path, impl):
    steps = [("tell",), ("seek", 0, os.SEEK_END), ("tell",), ("read",), ("seek", 0),
             ("tell",), ("read",), ("tell",), ("seek", 5, os.SEEK_CUR),
             ("seek", -1, os.SEEK_END), ("seek", 0, os.SEEK_CUR), ("seek", 3), ("read", 4)]
    _compare(tmp_path, INITIAL, "r", steps, impl)


def test_seek_invalid_whence(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")

    async def main():
        async with aio.open(p, "rb") as f:
            with pytest.raises(ValueError):
                await f.seek(0, 7)

    with open(p, "rb") as f, pytest.raises(ValueError):
        f.seek(0, 7)
    run(main)


def test_regression_text_seek_after_readline(tmp_path, impl):
    """BUG: in text mode, ``seek()`` after a partial read (readline, read(n))
    raises io.UnsupportedOperation("cannot write or seek after a partial text
    read"); the builtin ``open`` and aiofiles simply seek (rewinding after
    reading a header line is common).  The same check makes ``write`` after a
    partial read in "r+" mode fail."""
    _compare(tmp_path, INITIAL, "r", [("readline",), ("seek", 0), ("readline",),
                                      ("read", 3), ("seek", 0, os.SEEK_END), ("read",)], impl)


def test_regression_text_write_after_partial_read_r_plus(tmp_path, impl):
    """"r+" text file, read(5) then write used to raise.  subring writes at
    the logical position (5), as binary files do.  (CPython's TextIOWrapper
    writes after its read-ahead instead -- at EOF for a small file -- a
    documented difference, so this is not compared with the builtin.)"""
    if impl != "subring":
        pytest.skip("subring's documented semantics")
    p = tmp_path / "f.txt"
    p.write_bytes(INITIAL)

    async def main():
        async with aio.open(p, "r+", encoding="utf-8") as f:
            assert await f.read(5) == "first"
            assert await f.tell() == 5
            assert await f.write("XYZ") == 3
            assert await f.tell() == 8
            await f.seek(0)
            return await f.read()

    got = run(main)
    assert p.read_bytes() == INITIAL[:5] + b"XYZ" + INITIAL[8:]
    assert got == (INITIAL[:5] + b"XYZ" + INITIAL[8:]).decode().replace(
        "\r\n", "\n").replace("\r", "\n")


def test_pread_pwrite_keep_position(tmp_path):
    data = bytes(range(200))
    p = tmp_path / "f"
    p.write_bytes(data)

    async def main():
        async with aio.open(p, "rb+") as f:
            assert await f.read(7) == data[:7]
            assert await f.tell() == 7
            assert await f.pread(5, 100) == data[100:105]
            assert await f.pread(50, 190) == data[190:]          # short at EOF
            assert await f.pread(5, 1000) == b""
            assert await f.tell() == 7
            assert await f.pwrite(b"ZZZ", 50) == 3
            assert await f.pwrite(memoryview(b"END"), 200) == 3   # extends
            assert await f.tell() == 7
            assert await f.read(3) == data[7:10]
            assert await f.pread(3, 50) == b"ZZZ"
        async with aio.open(p, "r") as f:       # text-mode files have them too
            assert await f.pread(3, 50) == b"ZZZ"

    run(main)
    expect = bytearray(data)
    expect[50:53] = b"ZZZ"
    assert p.read_bytes() == bytes(expect) + b"END"


def test_stat_fsync_truncate(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")

    async def main():
        async with aio.open(p, "rb+") as f:
            st = await f.stat()
            ost = os.fstat(f.fileno())
            assert st == ost and st.st_size == 10
            assert await f.fsync() is None
            assert await f.flush() is None
            assert await f.truncate(4) == 4
            assert os.path.getsize(p) == 4
            assert await f.tell() == 0                       # truncate keeps the position
            assert await f.read(2) == b"01"
            assert await f.truncate() == 2                   # at the current position
            assert os.path.getsize(p) == 2
            assert (await f.stat()).st_size == 2
            assert await f.truncate(8) == 8                  # extends with zeros

    run(main)
    assert p.read_bytes() == b"01" + bytes(6)
    with open(p, "rb+") as f:
        assert f.truncate(3) == 3 and f.tell() == 0          # same as the builtin


# ---------------------------------------------------------------------------
# text decoding and newlines across chunk boundaries
# ---------------------------------------------------------------------------

def _multibyte_text() -> str:
    parts = ["a" * (CHUNK - 1), "é", "\n"]          # é straddles byte CHUNK
    rnd = random.Random(5)
    alphabet = ["x", "é", "€", "😀", "ü", " "] * 6 + ["\n"]    # ~2.3 bytes a char
    parts.append("".join(rnd.choice(alphabet) for _ in range(CHUNK + CHUNK // 2)))
    parts.append("😀" * 10)
    return "".join(parts)


def _text_scenarios(path, builtin_kw, text_kw):
    """(name, sync fn, async fn) reading the whole file in several ways."""

    def sync_read_n(f, n):
        out = []
        while True:
            s = f.read(n)
            if not s:
                return out
            out.append(s)

    async def async_read_n(f, n):
        out = []
        while True:
            s = await f.read(n)
            if not s:
                return out
            out.append(s)

    return [
        ("read", lambda f: f.read(), lambda f: f.read()),
        ("readlines", lambda f: f.readlines(), lambda f: f.readlines()),
        ("iter", lambda f: list(f), lambda f: _alist(f)),
        ("read1000", lambda f: sync_read_n(f, 1000), lambda f: async_read_n(f, 1000)),
        ("read65537", lambda f: sync_read_n(f, CHUNK + 1), lambda f: async_read_n(f, CHUNK + 1)),
        ("readline+read", lambda f: [f.readline(), f.read(10), f.read()],
         lambda f: _seq(f, [("readline",), ("read", 10), ("read",)])),
    ]


async def _alist(f):
    return [line async for line in f]


async def _seq(f, steps):
    return [await getattr(f, n)(*a) for n, *a in steps]


def _compare_text(tmp_path, raw: bytes, impl: str, **kw):
    p = tmp_path / "text.txt"
    p.write_bytes(raw)
    for name, sync_fn, async_fn in _text_scenarios(p, kw, kw):
        with open(p, "r", encoding="utf-8", **kw) as f:
            expected = sync_fn(f)

        async def main(async_fn=async_fn):
            async with _async_open(impl)(p, "r", encoding="utf-8", **kw) as f:
                return await async_fn(f)

        got = run(main)
        assert got == expected, name


def test_utf8_multibyte_split_across_chunks(tmp_path, impl):
    raw = _multibyte_text().encode("utf-8")
    # make sure the test is about what it says: a character straddles CHUNK
    assert raw[CHUNK - 1:CHUNK + 1] == "é".encode()
    assert len(raw) > 3 * CHUNK          # more boundaries, at random places
    _compare_text(tmp_path, raw, impl)


def test_universal_newlines_across_chunks(tmp_path, impl):
    raw = bytearray(b"l" * (CHUNK - 1))
    raw += b"\r\n"                          # \r is the last byte of chunk 1
    raw += b"m" * (CHUNK - 2) + b"\r"       # lone \r ends chunk 2
    raw += b"next\rmac\r\rwin\r\n\nunix\n"
    raw += "é".encode() * (CHUNK // 2) + b"\r\n"
    raw += b"end\r"                         # \r as the very last byte
    assert raw[CHUNK - 1:CHUNK + 1] == b"\r\n"
    assert raw[2 * CHUNK - 1:2 * CHUNK] == b"\r"
    _compare_text(tmp_path, bytes(raw), impl)


def test_universal_newlines_small(tmp_path, impl):
    _compare_text(tmp_path, b"a\r\nb\rc\nd\r\r\ne\n\r", impl)
    _compare_text(tmp_path, b"\r", impl)
    _compare_text(tmp_path, b"", impl)


def test_regression_newline_empty_splits_on_lone_cr(tmp_path, impl):
    """BUG: ``newline=''`` (documented as supported) should split lines on
    ``\\r``, ``\\n`` and ``\\r\\n`` without translating them (as the builtin
    and aiofiles do); subring.aio only splits on ``\\n``, so "b\\rc\\n" comes
    back as one line."""
    _compare_text(tmp_path, b"a\r\nb\rc\nd\r", impl, newline="")


def test_text_encoding_and_errors_arguments(tmp_path):
    p = tmp_path / "latin"
    p.write_bytes("olé\n".encode("latin-1") + b"\xff\xfe")

    async def main():
        async with aio.open(p, encoding="latin-1") as f:
            assert await f.read() == "olé\nÿþ"
        async with aio.open(p, encoding="utf-8", errors="replace") as f:
            assert await f.read() == "ol\ufffd\n\ufffd\ufffd"
        async with aio.open(p, encoding="utf-8") as f:
            with pytest.raises(UnicodeDecodeError):
                await f.read()
        async with aio.open(tmp_path / "out", "w", encoding="utf-16") as f:
            assert await f.write("hé") == 2

    run(main)
    assert (tmp_path / "out").read_bytes() == "hé".encode("utf-16")


# ---------------------------------------------------------------------------
# large files
# ---------------------------------------------------------------------------

def test_large_file_byte_for_byte(tmp_path):
    data = random.Random(77).randbytes(6 * 1024 * 1024 + 123)
    p1, p2 = tmp_path / "one", tmp_path / "chunks"

    async def main():
        async with aio.open(p1, "wb") as f:
            assert await f.write(data) == len(data)
            assert await f.tell() == len(data)
        async with aio.open(p2, "wb") as f:
            for k in range(0, len(data), 100_000):
                await f.write(memoryview(data)[k:k + 100_000])
        async with aio.open(p1, "rb") as f:
            whole = await f.read()
        async with aio.open(p2, "rb") as f:
            parts = []
            while True:
                b = await f.read(1 << 20)
                if not b:
                    break
                parts.append(b)
        async with aio.open(p1, "rb") as f:
            big = bytearray(len(data) + 10)
            n = await f.readinto(big)
            assert n == len(data)
        async with aio.open(p1, "rb") as f:
            lines = [line async for line in f]
        return whole, b"".join(parts), bytes(big[:n]), b"".join(lines)

    whole, joined, into, lines = run(main, timeout=40)
    assert p1.read_bytes() == data and p2.read_bytes() == data
    assert whole == data
    assert joined == data
    assert into == data
    assert lines == data


def test_large_text_file_matches_builtin(tmp_path):
    text = "".join(f"line {i} ü€😀 {'x' * (i % 97)}\n" for i in range(40_000))
    p = tmp_path / "big.txt"

    async def main():
        async with aio.open(p, "w", encoding="utf-8") as f:
            assert await f.write(text) == len(text)
        async with aio.open(p, encoding="utf-8") as f:
            n = 0
            async for line in f:
                n += 1
        async with aio.open(p, encoding="utf-8") as f:
            return n, await f.read()

    n, back = run(main, timeout=40)
    assert p.read_text(encoding="utf-8") == text
    assert back == text and n == 40_000


# ---------------------------------------------------------------------------
# ways to open; custom ring
# ---------------------------------------------------------------------------

def test_open_forms(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("hello")

    async def main():
        async with aio.open(p) as f:
            assert await f.read() == "hello"
        assert f.closed
        f = await aio.open(p)
        try:
            assert not f.closed and await f.read() == "hello"
        finally:
            await f.close()
        assert f.closed
        await f.close()                                     # twice is fine
        async with await aio.open(str(p), "rb") as f:
            assert await f.read() == b"hello"
            assert f.name == str(p) and f.mode == "rb"
        async with aio.open(os.fsencode(p), "rb") as f:
            assert await f.read() == b"hello"
        # an explicit ring: the default ring is not used
        default = aio.get_ring().ring.statistics().submitted
        async with AsyncRing() as ar:
            async with aio.open(p, ring=ar) as f:
                before = ar.ring.statistics().submitted
                assert await f.read() == "hello"
                assert ar.ring.statistics().submitted > before
        assert aio.get_ring().ring.statistics().submitted == default
        # buffering is accepted and ignored
        async with aio.open(p, "rb", 0) as f:
            assert await f.read() == b"hello"

    run(main)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

def test_open_errors_match_builtin(tmp_path):
    missing = tmp_path / "missing"
    d = tmp_path / "dir"
    d.mkdir()
    cases = [(missing, "r"), (missing, "rb"), (missing, "r+"), (d, "r"), (d, "rb"),
             (d, "w"), (d, "a"), (tmp_path / "nodir" / "f", "w")]
    for path, mode in cases:
        with pytest.raises(OSError) as ref:
            open(path, mode)

        async def main(path=path, mode=mode):
            with pytest.raises(OSError) as got:
                await aio.open(path, mode)
            return got.value

        got = run(main)
        assert type(got) is type(ref.value), (path, mode, got, ref.value)
        assert got.errno == ref.value.errno


def test_bad_arguments(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x")

    async def main():
        for mode in ("rw", "rr", "z", "rbt", "", "b"):
            with pytest.raises(ValueError):
                await aio.open(p, mode)
        with pytest.raises(ValueError):
            await aio.open(p, "rb", encoding="utf-8")
        async with aio.open(p, "w") as f:
            with pytest.raises(TypeError):
                await f.write(b"bytes to a text file")
        async with aio.open(p, "wb") as f:
            with pytest.raises(TypeError):
                await f.write("str to a binary file")
        async with aio.open(p) as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.readinto(bytearray(3))

    run(main)


@pytest.mark.parametrize("mode", ["r", "rb"])
def test_write_to_read_only_file(tmp_path, impl, mode):
    p = tmp_path / "ro"
    p.write_bytes(b"keep")
    data = "x" if mode == "r" else b"x"
    with open(p, mode) as f, pytest.raises(io.UnsupportedOperation):
        f.write(data)

    async def main():
        async with _async_open(impl)(p, mode) as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.write(data)

    run(main)
    assert p.read_bytes() == b"keep"


@pytest.mark.parametrize("mode", ["w", "wb", "a"])
def test_regression_read_from_write_only_file(tmp_path, impl, mode):
    """BUG (minor): reading a write-only file raises OSError(EBADF) from the
    kernel instead of io.UnsupportedOperation, which the builtin and aiofiles
    raise -- and which subring raises itself for the symmetric case (write to
    a read-only file)."""
    with open(tmp_path / "ref", mode) as f, pytest.raises(io.UnsupportedOperation):
        f.read()

    async def main():
        async with _async_open(impl)(tmp_path / "t", mode) as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.read()

    run(main)


def test_closed_file_raises_valueerror(tmp_path, impl):
    p = tmp_path / "f"
    p.write_bytes(b"line\n")

    async def main():
        f = await _async_open(impl)(p, "rb+")
        await f.close()
        calls = [("read",), ("read", 1), ("readline",), ("write", b"x"), ("seek", 0),
                 ("tell",), ("truncate", 0), ("readinto", bytearray(1))]
        if impl == "subring":
            calls += [("pread", 1, 0), ("pwrite", b"x", 0), ("stat",), ("fsync",),
                      ("flush",)]
        for name, *args in calls:
            with pytest.raises(ValueError):
                await getattr(f, name)(*args)
        with pytest.raises(ValueError):
            [x async for x in f]

    run(main)
    assert p.read_bytes() == b"line\n"


# ---------------------------------------------------------------------------
# module helpers vs os.*
# ---------------------------------------------------------------------------

def test_stat_helper_matches_os_stat(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 12345)
    link = tmp_path / "link"
    link.symlink_to(f)
    d = tmp_path / "d"
    d.mkdir()

    async def main():
        return [await aio.stat(p) for p in (f, link, d, str(f), os.fsencode(f))]

    results = run(main)
    for p, st in zip((f, link, d, f, f), results):
        ref = os.stat(p)
        assert isinstance(st, os.stat_result)
        for field in ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid",
                      "st_size"):
            assert getattr(st, field) == getattr(ref, field), (p, field)
        for k in range(10):
            assert int(st[k]) == int(ref[k]), (p, k)
        assert int(st.st_mtime) == int(ref.st_mtime)


def test_regression_stat_helper_time_precision(tmp_path):
    """BUG: ``subring.aio.stat`` is documented as "os.stat through the ring"
    but builds its stat_result from a 10-tuple of ints: ``st_mtime`` (and
    atime/ctime) lose their fractional part and ``st_mtime_ns`` is None, so
    comparing it with os.stat() (e.g. "did the file change?") always differs."""
    f = tmp_path / "f"
    f.write_bytes(b"x")
    os.utime(f, ns=(1_700_000_000_123_456_789, 1_700_000_000_987_654_321))

    async def main():
        return await aio.stat(f)

    st = run(main)
    ref = os.stat(f)
    assert st.st_mtime == ref.st_mtime
    assert st.st_mtime_ns == ref.st_mtime_ns
    assert st.st_atime == ref.st_atime


def test_helpers_match_os(tmp_path):
    """mkdir / rename / unlink / rmdir: same effects and same exceptions."""
    a = tmp_path / "async"
    s = tmp_path / "sync"
    a.mkdir()
    s.mkdir()

    def sync_ops(base):
        out = []
        for fn, args in _helper_ops(base):
            try:
                out.append(getattr(os, fn)(*args))
            except OSError as e:
                out.append(_kind(e))
        return out

    async def async_ops(base):
        out = []
        for fn, args in _helper_ops(base):
            try:
                out.append(await getattr(aio, fn)(*args))
            except OSError as e:
                out.append(_kind(e))
        return out

    expected = sync_ops(s)
    got = run(async_ops, a)
    assert got == expected
    assert _tree(a) == _tree(s)
    assert any(isinstance(x, tuple) for x in expected)      # errors were exercised


def _helper_ops(base):
    return [
        ("mkdir", (base / "d",)),
        ("mkdir", (base / "d",)),                      # exists
        ("mkdir", (base / "d" / "e", 0o700)),
        ("mkdir", (base / "missing" / "x",)),          # no parent
        ("rmdir", (base / "d",)),                      # not empty
        ("rmdir", (base / "d" / "e",)),
        ("rmdir", (base / "d" / "e",)),                # gone
        ("rename", (base / "nope", base / "x")),       # missing source
        ("rename", (base / "d", base / "d2")),
        ("unlink", (base / "d2",)),                    # a directory
        ("rmdir", (base / "d2",)),
        ("unlink", (base / "nothing",)),
    ]


def _tree(base):
    out = []
    for root, dirs, files in os.walk(base):
        rel = os.path.relpath(root, base)
        for n in sorted(dirs):
            out.append((rel, n, "d", os.stat(os.path.join(root, n)).st_mode))
        for n in sorted(files):
            with open(os.path.join(root, n), "rb") as f:
                out.append((rel, n, "f", f.read()))
    return sorted(out)


def test_helpers_on_files(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"content")
    q = tmp_path / "g"
    q.write_bytes(b"other")

    async def main():
        await aio.rename(p, q)                                   # replaces, like os.rename
        with pytest.raises(FileNotFoundError):
            await aio.stat(p)
        assert (await aio.stat(q)).st_size == 7
        await aio.unlink(q)
        with pytest.raises(FileNotFoundError):
            await aio.unlink(q)
        await aio.mkdir(str(tmp_path / "m"), 0o711)

    run(main)
    assert not p.exists() and not q.exists()
    assert (os.stat(tmp_path / "m").st_mode & 0o777) == 0o711 & ~_umask()
    shutil.rmtree(tmp_path / "m")


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_concurrent_files(tmp_path):
    """Many files read and written concurrently through the default ring."""
    datas = [random.Random(k).randbytes(20_000 + k) for k in range(40)]

    async def one(k):
        p = tmp_path / f"f{k}"
        async with aio.open(p, "wb") as f:
            await f.write(datas[k])
        async with aio.open(p, "rb") as f:
            return await f.read()

    async def main():
        return await asyncio.gather(*(one(k) for k in range(40)))

    assert run(main) == datas


# ---------------------------------------------------------------------------
# issue 13: cancelled opens, wait_for(open, 0)
# ---------------------------------------------------------------------------

def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_regression_cancelled_open_leaks_fd(tmp_path):
    """BUG (issue 13 #6): the kernel finishes an openat whose task was
    cancelled, and the fd it opened was discarded with the result: 100
    cancelled opens leaked 100 fds.  Also for AsyncRing.openat."""
    p = tmp_path / "f.txt"
    p.write_text("x")

    async def main():
        ar = aio.get_ring()
        before = _fd_count()
        for opener in (lambda: aio.open(p), lambda: ar.openat(str(p))):
            tasks = []
            for _ in range(100):
                t = asyncio.ensure_future(opener())
                tasks.append(t)
                await asyncio.sleep(0)          # the openat SQE is prepared ...
                t.cancel()                      # ... and its task cancelled
            res = await asyncio.gather(*tasks, return_exceptions=True)
            for r in res:                       # a few may have won the race
                if isinstance(r, int):
                    os.close(r)
                elif not isinstance(r, BaseException):
                    await r.close()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while ar.ring.inflight and loop.time() < deadline:
                await asyncio.sleep(0.002)
            assert ar.ring.inflight == 0
        return before, _fd_count()

    before, after = run(main)
    assert after <= before, f"{after - before} fds leaked by cancelled opens"


def test_regression_wait_for_open_zero_warns_coroutine_never_awaited(tmp_path):
    """BUG (issue 13 #11): ``wait_for(aio.open(p), 0)`` cancels the wrapper
    before it runs, and the coroutine made eagerly by ``aio.open`` was then
    garbage-collected unawaited: "RuntimeWarning: coroutine ... was never
    awaited"."""
    import gc
    import warnings

    p = tmp_path / "f.txt"
    p.write_text("x")

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(aio.open(p), 0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(main)
        gc.collect()
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not any("never awaited" in m for m in msgs), msgs


# ---------------------------------------------------------------------------
# issue 11: speed properties, errors, the missing pieces of the file API
# ---------------------------------------------------------------------------



def _ring_ops() -> int:
    return aio.get_ring().ring.statistics().submitted


def test_regression_readline_quadratic_in_line_length(tmp_path):
    """BUG (issue 11): readline() appended 64 KiB per round and searched the
    whole buffer again from the start (a 64 MiB line took 30 s).  Now each
    round reads more and searches only the new bytes: a 24 MiB line takes a
    number of ring reads proportional to its length, and matches built-in."""
    line = "é" * (6 << 20) + "x" * 99 + "\r\n"         # ~12 MiB UTF-8 ... x2 below
    p = tmp_path / "long.txt"
    p.write_bytes((line * 2).encode())
    with open(p, newline=None) as f:
        ref = [f.readline(), f.readline(), f.readline()]

    async def main():
        async with aio.open(p) as f:
            before = _ring_ops()
            got = [await f.readline(), await f.readline(), await f.readline()]
            return got, _ring_ops() - before

    got, ops = run(main)
    assert got == ref
    assert ops <= 2 * p.stat().st_size // _files.PIECE + 4, ops


def test_regression_line_iteration_per_line_awaits(tmp_path):
    """BUG (issue 11): line iteration cost one readline() (and its buffer
    search) per line, ~30x built-in.  Lines are now cut and decoded in bulk:
    iterating 20,000 lines takes a handful of ring reads, and every line,
    and the position after breaking out, match built-in."""
    lines = [f"{i} " + "é" * (i % 7) + "z" * (i % 90) + ("\r\n" if i % 5 else "\n")
             for i in range(20000)]
    p = tmp_path / "many.txt"
    p.write_bytes("".join(lines).encode())
    with open(p) as f:
        ref = list(f)
    with open(p, "rb") as f:
        ref_b = list(f)

    async def main():
        async with aio.open(p) as f:
            before = _ring_ops()
            got = [line async for line in f]
            ops = _ring_ops() - before
        async with aio.open(p, "rb") as f:
            got_b = [line async for line in f]
        async with aio.open(p, "rb") as f:
            n = 0
            async for _ in f:
                n += 1
                if n == 1234:
                    break
            pos = await f.tell()
            nxt = await f.readline()
        return got, ops, got_b, pos, nxt

    got, ops, got_b, pos, nxt = run(main)
    assert got == ref and got_b == ref_b
    assert ops <= p.stat().st_size // _files.BATCH + 4, ops
    assert pos == sum(map(len, ref_b[:1234])) and nxt == ref_b[1234]


def test_line_batches_split_crlf_and_multibyte_at_every_boundary(tmp_path):
    """A \\r\\n or a multi-byte character straddling BATCH or LINE_FILL
    boundaries, in every newline mode, text and binary."""
    for cut in (_files.BATCH, _files.LINE_FILL, _files.BATCH * 3 + 1):
        raw = bytearray(b"a" * (cut - 1) + b"\r\n")
        raw += b"b" * (cut - 3) + "é".encode() + b"\r" + b"c\n" * 7 + b"\r"
        p = tmp_path / f"b{cut}.txt"
        p.write_bytes(bytes(raw))
        for newline in (None, "", "\n", "\r", "\r\n"):
            with open(p, newline=newline, encoding="utf-8") as f:
                ref = list(f)

            async def main(newline=newline, p=p):
                async with aio.open(p, newline=newline, encoding="utf-8") as f:
                    return [line async for line in f]

            assert run(main) == ref, (cut, newline)


def test_regression_large_read_stalls_loop(tmp_path, monkeypatch):
    """BUG (issue 11): one await of a 100 MiB read() held the loop for the
    whole copy (~200 ms).  Large reads are now split: a read() of more than
    one PIECE into a new object is an os.pread on a worker thread (the loop
    runs meanwhile), readinto() moves one PIECE per ring op (the loop runs
    between them)."""
    import threading

    data = os.urandom(4 * _files.THREAD_READ + 5)
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    pread_threads = []
    real_pread = os.pread

    def pread(fd, n, offset):
        pread_threads.append(threading.get_ident())
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)

    async def main():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        out = []
        for what in ("read", "readinto", "read(n)"):
            async with aio.open(p, "rb") as f:
                t = asyncio.ensure_future(ticker())
                await asyncio.sleep(0)
                ticks = 0
                pread_threads.clear()
                if what == "read":
                    got = await f.read()
                elif what == "readinto":
                    buf = bytearray(len(data))
                    got = bytes(buf[:await f.readinto(buf)])
                else:
                    got = await f.read(_files.THREAD_READ + 7)
                done = True
                await t
                done = False
                out.append((what, got == data[:len(got)], len(got), ticks,
                            set(pread_threads)))
        return out, threading.get_ident()

    out, loop_thread = run(main)
    for what, same, n, ticks, threads in out:
        assert same and n >= _files.THREAD_READ + 7, what
        if what == "readinto":          # ring ops: one loop iteration per PIECE at least
            assert ticks >= len(data) // _files.PIECE, (what, ticks)
        else:                           # on a worker thread, never on the loop's
            assert threads and loop_thread not in threads, (what, threads)
            assert ticks >= 1, (what, ticks)


def test_regression_errors_do_not_name_the_file(tmp_path):
    """BUG (issue 11): errors from aio.open and the helpers had filename None
    and text like 'openat: No such file or directory'; they now match the
    built-in functions' errors (type, errno, filename, message)."""
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    cases = [("open", ("nope",), lambda: open("nope").close()),
             ("open", ("d",), lambda: open("d").close()),
             ("open", ("f", "x"), lambda: open("f", "x").close()),
             ("stat", ("nope",), lambda: os.stat("nope")),
             ("unlink", ("nope",), lambda: os.unlink("nope")),
             ("rmdir", ("f",), lambda: os.rmdir("f")),
             ("mkdir", ("d",), lambda: os.mkdir("d")),
             ("rename", ("nope", "other"), lambda: os.rename("nope", "other"))]
    try:
        for name, args, builtin in cases:
            with pytest.raises(OSError) as ref:
                builtin()

            async def main(name=name, args=args):
                with pytest.raises(OSError) as got:
                    r = getattr(aio, name)(*args)
                    await r
                return got.value

            got = run(main)
            r = ref.value
            assert (type(got), got.errno, got.filename, got.filename2, str(got)) == \
                (type(r), r.errno, r.filename, r.filename2, str(r)), name
    finally:
        os.chdir(cwd)


def test_readline_size_and_readlines_hint_match_builtin(tmp_path):
    text = "héllo wörld\r\nsecond\n\nthird line here\rfourth"
    p = tmp_path / "t.txt"
    p.write_bytes(text.encode())
    for mode in ("r", "rb"):
        for sizes in ([3, 4, 100, 0, 2, -1, 5], [1] * 40, [None, 7, 7]):
            with open(p, mode) as f:
                ref = [f.readline(s) if s is not None else f.readline() for s in sizes]
                ref.append(f.tell())

            async def main(mode=mode, sizes=sizes):
                async with aio.open(p, mode) as f:
                    out = [await f.readline(s) if s is not None else await f.readline()
                           for s in sizes]
                    out.append(await f.tell())
                    return out

            got = run(main)
            assert got[:-1] == ref[:-1], (mode, sizes)
            if mode == "rb":
                assert got[-1] == ref[-1]
        for hint in (-1, 0, 1, 12, 13, 30, 1000):
            with open(p, mode) as f:
                ref = f.readlines(hint)

            async def main(mode=mode, hint=hint):
                async with aio.open(p, mode) as f:
                    return await f.readlines(hint)

            assert run(main) == ref, (mode, hint)


def test_open_int_fd_closefd_opener(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("abc\n")

    async def main():
        fd = os.open(p, os.O_RDWR)
        os.lseek(fd, 1, os.SEEK_SET)
        async with aio.open(fd, "r+", closefd=False) as f:
            assert f.name == fd
            assert await f.read() == "bc\n"
            await f.write("d")
        os.fstat(fd)                                      # still open
        async with aio.open(fd, "rb") as f:
            await f.seek(0)
            assert await f.read() == b"abc\nd"
        with pytest.raises(OSError):
            os.fstat(fd)                                  # closed with the file
        with pytest.raises(ValueError):
            await aio.open(p, closefd=False)
        opened = []

        def opener(path, flags):
            opened.append(path)
            return os.open(path, flags)

        async with aio.open(p, opener=opener) as f:
            assert await f.read() == "abc\nd"
        assert opened == [p]

    run(main)


def test_peek_detach_readall_read1(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"0123456789" * 1000)

    async def main():
        async with aio.open(p, "rb") as f:
            assert await f.read(3) == b"012"
            peeked = await f.peek()
            assert peeked.startswith(b"3456") and await f.tell() == 3
            assert await f.read1(2) == b"34"
            assert await f.readall() == (b"0123456789" * 1000)[5:]
        f = await aio.open(p)
        assert await f.read(4) == "0123"
        b = f.detach()
        with pytest.raises(ValueError):
            await f.read()
        assert isinstance(b, aio.AsyncFile) and "b" in b.mode
        assert await b.read(2) == b"45"                  # the position carries over
        with pytest.raises(io.UnsupportedOperation):
            await (await aio.open(p)).peek()
        raw = b.detach()
        assert isinstance(raw, io.FileIO) and raw.read(2) == b"67"
        raw.close()

    run(main)


def test_regression_fileno_after_close_returns_stale_fd(tmp_path):
    """BUG (issue 11): fileno() after close() returned the old number."""
    p = tmp_path / "f"
    p.write_text("x")

    async def main():
        f = await aio.open(p)
        await f.close()
        with pytest.raises(ValueError):
            f.fileno()

    run(main)


def test_regression_text_seek_negative_raises_oserror(tmp_path):
    """BUG (issue 11): text seek(-1) raised OSError; built-in: ValueError
    (binary files: OSError EINVAL, as built-in)."""
    p = tmp_path / "f"
    p.write_text("xyz")
    with open(p) as f, pytest.raises(ValueError) as ref:
        f.seek(-1)
    with open(p, "rb") as f, pytest.raises(OSError) as ref_b:
        f.seek(-1)

    async def main():
        async with aio.open(p) as f:
            with pytest.raises(ValueError) as got:
                await f.seek(-1)
        async with aio.open(p, "rb") as f:
            with pytest.raises(OSError) as got_b:
                await f.seek(-1)
        return got.value, got_b.value

    got, got_b = run(main)
    assert str(got) == str(ref.value)
    assert got_b.errno == ref_b.value.errno


def test_regression_text_buffering_zero_accepted(tmp_path):
    """BUG (issue 11): buffering=0 in text mode was accepted; built-in
    raises ValueError."""
    p = tmp_path / "f"
    p.write_text("x")
    with pytest.raises(ValueError) as ref:
        open(p, "r", buffering=0).close()

    async def main():
        with pytest.raises(ValueError) as got:
            await aio.open(p, "r", buffering=0)
        async with aio.open(p, "rb", buffering=0) as f:       # binary: fine
            assert await f.read() == b"x"
        return got.value

    assert str(run(main)) == str(ref.value)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                      "utf-8-sig", "utf-8", "cp1252"])
def test_regression_utf16_utf8sig_reading_refused(tmp_path, encoding):
    """BUG (issue 11): reading UTF-16 or UTF-8-with-BOM text was refused at
    open time.  Now read, readline, iteration, read(n) and tell/seek match
    built-in in every newline mode."""
    text = "ab\r\ncd€\n\ré\r\nlast" if encoding != "cp1252" else "ab\r\ncd€\n\rX\r\nlast"
    p = tmp_path / "t.txt"
    p.write_bytes(text.encode(encoding))
    for newline in (None, "", "\n", "\r\n"):
        with open(p, encoding=encoding, newline=newline) as f:
            ref = (f.read(), )
        with open(p, encoding=encoding, newline=newline) as f:
            ref += (list(f), )
        with open(p, encoding=encoding, newline=newline) as f:
            ref += (f.read(3), f.read(2), f.readline(), f.read())

        async def main(newline=newline):
            async with aio.open(p, encoding=encoding, newline=newline) as f:
                out = (await f.read(), )
            async with aio.open(p, encoding=encoding, newline=newline) as f:
                out += ([line async for line in f], )
            async with aio.open(p, encoding=encoding, newline=newline) as f:
                out += (await f.read(3), await f.read(2), await f.readline(), await f.read())
                await f.seek(0)
                again = await f.read()
            return out, again

        got, again = run(main)
        assert got == ref, (encoding, newline)
        assert again == ref[0]


def test_stateful_encoding_refused_for_reading(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("abc".encode("utf-7"))

    async def main():
        with pytest.raises(ValueError, match="utf-7"):
            await aio.open(p, encoding="utf-7")
        async with aio.open(p, "w", encoding="utf-7") as f:     # writing is fine
            await f.write("x+y")

    run(main)


def test_text_read_n_large_and_lone_cr_match_builtin(tmp_path):
    """read(n) in big and odd steps over multi-byte text with every kind of
    line end (a lone \\r at a step's end included), against built-in."""
    text = ("añ€😀\r\nb\rc\n" * 20000) + "end\r"
    p = tmp_path / "m.txt"
    p.write_bytes(text.encode("utf-8"))
    for newline in (None, ""):
        for steps in ([3, 1, 2, 5, 7, 300001, 13, -1], [6, 6, 6, 99999, 6, -1], [1] * 50):
            with open(p, newline=newline, encoding="utf-8") as f:
                ref = [f.read(n) for n in steps]

            async def main(newline=newline, steps=steps):
                async with aio.open(p, newline=newline, encoding="utf-8") as f:
                    return [await f.read(n) for n in steps]

            assert run(main) == ref, (newline, steps)


def test_regression_append_utf16_writes_a_second_bom(tmp_path):
    """BUG (found writing issue 11's encodings): appending to a UTF-16 file
    wrote a byte-order mark in the middle of it; built-in writes one only at
    position 0."""
    ref, got = tmp_path / "ref.txt", tmp_path / "got.txt"
    for p in (ref, got):
        with open(p, "w", encoding="utf-16") as f:
            f.write("one\n")
    with open(ref, "a", encoding="utf-16") as f:
        f.write("two\n")

    async def main():
        async with aio.open(got, "a", encoding="utf-16") as f:
            await f.write("two\n")
        async with aio.open(got, encoding="utf-16") as f:
            return await f.read()

    assert run(main) == "one\ntwo\n"
    assert got.read_bytes() == ref.read_bytes()


def test_large_read_after_readahead_matches_builtin(tmp_path):
    """read() and read(n) of more than a PIECE after a readline (read-ahead
    held): the read-ahead is dropped and the bytes read again from the
    logical position, never lost or duplicated."""
    data = b"first line\n" + os.urandom(_files.THREAD_READ + _files.PIECE) + b"\nlast\n"
    p = tmp_path / "r.bin"
    p.write_bytes(data)
    with open(p, "rb") as f:
        ref = [f.readline(), f.read(_files.PIECE * 2), f.readline(), f.read(), f.read()]

    async def main():
        async with aio.open(p, "rb") as f:
            out = [await f.readline(), await f.read(_files.PIECE * 2), await f.readline(),
                   await f.read(), await f.read()]
            return out, await f.tell()

    got, pos = run(main)
    assert got == ref and pos == len(data)


def test_regression_open_pipe_fd_illegal_seek():
    """BUG (found checking open(int_fd)): opening a pipe's fd raised
    OSError ESPIPE (the position was asked of it); built-in opens it and
    reads it at its current offset.  Lines, read(), write; seek/tell raise
    ESPIPE as built-in's do."""
    r, w = os.pipe()
    r2, w2 = os.pipe()
    try:
        os.write(w, "one\ntwo\nthré\n".encode() + b"x" * 30_000)   # (< a pipe's capacity)
        os.close(w)
        w = -1

        async def main():
            async with aio.open(r, "rb", closefd=False) as f:
                assert not await f.seekable()
                first = await f.readline()
                with pytest.raises(OSError) as e:
                    await f.tell()
                assert e.value.errno == errno.ESPIPE
                rest = await f.read()
            async with aio.open(w2, "w", closefd=False) as g:
                await g.write("through the ring\n")
            return first, rest

        first, rest = run(main)
        assert first == b"one\n" and rest == "two\nthré\n".encode() + b"x" * 30_000
        assert os.read(r2, 100) == b"through the ring\n"
    finally:
        for fd in (r, w, r2, w2):
            if fd >= 0:
                os.close(fd)


# ---------------------------------------------------------------------------
# async for: a C iterator (subring._core.LineIter), no coroutine per line


def _mixed_newline_bytes(n: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    ends = ["\n", "\r\n", "\r", ""]
    out = []
    for i in range(n):
        body = "".join(rnd.choice("ab é€z\t") for _ in range(rnd.randint(0, 120)))
        out.append(body + rnd.choice(ends))
    return "".join(out).encode("utf-8")


@pytest.mark.parametrize("tail", ["\n", "", "\r", "no end"])
def test_async_for_matches_builtin_mixed_newlines_and_chunk_boundaries(tmp_path, tail):
    """``async for`` gives exactly the lines of the built-in ``for line in
    open(...)``: mixed \\n, \\r\\n and lone \\r, multi-byte characters, every
    newline mode, text (UTF-8 decoded in C, Latin-1 and UTF-16 through their
    codecs) and binary, with or without a final line end, over several
    batches (BATCH/LINE_FILL boundaries fall mid-line and mid-\\r\\n)."""
    raw = _mixed_newline_bytes(15000, 7) + tail.encode()
    assert len(raw) > _files.LINE_FILL and len(raw) > 4 * _files.BATCH
    p = tmp_path / "mixed.txt"
    p.write_bytes(raw)
    q = tmp_path / "mixed16.txt"
    q.write_bytes(raw.decode("utf-8").encode("utf-16"))
    cases = [(p, "rb", None, None)]
    cases += [(p, "r", "utf-8", nl) for nl in (None, "", "\n", "\r", "\r\n")]
    cases += [(p, "r", "latin-1", None), (q, "r", "utf-16", None), (q, "r", "utf-16", "")]
    for path, mode, enc, nl in cases:
        kw = {} if mode == "rb" else {"encoding": enc, "newline": nl}
        with open(path, mode, **kw) as f:
            ref = list(f)

        async def main(path=path, mode=mode, kw=kw):
            async with aio.open(path, mode, **kw) as f:
                return [line async for line in f]

        got = run(main)
        assert got == ref, (path.name, mode, enc, nl)


def test_regression_async_for_makes_a_coroutine_per_line(tmp_path):
    """BUG (issue 11): ``async for`` went through an async generator (or a
    Python ``__anext__``): a coroutine frame per line, costing more than the
    built-in file's whole iteration.  ``__anext__`` now returns an awaitable
    that is already done for every buffered line (no Python code runs for
    it); a coroutine is made only to read and split the next batch."""
    from subring._core import LineReady

    p = tmp_path / "lines.txt"
    p.write_text("".join(f"line {i}\n" for i in range(20000)))
    nbatches = p.stat().st_size // _files.BATCH + 1

    async def main():
        async with aio.open(p) as f:
            it = f.__aiter__()
            kinds = []
            got = []
            while True:
                a = it.__anext__()
                kinds.append(type(a) is not LineReady)
                try:
                    got.append(await a)
                except StopAsyncIteration:
                    break
        # count Python frames (coroutines, generators, functions) entered
        # or resumed during a whole async for
        entered = 0

        def prof(frame, event, arg):
            nonlocal entered
            if event == "call":        # a Python frame entered or resumed
                entered += 1

        async with aio.open(p) as f:
            n = 0
            sys.setprofile(prof)
            try:
                async for _line in f:
                    n += 1
            finally:
                sys.setprofile(None)
        return kinds, got, entered, n

    kinds, got, entered, n = run(main)
    assert got == [f"line {i}\n" for i in range(20000)] and n == 20000
    assert sum(kinds) <= nbatches + 2, sum(kinds)
    assert not any(kinds[1:100])
    assert entered < 50 * (nbatches + 2) < n, entered


def test_line_iter_awaitables_hold_their_value():
    """LineIter's ready awaitables: each keeps its own line even when several
    are held at once; a tuple or exception value comes back as itself through
    either await path (am_send, or StopIteration via __next__); a second
    await raises RuntimeError; refill receives the iterator."""
    from subring._core import LineIter

    async def refill(li):
        raise StopAsyncIteration

    vals = [(1, 2), ValueError("x"), b"a\n"]
    li = LineIter(iter(vals), None, refill)
    a, b, c = li.__anext__(), li.__anext__(), li.__anext__()
    with pytest.raises(StopIteration) as e:
        next(a.__await__())
    assert e.value.value == (1, 2)

    async def main():
        return await b, await c

    got_b, got_c = asyncio.run(main())
    assert got_b is vals[1] and got_c == b"a\n"
    with pytest.raises(RuntimeError):
        next(a.__await__())
    with pytest.raises(TypeError):
        LineIter([1], None, refill)           # not an iterator


def test_async_for_invalid_utf8_like_builtin(tmp_path):
    """Invalid UTF-8 in a line: strict decoding raises UnicodeDecodeError
    (the lines before it come out first); errors="replace" gives the
    built-in's lines."""
    p = tmp_path / "bad.txt"
    p.write_bytes(b"one\ntwo\nth\xffree\nfour\n" * 3)
    with open(p, encoding="utf-8", errors="replace") as f:
        ref = list(f)

    async def main():
        got = []
        async with aio.open(p, encoding="utf-8") as f:
            with pytest.raises(UnicodeDecodeError):
                async for line in f:
                    got.append(line)
        async with aio.open(p, encoding="utf-8", errors="replace") as f:
            replaced = [line async for line in f]
        return got, replaced

    got, replaced = run(main)
    assert got == ["one\n", "two\n"] and replaced == ref
