"""The ``subring`` command, run as a user runs it: ``python -m subring ...``
in a child process, against the real kernel and real subsystem servers.

The optional output libraries (rich, matplotlib) are tested both ways: as
installed, and hidden behind a directory of stand-in packages that raise
ImportError (what a machine without the ``cli`` extra sees).
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import subring
from subring.cli import build_parser

SRC = str(Path(subring.__file__).resolve().parents[1])
HAVE_RICH = importlib.util.find_spec("rich") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
BENCH = Path(__file__).resolve().parents[2] / "bench"

ECHO_MODULE = '''
import subring

class Echo(subring.Subsystem):
    @subring.op
    def echo(self, req):
        """Return the payload."""
        return bytes(req.data)

class NotASubsystem:
    pass
'''


def _env(extra_path: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in (extra_path, SRC, env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("NO_RICH", None)
    return env


def run(*args: str, cwd: Path | str | None = None, extra_path: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "subring", *args], cwd=cwd, env=_env(extra_path),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(params=["installed", "absent"])
def optional_libs(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None: rich/matplotlib as installed; else a path whose stand-in
    packages make importing them fail."""
    if request.param == "installed":
        if not (HAVE_RICH and HAVE_MPL):
            pytest.skip("rich/matplotlib not installed (the 'absent' case covers this machine)")
        return None
    hide = tmp_path / "hide"
    for name in ("rich", "matplotlib"):
        (hide / name).mkdir(parents=True)
        (hide / name / "__init__.py").write_text(
            f"raise ImportError('{name} hidden by the test')\n")
    return str(hide)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


# --------------------------------------------------------------------------
# the command itself
# --------------------------------------------------------------------------

def test_version_from_python_m_and_entry_point() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"subring {subring.__version__}"


def test_main_is_the_entry_point() -> None:
    """pyproject's ``subring = subring.cli:main`` and ``python -m subring``
    are the same function."""
    import subring.__main__  # noqa: F401 -- importing must not run it
    from subring import cli

    assert cli.main.__module__ == "subring.cli"
    with pytest.raises(SystemExit) as ei:
        cli.main(["--version"])
    assert ei.value.code == 0


def _subparsers(ap: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_and_option_has_help() -> None:
    ap = build_parser()
    commands = _subparsers(ap)
    assert {"probe", "bench", "serve", "ops", "stat", "top", "fuse"} <= set(commands)
    for parser in [ap, *commands.values()]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (parser.prog, action.dest)
    assert "``" not in ap.format_help()          # no raw reST in what users read


@pytest.mark.parametrize("command", ["probe", "bench", "serve", "ops", "stat", "top", "fuse"])
def test_help_of_each_command(command: str) -> None:
    proc = run(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: subring " + command)


def test_unknown_command_is_a_usage_error() -> None:
    proc = run("frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


# --------------------------------------------------------------------------
# probe
# --------------------------------------------------------------------------

def test_probe_json_names_everything() -> None:
    proc = run("probe", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["available"] is True
    assert rep["kernel"]["release"] == os.uname().release
    assert set(rep["opcodes"]) == {op.name for op in subring.Op}      # supported or not
    assert rep["opcodes"]["NOP"] is True
    assert set(rep["features"]) == {f.name for f in subring.Feature}
    assert rep["features"]["NODROP"] is True
    assert set(rep["setup_flags"]) == {f.name for f in subring.Setup}
    kp = subring.probe()
    for f in subring.Setup:
        if kp.setup_flags & f:
            assert rep["setup_flags"][f.name] is True, f.name
    lim = rep["limits"]
    assert lim["max_registered_buffers"] == 1 << 14
    assert "memlock_soft_bytes" in lim
    fuse = rep["fuse"]
    assert fuse["dev_fuse"] is os.path.exists("/dev/fuse")
    param = "/sys/module/fuse/parameters/enable_uring"
    if os.path.exists(param):
        with open(param) as f:
            assert fuse["enable_uring"] is (f.read().strip() in ("Y", "1"))
    assert fuse["advice"]
    assert rep["blockers"]["io_uring_disabled"] in (None, 0, 1, 2)


def test_probe_table(optional_libs: str | None) -> None:
    proc = run("probe", extra_path=optional_libs)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert os.uname().release in out
    for word in ("NOP", "URING_CMD", "SQPOLL", "NODROP", "RLIMIT_MEMLOCK", "enable_uring",
                 "io_uring_disabled", "seccomp"):
        assert word in out, word
    if optional_libs:                              # the plain fallback: aligned text
        assert "----" in out and "┃" not in out


_SECCOMP_CHILD = r'''
import ctypes, os, struct, sys
# A seccomp filter that answers io_uring_setup (x86-64: 425) with EPERM, as
# container runtimes' default profiles do; then run the command.
libc = ctypes.CDLL(None, use_errno=True)
def stmt(code, k): return struct.pack("HBBI", code, 0, 0, k)
def jump(code, k, jt, jf): return struct.pack("HBBI", code, jt, jf, k)
LD, JEQ, RET = 0x20, 0x15, 0x06
AUDIT_ARCH_X86_64, NR, EPERM = 0xC000003E, 425, 1
prog = b"".join([
    stmt(LD, 4), jump(JEQ, AUDIT_ARCH_X86_64, 1, 0), stmt(RET, 0x7FFF0000),
    stmt(LD, 0), jump(JEQ, NR, 0, 1), stmt(RET, 0x00050000 | EPERM),
    stmt(RET, 0x7FFF0000)])
buf = ctypes.create_string_buffer(prog)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fp = Fprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
assert libc.prctl(38, 1, 0, 0, 0) == 0                      # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
from subring.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter is written for x86-64")
@pytest.mark.parametrize("as_json", [False, True])
def test_probe_when_seccomp_blocks_io_uring(as_json: bool) -> None:
    """A real seccomp filter refusing io_uring_setup: exit 3 and one line
    saying seccomp blocks it and what to do."""
    args = ["--plain", "probe"] if not as_json else ["probe", "--json"]
    proc = subprocess.run([sys.executable, "-c", _SECCOMP_CHILD, *args], env=_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert_one_line_error(proc, 3, "io_uring is unavailable", "seccomp")
    if as_json:
        rep = json.loads(proc.stdout)
        assert rep["available"] is False and rep["blockers"]["seccomp_mode"] == "filter"
        assert "seccomp" in rep["advice"] and "Operation not permitted" in rep["error"]
        assert "opcodes" not in rep
    else:
        assert "seccomp" in proc.stdout and "filter" in proc.stdout


def test_probe_advice_names_the_sysctl() -> None:
    from subring.cli.probe import advice

    block = {"io_uring_disabled": 2, "seccomp_mode": "none"}
    assert "io_uring_disabled" in advice(OSError(errno.EPERM, "x"), block)
    block = {"io_uring_disabled": 0, "seccomp_mode": "none"}
    assert "5.11" in advice(OSError(errno.ENOSYS, "x"), block)


# --------------------------------------------------------------------------
# serve, ops, stat, top
# --------------------------------------------------------------------------

@pytest.fixture
def echo_dir(tmp_path: Path) -> Path:
    (tmp_path / "echomod.py").write_text(ECHO_MODULE)
    return tmp_path


@pytest.fixture
def server(echo_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``subring serve echomod:Echo`` in a child process; stopped with SIGTERM."""
    sock = str(echo_dir / "echo.sock")
    proc = subprocess.Popen([sys.executable, "-m", "subring", "serve", "echomod:Echo",
                             "--socket", sock], cwd=echo_dir, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()          # printed once it accepts connections
        assert line.startswith("serving echomod:Echo on"), (line, proc.stderr and
                                                             proc.stderr.read())
        yield proc, sock
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()


def test_serve_then_ops(server: tuple[subprocess.Popen[str], str]) -> None:
    proc, sock = server
    ops = run("ops", sock, "--json")
    assert ops.returncode == 0, ops.stderr
    names = {o["name"]: o for o in json.loads(ops.stdout)}
    assert names["echo"]["doc"] == "Return the payload."
    table = run("--plain", "ops", sock)
    assert table.returncode == 0
    assert "echo" in table.stdout and "Return the payload." in table.stdout
    with subring.connect(sock) as c:                # the server really serves
        assert c.call("echo", b"hi") == b"hi"
    proc.send_signal(signal.SIGTERM)                # and stops cleanly on SIGTERM
    assert proc.wait(10) == 0
    assert not os.path.exists(sock)


def test_stat_on_a_running_server(server: tuple[subprocess.Popen[str], str]) -> None:
    _, sock = server
    with subring.connect(sock) as c:
        for _ in range(5):
            c.call("echo", b"x")
        proc = run("stat", sock, "--json")
        assert proc.returncode == 0, proc.stderr
        s = json.loads(proc.stdout)
        assert s["backend"] == "subsystem" and s["address"] == sock
        assert len(s["clients"]) == 1
        row = s["clients"][0]
        assert row["pid"] == os.getpid()
        assert row["submitted"] >= 5 and row["completed"] >= 5
        table = run("--plain", "stat", sock)
        assert table.returncode == 0, table.stderr
        assert str(os.getpid()) in table.stdout and "submitted" in table.stdout


def test_top_refreshes_with_rates(server: tuple[subprocess.Popen[str], str]) -> None:
    _, sock = server
    with subring.connect(sock) as c:
        c.call("echo", b"x")
        proc = run("--plain", "top", sock, "--interval", "0.2", "--iterations", "2")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("clients (per second)") == 2 and "sub/s" in proc.stdout


@pytest.mark.parametrize("command", ["ops", "stat"])
def test_missing_socket_is_one_line_naming_the_path(tmp_path: Path, command: str) -> None:
    path = str(tmp_path / "missing.sock")
    t0 = time.monotonic()
    proc = run(command, path, "--timeout", "2")
    assert_one_line_error(proc, 4, path, "nothing at that path")
    assert time.monotonic() - t0 < 30


def test_not_a_socket_is_one_line_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("not a socket")
    proc = run("ops", str(path), "--timeout", "2")
    assert_one_line_error(proc, 4, str(path), "not a socket")


@pytest.mark.parametrize("target, words", [
    ("nomod_xyz:Echo", ["cannot import module 'nomod_xyz'"]),
    ("echomod:Missing", ["no attribute 'Missing'"]),
    ("echomod:NotASubsystem", ["not a subring.Subsystem subclass"]),
    ("echomod", ["MODULE:CLASS"]),
])
def test_serve_bad_target_is_one_line(echo_dir: Path, target: str, words: list[str]) -> None:
    proc = run("serve", target, "--socket", str(echo_dir / "x.sock"), cwd=echo_dir)
    assert_one_line_error(proc, 2, *words)
    assert not (echo_dir / "x.sock").exists()


def test_serve_refuses_to_replace_a_file(echo_dir: Path) -> None:
    keep = echo_dir / "precious.txt"
    keep.write_text("data")
    proc = run("serve", "echomod:Echo", "--socket", str(keep), cwd=echo_dir)
    assert_one_line_error(proc, 2, "not a socket")
    assert keep.read_text() == "data"


# --------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------

def test_bench_kernel_smoke(tmp_path: Path, optional_libs: str | None) -> None:
    """Progress, the comparison table with the legend, the JSON and (with
    matplotlib) a PNG per suite; without matplotlib, a note instead."""
    proc = run("bench", "kernel", "--smoke", "--out", str(tmp_path), "--bench-dir", str(BENCH),
               cwd=tmp_path, extra_path=optional_libs, timeout=240)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    doc = json.loads((tmp_path / "kernel.json").read_text())
    assert "nop256_vs_c" in doc["ratios"]
    out = proc.stdout
    assert "legend:" in out and "nop256_vs_c" in out and "goal" in out
    assert (tmp_path / "kernel.log").read_text()
    png = tmp_path / "kernel.png"
    if optional_libs is None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists() and "no charts: matplotlib" in out
        assert "[kernel] repetition" in out          # the plain progress lines


def test_bench_finds_the_scripts_of_a_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    from subring.cli.bench import find_bench_dir

    monkeypatch.chdir(BENCH.parent)
    assert find_bench_dir(None).resolve() == BENCH.resolve()


def test_bench_missing_suite_is_reported_not_fatal_to_others(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("_common.py", "kernel.py", "c_ceiling.c"):
        (bench / name).write_bytes((BENCH / name).read_bytes())
    (bench / "ipc.py").write_text("import sys\nprint('boom', file=sys.stderr)\nsys.exit(7)\n")
    proc = run("--plain", "bench", "kernel", "ipc", "executor", "--smoke", "--no-chart",
               "--out", str(tmp_path / "out"), "--bench-dir", str(bench), timeout=240)
    assert proc.returncode == 1
    assert "nop256_vs_c" in proc.stdout                         # kernel still ran
    assert "ipc: bench/ipc.py exited 7" in proc.stderr
    assert "executor: bench/executor.py is not in" in proc.stderr
    assert "boom" in (tmp_path / "out" / "ipc.log").read_text()


def test_bench_stops_a_suite_that_hangs_silently(tmp_path: Path) -> None:
    """A script that prints nothing and never ends (and leaves a child
    holding its output) is stopped at --timeout; the command reports it."""
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "_common.py").write_text("")
    (bench / "kernel.py").write_text(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "time.sleep(600)\n")
    t0 = time.monotonic()
    proc = run("--plain", "bench", "kernel", "--timeout", "2", "--bench-dir", str(bench),
               "--out", str(tmp_path / "out"), timeout=120)
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 1
    assert "kernel: bench/kernel.py ran past --timeout 2 s and was stopped" in proc.stderr
    assert "stopped after 2 s" in (tmp_path / "out" / "kernel.log").read_text()


def test_bench_unknown_suite_is_a_usage_error(tmp_path: Path) -> None:
    proc = run("bench", "nosuch", "--out", str(tmp_path))
    assert_one_line_error(proc, 2, "unknown suite 'nosuch'")


# --------------------------------------------------------------------------
# fuse (the fuse package's own command)
# --------------------------------------------------------------------------

def test_fuse_command() -> None:
    proc = run("fuse", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "MOUNTPOINT" in proc.stdout.upper()



# --------------------------------------------------------------------------
# stat/top rendering, on data shaped as the statistics API documents it
# --------------------------------------------------------------------------

def _row(token: int, n: int) -> dict[str, object]:
    return {"pid": 10 + token, "uid": 0, "gid": 0, "token": token, "mode": "hybrid",
            "submitted": n, "completed": n - 1, "inflight": 1, "sq_pending": 2,
            "sq_entries": 256, "cq_pending": 0, "cq_entries": 256, "wakeups_sent": n // 4,
            "wakeups_suppressed": n // 2, "doorbells": 3, "poll_hits": n // 3, "sleeps": 4,
            "errors": 0}


def test_top_rates_are_deltas_per_second_matched_by_token() -> None:
    from subring.cli.stat import TOP_COLUMNS, rates_between, top_rows

    before = {"clients": [_row(1, 100), _row(2, 50)]}
    after = {"clients": [_row(1, 300), _row(3, 7)]}        # 2 left, 3 attached
    rates = rates_between(before, after, 2.0)
    assert set(rates) == {1}
    assert rates[1]["submitted"] == 100.0 and rates[1]["wakeups_suppressed"] == 50.0
    assert rates[1]["sleeps"] == 0.0
    rows = top_rows(after, rates)
    assert len(rows) == 2 and all(len(r) == len(TOP_COLUMNS) for r in rows)
    assert rows[0][:5] == ["11", "hybrid", "1", "2/256", "0/256"] and rows[0][5] == "100"
    assert rows[1][5:] == ["-"] * 8                        # new client: no rate yet


def test_stat_rows_show_totals() -> None:
    from subring.cli.stat import CLIENT_COLUMNS, client_rows

    rows = client_rows({"clients": [_row(1, 100)]})
    assert rows == [["11", "hybrid", "100", "99", "1", "2/256", "0/256", "25", "50", "3",
                     "33", "4", "0"]]
    assert len(rows[0]) == len(CLIENT_COLUMNS)


def test_serve_passes_allow_uid_and_socket_mode(echo_dir: Path) -> None:
    """--socket-mode sets the socket file's permissions; --allow-uid reaches
    Subsystem.serve (an unknown option of an older serve is a usage error)."""
    sock = echo_dir / "m.sock"
    proc = subprocess.Popen([sys.executable, "-m", "subring", "serve", "echomod:Echo",
                             "--socket", str(sock), "--socket-mode", "640",
                             "--allow-uid", "12345"], cwd=echo_dir, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving"), (line, proc.stderr and proc.stderr.read())
        assert os.stat(sock).st_mode & 0o777 == 0o640
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
    bad = run("serve", "echomod:Echo", "--socket", str(sock), "--socket-mode", "9x",
              cwd=echo_dir)
    assert_one_line_error(bad, 2, "not an octal number")


def test_top_on_a_terminal(server: tuple[subprocess.Popen[str], str],
                           optional_libs: str | None) -> None:
    """On a terminal (a pty here) top redraws in place: rich's live view when
    rich is installed, else clear-screen and reprint."""
    import pty
    import select

    _, sock = server
    master, slave = pty.openpty()
    try:
        with subring.connect(sock) as c:
            c.call("echo", b"x")
            proc = subprocess.Popen([sys.executable, "-m", "subring", "top", sock,
                                     "--interval", "0.2", "--iterations", "2"],
                                    env=dict(_env(optional_libs), COLUMNS="160",
                                             TERM="xterm"),
                                    stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
            os.close(slave)
            slave = -1
            chunks = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError:          # EIO: the child closed the terminal
                        break
                    if not data:
                        break
                    chunks.append(data)
                elif proc.poll() is not None:
                    break
            assert proc.wait(30) == 0
        text = b"".join(chunks).decode(errors="replace")
        assert "clients (per second)" in text and "sub/s" in text
        assert "\x1b[" in text                        # redrawn in place, not appended
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_every_command_is_documented() -> None:
    """docs/api/cli.md has a section per command, and the exit codes of
    ``subring --help``."""
    from subring.cli.errors import EXIT_CODES_HELP

    page = (Path(__file__).resolve().parents[2] / "docs" / "api" / "cli.md").read_text()
    for command in _subparsers(build_parser()):
        assert f"## subring {command}\n" in page, command
    for line in EXIT_CODES_HELP.splitlines()[1:]:
        code = line.split()[0]
        assert f"| {code} |" in page, code


def test_global_switches_also_after_the_command() -> None:
    for args in (["--plain", "probe"], ["probe", "--plain"]):
        proc = run(*args)
        assert proc.returncode == 0 and "┃" not in proc.stdout, args
    proc = run("ops", "/nonexistent-subring.sock", "--traceback")
    assert proc.returncode == 4 and "Traceback" in proc.stderr
