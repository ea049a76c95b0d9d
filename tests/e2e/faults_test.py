#!/usr/bin/python3
"""Fault tolerance end to end, under the oracle of e2e_test.py (every unique
key downstream exactly once, first copy's payload and headers, order per
source partition; copies one run wrote twice counted apart as the mock
cluster's).

Phase "replicas": three kdedup processes in one consumer group, each with a
store of its own. Two start; a third is added mid-stream; one is killed
with SIGKILL and restarted over its store. Partitions move at every step,
and duplicates of keys forwarded before a move keep arriving after it.

Phase "broker faults": one kdedup against a three-broker cluster (source
partitions led by broker 1, downstream by broker 2, the group's coordinator
on broker 3) while input keeps arriving: produce errors that exhaust the
producer's retries (NOT_PERSISTED), the downstream broker down for longer
than message.timeout.ms, its answers slower than message.timeout.ms
(POSSIBLY_PERSISTED with the message in the log), a downstream leader
change, OffsetCommit errors, and the coordinator moving while its old
broker is down. Afterwards every source partition's committed offset must
reach its end.

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/faults_test.py
"""
import os
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from e2e_test import (API, DST, PARTS, SRC, Failure, Mock, Sidecar, World,  # noqa: E402
                      check, scrape, shut_down)

STORAGE_ERROR, NOT_COORDINATOR, REQUEST_TIMED_OUT = 56, 16, 7


def gauge(kd, name, **labels):
    """A metric of a running kdedup, 0 when it does not answer."""
    try:
        return scrape(kd.port)[1](name, **labels)
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
        read = sum(gauge(kd, "kdedup_handover_scanned_records_total") for kd in (a, b, c))
        secs = sum(gauge(kd, "kdedup_handover_scan_seconds_total") for kd in (a, b, c))
        check(learned > 0, "no replica learned keys on assignment")
        for kd in (a, b, c):
            kd.signal(signal.SIGTERM)
        receipts = world.check_receipts(a, b, c)
        report.append(f"replicas: 3 processes (one added, one killed and restarted): "
                      f"{len(world.keys)} produced, {len(world.first)} unique, 0 lost, "
                      f"0 duplicated; keys learned on assignment {int(learned)} (the "
                      f"running processes read {int(read)} records in {secs:.2f} s for "
                      f"theirs); {receipts} receipts, each naming the downstream record; "
                      f"mock retry copies {mock_copies}")
    finally:
        shut_down(mock, world, a, b, c)


def errs_total(kd):
    """Deliveries that failed or may have, by kdedup's count."""
    return scrape(kd.port)[1]("kdedup_produce_errors_total")


def committed_reaches_end(bootstrap, group):
    """Waits until group's committed offset of every source partition is
    the partition's end: everything consumed was settled and committed."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API, group_id=group,
                      enable_auto_commit=False)
    try:
        parts = [TopicPartition(SRC, p) for p in range(PARTS)]
        ends = c.end_offsets(parts)
        wait_for("committed offsets to reach the end",
                 lambda: all(c.committed(tp) == ends[tp] for tp in parts), 60)
        return sum(ends.values())
    finally:
        c.close()


def broker_faults(workdir, report):
    mock = Mock(brokers=3)
    for p in range(PARTS):
        mock.cmd(f"leader {SRC} {p} 1")
        mock.cmd(f"leader {DST} {p} 2")
    mock.cmd("leader orders.dlq 0 1")
    mock.cmd("coordinator e2e 3")
    world = World(mock.bootstrap)
    kd = Sidecar(workdir, mock.bootstrap, {"kafka": {"producer": {
        "message.timeout.ms": "5000", "retries": "2", "retry.backoff.ms": "50"}}})
    faults = []

    def fault(name, *cmds, hold_s=0, until=None, after=()):
        """Injects cmds, holds them hold_s (or until `until` holds), then
        runs `after`, and lets the stream run a while."""
        for c in cmds:
            mock.cmd(c)
        if until:
            wait_for(name, until, 30)
        time.sleep(hold_s)
        for c in after:
            mock.cmd(c)
        faults.append(name)
        time.sleep(2)

    try:
        world.produce(1000, 0.25)
        kd.start()
        wait_for("kdedup to be assigned",
                 lambda: gauge(kd, "kdedup_assigned_partitions") == PARTS)
        stream = Stream(world)
        try:
            time.sleep(1)
            # first, while the producer is steady: after a timeout the
            # idempotent producer renews its id and holds messages back
            fault("downstream answers after 6.5 s (> message.timeout.ms 5 s)",
                  "rtt 2 6500", after=("rtt 2 0",),
                  until=lambda: gauge(kd, "kdedup_produce_errors_total",
                                      status="possibly_persisted") > 0)
            fault("produce errors past the producer's retries",
                  f"broker-produce-errors 2 40 {STORAGE_ERROR}")
            fault("downstream broker down 8 s (> message.timeout.ms)",
                  "broker-down 2", hold_s=8, after=("broker-up 2",))
            fault("downstream leader moves", f"leader {DST} 0 3", f"leader {DST} 1 3")
            fault("OffsetCommit errors", f"commit-errors 5 {NOT_COORDINATOR}",
                  f"commit-errors 5 {REQUEST_TIMED_OUT}", hold_s=3)
            fault("coordinator moves while its broker is down",
                  "coordinator e2e 1", "broker-down 3", hold_s=4, after=("broker-up 3",))
        finally:
            stream.end()
        world.produce(1000, 0.6)
        world.read(quiet_s=3)
        settle((kd,))
        # A delivery that failed for good is sent again after later messages
        # of its partition were delivered: its place in the order is lost.
        mock_copies = world.verify(order=False)
        check(world.inversions <= errs_total(kd),
              f"{world.inversions} records out of order, more than failed deliveries")
        committed = committed_reaches_end(mock.bootstrap, "e2e")
        check(committed == len(world.keys), f"committed {committed} of {len(world.keys)}")
        _, value = scrape(kd.port)
        route = f"{SRC}->{DST}"
        errs = {s: int(value("kdedup_produce_errors_total", route=route, status=s))
                for s in ("not_persisted", "possibly_persisted")}
        unc = {o: int(value("kdedup_uncertain_deliveries_total", route=route, outcome=o))
               for o in ("found", "absent", "unknown")}
        check(errs["not_persisted"] > 0, "no delivery failed for good: the faults missed")
        check(errs["possibly_persisted"] > 0, "no delivery was possibly persisted")
        check(unc["unknown"] == 0, f"{unc['unknown']} uncertain deliveries never resolved")
        kd.signal(signal.SIGTERM)
        receipts = world.check_receipts(kd)
        report.append(f"broker faults ({'; '.join(faults)}): {len(world.keys)} produced, "
                      f"{len(world.first)} unique, 0 lost, 0 duplicated, all committed, "
                      f"{receipts} receipts naming their records; "
                      f"not persisted {errs['not_persisted']} (released, sent again), "
                      f"possibly persisted {errs['possibly_persisted']} (found downstream "
                      f"{unc['found']}, absent and sent again {unc['absent']}, unknown 0); "
                      f"keys whose later copy was forwarded (first released after failing) "
                      f"{world.later_copies}; records behind a later one of their partition "
                      f"(sent again after failing) {world.inversions}; mock retry copies "
                      f"{mock_copies}")
    finally:
        shut_down(mock, world, kd)


def main():
    workdir = tempfile.mkdtemp(prefix="kdedup-faults-")
    passed = failed = 0
    report = []
    for name, fn in (("three replicas, one added, one killed and restarted: nothing lost, "
                      "nothing twice", replicas),
                     ("broker faults under load: nothing lost, nothing twice, all committed",
                      broker_faults)):
        if os.environ.get("KD_FAULTS", fn.__name__) != fn.__name__:
            continue  # KD_FAULTS=<phase> runs one phase
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
