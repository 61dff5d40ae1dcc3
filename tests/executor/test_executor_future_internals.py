"""subring.executor.future is the only module that touches
``concurrent.futures`` internals.  This pins the CPython versions it was
checked against: on a newer interpreter this test fails until someone checks
the internals again and extends SUPPORTED_PYTHON."""

from __future__ import annotations

import ast
import pathlib
import sys

from subring.executor import future

PACKAGE = pathlib.Path(future.__file__).parent


def test_running_python_is_a_supported_version():
    low, high = future.SUPPORTED_PYTHON
    assert low <= sys.version_info[:2] <= high, (
        f"CPython {sys.version_info[:2]} is outside {future.SUPPORTED_PYTHON}: check the "
        "concurrent.futures internals subring.executor.future relies on, then extend it")


def test_internals_present():
    assert future.check_internals() == []


def test_no_other_executor_module_touches_concurrent_futures_internals():
    for path in PACKAGE.glob("*.py"):
        if path.name == "future.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("concurrent.futures"):
                bad = [a.name for a in node.names if a.name.startswith("_")]
                assert node.module == "concurrent.futures" and not bad, (path.name, node.module)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id == "cf" and node.attr.startswith("_"):
                raise AssertionError(f"{path.name} uses cf.{node.attr}")


def test_modules_stay_small():
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 750, path.name
