"""Types for users: the stubs cover the C core, ``ruff`` is clean and
``mypy --strict`` accepts a user script that touches every public entry
point (tests/project/typing/user_script.py) with subring's own types.

ruff and mypy come with the dev extra; without them these tests skip.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import subring
from subring import _core

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(subring.__file__).resolve().parents[1]
STUB = SRC / "subring" / "_core.pyi"
USER_SCRIPT = ROOT / "tests" / "project" / "typing" / "user_script.py"


def _tool(name: str) -> list[str]:
    if shutil.which(name) is None:
        try:
            __import__(name)
        except ImportError:
            pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
        return [sys.executable, "-m", name]
    return [name]


def test_py_typed_and_stub_shipped() -> None:
    assert (SRC / "subring" / "py.typed").is_file()
    assert STUB.is_file()


def _stub_names() -> tuple[set[str], dict[str, set[str]]]:
    tree = ast.parse(STUB.read_text())
    top: set[str] = set()
    members: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            members[node.name] = {
                n.name if isinstance(n, ast.FunctionDef) else n.target.id  # type: ignore[union-attr]
                for n in node.body
                if isinstance(n, ast.FunctionDef)
                or (isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))}
        elif isinstance(node, ast.FunctionDef):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    return top, members


def test_stub_declares_every_core_object() -> None:
    """Every name of _core and every method/attribute of its types is in
    _core.pyi -- a C change without a stub change fails here."""
    top, members = _stub_names()
    runtime = {n for n in dir(_core) if not n.startswith("__")}
    assert runtime - top == set(), "add these to src/subring/_core.pyi"
    for name in runtime:
        obj = getattr(_core, name)
        if not isinstance(obj, type):
            continue
        have = {m for m in vars(obj) if not m.startswith("__")}
        assert have - members[name] == set(), f"_core.{name}: add these to _core.pyi"


def test_ruff_clean() -> None:
    proc = subprocess.run([*_tool("ruff"), "check", "--output-format", "concise", "src"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def mypy_run() -> subprocess.CompletedProcess[str]:
    """One ``mypy --strict`` over the whole package and the user script
    (a cold mypy run costs ~5-10 s; three runs checked cli/ twice).  Each
    test below reads the errors in its own files."""
    env = dict(os.environ)
    env["MYPYPATH"] = str(SRC)            # this tree's subring, not an installed one
    return subprocess.run([*_tool("mypy"), "--strict", "--no-incremental",
                           "--follow-imports=silent", "--show-absolute-path",
                           str(SRC / "subring"), str(USER_SCRIPT)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def _mypy_errors(run: subprocess.CompletedProcess[str], *targets: Path) -> list[str]:
    """The lines of mypy's report about files under ``targets``; a mypy that
    crashed or reported errors nowhere in particular fails every test."""
    out = run.stdout + run.stderr
    assert run.returncode in (0, 1), out
    lines = [ln for ln in run.stdout.splitlines() if ": error:" in ln or ": note:" in ln]
    if run.returncode == 1:
        assert lines, out                   # errors, but none attributed to a file
    return [ln for ln in lines
            if any(Path(ln.split(":", 1)[0]).resolve().is_relative_to(t.resolve())
                   for t in targets)]


def test_mypy_strict_cli_package(mypy_run: subprocess.CompletedProcess[str]) -> None:
    errors = _mypy_errors(mypy_run, SRC / "subring" / "cli", SRC / "subring" / "__main__.py")
    assert not errors, "\n".join(errors)


def test_mypy_strict_library(mypy_run: subprocess.CompletedProcess[str]) -> None:
    """The whole package type-checks under --strict (users' checkers read
    these annotations through py.typed)."""
    errors = _mypy_errors(mypy_run, SRC / "subring")
    assert not errors, "\n".join(errors)


def test_mypy_strict_user_script(mypy_run: subprocess.CompletedProcess[str]) -> None:
    """A user's script using every public entry point type-checks under
    --strict against subring's own annotations and stubs."""
    errors = _mypy_errors(mypy_run, USER_SCRIPT)
    assert not errors, "\n".join(errors)


def test_user_script_runs(tmp_path: Path) -> None:
    """The script is real code: its entry points run (not only type-check)."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    code = (f"import sys; sys.path.insert(0, {str(USER_SCRIPT.parent)!r}); "
            "import user_script as u, asyncio; "
            "print(u.kernel(), asyncio.run(u.files()), u.pool()); u.buffers()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1024" in proc.stdout


# the classes users call methods on; their methods come from C (text
# signatures in the method tables) or from Python
PUBLIC_CLASSES = ("KernelRing", "SubsystemClient", "Subsystem", "BufferPool", "RingExecutor",
                  "Completion", "BufferRing", "Pin", "Request", "Batch")


def test_every_public_method_has_a_signature() -> None:
    """inspect.signature works on every public method (IDEs show arguments,
    not ``(...)``).  C methods need a text signature in their doc string:
    ``"name($self, a, b=0)\\n--\\n\\n..."``."""
    import inspect

    from subring import aio

    classes = [getattr(subring, n) for n in PUBLIC_CLASSES]
    classes += [getattr(aio, n) for n in ("AsyncRing", "AsyncFile") if hasattr(aio, n)]
    missing = []
    for cls in classes:
        for name in dir(cls):
            member = getattr(cls, name)
            if name.startswith("_") or not callable(member) or isinstance(member, type):
                continue
            try:
                inspect.signature(member)
            except (TypeError, ValueError):
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, f"C methods without a text signature: {', '.join(missing)}"


def test_every_public_core_callable_has_a_signature() -> None:
    """The same for the C core's own functions and the public methods of its
    types, internal ones included (ServerLoop, ServerQueue, SharedMap): their
    method tables carry text signatures."""
    import inspect

    missing = []
    for name in dir(_core):
        if name.startswith("_"):
            continue
        obj = getattr(_core, name)
        members = ([(f"{name}.{m}", getattr(obj, m)) for m in vars(obj) if not m.startswith("_")]
                   if isinstance(obj, type) else [(name, obj)])
        for where, member in members:
            if not callable(member) or isinstance(member, type):
                continue
            try:
                inspect.signature(member)
            except (TypeError, ValueError):
                missing.append(where)
    assert not missing, f"_core callables without a text signature: {', '.join(missing)}"
