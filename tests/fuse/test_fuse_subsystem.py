"""The same Operations class with no mount: served as a subring Subsystem
and called by FuseClient (no root, no /dev/fuse)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading

import pytest

from fuse_support import ROOT, MemFS
from subring.fuse import ROOT_INO, FuseClient, FuseSubsystem, SetAttr

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served():
    """A FuseSubsystem(MemFS()) serving a socket from a thread (in a
    directory an unprivileged process can reach)."""
    sockdir = tempfile.mkdtemp(prefix="subring-fuse-")
    os.chmod(sockdir, 0o711)
    sock = os.path.join(sockdir, "memfs.sock")
    sub = FuseSubsystem(MemFS())
    ready = threading.Event()
    t = threading.Thread(target=sub.serve, args=(sock,),
                         kwargs={"ready": ready.set, "socket_mode": 0o666,
                                 "allow_uids": {os.getuid(), 65534}}, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield sock, sub
    finally:
        sub.stop()
        t.join(10)
        shutil.rmtree(sockdir, ignore_errors=True)
        assert not t.is_alive()


def test_file_system_over_the_ring_abi(served):
    sock, sub = served
    with FuseClient.connect(sock) as fs:
        d = fs.mkdir(ROOT_INO, b"docs", 0o755)
        assert stat.S_ISDIR(d.attr.mode) and d.ino > ROOT_INO
        entry, fh = fs.create(d.ino, b"a.txt", 0o644, os.O_WRONLY)
        assert fs.write(entry.ino, fh, 0, b"hello world") == 11
        assert fs.read(entry.ino, fh, 6, 100) == b"world"
        assert fs.lookup(d.ino, b"a.txt").ino == entry.ino
        assert fs.getattr(entry.ino).size == 11
        assert fs.setattr(entry.ino, SetAttr(size=5)).size == 5
        fs.symlink(d.ino, b"ln", b"a.txt")
        assert fs.readlink(fs.lookup(d.ino, b"ln").ino) == b"a.txt"
        fs.link(entry.ino, ROOT_INO, b"hard")
        assert fs.getattr(entry.ino).nlink == 2
        fs.setxattr(entry.ino, b"user.k", b"v")
        assert fs.getxattr(entry.ino, b"user.k") == b"v"
        assert fs.listxattr(entry.ino) == [b"user.k"]
        fs.rename(d.ino, b"a.txt", ROOT_INO, b"b.txt")
        names = [e.name for e in fs.readdir(ROOT_INO)]
        assert names == [b".", b"..", b"docs", b"hard", b"b.txt"]
        assert fs.statfs().namelen == 255
        with pytest.raises(FileNotFoundError):
            fs.lookup(ROOT_INO, b"missing")
        with pytest.raises(OSError) as e:
            fs.rmdir(ROOT_INO, b"hard")
        assert e.value.errno == errno.ENOTDIR
        with pytest.raises(OSError) as e:
            fs.readdirplus(ROOT_INO)          # MemFS does not define it
        assert e.value.errno == errno.ENOSYS


def test_long_listing_takes_several_round_trips(served):
    sock, _ = served
    with FuseClient.connect(sock, slot_size=4096) as fs:
        for i in range(300):
            fs.mknod(ROOT_INO, b"file-%04d" % i, stat.S_IFREG | 0o600)
        names = [e.name for e in fs.readdir(ROOT_INO)]
        assert names[2:] == [b"file-%04d" % i for i in range(300)]


def test_unprivileged_process_uses_it(served):
    """Another program, without root, uses the file system as a library."""
    sock, _ = served
    code = (
        "import os, json, sys\n"
        "from subring.fuse import FuseClient, ROOT_INO\n"
        "import subring.subsystem.client, subring.subsystem.attach\n"
        "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
        f"fs = FuseClient.connect({sock!r})\n"
        "e, fh = fs.create(ROOT_INO, b'from-child', 0o600, 0)\n"
        "fs.write(e.ino, fh, 0, b'hi')\n"
        "print(json.dumps({'uid': os.geteuid(), 'data': fs.read(e.ino, fh, 0, 10).decode()}))\n"
        "fs.close()\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["data"] == "hi"
    if os.geteuid() == 0:
        assert res["uid"] == 65534


def test_async_handlers_without_a_mount():
    """An ``async def`` handler works the same way served as a subsystem."""
    import asyncio

    class AsyncFS(MemFS):
        async def getattr(self, ino, fh):
            await asyncio.sleep(0.01)
            return MemFS.getattr(self, ino, fh)

    sockdir = tempfile.mkdtemp(prefix="subring-fuse-")
    sock = os.path.join(sockdir, "a.sock")
    sub = FuseSubsystem(AsyncFS())
    ready = threading.Event()
    t = threading.Thread(target=sub.serve, args=(sock,), kwargs={"ready": ready.set},
                         daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        with FuseClient.connect(sock) as fs:
            assert stat.S_ISDIR(fs.getattr(ROOT_INO).mode)
    finally:
        sub.stop()
        t.join(10)
        shutil.rmtree(sockdir, ignore_errors=True)
    assert not t.is_alive()
