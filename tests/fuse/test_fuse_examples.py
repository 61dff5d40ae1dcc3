"""examples/passthrough.py on a real mount over both transports (and its
ring-backed async I/O mode)."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
from examples.passthrough import Passthrough

from fuse_support import (
    TRANSPORTS,
    is_mounted,
    mounted,
    nothing_left_behind,  # noqa: F401 - autouse module fixture
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.mark.parametrize("io", ["sync", "ring"])
def test_passthrough_mirrors_a_directory(tmp_path, transport, io):
    backing = tmp_path / "backing"
    backing.mkdir()
    (backing / "existing.txt").write_text("from below\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m_path = str(mnt)
    with mounted(Passthrough(str(backing), io), m_path, transport) as m:
        assert sorted(os.listdir(m_path)) == ["existing.txt"]
        assert (mnt / "existing.txt").read_text() == "from below\n"
        data = os.urandom(3 * 1024 * 1024 + 5)
        (mnt / "big.bin").write_bytes(data)
        assert hashlib.sha256((backing / "big.bin").read_bytes()).digest() == \
            hashlib.sha256(data).digest()
        out = subprocess.run(["sha256sum", str(mnt / "big.bin")], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()[0]
        assert out == hashlib.sha256(data).hexdigest()
        os.makedirs(mnt / "d" / "e")
        (mnt / "d" / "e" / "f").write_text("deep")
        os.rename(mnt / "d", mnt / "renamed")
        assert (backing / "renamed" / "e" / "f").read_text() == "deep"
        assert (mnt / "renamed" / "e" / "f").read_text() == "deep"
        os.symlink("existing.txt", mnt / "ln")
        assert os.readlink(backing / "ln") == "existing.txt"
        os.truncate(mnt / "existing.txt", 4)
        assert (backing / "existing.txt").read_text() == "from"
        os.unlink(mnt / "big.bin")
        assert not (backing / "big.bin").exists()
        if io == "ring":
            assert m.statistics().async_requests > 0
    assert not is_mounted(m_path)
