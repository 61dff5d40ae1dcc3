"""No module of subring reaches into another module's private names.

An AST scan of src/subring (every .py file) for

* ``<expr>._name`` where ``<expr>`` is not ``self``/``cls``/``super()``,
* ``getattr``/``setattr``/``hasattr``/``delattr(<expr>, "_name")`` likewise,
* ``from <module> import _name`` where ``_name`` is not a module,

and where ``_name`` is not defined in the scanning module itself (a method,
a ``self._name``/class attribute, a ``__slots__`` entry or a module global):
a module may use its own private names on any object, never another's.
Dunder names are public protocol.  A package may import its private modules
(``from . import _core``, ``from .._moved import ...``): those are internal to
the package by name.  What is left is on ALLOWED, each with its reason; an
entry that no longer matches anything fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import subring

PKG = Path(subring.__file__).resolve().parent

# (module path relative to src/subring, private name) -> why it is allowed
ALLOWED: dict[tuple[str, str], str] = {
    # concurrent.futures.Future internals: executor/future.py is the one module
    # built on them (its docstring says so; tests/executor/
    # test_executor_future_internals.py pins the CPython versions it supports)
    # (its own overrides of _state, _condition, _waiters... count as its own names)
    ("executor/future.py", "_base"): "concurrent.futures._base: Future's states and lock",
    ("executor/future.py", "_RemoteTraceback"): "how ProcessPoolExecutor shows a worker's "
                                                "traceback; RingExecutor matches it",
    ("executor/future.py", "_register_atexit"): "threading's hook, as concurrent.futures uses it",
    # a forkserver child must drop multiprocessing's copy of the alive pipe
    # (worker.py explains why); the stdlib offers no public way
    ("executor/worker.py", "_forkserver"): "multiprocessing.forkserver internals",
    ("executor/worker.py", "_forkserver_alive_fd"): "multiprocessing.forkserver internals",
    # os._exit is public API despite its name
    ("executor/worker.py", "_exit"): "os._exit (public API)",
}

_ATTR_FUNCS = {"getattr", "setattr", "hasattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(tree: ast.AST) -> set[str]:
    """Private names the module defines itself."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    for node in ast.walk(tree):                     # __slots__ = ("_a", "_b")
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            for elt in ast.walk(node.value):
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                    names.add(elt.value)
    return {n for n in names if _private(n)}


def _is_self(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Name) and expr.id in ("self", "cls"):
        return True
    return (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
            and expr.func.id == "super")


def _is_module(path: Path, module: str | None, level: int, name: str) -> bool:
    """Is ``from <module> import <name>`` (relative to ``path``) a module?"""
    base = path.parent
    for _ in range(level - 1):
        base = base.parent
    if level == 0:
        if not (module or "").startswith("subring"):
            return False
        base = PKG.parent
    for part in (module or "").split("."):
        if part:
            base = base / part
    return (base / f"{name}.py").exists() or (base / name / "__init__.py").exists() or \
        any(base.glob(f"{name}.*.so"))


def scan() -> dict[tuple[str, str], list[str]]:
    """(module, private name) -> where it is reached into."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        own = _own_names(tree)

        def hit(name: str, node: ast.AST, what: str, rel: str = rel,
                own: set[str] = own) -> None:
            if _private(name) and name not in own:
                found[(rel, name)].append(f"{rel}:{node.lineno}: {what}")

        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not _is_self(node.value):
                hit(node.attr, node, ast.unparse(node))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in _ATTR_FUNCS and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Constant)
                  and isinstance(node.args[1].value, str) and not _is_self(node.args[0])):
                hit(node.args[1].value, node, ast.unparse(node))
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if _private(alias.name) and not _is_module(path, node.module, node.level,
                                                               alias.name):
                        hit(alias.name, node, ast.unparse(node))
    return dict(found)


def test_no_module_reaches_into_another_modules_private_names() -> None:
    found = scan()
    new = {k: v for k, v in found.items() if k not in ALLOWED}
    assert not new, "private names reached from outside their module:\n" + "\n".join(
        line for lines in new.values() for line in lines)


def test_allow_list_has_no_stale_entries() -> None:
    stale = set(ALLOWED) - set(scan())
    assert not stale, f"ALLOWED entries that match nothing any more (remove them): {stale}"


def test_the_scan_finds_what_it_must(tmp_path: Path, monkeypatch) -> None:
    """The scanner is not vacuous: a module poking at another's private
    attribute, getattr with a private string, and a private import are found;
    self/cls/super() and the module's own private names are not."""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "other.py").write_text("_hidden = 1\nclass Pool:\n    def __init__(self):\n"
                                  "        self._mmap = None\n")
    (pkg / "user.py").write_text(
        "from .other import _hidden\n"
        "def f(pool, ring):\n"
        "    x = pool._mmap\n"
        "    getattr(ring, '_set_async')(True)\n"
        "class Mine:\n"
        "    def __init__(self):\n"
        "        self._own = 0\n"
        "    def g(self, other):\n"
        "        return self._own + other._own + super().__init__.__name__.__len__()\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    found = scan()
    assert set(found) == {("user.py", "_hidden"), ("user.py", "_mmap"),
                          ("user.py", "_set_async")}
