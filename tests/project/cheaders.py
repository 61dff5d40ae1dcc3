"""Read integer constants and struct offsets out of C headers, for the tests
that check Python's copies of ABI facts against the C definitions.

Two independent readers, so each guards the other:

* :func:`parse_constants` reads ``#define NAME <integer expression>`` and
  ``enum { A, B = 3, ... }`` textually (no compiler needed);
* :func:`compile_values` asks the C compiler for the value of any integer
  expression (``NAME``, ``offsetof(struct s, f)``, ``sizeof(...)``) by
  compiling and running a tiny program that includes the given headers.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)[ \t]+(.+?)[ \t]*$", re.MULTILINE)
_ENUM = re.compile(r"\benum\b[^{;]*\{(.*?)\}", re.DOTALL)
_INT_SUFFIX = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b")
_SAFE_EXPR = re.compile(r"^[\w\s()<>|&~+\-*]+$")


def _strip_comments(text: str) -> str:
    return _COMMENT.sub(" ", text)


def _eval(expr: str, known: dict[str, int]) -> int | None:
    """An integer constant expression made of literals, known names and
    ( ) << >> | & ~ + - *; None for anything else (casts, strings, macros
    with arguments)."""
    if not _SAFE_EXPR.match(expr):
        return None
    unsigned32 = bool(re.search(r"\b(0[xX][0-9a-fA-F]+|\d+)[uU]\b", expr))
    py = _INT_SUFFIX.sub(r"\1", expr)
    names = set(re.findall(r"\b[A-Za-z_]\w*\b", py))
    if not names <= known.keys():
        return None
    try:
        value = eval(py, {"__builtins__": {}}, {n: known[n] for n in names})
    except Exception:  # noqa: BLE001 - not an expression we understand
        return None
    if not isinstance(value, int):
        return None
    if unsigned32 and value < 0:   # e.g. ~0U
        value &= 0xFFFFFFFF
    return value


def parse_constants(path: Path) -> dict[str, int]:
    """Every object-like #define with an integer value and every enum constant."""
    text = _strip_comments(path.read_text())
    out: dict[str, int] = {}
    # Walk definitions in file order so later ones may use earlier ones.
    items: list[tuple[int, str, str]] = []
    for m in _DEFINE.finditer(text):
        items.append((m.start(), "define", m.group(0)))
    for m in _ENUM.finditer(text):
        items.append((m.start(), "enum", m.group(1)))
    for _pos, kind, body in sorted(items):
        if kind == "define":
            m = _DEFINE.match(body)
            assert m is not None
            name, expr = m.group(1), m.group(2)
            if "(" in name:
                continue
            value = _eval(expr, out)
            if value is not None:
                out[name] = value
        else:
            nxt = 0
            for entry in body.split(","):
                entry = entry.strip()
                if not entry:
                    continue
                name, _, expr = (p.strip() for p in entry.partition("="))
                if expr:
                    value = _eval(expr, out)
                    if value is None:
                        raise ValueError(f"{path.name}: cannot evaluate enum {name} = {expr}")
                    nxt = value
                out[name] = nxt
                nxt += 1
    return out


def c_string_array(path: Path, array: str) -> str:
    """The initializer text of ``... array[...] = { ... };`` in a C file."""
    text = _strip_comments(path.read_text())
    m = re.search(rf"\b{re.escape(array)}\s*\[[^\]]*\]\s*=\s*\{{(.*?)\}};", text, re.DOTALL)
    if m is None:
        raise LookupError(f"{array}[] not found in {path}")
    return m.group(1)


def c_compiler() -> list[str] | None:
    """The C compiler Python's extensions are built with (None if absent)."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    return cc if cc and shutil.which(cc[0]) else None


def compile_values(exprs: list[str], includes: list[str], workdir: Path,
                   include_dirs: list[Path] = ()) -> dict[str, int]:
    """Evaluate each C integer expression with the real compiler."""
    cc = c_compiler()
    if cc is None:
        raise RuntimeError("no C compiler")
    src = workdir / "values.c"
    lines = ["#include <stdio.h>", "#include <stddef.h>"]
    lines += [f"#include {inc}" for inc in includes]
    lines.append("int main(void) {")
    for i, e in enumerate(exprs):
        lines.append(f'    printf("%d %lld\\n", {i}, (long long)({e}));')
    lines += ["    return 0;", "}"]
    src.write_text("\n".join(lines) + "\n")
    exe = workdir / "values"
    flags = [f"-I{d}" for d in include_dirs]
    subprocess.run([*cc, "-std=gnu11", "-w", *flags, str(src), "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=30)
    values = {}
    for line in out.stdout.splitlines():
        i, v = line.split()
        values[exprs[int(i)]] = int(v)
    return values


def header_names(include: str, workdir: Path) -> set[str]:
    """Identifiers a system header defines as macros or enum constants."""
    cc = c_compiler()
    if cc is None:
        raise RuntimeError("no C compiler")
    src = workdir / "names.c"
    src.write_text(f"#include {include}\n")
    macros = subprocess.run([*cc, "-dM", "-E", str(src)], check=True, capture_output=True,
                            text=True, timeout=60).stdout
    names = set(re.findall(r"^#define ([A-Za-z_]\w*) ", macros, re.MULTILINE))
    pre = subprocess.run([*cc, "-E", "-P", str(src)], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    for body in _ENUM.findall(pre):
        for entry in body.split(","):
            name = entry.split("=")[0].strip()
            if name:
                names.add(name)
    return names
