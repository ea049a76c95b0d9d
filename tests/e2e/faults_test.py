#!/usr/bin/python3
"""Fault tolerance end to end, under the oracle of e2e_test.py (every unique
key downstream exactly once, first copy's payload and headers, order per
source partition; copies one run wrote twice counted apart as the mock
cluster's).

Phase "replicas": three kdedup processes in one consumer group, each with a
store of its own. Two start; a third is added mid-stream; one is killed
with SIGKILL and restarted over its store. Partitions move at every step,
and duplicates of keys forwarded before a move keep arriving after it.

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/faults_test.py
"""
import os
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_test import PARTS, Failure, Mock, Sidecar, World, check, scrape  # noqa: E402


def gauge(kd, name):
    """A metric of a running kdedup, 0 when it does not answer."""
    try:
        return scrape(kd.port)[1](name)
    except (Failure, OSError):
        return 0


def wait_for(what, cond, timeout_s=60):
    end = time.time() + timeout_s
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    check(False, f"timed out waiting for {what}")


class Stream:
    """Produces chunks with duplicates in a thread until stopped."""

    def __init__(self, world, chunk=100, dup_share=0.3, pause_s=0.2):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(world, chunk, dup_share, pause_s))
        self.thread.start()

    def run(self, world, chunk, dup_share, pause_s):
        while not self.stop.is_set():
            world.produce(chunk, dup_share)
            time.sleep(pause_s)

    def end(self):
        self.stop.set()
        self.thread.join()


def settle(replicas):
    """Waits until no running replica has a message in flight."""
    wait_for("in-flight messages to settle",
             lambda: all(gauge(kd, "kdedup_inflight_messages") == 0
                         for kd in replicas if kd.proc and kd.proc.poll() is None))


def replicas(workdir, report):
    mock = Mock()
    world = World(mock.bootstrap)
    a, b, c = (Sidecar(os.path.join(workdir, name), mock.bootstrap) for name in "abc")
    learned = 0
    try:
        mock.cmd("rtt 1 50")  # deliveries stay in flight a little: kills leave some
        world.produce(1500, 0.25)
        a.start()
        b.start()
        wait_for("a and b to share the partitions",
                 lambda: gauge(a, "kdedup_assigned_partitions") > 0 and
                 gauge(b, "kdedup_assigned_partitions") > 0)
        stream = Stream(world)
        try:
            time.sleep(2)
            c.start()  # added: takes partitions from a and b
            wait_for("c to be assigned", lambda: gauge(c, "kdedup_assigned_partitions") > 0)
            time.sleep(1)
            learned += gauge(b, "kdedup_handover_keys_total")
            b.proc.send_signal(signal.SIGKILL)
            b.proc.wait(timeout=30)
            # its partitions move to a and c once its session times out (6 s)
            wait_for("a and c to hold every partition",
                     lambda: gauge(a, "kdedup_assigned_partitions") +
                     gauge(c, "kdedup_assigned_partitions") == PARTS)
            b.start()  # restarted over its store: takes some back
            wait_for("b to be assigned again",
                     lambda: gauge(b, "kdedup_assigned_partitions") > 0)
            time.sleep(2)
        finally:
            stream.end()
        world.produce(1000, 0.6)  # duplicates of keys from before every move
        world.read()
        settle((a, b, c))
        mock_copies = world.verify()
        learned += sum(gauge(kd, "kdedup_handover_keys_total") for kd in (a, b, c))
        check(learned > 0, "no replica learned keys on assignment")
        report.append(f"replicas: 3 processes (one added, one killed and restarted): "
                      f"{len(world.keys)} produced, {len(world.first)} unique, 0 lost, "
                      f"0 duplicated; keys learned on assignment {int(learned)}; "
                      f"mock retry copies {mock_copies}")
    finally:
        for kd in (a, b, c):
            if kd.proc and kd.proc.poll() is None:
                kd.signal(signal.SIGTERM)
        world.reader.close()
        world.producer.close()
        mock.stop()


def main():
    workdir = tempfile.mkdtemp(prefix="kdedup-faults-")
    passed = failed = 0
    report = []
    for name, fn in (("three replicas, one added, one killed and restarted: nothing lost, "
                      "nothing twice", replicas),):
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
    print(f"faults: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
