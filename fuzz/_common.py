"""Shared driver of the fuzz harnesses in this directory.

Every harness defines ``test_one_input(data: bytes)`` and calls
``main(test_one_input)``:

    python3 fuzz/fuzz_X.py [libFuzzer flags] [CORPUS_DIR ...]   # fuzz (needs atheris)
    python3 fuzz/fuzz_X.py --replay FILE_OR_DIR ...            # replay, no atheris needed

A finding is an exception other than the documented ones, or a crash of the
process (segfault, abort): libFuzzer writes the input to ``crash-*`` (see
``-artifact_prefix``).  Keep every finding in ``fuzz/corpus/<harness>/`` (the
replay test in tests/reliability runs them all).

Coverage: atheris instruments the Python modules of subring imported through
``instrumented()`` (the attach handshake, wire messages, builders).  The C
core is not instrumented (libFuzzer's coverage needs clang's
-fsanitize=fuzzer-no-link; this project builds with gcc), so C paths are
reached by mutation only; run a harness under scripts/sanitize.sh's ASan
build to catch memory errors there.
"""

from __future__ import annotations

import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# After PYTHONPATH: a tree given there (another build, a sanitizer build) wins.
for p in (os.path.join(ROOT, "src"), os.path.join(ROOT, "tests", "helpers")):
    if p not in sys.path:
        sys.path.append(p)

try:
    import atheris
except ImportError:          # replay still works
    atheris = None


@contextlib.contextmanager
def instrumented():
    """Import subring's Python modules with coverage instrumentation (when
    fuzzing under atheris)."""
    if atheris is not None and "--replay" not in sys.argv:
        with atheris.instrument_imports(include=["subring"]):
            yield
    else:
        yield


def instrument(fn):
    """Coverage-instrument one harness function (a no-op without atheris).

    The C core gives libFuzzer no coverage, so each harness reports what the
    C code *did* through an instrumented ``feedback()`` that branches on the
    outcome (result codes, flags, how many entries moved, corrupt or not):
    new outcomes are new edges, and atheris's comparison hooks steer inputs
    toward the constants compared there."""
    if atheris is not None and "--replay" not in sys.argv:
        return atheris.instrument_func(fn)
    return fn


def _inputs(paths: list[str]):
    for p in paths:
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                full = os.path.join(p, name)
                if os.path.isfile(full):
                    yield full
        else:
            yield p


def main(test_one_input, setup=None, teardown=None) -> None:
    if setup is not None:
        setup()
    try:
        if "--replay" in sys.argv:
            paths = [a for a in sys.argv[1:] if a != "--replay"]
            n = 0
            for path in _inputs(paths):
                with open(path, "rb") as f:
                    data = f.read()
                try:
                    test_one_input(data)
                except BaseException:
                    print(f"FAILED on {path}", file=sys.stderr, flush=True)
                    raise
                n += 1
            print(f"replayed {n} inputs", flush=True)
            return
        if atheris is None:
            sys.exit("atheris is not installed: pip install atheris (or use --replay)")
        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()
    finally:
        if teardown is not None:
            teardown()
