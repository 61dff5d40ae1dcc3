"""Module paths that moved keep working for one release, with a DeprecationWarning.

``subring.client`` and ``subring.subsystem_stats`` became modules of the
``subring.subsystem`` package (issue 9).  Code written against the old paths
still runs: every name they exported resolves to the very same object and
warns, naming where it lives now.  subring itself never uses an old path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import subring
import subring.subsystem as pkg

SRC = Path(subring.__file__).resolve().parents[1]

# what each old module exported (its __all__ in the last release)
OLD_EXPORTS = {
    "subring.client": ("subring.subsystem.client",
                       ["AbiMismatchError", "AttachRefusedError", "ClientStatistics",
                        "SubsystemClient", "connect"]),
    "subring.subsystem_stats": ("subring.subsystem.stats",
                                ["ClientRow", "SubsystemStatistics", "query_statistics"]),
}


@pytest.mark.parametrize("old", sorted(OLD_EXPORTS))
def test_old_module_names_resolve_with_a_deprecation_warning(old: str) -> None:
    import importlib

    new, names = OLD_EXPORTS[old]
    mod = importlib.import_module(old)
    for name in names:
        with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*import {name} "
                                                    rf"from {new}") as rec:
            value = getattr(mod, name)
        assert value is getattr(pkg, name) is getattr(subring, name)
        # the warning points at the caller (this file), not at the shim
        assert rec[0].filename == __file__
    assert sorted(dir(mod)) == sorted(importlib.import_module(new).__all__)


def test_from_import_of_an_old_path_warns_at_the_importing_line() -> None:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        from subring.client import connect  # noqa: PLC0415
    assert connect is subring.connect
    assert [w.category for w in rec] == [DeprecationWarning]
    assert rec[0].filename == __file__


def test_unknown_name_of_an_old_path_is_an_attribute_error() -> None:
    import subring.client as old

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        old.nope  # noqa: B018
    with pytest.raises(ImportError):
        from subring.client import nope  # noqa: F401, PLC0415


def test_subring_itself_never_uses_an_old_path() -> None:
    """Importing every subring package with DeprecationWarning as an error:
    nothing in the library goes through a shim."""
    code = ("import subring, subring.subsystem, subring.aio, subring.executor, "
            "subring.cli, subring.fuse, subring.kernel, subring.memory, subring.ring")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
