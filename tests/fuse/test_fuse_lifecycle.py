"""Lifecycle of a subring.fuse mount: the CLI's ready line and signals, a
server killed with SIGKILL while a reader blocks, enable_uring off -> the
classic transport with a notice, nothing left behind."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from fuse_support import (
    ROOT,
    TRANSPORTS,
    MemFS,
    force_unmount,
    fuse_skip_reason,
    fuse_threads,
    is_mounted,
    mounted,
    nothing_left_behind,  # noqa: F401 - autouse module fixture
    require,
)
from subring.fuse import (
    FuseOptionError,
    FuseTransportError,
    mount,
    uring_enabled,
    uring_switched,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def mnt(tmp_path):
    p = tmp_path / "mnt"
    p.mkdir()
    yield str(p)
    if is_mounted(str(p)):
        force_unmount(str(p))
        pytest.fail("the test left its mount behind")


def wait_until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


class Server:
    """`python -m subring.fuse` in a subprocess, killed and unmounted at exit."""

    def __init__(self, target: str, mnt: str, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "src"),
                                             os.path.join(ROOT, "tests", "fuse"), ROOT])
        self.mnt = mnt
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "subring.fuse", target, mnt, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)

    def ready(self, timeout: float = 20.0) -> dict:
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise TimeoutError("the server printed no ready line")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited: {self.proc.wait(5)} {self.proc.stderr.read()!r}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        if is_mounted(self.mnt):
            wait_until(lambda: not is_mounted(self.mnt), 5)
        if is_mounted(self.mnt):
            force_unmount(self.mnt)


def cli_args(transport: str) -> list[str]:
    return ["--transport", transport] + (["--enable-uring"] if transport == "uring" else [])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cli_serves_until_sigterm_then_unmounts(mnt, transport):
    require(transport)
    before = uring_enabled()
    srv = Server("examples.memfs:MemFS", mnt, *cli_args(transport))
    try:
        info = srv.ready()
        assert info["transport"] == transport and info["mounted"] == mnt
        with open(os.path.join(mnt, "f"), "w") as f:
            f.write("x")
        assert subprocess.run(["ls", mnt], capture_output=True, text=True,
                              timeout=10).stdout.split() == ["f"]
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(20) == 0
        assert not is_mounted(mnt)
        # The CLI switched enable_uring on only around the mount and put it back.
        assert uring_enabled() == before
    finally:
        srv.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigkill_server_while_reader_blocks(mnt, transport):
    """The reader blocked in a handler gets an error (ENOTCONN), and the
    watchdog removes the mount: no stale mount, no hang."""
    require(transport)
    srv = Server("fuse_support:SlowFS", mnt, *cli_args(transport))
    reader = None
    try:
        srv.ready()
        reader = subprocess.Popen(["cat", os.path.join(mnt, "stuck")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        assert reader.poll() is None, "the reader should be blocked in the handler"
        srv.proc.kill()
        srv.proc.wait(10)
        out, err = reader.communicate(timeout=20)
        assert reader.returncode != 0
        assert b"not connected" in err or b"Input/output" in err or b"aborted" in err, err
        assert wait_until(lambda: not is_mounted(mnt), 10), "the mount was left behind"
    finally:
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait(10)
        srv.close()


def test_enable_uring_off_means_classic_with_a_notice(mnt, caplog):
    require("uring")
    m = None
    try:
        with caplog.at_level(logging.INFO, logger="subring.fuse"):
            with uring_switched(False):
                m = mount(MemFS(), mnt, transport="auto")
        assert m.transport == "classic"
        os.listdir(mnt)
        assert m.statistics().backend == "fuse-classic"
    finally:
        if m is not None:
            m.unmount()
    notices = [r.getMessage() for r in caplog.records if "transport" in r.getMessage()]
    assert len(notices) == 1 and "classic" in notices[0] and "enable_uring is N" in notices[0]


def test_uring_required_but_off_fails_cleanly(mnt):
    require("uring")
    with uring_switched(False):
        with pytest.raises(FuseTransportError) as e:
            mount(MemFS(), mnt, transport="uring")
    assert "enable_uring" in str(e.value)
    assert not is_mounted(mnt)
    assert fuse_threads() == []


def test_context_manager_and_wait(mnt):
    require()
    with mounted(MemFS(), mnt, "classic") as m:
        assert m.wait(0.1) is False           # still serving
        assert is_mounted(mnt)
        subprocess.run(["umount", mnt], check=True, timeout=10)   # from outside
        assert m.wait(10) is True             # serving ended
    assert not is_mounted(mnt)


def test_bad_arguments_raise_before_mounting(tmp_path):
    with pytest.raises(ValueError):
        mount(MemFS(), str(tmp_path), transport="carrier-pigeon")
    with pytest.raises(FuseOptionError, match="queue_depth"):     # a ValueError
        mount(MemFS(), str(tmp_path), queue_depth=0)
    assert issubclass(FuseOptionError, ValueError)
    with pytest.raises(NotADirectoryError):
        f = tmp_path / "file"
        f.write_text("")
        mount(MemFS(), str(f))
    assert fuse_skip_reason() or not is_mounted(str(tmp_path))


NONROOT_SCRIPT = r"""
import json, os, sys, subprocess
sys.path.insert(0, sys.argv[3])
import subring.fuse as F
from examples.memfs import MemFS
import encodings.idna, asyncio.unix_events  # noqa: F401 (imported while we still can)
os.setgroups([]); os.setgid(65534); os.setuid(65534)
mnt, transport = sys.argv[1], sys.argv[2]
m = F.mount(MemFS(), mnt, transport=transport)
try:
    with open(os.path.join(mnt, "f"), "w") as f:
        f.write("by nobody")
    ok = open(os.path.join(mnt, "f")).read()
    st = os.stat(os.path.join(mnt, "f"))
    out = {"transport": m.transport, "data": ok, "uid": os.geteuid(),
           "mounted": any(l.split()[4] == mnt for l in open("/proc/self/mountinfo"))}
finally:
    m.unmount()
out["after"] = any(l.split()[4] == mnt for l in open("/proc/self/mountinfo"))
print(json.dumps(out))
"""


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_non_root_mount_through_fusermount3(tmp_path, transport):
    """As an unprivileged user the mount goes through fusermount3 (with
    auto_unmount as the watchdog); the same class, the same transports."""
    require(transport)
    from subring.fuse import fusermount
    if fusermount.available() is None:
        pytest.skip("fusermount3 is not installed")
    if not os.stat("/dev/fuse").st_mode & 0o006:
        pytest.skip("/dev/fuse is not accessible to unprivileged users here (mode "
                    f"{os.stat('/dev/fuse').st_mode & 0o777:o})")
    import tempfile
    mnt = tempfile.mkdtemp(prefix="subring-fuse-nonroot-")
    os.chown(mnt, 65534, 65534)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    try:
        prev = uring_enabled()
        if transport == "uring":
            from subring.fuse import set_uring_enabled
            set_uring_enabled(True)
        try:
            out = subprocess.run([sys.executable, "-c", NONROOT_SCRIPT, mnt, transport, ROOT],
                                 capture_output=True, text=True, timeout=30, env=env,
                                 check=False)
        finally:
            if transport == "uring":
                set_uring_enabled(prev)
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout)
        assert res == {"transport": transport, "data": "by nobody", "uid": 65534,
                       "mounted": True, "after": False}
    finally:
        if is_mounted(mnt):
            force_unmount(mnt)
        os.rmdir(mnt)


def test_register_error_is_fatal_not_a_hang(mnt):
    """A REGISTER the kernel refuses (here: a queue id past the possible
    CPUs) ends serve_ring() with an error at once: the caller (FuseMount)
    then unmounts instead of leaving requests blocked on a ring that never
    becomes ready."""
    require("uring")
    from subring import _core
    from subring.fuse import possible_cpus

    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    conn = None
    try:
        with uring_switched(True):                # read when the mount queues INIT
            _core.fuse_mount("subring-test", mnt, "fuse.regtest", 6,
                             f"fd={fd},rootmode=40755,user_id=0,group_id=0")
        conn = _core.FuseConn(fd, MemFS())
        fd = -1                                   # the FuseConn owns it now
        info = conn.init(True, 10.0)
        if not info["uring"]:
            pytest.skip("enable_uring was N at mount time (toggled by another test?)")
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            conn.serve_ring((max(possible_cpus()) + 100,), 1)
        assert time.monotonic() - t0 < 10
        assert "FUSE io_uring command" in str(e.value)
    finally:
        if is_mounted(mnt):
            force_unmount(mnt)
        if conn is not None:
            conn.close()
        if fd >= 0:
            os.close(fd)


def test_cli_reports_a_mount_failure_clearly(tmp_path):
    missing = str(tmp_path / "does-not-exist")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + ROOT)
    out = subprocess.run([sys.executable, "-m", "subring.fuse", "examples.memfs:MemFS", missing],
                         capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
                         check=False)
    assert out.returncode == 1
    assert "cannot mount" in out.stderr and "does-not-exist" in out.stderr
    assert "Traceback" not in out.stderr


def test_close_refused_while_a_dev_loop_reads(mnt):
    """Regression: FuseConn.close() closed the /dev/fuse fd under a running
    serve_dev() loop, which kept using the fd *number* (a file opened later
    could get it and receive FUSE replies)."""
    require()
    import threading

    from subring import _core

    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    _core.fuse_mount("subring-test", mnt, "fuse.closetest", 6,
                     f"fd={fd},rootmode=40755,user_id=0,group_id=0")
    conn = _core.FuseConn(fd, MemFS())
    try:
        conn.init(False, 10.0)
        t = threading.Thread(target=conn.serve_dev, daemon=True)
        t.start()
        os.listdir(mnt)                   # served: the loop is running
        with pytest.raises(RuntimeError, match="still running"):
            conn.close()
        assert conn.fd == fd
    finally:
        force_unmount(mnt)                # the loop ends when the connection does
    t.join(10)
    assert not t.is_alive()
    conn.close()
    assert conn.fd == -1


def test_cli_bad_target_is_exit_status_2(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + ROOT)
    for target in ("nomodule_xyz:X", "examples.memfs:NoSuchClass", "nocolon"):
        out = subprocess.run([sys.executable, "-m", "subring.fuse", target, str(tmp_path)],
                             capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
                             check=False)
        assert out.returncode == 2, (target, out.stderr)
        assert out.stderr.startswith("subring fuse: ") and "Traceback" not in out.stderr


def test_regression_cli_bad_tuning_value_is_exit_status_2_not_a_traceback(tmp_path):
    """The bug: a value mount() refuses (--queue-depth 0) escaped the CLI as a
    ValueError traceback.  Now it is one 'subring fuse: ...' line and exit
    status 2, like a bad target; nothing is mounted."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + ROOT)
    for args, what in ((["--queue-depth", "0"], "queue_depth"),
                       (["--poll-us", "-1"], "poll_us")):
        out = subprocess.run([sys.executable, "-m", "subring.fuse", "examples.memfs:MemFS",
                              str(tmp_path), *args],
                             capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
                             check=False)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("subring fuse: ") and what in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        assert not is_mounted(str(tmp_path))
