"""Child process: every public SubsystemClient method called concurrently
from several threads and from a signal handler, against a real server, for a
bounded time; then drained and checked (exactly one final completion per op,
inflight within bounds, statistics consistent, results correct).

    python -m stress_client SOCKET SECONDS SEED [THREADS] [SIGNALS]
"""

from __future__ import annotations

import array
import itertools
import random
import signal
import sys
import threading
import time

from reliab_util import Ledger, emit

import subring
from subring import SubringError

ALLOWED = (SubringError, TimeoutError)


def main() -> None:
    path, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    nthreads = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    use_signals = len(sys.argv) > 5 and sys.argv[5] == "1"
    c = subring.connect(path, entries=16, slot_size=256, timeout=10)
    echo, add = c.op_index("echo"), c.op_index("add")
    ledger = Ledger()
    # ids in blocks of 16, each reserved by ONE next() (see stress_kernel.py:
    # reserving a range id by id raced with the signal handler and other threads)
    blocks = itertools.count(1)
    errors: list[str] = []
    wrong: list = []
    expect: dict[int, object] = {}
    stop = threading.Event()

    def action(rng: random.Random) -> None:
        what = rng.randrange(11)
        if what == 0:
            uid = next(blocks) * 16
            c.prep_nop(user_data=uid)
            ledger.sure.append(uid)
        elif what == 1:
            uid = next(blocks) * 16
            data = bytes([uid & 0xFF]) * rng.choice((0, 1, 80, 81, 200))
            expect[uid] = data
            c.prep_call(echo, data, user_data=uid)
            ledger.sure.append(uid)
        elif what == 2:
            uid = next(blocks) * 16
            expect[uid] = uid + 7
            c.prep_call(add, None, uid, 7, user_data=uid)
            ledger.sure.append(uid)
        elif what == 3:
            n = rng.randrange(1, 8)
            base = next(blocks) * 16     # n <= 7: base..base+n-1 is ours
            try:
                got = c.prep_calls(echo, bytes(16 * n), 16, user_data=base)
            except ALLOWED:
                ledger.maybe.extend(range(base, base + n))
                raise
            ledger.sure.extend(range(base, base + got))
        elif what == 4:
            n = rng.randrange(1, 8)
            base = next(blocks) * 16     # n <= 7: base..base+n-1 is ours
            try:
                got = c.prep_nops(n, user_data=base)
            except ALLOWED:
                ledger.maybe.extend(range(base, base + n))
                raise
            ledger.sure.extend(range(base, base + got))
        elif what == 5:
            c.submit()
        elif what == 6:
            c.submit_and_wait(rng.randrange(0, 3), timeout=rng.choice((0, 0.001, 0.01)))
        elif what == 7:
            for comp in c.reap(rng.choice((None, 1, 3))):
                ledger.done.append(comp.user_data)
                want = expect.pop(comp.user_data, None)
                if want is not None and comp.res >= 0:
                    got = comp.result()
                    if got != want:
                        wrong.append((comp.user_data, want, got))
        elif what == 8:
            ud = array.array("q", bytes(64))
            res = array.array("i", bytes(32))
            n = c.reap_into(ud, res)
            ledger.done.extend(ud[:n])
            for u in ud[:n]:
                expect.pop(u, None)
        elif what == 9:
            s = c.statistics()
            if not 0 <= s.inflight <= s.max_inflight:
                errors.append(f"statistics: inflight {s.inflight}")
        else:
            n = c.inflight
            if not 0 <= n <= c.max_inflight:
                errors.append(f"inflight {n} out of range")
            _ = (c.cq_ready, c.sq_space, c.sq_pending, c.peer_dead, c.closed)

    def worker(k: int) -> None:
        rng = random.Random(seed * 100 + k)
        while not stop.is_set():
            try:
                action(rng)
            except ALLOWED:
                pass
            except BaseException as e:  # noqa: BLE001
                errors.append(f"thread {k}: {type(e).__name__}: {e}")
                return

    def on_signal(signum, frame) -> None:
        try:
            action(random.Random())
        except ALLOWED:
            pass
        except BaseException as e:  # noqa: BLE001
            errors.append(f"signal handler: {type(e).__name__}: {e}")

    if use_signals:
        signal.signal(signal.SIGALRM, on_signal)
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(nthreads)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    if use_signals:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
    if any(t.is_alive() for t in threads):
        errors.append("threads did not stop within 30 s")
    deadline = time.monotonic() + 20
    while (c.inflight or c.cq_ready) and time.monotonic() < deadline:
        c.submit_and_wait(1, timeout=0.5)
        for comp in c.reap():
            ledger.done.append(comp.user_data)
    st = c.statistics()
    if st.inflight:
        errors.append(f"inflight {st.inflight} after draining 20 s")
    if st.completed != len(ledger.done):
        errors.append(f"statistics.completed {st.completed} != {len(ledger.done)} delivered")
    # (checked by its own regression test, see test_stress_threads.py)
    stats_errors = []
    if st.completed > st.submitted:
        stats_errors.append(f"completed {st.completed} > submitted {st.submitted}")
    errors.extend(ledger.check())
    if wrong:
        errors.append(f"{len(wrong)} wrong results, e.g. {wrong[:3]}")
    c.close()
    emit({**ledger.summary(), "errors": errors[:20], "stats_errors": stats_errors,
          "stats": {"submitted": st.submitted, "completed": st.completed,
                    "sleeps": st.sleeps, "doorbells": st.doorbells}})


if __name__ == "__main__":
    main()
