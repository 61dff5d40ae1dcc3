"""API hygiene of the kernel ring's public surface: every public method of
KernelRing (C and Python), BufferRing, Completion and Pin has a docstring and
a signature inspect can read (C methods carry a text signature)."""

from __future__ import annotations

import inspect

import pytest

from subring import Completion, KernelRing, Pin
from subring._core import BufferRing

CLASSES = [KernelRing, BufferRing, Completion, Pin]


def _public_methods(cls):
    for name in dir(cls):
        if name.startswith("_"):
            continue
        obj = getattr(cls, name)
        if callable(obj) and not isinstance(obj, type):
            yield name, obj


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_public_method_has_a_signature_and_a_docstring(cls):
    missing = []
    for name, fn in _public_methods(cls):
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as e:
            missing.append(f"{name}: no signature ({e})")
            continue
        if not (fn.__doc__ or "").strip():
            missing.append(f"{name}: no docstring")
        doc_head = (fn.__doc__ or "").lstrip().split("\n", 1)[0]
        if doc_head.startswith(f"{name}(") and "--" not in (fn.__doc__ or ""):
            missing.append(f"{name}: signature only in the docstring text ({sig})")
    assert not missing, missing


def test_c_signatures_name_the_real_parameters():
    assert list(inspect.signature(KernelRing.submit_and_wait).parameters) == [
        "self", "wait_nr", "timeout"]
    assert str(inspect.signature(KernelRing.prep_nop)) == "(self, /, user_data=None, flags=0)"
    assert list(inspect.signature(BufferRing.recycle).parameters) == ["self", "buffer_id"]
    assert str(inspect.signature(Pin)) == "(obj, writable=False)"
