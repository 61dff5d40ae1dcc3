"""The "one-line change" from aiofiles, tested: everyday aiofiles code run
against ``subring.aio`` -- and, where aiofiles is installed, against aiofiles
as the reference, each scenario in its own directory, results compared.

Every scenario takes a namespace with ``open``, ``os``, ``ospath`` and
``tempfile`` (aiofiles' or subring.aio's) and returns plain values; where the
built-in ``open``/``os`` give a value to compare with, the scenario checks
that too.  Known differences (docs/asyncio.md) are not scenarios here.
"""

# ruff: noqa: ASYNC230 -- the built-in open() is the reference, on purpose
from __future__ import annotations

import asyncio
import io
import os
import socket
import types

import pytest

from subring import aio

pytestmark = pytest.mark.timeout(60)

try:
    import aiofiles
    import aiofiles.os
    import aiofiles.ospath
    import aiofiles.tempfile
except ImportError:  # pragma: no cover - depends on the environment
    aiofiles = None

SUBRING = types.SimpleNamespace(open=aio.open, os=aio.os, ospath=aio.ospath,
                                tempfile=aio.tempfile, name="subring")
AIOFILES = (types.SimpleNamespace(open=aiofiles.open, os=aiofiles.os, ospath=aiofiles.ospath,
                                  tempfile=aiofiles.tempfile, name="aiofiles")
            if aiofiles is not None else None)


def _run_in(lib, scenario, base, name):
    d = base / name
    d.mkdir()
    cwd = os.getcwd()
    os.chdir(d)                        # scenarios use relative names

    async def main():
        try:
            async with asyncio.timeout(30):
                return await scenario(lib)
        finally:
            await aio.close_default_ring()

    try:
        return asyncio.run(main())
    finally:
        os.chdir(cwd)


def check(scenario, tmp_path):
    """Run ``scenario`` on subring.aio; with aiofiles installed, also on
    aiofiles, and require the same results."""
    ours = _run_in(SUBRING, scenario, tmp_path, "subring")
    if AIOFILES is not None:
        ref = _run_in(AIOFILES, scenario, tmp_path, "aiofiles")
        assert ours == ref, f"subring.aio differs from aiofiles:\n{ours!r}\n{ref!r}"
    return ours


def _err(e: BaseException):
    return type(e).__name__, getattr(e, "errno", None), getattr(e, "filename", None), str(e)


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------

TEXT = "first line\nsecond line, é ü\n\nlast line without end"


def test_write_then_read_text(tmp_path):
    async def s(lib):
        async with lib.open("a.txt", "w") as f:
            n = await f.write(TEXT)
        async with lib.open("a.txt") as f:
            whole = await f.read()
        async with lib.open("a.txt", "r") as f:
            first = await f.readline()
            rest = await f.read()
        return n, whole, first, rest
    assert check(s, tmp_path) == (len(TEXT), TEXT, "first line\n", TEXT[11:])


def test_binary_read_write_seek_tell(tmp_path):
    data = bytes(range(256)) * 300

    async def s(lib):
        async with lib.open("b.bin", "wb") as f:
            await f.write(data)
        out = []
        async with lib.open("b.bin", "rb") as f:
            out.append(await f.read(10))
            out.append(await f.tell())
            out.append(await f.seek(1000))
            out.append(await f.read(5))
            out.append(await f.seek(-3, io.SEEK_END))
            out.append(await f.read())
            out.append(await f.read())
            out.append(await f.seek(-10, io.SEEK_CUR))
        return out
    assert check(s, tmp_path) == [data[:10], 10, 1000, data[1000:1005], len(data) - 3,
                                  data[-3:], b"", len(data) - 10]


def test_line_iteration_readlines_readline(tmp_path):
    lines = [f"line {i} " + "x" * (i % 50) + "\n" for i in range(2000)]

    async def s(lib):
        async with lib.open("l.txt", "w") as f:
            await f.writelines(lines)
        async with lib.open("l.txt") as f:
            it = [line async for line in f]
        async with lib.open("l.txt") as f:
            rl = await f.readlines()
        async with lib.open("l.txt") as f:
            one = await f.readline()
            two = await f.readline()
            pos = await f.tell()
        async with lib.open("l.txt", "rb") as f:
            bl = [line async for line in f]
        return it, rl, one, two, pos, bl
    it, rl, one, two, pos, bl = check(s, tmp_path)
    assert it == rl == lines and (one, two) == tuple(lines[:2])
    assert pos == len(lines[0]) + len(lines[1])
    assert bl == [line.encode() for line in lines]


def test_readline_size_and_readlines_hint(tmp_path):
    async def s(lib):
        async with lib.open("h.txt", "w") as f:
            await f.write("abcdef\nghi\njkl\n")
        async with lib.open("h.txt") as f:
            a = await f.readline(4)
            b = await f.readline()
            c = await f.readlines(2)
            d = await f.readlines()
        return a, b, c, d
    assert check(s, tmp_path) == ("abcd", "ef\n", ["ghi\n"], ["jkl\n"])


def test_append_and_flush_visible(tmp_path):
    async def s(lib):
        async with lib.open("ap.txt", "w") as f:
            await f.write("one\n")
        async with lib.open("ap.txt", "a") as f:
            await f.write("two\n")
            await f.flush()
            with open("ap.txt") as g:            # another reader, after flush()
                seen = g.read()
        return seen
    assert check(s, tmp_path) == "one\ntwo\n"


def test_open_errors_name_the_file(tmp_path):
    async def s(lib):
        out = []
        for args in (("missing.txt",), (".",), ("exists.txt", "x")):
            if args[0] == "exists.txt":
                with open("exists.txt", "w"):
                    pass
            try:
                async with lib.open(*args):
                    pass
            except OSError as e:
                out.append(_err(e))
        return out
    got = check(s, tmp_path)
    ref = []
    for args in (("missing.txt",), (".",), ("exists2.txt", "x")):
        if args[0] == "exists2.txt":
            (tmp_path / "exists2.txt").touch()
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            open(*args).close()
        except OSError as e:
            ref.append(_err(e))
        finally:
            os.chdir(cwd)
    ref[2] = ("FileExistsError", 17, "exists.txt", "[Errno 17] File exists: 'exists.txt'")
    assert got == ref


def test_text_encodings_utf16_and_utf8_sig(tmp_path):
    async def s(lib):
        out = []
        for enc in ("utf-16", "utf-16-be", "utf-8-sig", "latin-1"):
            with open(f"{enc}.txt", "w", encoding=enc) as f:
                f.write(TEXT)
            async with lib.open(f"{enc}.txt", encoding=enc) as f:
                out.append([line async for line in f])
            async with lib.open(f"{enc}.txt", encoding=enc) as f:
                out.append(await f.read(5) + "|" + await f.read())
        return out
    got = check(s, tmp_path)
    for k in range(4):
        assert got[2 * k] == TEXT.splitlines(True)
        assert got[2 * k + 1] == TEXT[:5] + "|" + TEXT[5:]


def test_closed_and_bad_arguments(tmp_path):
    async def s(lib):
        with open("c.txt", "w") as f:
            f.write("hello\n")
        out = []
        f = await lib.open("c.txt")
        await f.close()
        for call in (f.fileno, f.read):
            try:
                r = call()
                if asyncio.iscoroutine(r):
                    await r
            except ValueError as e:
                out.append(type(e).__name__)
        async with lib.open("c.txt") as f:
            try:
                await f.seek(-1)
            except ValueError as e:
                out.append(str(e))
        try:
            await lib.open("c.txt", "r", buffering=0)
        except ValueError as e:
            out.append(str(e))
        return out
    assert check(s, tmp_path) == ["ValueError", "ValueError", "negative seek position -1",
                                  "can't have unbuffered text I/O"]


def test_open_fd_and_closefd(tmp_path):
    async def s(lib):
        with open("fd.txt", "w") as f:
            f.write("via fd\n")
        fd = os.open("fd.txt", os.O_RDONLY)
        async with lib.open(fd, closefd=False) as f:
            data = await f.read()
        os.fstat(fd)                                   # still open
        async with lib.open(fd, "rb") as f:            # closefd=True: closed with f
            await f.seek(0)
            again = await f.read()
        try:
            os.fstat(fd)
            still = True
        except OSError:
            still = False
        return data, again, still
    assert check(s, tmp_path) == ("via fd\n", b"via fd\n", False)


def test_peek_read1_and_detach(tmp_path):
    async def s(lib):
        with open("p.bin", "wb") as f:
            f.write(b"0123456789")
        async with lib.open("p.bin", "rb") as f:
            peeked = (await f.peek(1))[:1]
            first = await f.read1(3)
        f = await lib.open("p.bin")
        await f.read(2)
        raw = f.detach()                         # the binary file underneath
        done = raw.close()
        if asyncio.iscoroutine(done):
            await done
        return peeked, first, raw.closed
    assert check(s, tmp_path) == (b"0", b"012", True)


def test_cancelled_read_keeps_position(tmp_path):
    """(subring only: aiofiles may lose data here, issue 11.)"""
    p = tmp_path / "c.bin"
    p.write_bytes(os.urandom(1 << 20))

    async def main():
        async with aio.open(p, "rb") as f:
            await f.read(100)
            t = asyncio.ensure_future(f.read(1 << 19))
            await asyncio.sleep(0)
            t.cancel()
            try:
                got = len(await t)
            except asyncio.CancelledError:
                got = 0
            return await f.tell(), got
        
    pos, got = asyncio.run(main())
    assert pos == 100 + got


# ---------------------------------------------------------------------------
# aiofiles.os, aiofiles.ospath
# ---------------------------------------------------------------------------

def test_os_functions(tmp_path):
    async def s(lib):
        o = lib.os
        out = []
        with open("f.txt", "w") as f:
            f.write("data")
        st = await o.stat("f.txt")
        out.append((st.st_size, st == os.stat("f.txt")))
        await o.rename("f.txt", "g.txt")
        await o.replace("g.txt", "h.txt")
        await o.mkdir("d")
        await o.makedirs("d/e/f", exist_ok=True)
        await o.makedirs("d/e/f", exist_ok=True)
        out.append(sorted(await o.listdir(".")))
        out.append(sorted(e.name for e in await o.scandir("d")))
        await o.link("h.txt", "hard.txt")
        await o.symlink("h.txt", "soft.txt")
        out.append(await o.readlink("soft.txt"))
        out.append(await o.access("h.txt", os.R_OK))
        out.append((await o.getcwd()) == os.getcwd())
        out.append((await o.statvfs(".")).f_bsize > 0)
        await o.remove("hard.txt")
        await o.unlink("soft.txt")
        await o.removedirs("d/e/f")
        await o.renames("h.txt", "x/y/h.txt")
        out.append(sorted(os.listdir(".")) + sorted(os.listdir("x/y")))
        for bad in (lambda: o.stat("nope"), lambda: o.remove("nope"), lambda: o.rmdir("nope"),
                    lambda: o.mkdir("x"), lambda: o.rename("nope", "other")):
            try:
                await bad()
            except OSError as e:
                out.append(_err(e))
        return out
    got = check(s, tmp_path)
    assert got[0] == (4, True)
    assert got[-5][3] == "[Errno 2] No such file or directory: 'nope'"
    assert got[-1][3] == "[Errno 2] No such file or directory: 'nope' -> 'other'"


def test_os_sendfile(tmp_path):
    data = os.urandom(300_000)

    async def s(lib):
        with open("src.bin", "wb") as f:
            f.write(data)
        a, b = socket.socketpair()
        try:
            fd = os.open("src.bin", os.O_RDONLY)
            try:
                sent = 0
                got = bytearray()
                while sent < len(data):
                    n = await lib.os.sendfile(a.fileno(), fd, sent, min(65536, len(data) - sent))
                    sent += n
                    while len(got) < sent:
                        got += b.recv(1 << 20)
            finally:
                os.close(fd)
        finally:
            a.close()
            b.close()
        return sent, bytes(got) == data
    assert check(s, tmp_path) == (len(data), True)


def test_ospath_functions(tmp_path):
    async def s(lib):
        p = lib.ospath
        with open("f.txt", "w") as f:
            f.write("12345")
        os.mkdir("d")
        os.symlink("f.txt", "l")
        out = [await p.exists("f.txt"), await p.exists("nope"), await p.isfile("f.txt"),
               await p.isfile("d"), await p.isdir("d"), await p.isdir("f.txt"),
               await p.islink("l"), await p.islink("f.txt"), await p.getsize("f.txt"),
               await p.getmtime("f.txt") == os.path.getmtime("f.txt"),
               await p.getatime("f.txt") == os.path.getatime("f.txt"),
               await p.getctime("f.txt") == os.path.getctime("f.txt"),
               await p.samefile("f.txt", "l"), await p.ismount("/"),
               await p.abspath("f.txt") == os.path.abspath("f.txt")]
        fd1, fd2 = os.open("f.txt", os.O_RDONLY), os.open("l", os.O_RDONLY)
        out.append(await p.sameopenfile(fd1, fd2))
        os.close(fd1)
        os.close(fd2)
        try:
            await p.getsize("nope")
        except OSError as e:
            out.append(type(e).__name__)
        return out
    assert check(s, tmp_path) == [True, False, True, False, True, False, True, False, 5,
                                  True, True, True, True, True, True, True,
                                  "FileNotFoundError"]


# ---------------------------------------------------------------------------
# aiofiles.tempfile
# ---------------------------------------------------------------------------

def test_tempfile(tmp_path):
    async def s(lib):
        t = lib.tempfile
        out = []
        async with t.TemporaryFile() as f:
            await f.write(b"temp")
            await f.seek(0)
            out.append(await f.read())
        async with t.NamedTemporaryFile("w+", dir=".") as f:
            name = f.name
            await f.write("named")
            await f.seek(0)
            out.append((await f.read(), os.path.exists(name)))
        out.append(os.path.exists(name))
        async with t.TemporaryDirectory(dir=".") as d:
            out.append(os.path.isdir(d))
            with open(os.path.join(d, "x"), "w"):
                pass
        out.append(os.path.exists(d))
        async with t.SpooledTemporaryFile(max_size=10) as f:
            await f.write(b"spooled data beyond ten")
            await f.seek(0)
            out.append(await f.read())
        return out
    assert check(s, tmp_path) == [b"temp", ("named", True), False, True, False,
                                  b"spooled data beyond ten"]


def test_file_attributes_and_queries(tmp_path):
    async def s(lib):
        out = []
        async with lib.open("q.txt", "w+", encoding="utf-8") as f:
            out.append((f.name, f.mode, f.closed, f.encoding, f.errors))
            out.append((await f.readable(), await f.writable(), await f.seekable(),
                        await f.isatty()))
            await f.write("abc")
            await f.seek(0)
            out.append(await f.read())
            out.append(await f.truncate(1))
            out.append(isinstance(f.fileno(), int))
        out.append(f.closed)
        async with lib.open("q.txt", "rb") as f:
            out.append((f.mode, await f.read(), await f.writable()))
        return out
    assert check(s, tmp_path) == [("q.txt", "w+", False, "utf-8", "strict"),
                                  (True, True, True, False), "abc", 1, True, True,
                                  ("rb", b"a", False)]
