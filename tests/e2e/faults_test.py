#!/usr/bin/python3
"""Fault tolerance end to end, under the oracle of e2e_test.py (every unique
key downstream exactly once, by no two runs and by no run twice, first
copy's payload and headers, order per source partition; downstream read
once every source partition is committed to its end and no kdedup holds a
message).

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
broker is down. Each fault must be seen to fire (a counter of kdedup's, its
log, or the cluster's answers); every SIGTERM must exit 0. Every record out
of order must be one whose delivery kdedup logged as failed, and every
possibly persisted delivery must be resolved.

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/faults_test.py
"""
import json
import os
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402
from e2e_test import (API, DST, PARTS, SRC, Failure, Mock, Sidecar, World,  # noqa: E402
                      check, gauge, scrape, shut_down, wait_for)

STORAGE_ERROR, NOT_COORDINATOR, REQUEST_TIMED_OUT = 56, 16, 7


def stop(*sidecars):
    """SIGTERM to each; each must exit 0."""
    for kd in sidecars:
        rc = kd.signal(signal.SIGTERM)
        check(rc == 0, f"{kd.workdir}: kdedup exited {rc} on SIGTERM")


def asking(what, fn, tries=20):
    """fn()'s answer, asked again while the cluster answers with an error (a
    connection the faults closed)."""
    for _ in range(tries - 1):
        try:
            return fn()
        except KafkaError:
            time.sleep(0.5)
    try:
        return fn()
    except KafkaError as e:
        raise Failure(f"{what}: {e!r}")


def log_lines(kd, since=0):
    """kdedup's JSON log lines from byte `since` of its log: (objects, end)."""
    with open(kd.log.name, "rb") as f:
        f.seek(since)
        data = f.read()
    lines = []
    for raw in data.decode(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            pass
    return lines, since + len(data)


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
        committed = world.read((a, b, c))
        check(committed == len(world.keys), f"committed {committed} of {len(world.keys)}")
        world.verify()
        learned += sum(gauge(kd, "kdedup_handover_keys_total") for kd in (a, b, c))
        read = sum(gauge(kd, "kdedup_handover_scanned_records_total") for kd in (a, b, c))
        secs = sum(gauge(kd, "kdedup_handover_scan_seconds_total") for kd in (a, b, c))
        check(learned > 0, "no replica learned keys on assignment")
        stop(a, b, c)
        receipts = world.check_receipts(a, b, c)
        report.append(f"replicas: 3 processes (one added, one killed and restarted): "
                      f"{len(world.keys)} produced, {len(world.first)} unique, all "
                      f"committed, 0 lost, 0 duplicated (by two runs or by one); keys "
                      f"learned on assignment {int(learned)} (the running processes read "
                      f"{int(read)} records in {secs:.2f} s for theirs); {receipts} "
                      f"receipts, each naming the downstream record; SIGTERM exit 0 x3")
    finally:
        shut_down(mock, world, a, b, c)


def failed_sources(kd):
    """{(source partition, offset)} of the deliveries kdedup logged as failed
    or possibly persisted."""
    out = set()
    for o in log_lines(kd)[0]:
        if o.get("topic") == SRC and str(o.get("msg", "")).startswith(
                ("delivery failed", "delivery possibly persisted")):
            out.add((int(o["partition"]), int(o["offset"])))
    return out


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
    # The test's own view of the cluster: committed offsets, leaders, ends.
    probe = KafkaConsumer(bootstrap_servers=mock.bootstrap, api_version=API, group_id="e2e",
                          enable_auto_commit=False)
    admin = KafkaAdminClient(bootstrap_servers=mock.bootstrap, api_version=API)
    src_parts = [TopicPartition(SRC, p) for p in range(PARTS)]
    faults = []

    def errors(status=None):
        return gauge(kd, "kdedup_produce_errors_total", **({"status": status} if status else {}))

    def committed():
        def ask():
            offsets = [probe.committed(tp) for tp in src_parts]
            if None in offsets:  # an answer lost to a fault, not "none committed"
                raise KafkaError(f"committed offsets {offsets}")
            return sum(offsets)
        return asking("committed offsets", ask)

    def dst_end(p):
        tp = TopicPartition(DST, p)
        return asking(f"the end of {DST}/{p}", lambda: probe.end_offsets([tp])[tp])

    def leader(topic, p):
        for t in asking(f"the leaders of {topic}", lambda: admin.describe_topics([topic])):
            for part in t["partitions"]:
                if part["partition"] == p:
                    return part["leader"]
        return None

    def fault(name, *cmds, hold_s=0, until=None, after=(), fired=None):
        """Injects cmds, holds them hold_s (or until `until` holds), then
        runs `after`, and lets the stream run a while. fired() -> (seen, what)
        must then become true within 30 s: the fault took effect."""
        for c in cmds:
            mock.cmd(c)
        if until:
            wait_for(name, until, 30)
        time.sleep(hold_s)
        for c in after:
            mock.cmd(c)
        time.sleep(2)
        if fired:
            wait_for(f"a sign that the fault fired: {name}", lambda: fired()[0], 30)
            name += f" [{fired()[1]}]"
        faults.append(name)

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
            base = errors("possibly_persisted")
            fault("downstream answers after 6.5 s (> message.timeout.ms 5 s)",
                  "rtt 2 6500", after=("rtt 2 0",),
                  until=lambda: errors("possibly_persisted") > base,
                  fired=lambda: (True, f"possibly persisted "
                                       f"+{int(errors('possibly_persisted') - base)}"))
            base = errors("not_persisted")
            fault("produce errors past the producer's retries",
                  f"broker-produce-errors 2 40 {STORAGE_ERROR}",
                  fired=lambda: (errors("not_persisted") > base,
                                 f"not persisted +{int(errors('not_persisted') - base)}"))
            base_all = errors()
            fault("downstream broker down 8 s (> message.timeout.ms)",
                  "broker-down 2", hold_s=8, after=("broker-up 2",),
                  fired=lambda: (errors() > base_all,
                                 f"failed deliveries +{int(errors() - base_all)}"))
            ends = [dst_end(0), dst_end(1)]
            fault("downstream leader moves", f"leader {DST} 0 3", f"leader {DST} 1 3",
                  fired=lambda: (leader(DST, 0) == 3 and leader(DST, 1) == 3 and
                                 dst_end(0) > ends[0] and dst_end(1) > ends[1],
                                 f"led by broker 3, +{dst_end(0) - ends[0]} and "
                                 f"+{dst_end(1) - ends[1]} records since"))
            at = log_lines(kd)[1]

            def commit_failures():
                return [o for o in log_lines(kd, at)[0] if o.get("facility") == "COMMITFAIL"]
            fault("OffsetCommit errors", f"commit-errors 5 {NOT_COORDINATOR}",
                  f"commit-errors 5 {REQUEST_TIMED_OUT}", hold_s=3,
                  fired=lambda: (len(commit_failures()) > 0,
                                 f"{len(commit_failures())} COMMITFAIL log lines"))
            before = committed()
            fault("coordinator moves while its broker is down",
                  "coordinator e2e 1", "broker-down 3", hold_s=4, after=("broker-up 3",),
                  fired=lambda: (committed() > before,
                                 f"commits went on: +{committed() - before}"))
        finally:
            stream.end()
        world.produce(1000, 0.6)
        total = world.read((kd,))
        check(total == len(world.keys), f"committed {total} of {len(world.keys)}")
        # A delivery that failed for good is sent again after later messages
        # of its partition were delivered: its place in the order is lost.
        # Only those may be out of order.
        world.verify(order=False)
        failed = failed_sources(kd)
        stray = [src for src in world.inverted if src not in failed]
        check(not stray, f"{len(stray)} records out of order whose delivery never failed, "
              f"e.g. source {stray[:3]}")
        _, value = scrape(kd.port)
        route = SRC  # a route's name: its "from"
        errs = {s: int(value("kdedup_produce_errors_total", route=route, status=s))
                for s in ("not_persisted", "possibly_persisted")}
        unc = {o: int(value("kdedup_uncertain_deliveries_total", route=route, outcome=o))
               for o in ("found", "absent", "unknown")}
        check(errs["not_persisted"] > 0, "no delivery failed for good: the faults missed")
        check(errs["possibly_persisted"] > 0, "no delivery was possibly persisted")
        check(unc["unknown"] == 0, f"{unc['unknown']} uncertain deliveries never resolved")
        check(unc["found"] + unc["absent"] == errs["possibly_persisted"],
              f"{errs['possibly_persisted']} possibly persisted, {unc['found']} found and "
              f"{unc['absent']} absent downstream: not every one was resolved")
        check(world.inversions <= errs["not_persisted"] + unc["absent"],
              f"{world.inversions} records out of order, more than deliveries sent again")
        stop(kd)
        receipts = world.check_receipts(kd)
        report.append(f"broker faults ({'; '.join(faults)}): {len(world.keys)} produced, "
                      f"{len(world.first)} unique, 0 lost, 0 duplicated (by two runs or by "
                      f"one), all committed, {receipts} receipts naming their records; "
                      f"not persisted {errs['not_persisted']} (released, sent again), "
                      f"possibly persisted {errs['possibly_persisted']} (found downstream "
                      f"{unc['found']}, absent and sent again {unc['absent']}, unknown 0); "
                      f"keys whose later copy was forwarded (first released after failing) "
                      f"{world.later_copies}; records behind a later one of their partition "
                      f"{world.inversions}, each one whose delivery had failed; SIGTERM exit 0")
    finally:
        probe.close()
        admin.close()
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
