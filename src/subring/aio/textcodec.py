"""How a text file's bytes are cut into lines and decoded (no I/O here).

A text file is read as bytes; line ends are found in the bytes and whole
lines are decoded in bulk.  That needs to know how the encoding writes line
ends: :class:`Codec` holds that (the code unit, the bytes of ``\\n`` and
``\\r``, the byte-order mark) for the encodings that can be read this way:
every ASCII-compatible one (UTF-8, Latin-1, cp125x, ...), UTF-8 with a BOM,
and UTF-16/UTF-32 (either byte order, from the BOM).  Stateful encodings
(UTF-7, ISO-2022-*) cannot be cut at a line end without decoding from the
start, and are refused for reading.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Callable
from operator import methodcaller
from typing import Any, cast

__all__ = ["Codec", "codec_for", "raw_prefix_len"]

_BOMS = {
    "utf-16": ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")),
    "utf-32": ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be")),
}
_NATIVE = {"utf-16": "utf-16-le", "utf-32": "utf-32-le"}     # (Linux: little-endian)


class Codec:
    """Line-cutting facts for one encoding (possibly settled by a BOM)."""

    def __init__(self, name: str, errors: str) -> None:
        self.name = name                     # the codec the bytes are decoded with
        self.errors = errors
        nl = "\n".encode(name)
        self.unit = len(nl)
        self.nl = nl
        self.cr = "\r".encode(name)
        self.crlf = self.cr + self.nl
        self.fast = (self.unit == 1 and codecs.lookup(name).name == "utf-8"
                     and errors == "strict")
        self.decode: Callable[[bytes], str] = (
            bytes.decode if self.fast else methodcaller("decode", name, errors))

    def incremental(self, translate: bool) -> Any:
        """A fresh incremental decoder (newlines translated if asked)."""
        dec = codecs.getincrementaldecoder(self.name)(self.errors)
        return io.IncrementalNewlineDecoder(dec, translate) if translate else dec

    def rfind(self, buf: Any, sub: bytes, start: int, end: int, base: int) -> int:
        """``buf.rfind(sub, start, end)`` at a code-unit boundary (counted
        from ``base``, which is one), or -1."""
        unit = self.unit
        if unit == 1:
            return cast("int", buf.rfind(sub, start, end))
        while end > start:
            i = buf.rfind(sub, start, end)
            if i < 0 or (i - base) % unit == 0:
                return cast("int", i)
            end = i + len(sub) - 1
        return -1


def codec_for(encoding: str, errors: str, head: bytes) -> tuple[Codec, int]:
    """The Codec for reading ``encoding`` from the start of a file whose
    first bytes are ``head``, and how many BOM bytes to skip there."""
    name = codecs.lookup(encoding).name
    if name == "utf-8-sig":
        return Codec("utf-8", errors), (3 if head.startswith(codecs.BOM_UTF8) else 0)
    if name in _BOMS:
        for bom, concrete in _BOMS[name]:
            if head.startswith(bom):
                return Codec(concrete, errors), len(bom)
        return Codec(_NATIVE[name], errors), 0
    return Codec(name, errors), 0


def check_readable(encoding: str) -> None:
    """Refuse, at open time, an encoding whose line ends cannot be found in
    its bytes (stateful encodings)."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise LookupError(f"unknown encoding: {encoding}") from None
    if name in ("utf-8-sig",) or name in _BOMS:
        return
    try:
        probe = "\r\n\tA z~".encode(name)
        fixed = "\n".encode(name)
    except UnicodeError:
        probe, fixed = b"", b""
    ok = bool(fixed) and (probe == b"\r\n\tA z~" or probe.decode(name) == "\r\n\tA z~"
                          and len(probe) == 7 * len(fixed))
    if not ok:
        raise ValueError(f"subring.aio.open: cannot read text in {encoding!r} (a stateful "
                         f"encoding: line ends cannot be found without decoding from the "
                         f"start); open in binary mode and decode yourself")


_UNIVERSAL = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def split_lines(codec: Codec, raw: bytes, newline: str | None) -> list[bytes]:
    """Cut ``raw`` (whole lines, the last possibly without its end) into raw
    lines, the way a text file with ``newline`` sees them."""
    if codec.unit == 1:
        if newline in (None, "") and codec.cr in raw:
            return _UNIVERSAL.findall(raw)
        if newline in (None, "", "\n"):
            return io.BytesIO(raw).readlines()
        sep = newline.encode(codec.name)
        parts = raw.split(sep)
        out = [p + sep for p in parts[:-1]]
        if parts[-1]:
            out.append(parts[-1])
        return out
    # UTF-16/32: cut the decoded text, and re-encode each piece
    text = raw.decode(codec.name, "surrogatepass")
    if newline in (None, ""):
        pieces = re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+", text)
    else:
        tsep = "\n" if newline == "\n" else newline
        pieces = re.findall(r".*?" + re.escape(tsep) + r"|.+\Z", text, re.DOTALL)
    return [p.encode(codec.name, "surrogatepass") for p in pieces]


def raw_prefix_len(codec: Codec, raw: bytes, nchars: int, translate: bool,
                   over: int | None = None) -> int:
    """The number of bytes of ``raw`` that decode to its first ``nchars``
    characters (``raw`` decodes to more).  ``over``: by how many characters
    the whole of ``raw`` overshoots, if known -- then only a short tail is
    searched (the prefix before it is decoded once)."""
    unit = codec.unit
    base = 0
    dec = codec.incremental(translate)
    done = 0
    if over is not None:
        base = max(0, len(raw) - (over + 2) * 4 * unit)
        base -= base % unit
        done = len(dec.decode(raw[:base], False))
        if done >= nchars:                       # (the bound was not enough)
            base, done = 0, 0
            dec = codec.incremental(translate)
    state = dec.getstate()
    lo, hi = base, len(raw)
    while lo < hi:
        mid = (lo + hi) // 2
        dec.setstate(state)
        if done + len(dec.decode(raw[base:mid], False)) >= nchars:
            hi = mid
        else:
            lo = mid + 1
    # With newline translation a lone \r becomes its \n only once the next
    # character shows it is not \r\n: then that next character is not ours.
    if (translate and lo >= 2 * unit and raw[lo - 2 * unit:lo - unit] == codec.cr
            and raw[lo - unit:lo] != codec.nl):
        lo -= unit
    return lo
