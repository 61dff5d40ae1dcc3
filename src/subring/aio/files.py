"""AsyncFile: a file whose reads and writes go through a ring.

Reading keeps one byte buffer (``_rbuf``: read-ahead from the file, consumed
up to ``_rpos``).  Line reading cuts the buffer at its last line end into a
batch and hands its lines out from one shared iterator, so that ``async
for``, ``readline()`` and any other call see one position.  Lines ending at
b"\n" only (binary; UTF-8 text without \r to translate) are cut from the
batch on demand by C code (``_core.LineCut``; ``async for`` cuts and decodes
each line in one step); other text is split in bulk into raw lines, each
decoded when taken.  Every
other operation first folds the untaken lines back into the byte buffer
(:meth:`AsyncFile._collapse`), so ``tell()`` is an exact byte offset at any
time.

Large transfers are split so that no single step holds the event loop for
more than about a millisecond: ring reads and writes move at most ``PIECE``
bytes per await, and a ``read()`` from a file that must return a new
``bytes`` object of ``THREAD_READ`` bytes or more is one ``os.pread`` on a
worker thread (the GIL released while the kernel copies; building that
object on the loop thread would stall it for the copy and its page faults,
~0.4 ms per MiB).  Line reading reads ``LINE_FILL`` bytes per fill: the
lines of one fill are handed out without a trip through the loop, so a fill
bounds how long ``async for`` keeps the loop (~0.5 ms of lines).

Writes are not buffered: ``write()`` returns once the kernel has the data
(visible to other readers at once), and ``flush()`` has nothing to do.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
from operator import length_hint
from typing import Any, Self, cast

from .._core import LineCut, LineIter
from . import textcodec

__all__ = ["CHUNK", "PIECE", "THREAD_READ", "AsyncFile"]

CHUNK = 1 << 17          # read-ahead per fill for small reads
LINE_FILL = 1 << 18      # read-ahead per fill when reading lines (two batches)
BATCH = 1 << 17          # lines are split and decoded this many bytes at a time (cache-sized)
PIECE = 1 << 20          # the most one ring read or write moves per await
THREAD_READ = PIECE + 1  # read() of this many bytes or more from a file: a thread


class AsyncFile:
    """A file whose I/O goes through a ring.  Made by :func:`subring.aio.open`.

    The methods of aiofiles' file objects (and of the built-in file), as
    coroutines: ``read``, ``read1``, ``readall``, ``readinto``, ``readline``,
    ``readlines``, ``peek``, ``write``, ``writelines``, ``seek``, ``tell``,
    ``truncate``, ``flush``, ``close``, ``readable``, ``writable``,
    ``seekable``, ``isatty``; ``async with`` and ``async for line in f``;
    plus ``pread``/``pwrite`` (which do not move the position), ``fsync``
    and ``stat``.  ``fileno()``, ``detach()``, ``name``, ``mode``,
    ``closed``, ``encoding``, ``errors`` are plain."""

    def __init__(self, aring: Any, fd: int, name: Any, mode: str, binary: bool,
                 encoding: str | None, errors: str | None, newline: str | None,
                 append: bool, closefd: bool = True, position: int | None = 0) -> None:
        self._closed = True       # (until constructed: __del__ must not close fd)
        self._ring = aring
        self._fd = fd
        self._closefd = closefd
        self.name = name
        self.mode = mode
        self._binary = binary
        self._readable = "r" in mode or "+" in mode
        self._writable = "r" not in mode or "+" in mode
        self._append = append
        self._newline = newline
        # a pipe or terminal (position None) is read and written at its
        # current offset (-1): it has no position to keep
        self._seekable = position is not None
        self._pos = position or 0          # file offset of the end of _rbuf
        self._rbuf = bytearray()           # read-ahead
        self._rpos = 0                     # consumed up to here
        self._scan = 0                     # no line end in _rbuf[_rpos:_scan]
        self._blines: Any = []             # the batch: raw lines (a list or a LineCut)
        self._it = iter(self._blines)      # the next line to take
        self._bstart = 0                   # where the batch began in _rbuf
        self._bdec: Any = None             # raw line -> line (None: binary)
        self._codec: textcodec.Codec | None = None
        self._scratch: bytearray | None = None   # what _fill reads into
        if not binary:
            import codecs
            import locale
            self.encoding = encoding or locale.getpreferredencoding(False)
            self.errors = errors or "strict"
            codecs.lookup(self.encoding)                  # LookupError at open time
            if self._readable:
                textcodec.check_readable(self.encoding)
            # (an incremental encoder writes a BOM once, not once per write)
            self._encoder = codecs.getincrementalencoder(self.encoding)(self.errors)
            if position:
                self._encoder.setstate(0)     # not at the start: no BOM (as CPython)
        self._closed = False

    # -- state -----------------------------------------------------------------------

    def fileno(self) -> int:
        """The file descriptor (ValueError once closed)."""
        self._check()
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file.")

    def _check_readable(self) -> None:
        self._check()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading" if self._binary
                                          else "not readable")

    def _check_writable(self) -> None:
        self._check()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing" if self._binary
                                          else "not writable")

    def _collapse(self) -> None:
        """Fold the untaken lines of the batch back into the byte buffer."""
        lines = self._blines
        if lines:
            if lines.__class__ is LineCut:
                self._rpos = self._bstart + lines.consumed
            else:
                left = length_hint(self._it)
                if left:         # (all taken: _rpos is the batch's end already)
                    used = len(lines) - left
                    self._rpos = self._bstart + sum(map(len, lines[:used]))
            lines.clear()                   # ends any iterator still over it
            self._blines = []
            self._it = iter(self._blines)
            self._scan = self._rpos

    def _at(self) -> int:
        """The offset for the next read: the file position, or -1 (the
        current offset) on a pipe or terminal."""
        return self._pos if self._seekable else -1

    def _check_seekable(self) -> None:
        if not self._seekable:
            raise OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))

    def _logical(self) -> int:
        self._collapse()
        return self._pos - len(self._rbuf) + self._rpos

    def _drop_readahead(self) -> None:
        """Forget read-ahead: the file offset becomes the logical position."""
        self._pos = self._logical()
        self._rbuf = bytearray()
        self._rpos = self._scan = 0

    async def _fill(self, n: int) -> int:
        """Append up to ``n`` (at most PIECE) bytes from the file to the buffer;
        returns how many (0: end of file)."""
        if self._rpos and not self._blines:          # compact (cheap at the front)
            del self._rbuf[:self._rpos]
            self._scan = max(0, self._scan - self._rpos)
            self._rpos = 0
        n = min(n, PIECE)
        scratch = self._scratch
        if scratch is None or len(scratch) < n:
            scratch = self._scratch = bytearray(max(n, CHUNK))
        try:
            got = await self._ring.readinto(self._fd, memoryview(scratch)[:n], self._at())
        except BaseException:
            self._scratch = None     # a cancelled read may still land in it: never reuse
            raise
        self._pos += got
        with memoryview(scratch) as mv:
            self._rbuf += mv[:got]
        return cast("int", got)

    # -- text: codec, lines ------------------------------------------------------------

    async def _text_codec(self) -> textcodec.Codec:
        """The codec; at position 0, settle it from a byte-order mark (and
        skip the mark)."""
        at_start = self._logical() == 0
        if self._codec is None or at_start:
            if at_start:
                while len(self._rbuf) - self._rpos < 4 and await self._fill(CHUNK):
                    pass
                head = bytes(self._rbuf[self._rpos:self._rpos + 4])
                self._codec, skip = textcodec.codec_for(self.encoding, self.errors, head)
                self._rpos += skip
                self._scan = self._rpos
            elif self._codec is None:
                self._codec, _ = textcodec.codec_for(self.encoding, self.errors, b"")
        return self._codec

    def _cut(self, eof: bool) -> int:
        """End of the batch to make: the last line end within BATCH bytes
        (further for a longer line), all of the rest at end of file, or -1."""
        rpos, full = self._rpos, len(self._rbuf)
        if rpos >= full:
            return -1
        end = min(full, rpos + BATCH)
        cut = self._last_end(max(rpos, self._scan - 4), end, eof and end == full)
        if cut < 0 and end < full:
            cut = self._last_end(max(max(end, self._scan) - 4, rpos), full, eof)
        if cut < 0:
            if eof:
                return full
            self._scan = full
        return cut

    def _last_end(self, start: int, end: int, final: bool) -> int:
        """Offset after the last line end in _rbuf[start:end], or -1.  A \r
        just before ``end`` may be half of \r\n: it counts only if ``final``."""
        buf, codec, nl, base = self._rbuf, self._codec, self._newline, self._rpos
        if codec is None:                                    # binary
            i = buf.rfind(b"\n", start, end)
            return i + 1 if i >= 0 else -1
        if nl in (None, ""):
            i = codec.rfind(buf, codec.nl, start, end, base)
            j = codec.rfind(buf, codec.cr, start, end, base)
            if j >= 0 and j + codec.unit == end and not final:
                j = codec.rfind(buf, codec.cr, start, j, base)
            k = max(i, j)
            return k + codec.unit if k >= 0 else -1
        sep = codec.nl if nl == "\n" else nl.encode(codec.name)
        i = codec.rfind(buf, sep, start, end, base)
        return i + len(sep) if i >= 0 else -1

    def _make_batch(self, cut: int) -> None:
        rpos = self._rpos
        with memoryview(self._rbuf) as mv:
            region = bytes(mv[rpos:cut])
        codec = self._codec
        nl = self._newline
        lines: LineCut | list[bytes]
        if codec is None:
            lines = LineCut(region)
            self._bdec = None
        elif codec.fast and (nl == "\n" or nl in (None, "") and codec.cr not in region):
            # UTF-8 lines ending at \n only: LineIter cuts and decodes each
            # straight from the region (one object per line)
            lines = LineCut(region, True)
            self._bdec = codec.decode
        else:
            lines = textcodec.split_lines(codec, region, self._newline)
            dec = codec.decode
            if self._newline is None and codec.cr in region:
                def dec(raw: bytes, _d: Any = codec.decode) -> str:
                    text: str = _d(raw)
                    return text.replace("\r\n", "\n").replace("\r", "\n")
            self._bdec = dec
        self._blines = lines
        self._it = iter(lines)
        self._bstart = rpos
        self._rpos = self._scan = cut

    async def _next_batch(self) -> Any:
        """Make the next batch of lines.  Returns None when one is ready, or
        the empty line at end of file."""
        self._check_readable()
        self._collapse()
        if not self._binary:
            await self._text_codec()
        eof = False
        while True:
            cut = self._cut(eof)
            if cut >= 0:
                self._make_batch(cut)
                return None
            if eof:
                return b"" if self._binary else ""
            # long lines: read more per round (the search resumes at _scan)
            eof = not await self._fill(max(LINE_FILL, len(self._rbuf) - self._rpos))

    def __aiter__(self) -> Any:
        """``async for line in f``: lines decoded in bulk, one shared position.

        The iterator is a :class:`subring._core.LineIter`: a buffered line is
        handed out through an awaitable that is done at once (no coroutine
        per line); only when the batch runs dry does ``__anext__`` return a
        coroutine (:meth:`_refill`) that reads and splits the next one."""
        self._check_readable()
        return LineIter(self._it, self._bdec, self._refill)

    async def _refill(self, lines: Any) -> Any:
        """The next line for the LineIter ``lines`` whose batch ran dry (a
        batch made meanwhile by ``readline()`` counts), after pointing it at
        the current batch; StopAsyncIteration at end of file."""
        while True:
            raw = next(self._it, None)
            if raw is not None:
                break
            if await self._next_batch() is not None:
                raise StopAsyncIteration
        dec = self._bdec
        lines.reset(self._it, dec)
        return raw if dec is None else dec(raw)

    async def __anext__(self) -> Any:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -- reading ---------------------------------------------------------------------

    async def readline(self, size: int | None = -1) -> Any:
        """One line (at most ``size`` bytes/characters if ``size >= 0``)."""
        self._check_readable()
        if size is None:
            size = -1
        if size == 0:
            return b"" if self._binary else ""
        while True:
            raw = next(self._it, None)
            if raw is not None:
                break
            empty = await self._next_batch()
            if empty is not None:
                return empty
        if self._binary:
            if 0 <= size < len(raw):
                self._collapse()
                self._rpos = self._scan = self._rpos - (len(raw) - size)
                return raw[:size]
            return raw
        line = self._bdec(raw)
        if 0 <= size < len(line):
            self._collapse()
            assert self._codec is not None                 # (set by _next_batch)
            used = textcodec.raw_prefix_len(self._codec, raw, size, self._newline is None,
                                            len(line) - size)
            self._rpos -= len(raw) - used
            self._scan = self._rpos
            return line[:size]
        return line

    async def readlines(self, hint: int | None = -1) -> list[Any]:
        """Lines until their total size exceeds ``hint`` (all if ``hint <= 0``)."""
        out: list[Any] = []
        total = 0
        limit = hint if hint is not None and hint > 0 else None
        async for line in self:
            out.append(line)
            total += len(line)
            if limit is not None and total > limit:
                break
        return out

    async def read(self, size: int | None = -1) -> Any:
        """Up to ``size`` bytes/characters (all to the end if ``size < 0``)."""
        self._check_readable()
        if size is None or size < 0:
            return await (self._read_all() if self._binary else self._read_all_text())
        if self._binary:
            return await self._read_bytes(size)
        return await self._read_text(size)

    async def read1(self, size: int = -1) -> bytes:
        """Binary: at most one read from the file (here the same as read)."""
        self._check_binary("read1")
        return cast("bytes", await self.read(size))

    async def readall(self) -> bytes:
        """Binary: everything to the end of the file."""
        self._check_binary("readall")
        self._check_readable()
        return await self._read_all()

    def _check_binary(self, what: str) -> None:
        if not self._binary:
            raise io.UnsupportedOperation(f"{what}() on a text file")

    def _take(self, n: int) -> bytes:
        rpos = self._rpos
        with memoryview(self._rbuf) as mv:
            out = bytes(mv[rpos:rpos + n])
        self._rpos = self._scan = rpos + len(out)
        return out

    async def _read_bytes(self, size: int) -> bytes:
        self._collapse()
        have = len(self._rbuf) - self._rpos
        if have >= size:
            return self._take(size)
        if size - have > PIECE and self._seekable:
            # large: one new object read from the logical position (the few
            # read-ahead bytes are read again) -- joining would copy it all
            self._drop_readahead()
            data = await self._pread_new(size, self._at())
            self._pos += len(data)
            return data
        head = self._take(have)
        self._rbuf = bytearray()
        self._rpos = self._scan = 0
        rest = await self._pread_new(size - have, self._at())
        self._pos += len(rest)
        return head + rest if head else rest

    async def _pread_new(self, n: int, offset: int) -> bytes:
        """A new bytes object of up to ``n`` bytes at ``offset`` (-1: the
        current offset of a pipe or terminal); never holds the loop for more
        than one PIECE.  From a file, more than a PIECE is read on a worker
        thread (see the module docstring); from a pipe, by ring reads (a
        thread blocked on an idle pipe could not be cancelled)."""
        if n <= PIECE:
            return cast("bytes", await self._ring.read(self._fd, n, offset))
        if offset >= 0:
            loop = asyncio.get_running_loop()
            parts = []
            while n > 0:
                data = await loop.run_in_executor(None, os.pread, self._fd, n, offset)
                if not data:
                    break
                parts.append(data)
                n -= len(data)
                offset += len(data)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        buf = bytearray(n)
        got = await self._readinto_pieces(buf, offset)
        del buf[got:]
        return bytes(buf)

    async def _readinto_pieces(self, buf: Any, offset: int) -> int:
        view = memoryview(buf).cast("B")
        got = 0
        with view:
            while got < len(view):
                n = await self._ring.readinto(self._fd, view[got:got + PIECE],
                                              offset + got if offset >= 0 else -1)
                if n == 0:
                    break
                got += n
        return got

    async def _read_all(self) -> bytes:
        parts: list[bytes] = []
        if self._seekable:
            self._drop_readahead()     # (read from the logical position: no join)
        else:
            self._collapse()           # (a pipe cannot be read again: keep it)
            head = self._take(len(self._rbuf) - self._rpos)
            self._rbuf = bytearray()
            self._rpos = self._scan = 0
            if head:
                parts.append(head)
        size = os.fstat(self._fd).st_size
        want = max(size - self._pos, 0)
        while True:
            data = await self._pread_new(max(want, CHUNK), self._at())
            if not data:
                break
            self._pos += len(data)
            parts.append(data)
            want = 0
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    async def _read_all_text(self) -> str:
        codec = await self._text_codec()
        raw = await self._read_all()
        translate = self._newline is None
        if len(raw) <= PIECE:
            return cast("str", codec.incremental(translate).decode(raw, True))
        dec = codec.incremental(translate)
        out = []
        with memoryview(raw) as mv:
            for i in range(0, len(raw), PIECE):
                out.append(dec.decode(mv[i:i + PIECE], i + PIECE >= len(raw)))
                await asyncio.sleep(0)              # let the loop run between pieces
        return "".join(out)

    async def _read_text(self, size: int) -> str:
        codec = await self._text_codec()
        translate = self._newline is None
        out: list[str] = []
        need = size
        eof = False
        while need > 0:
            window = (need + 4) * codec.unit           # more bytes per char: more rounds
            while len(self._rbuf) - self._rpos < window and not eof:
                eof = not await self._fill(max(window, CHUNK))
            rpos = self._rpos
            with memoryview(self._rbuf) as mv:
                raw = bytes(mv[rpos:rpos + window])
            final = eof and rpos + len(raw) >= len(self._rbuf)
            dec = codec.incremental(translate)
            text = dec.decode(raw, final)
            if len(text) > need:
                used = textcodec.raw_prefix_len(codec, raw, need, translate, len(text) - need)
                text = text[:need]
            else:
                buffered, flags = dec.getstate()
                used = len(raw) - len(buffered) - (codec.unit if translate and flags & 1 else 0)
            if not text and not final:
                if eof:
                    final = True
                    continue
                eof = not await self._fill(CHUNK)
                continue
            self._rpos = self._scan = rpos + used
            out.append(text)
            need -= len(text)
            if final:
                break
        return "".join(out)

    async def readinto(self, buf: Any) -> int:
        """Binary: read into ``buf``; returns the byte count."""
        self._check_readable()
        self._check_binary("readinto")
        self._collapse()
        view = memoryview(buf).cast("B")
        with view:
            n = min(len(view), len(self._rbuf) - self._rpos)
            if n:
                view[:n] = self._take(n)
                if n == len(view):
                    return n
            self._rbuf = bytearray()
            self._rpos = self._scan = 0
            if len(view) - n <= PIECE:
                got = await self._ring.readinto(self._fd, view[n:], self._at())
            else:
                got = await self._readinto_pieces(view[n:], self._at())
        self._pos += got
        return cast("int", n + got)

    async def peek(self, size: int = 0) -> bytes:
        """Binary: the buffered bytes ahead (reading some if there are none),
        without moving the position."""
        self._check_binary("peek")
        self._check_readable()
        self._collapse()
        if len(self._rbuf) == self._rpos:
            await self._fill(max(size, CHUNK))
        with memoryview(self._rbuf) as mv:
            return bytes(mv[self._rpos:])

    async def pread(self, nbytes: int, offset: int) -> bytes:
        """Read at ``offset`` without moving the position."""
        self._check_readable()
        return await self._pread_new(nbytes, offset)

    # -- writing ---------------------------------------------------------------------

    async def write(self, data: Any) -> int:
        """Write all of ``data``; returns its length (characters in text mode)."""
        self._check_writable()
        if self._binary:
            if isinstance(data, str):
                raise TypeError("a bytes-like object is required, not 'str'")
            raw = data
            count = len(memoryview(data).cast("B"))
        else:
            if not isinstance(data, str):
                raise TypeError(f"write() argument must be str, not {type(data).__name__}")
            text = data
            if self._newline not in (None, "", "\n"):
                text = text.replace("\n", self._newline)
            raw = self._encoder.encode(text)
            count = len(data)
        if self._rbuf or self._blines:
            self._drop_readahead()
        await self._write_all(raw)
        return count

    async def _write_all(self, raw: Any) -> None:
        with memoryview(raw).cast("B") as view:
            done = 0
            while done < len(view):
                offset = -1 if self._append or not self._seekable else self._pos
                n = await self._ring.write(self._fd, view[done:done + PIECE], offset)
                if n == 0:
                    raise OSError(errno.EIO, "write returned 0")
                done += n
                self._pos = (os.lseek(self._fd, 0, os.SEEK_CUR)
                             if self._append and self._seekable else self._pos + n)

    async def writelines(self, lines: Any) -> None:
        """Write every item of ``lines`` (joined first: one write)."""
        self._check_writable()
        items = list(lines)
        if not items:
            return
        if self._binary:
            await self.write(b"".join(items))
        else:
            await self.write("".join(items))

    async def pwrite(self, data: Any, offset: int) -> int:
        """Write at ``offset`` without moving the position."""
        self._check_writable()
        return cast("int", await self._ring.write(self._fd, data, offset))

    async def flush(self) -> None:
        """Nothing to do: writes are not buffered (see the module docstring)."""
        self._check()

    async def fsync(self) -> None:
        """fsync through the ring."""
        self._check()
        await self._ring.fsync(self._fd)

    async def truncate(self, size: int | None = None) -> int:
        """Truncate to ``size`` (default: the position); the position stays."""
        self._check_writable()
        pos = self._logical()
        size = pos if size is None else size
        if size < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self._drop_readahead()
        os.ftruncate(self._fd, size)
        return size

    # -- position --------------------------------------------------------------------

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position; returns the new one (a byte offset)."""
        self._check()
        self._check_seekable()
        if whence not in (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END):
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if not self._binary:
            if whence == os.SEEK_CUR and offset != 0:
                raise io.UnsupportedOperation("can't do nonzero cur-relative seeks")
            if whence == os.SEEK_END and offset != 0:
                raise io.UnsupportedOperation("can't do nonzero end-relative seeks")
            if whence == os.SEEK_SET and offset < 0:
                raise ValueError(f"negative seek position {offset}")
        pos = self._logical()
        if whence == os.SEEK_CUR:
            pos += offset
        elif whence == os.SEEK_END:
            pos = os.fstat(self._fd).st_size + offset
        else:
            pos = offset
        if pos < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self._rbuf = bytearray()
        self._rpos = self._scan = 0
        self._pos = pos
        if not self._binary:
            self._encoder.reset() if pos == 0 else self._encoder.setstate(0)
        return pos

    async def tell(self) -> int:
        """The logical position (exact: read-ahead is kept as bytes)."""
        self._check()
        self._check_seekable()
        return self._logical()

    async def stat(self) -> os.stat_result:
        """os.fstat of the file."""
        self._check()
        return os.fstat(self._fd)

    async def readable(self) -> bool:
        self._check()
        return self._readable

    async def writable(self) -> bool:
        self._check()
        return self._writable

    async def seekable(self) -> bool:
        self._check()
        return self._seekable

    async def isatty(self) -> bool:
        self._check()
        return os.isatty(self._fd)

    # -- closing ---------------------------------------------------------------------

    def detach(self) -> Any:
        """Text file: return the binary AsyncFile underneath (this one is then
        unusable).  Binary file: return the raw ``io.FileIO``, positioned at
        the logical position (like ``BufferedReader.detach``)."""
        self._check()
        pos = self._logical()
        self._closed = True
        self._blines.clear()
        if self._binary:
            if self._seekable:
                os.lseek(self._fd, pos, os.SEEK_SET)
            raw_mode = ("a" if self._append else "r+" if self._readable and self._writable
                        else "r" if self._readable else "w")
            if self._append and self._readable:
                raw_mode = "a+"
            return io.FileIO(self._fd, raw_mode, closefd=self._closefd)
        return AsyncFile(self._ring, self._fd, self.name, self.mode.replace("t", "") + "b",
                         True, None, None, None, self._append, self._closefd,
                         pos if self._seekable else None)

    on_close: Any = None
    """A callable run once the file is closed (a named temporary file
    removes itself with it), or None."""

    async def close(self) -> None:
        """Close the file (its fd too, unless opened with ``closefd=False``)."""
        if self._closed:
            return
        self._closed = True
        self._blines.clear()
        try:
            if self._closefd:
                await self._ring.close(self._fd)
        finally:
            if self.on_close is not None:
                self.on_close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and self._closefd:
            os.close(self._fd)

    def __repr__(self) -> str:
        return f"<subring.aio.AsyncFile name={self.name!r} mode={self.mode!r}>"
