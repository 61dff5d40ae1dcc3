"""Statistics of a running subsystem over its control plane
(`subring.subsystem.query_statistics`, what `subring stat` / `top` show),
`Subsystem.statistics()` and `SubsystemClient.statistics()`."""

from __future__ import annotations

import dataclasses
import errno
import os
import time

import pytest
from subsys_helpers import call_json, drain, start_py_server, start_server, wait_until

import subring
from subring.subsystem import ClientRow, SubsystemStatistics, query_statistics


def test_query_statistics_rows_per_client(tmp_path):
    path = str(tmp_path / "s.sock")
    with start_server(path) as srv, srv.connect(mode="interrupt") as a, \
            srv.connect(mode="poll", entries=64) as b:
        for k in range(50):
            assert a.call("add", None, k, 1) == k + 1
        for k in range(3):                       # held by the server: in flight
            b.prep_call(b.ops["defer"], None, k)
        b.submit()
        wait_until(lambda: b.sq_pending == 0, 5, what="server took the ops")
        with pytest.raises(FileNotFoundError):    # an op that fails: counted as error
            a.call("raise", None, 7)
        st = query_statistics(path)
        assert isinstance(st, SubsystemStatistics) and st.backend == "subsystem"
        assert st.pid == srv.pid and st.address == path and st.name == "echo-test"
        assert st.mode == "hybrid" and st.attaches >= 2 and st.ops >= 54
        rows = {r.mode: r for r in st.clients}
        assert set(rows) == {"interrupt", "poll"}, st.clients
        ra, rb = rows["interrupt"], rows["poll"]
        assert ra.pid == rb.pid == os.getpid() and ra.uid == os.geteuid()
        assert ra.submitted == ra.completed == 51 and ra.inflight == 0
        assert ra.errors == 1
        assert rb.submitted == 3 and rb.completed == 0 and rb.inflight == 3
        assert rb.sq_entries == rb.cq_entries == 64 and rb.sq_pending == 0
        assert ra.sleeps >= 1 and ra.wakeups_sent >= 1     # interrupt: it slept, was woken
        assert rb.sleeps == 0                               # poll never sleeps
        with pytest.raises(dataclasses.FrozenInstanceError):
            st.pid = 1                                      # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            ra.pid = 1                                      # type: ignore[misc]
        a.call("flush", None, 0, timeout=5)
        drain(b, 3, timeout=5)


def test_cq_occupancy_counts_unreaped_completions(tmp_path):
    path = str(tmp_path / "s.sock")
    with start_server(path) as srv, srv.connect(entries=32) as c:
        for k in range(10):
            c.prep_call(c.ops["add"], None, k, 1)
        c.submit()
        wait_until(lambda: query_statistics(path).clients[0].cq_pending == 10, 5,
                   what="ten completions waiting in the CQ")
        drain(c, 10, timeout=5)
        assert query_statistics(path).clients[0].cq_pending == 0


def test_subsystem_statistics_in_process_is_the_same_type(tmp_path):
    with start_server(tmp_path / "s.sock") as srv, srv.connect() as c:
        s = call_json(c, "stats")           # Subsystem.statistics().to_dict() in the server
        assert s["backend"] == "subsystem" and isinstance(s["clients"], int)
        assert SubsystemStatistics.from_dict({**s, "clients": []}).backend == "subsystem"


def test_client_statistics_frozen_with_backend(tmp_path):
    with start_server(tmp_path / "s.sock") as srv, srv.connect(mode="poll") as c:
        c.call("add", None, 1, 1)
        st = c.statistics()
        assert st.backend == "subsystem-client" and st.mode == "poll"
        assert st.submitted == st.completed == 1 and st.poll_hits >= 1 and st.sleeps == 0
        with pytest.raises(dataclasses.FrozenInstanceError):
            st.submitted = 0                                # type: ignore[misc]


def test_query_statistics_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "none.sock")
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError) as ei:
        query_statistics(missing, timeout=5)
    assert time.monotonic() - t0 < 1 and ei.value.filename == missing


def test_statistics_query_does_not_attach_and_leaves_no_connection(tmp_path):
    path = str(tmp_path / "s.sock")
    with start_server(path):
        for _ in range(20):
            st = query_statistics(path)
        assert st.clients == () and st.attaches <= 1     # (start_server's own probe)
        assert query_statistics(path).connections == 1      # only the asking one


def test_handler_errors_and_drops_are_logged_not_printed(tmp_path):
    """Unexpected handler exceptions (EIO) are logged through
    logging.getLogger('subring.subsystem'), rate-limited; results such as
    KeyError/OSError are not; the library prints nothing itself."""
    path = tmp_path / "s.sock"
    with start_py_server(path) as srv, srv.connect() as c:
        for _ in range(5):
            with pytest.raises(OSError) as ei:
                c.call("raise", None, 3)                 # RuntimeError -> EIO
            assert ei.value.errno == errno.EIO
        with pytest.raises(FileNotFoundError):
            c.call("raise", None, 0)                     # KeyError: a result
        log = wait_until(lambda: "raised RuntimeError" in srv.log() and srv.log(), 5,
                         what="the handler error in the log")
        assert "ERROR subring.subsystem: handler echo-test.raise raised RuntimeError" in log
        assert log.count("raised RuntimeError") == 1       # rate-limited
        assert "KeyError" not in log


def test_row_fields_are_documented():
    names = [f.name for f in dataclasses.fields(ClientRow)]
    # the repository's docs, found from this file (the package may be a copy:
    # scripts/sanitize.sh builds one elsewhere)
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                           "subsystems.md")) as f:
        doc = f.read()
    missing = [n for n in names if f"`{n}`" not in doc]
    assert not missing, f"ClientRow fields not in docs/subsystems.md: {missing}"


def test_client_statistics_submitted_matches_completed_under_threads(tmp_path):
    """Bug: with threads waiting (GIL released) while others reaped, a waiter
    read our CQ head before the peer's tail; by the time it read the tail,
    other threads had reaped and the server posted more than the CQ holds past
    that stale head, so the waiter declared the protocol broken.  The client
    then failed the connection: ops prepared afterwards sat unpublished and
    completed as made-up -EPROTO (statistics().completed ended ``entries``
    above submitted), and the server's real completions of failed ops came
    back as foreign raw tokens."""
    import random
    import threading

    path = str(tmp_path / "s.sock")
    with start_server(path) as srv, srv.connect(entries=16) as c:
        stop = threading.Event()
        failures: list[BaseException] = []

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                what = rng.randrange(4)
                try:
                    if what == 0:
                        c.prep_nops(rng.randrange(1, 8), user_data=seed)
                    elif what == 1:
                        c.submit()
                    elif what == 2:    # waits without the GIL while others reap
                        c.submit_and_wait(rng.randrange(1, 3), timeout=0.001)
                    else:
                        c.reap(rng.choice((None, 1, 3)))
                except subring.RingFullError:
                    pass
                except Exception as e:  # noqa: BLE001 -- any other error fails the test
                    failures.append(e)
                    return

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not failures and not c.peer_dead:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads)
        assert not c.peer_dead, "a sane server was taken for one that broke the protocol"
        assert not failures, failures[:3]
        drain(c, c.inflight, timeout=10)
        st = c.statistics()
        assert st.inflight == 0
        assert st.submitted == st.completed, st
