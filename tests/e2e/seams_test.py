#!/usr/bin/python3
"""Where partitions change owner because a process stops, end to end with the
real binary and kafka-python, under the oracle of e2e_test.py.

Phase "leave": two replicas share the partitions with the default session
timeout (45 s); one is stopped with SIGTERM under load. It must exit 0 and
leave the group, so that the other holds every partition well before a
session timeout (a rolling update must not stall 45 s per pod).

Phase "mid-join": a replica is killed with SIGKILL while it joins, so the
group waits for it; another replica is stopped with SIGTERM during that
wait, before it ever had an assignment. It must exit 0 (librdkafka 2.0.2
aborts when a cooperative-sticky consumer is destroyed before its first
assignment: upstream issue 4312), and nothing is lost.

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/seams_test.py
"""
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_test import PARTS, Failure, Mock, Sidecar, World, check, shut_down  # noqa: E402
from faults_test import Stream, gauge, settle, wait_for  # noqa: E402

# The librdkafka default: what a member that does not leave costs the group.
SESSION = {"kafka": {"consumer": {"session.timeout.ms": "45000"}}}


def leave(workdir, report):
    mock = Mock()
    world = World(mock.bootstrap)
    a, b = (Sidecar(os.path.join(workdir, name), mock.bootstrap, SESSION) for name in "ab")
    try:
        world.produce(500, 0.2)
        a.start()
        b.start()
        wait_for("a and b to share the partitions",
                 lambda: gauge(a, "kdedup_assigned_partitions") > 0 and
                 gauge(b, "kdedup_assigned_partitions") > 0, timeout_s=90)
        stream = Stream(world)
        try:
            time.sleep(1)
            t0 = time.time()
            rc = a.signal(signal.SIGTERM)
            stopped = time.time() - t0
            check(rc == 0, f"a exited {rc} on SIGTERM")
            wait_for("b to hold every partition",
                     lambda: gauge(b, "kdedup_assigned_partitions") == PARTS, timeout_s=60)
            moved = time.time() - t0
        finally:
            stream.end()
        check(moved < 15, f"b held every partition only {moved:.1f}s after a's SIGTERM "
                          "(a did not leave the group)")
        world.read()
        settle((b,))
        mock_copies = world.verify()
        report.append(f"leave: SIGTERM to exit {stopped:.1f}s, every partition on the other "
                      f"replica {moved:.1f}s after it (session timeout 45 s); "
                      f"{len(world.first)} keys, 0 lost, 0 duplicated; "
                      f"mock retry copies {mock_copies}")
    finally:
        shut_down(mock, world, a, b)


def mid_join(workdir, report):
    mock = Mock()
    world = World(mock.bootstrap)
    a, b, c = (Sidecar(os.path.join(workdir, name), mock.bootstrap) for name in "abc")
    try:
        world.produce(500, 0.2)
        a.start()
        wait_for("a to be assigned", lambda: gauge(a, "kdedup_assigned_partitions") > 0)
        b.start()
        time.sleep(0.3)  # b is joining: the group rebalances and waits for it
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(timeout=30)
        c.start()
        time.sleep(2)  # c waits in the join the dead b holds up
        assigned = gauge(c, "kdedup_assigned_partitions")
        rc = c.signal(signal.SIGTERM)
        check(rc == 0, f"c exited {rc} on SIGTERM in mid-join (assigned {assigned})")
        world.produce(300, 0.5)
        wait_for("a to hold every partition",
                 lambda: gauge(a, "kdedup_assigned_partitions") == PARTS, timeout_s=120)
        world.read()
        settle((a,))
        mock_copies = world.verify()
        report.append(f"mid-join: a replica stopped while the group waited for a killed "
                      f"one exited 0 (it held {int(assigned)} partitions); "
                      f"{len(world.first)} keys, 0 lost, 0 duplicated; "
                      f"mock retry copies {mock_copies}")
    finally:
        shut_down(mock, world, a, b, c)


def main():
    workdir = tempfile.mkdtemp(prefix="kdedup-seams-")
    passed = failed = 0
    report = []
    for name, fn in (("a replica stopped with SIGTERM leaves the group", leave),
                     ("SIGTERM in mid-join exits 0, nothing lost", mid_join)):
        if os.environ.get("KD_SEAMS", fn.__name__) != fn.__name__:
            continue  # KD_SEAMS=<phase> runs one phase
        t0 = time.time()
        try:
            fn(os.path.join(workdir, fn.__name__), report)
            passed += 1
            print(f"PASS {name} ({time.time() - t0:.1f}s)", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL {name}: {e} (logs in {workdir})", flush=True)
    for line in report:
        print("  " + line)
    print(f"seams: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
