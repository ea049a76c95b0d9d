#!/usr/bin/python3
"""A killed replica's open transaction, end to end (the transactional mode,
Apache Kafka only).

Replica b forwards a first batch and stops. Replica a holds its
transaction open (pipeline.transaction_max_age 20 s, its
transaction.timeout.ms 30 s) with records in the downstream partitions,
and is killed (-9); no replica takes up its transactional.id. b takes every
partition once a's session is over, forwards the keys again (a's offsets
were never committed) and commits them. Until the broker aborts a's
transaction (30 s after it began, and up to 10 s later), a read_committed
reader stops at a's first record in each partition a wrote to: b's
committed records behind it stay hidden, though nothing is lost.

This is what chaos seed 5 met on three brokers (2026-12-06, `make
chaos-kafka DELIVERY=transactional`): replica b was killed with a
transaction of 8 records open in orders.deduped/1; a took the partition,
forwarded those 8 keys and 22 more, and committed them; the oracle read
downstream, until nothing came for 6 s, before the broker had aborted b's
transaction, and called those 30 keys lost.

Checked: b's handover line names the high watermark past the end it read
(the open transaction); the oracle (World.read) waits until no transaction
is open downstream, then finds every key exactly once.

Phase "markers": a transaction ends while the downstream topic refuses
writes (the chaos and faults tests' fault: max.message.bytes below every
record batch). Its markers must get through: with the fault at 64 bytes,
below a marker's 78, Apache Kafka's coordinator took the marker's
MESSAGE_TOO_LARGE as fatal, never wrote it, and the transaction stayed
open, its transactional.id answered CONCURRENT_TRANSACTIONS (chaos seed 2:
110 s, until the test gave up).

Phase "late markers": a new owner's handover meets a transaction still
open in a downstream partition whose markers come a moment later, as the
previous owner's last transaction (committed in its revoke callback, just
before the partition went) may: the broker answers the commit once its
coordinator logged it, and writes the markers after. A producer of its
own (tests/kafka/TxnHold.java) holds a transaction with key K's record
open in orders.deduped/0; r, with an empty store, reads that partition's
history to its last stable offset, below the high watermark, and asks for
its end again; the transaction is committed 6 s later, and r learns K: a
copy of K is a duplicate, K is downstream once. (Before, the handover ended
at the last stable offset, and the copy went downstream again; until
2026-12-07 it asked again for 3 s only, not as long as a replica's
transaction may stay open.)

Phase "held reads": a read for a delivery of unknown outcome (an
uncertain delivery's, an ended ownership's note's, kd_recovery_find_since)
meets a transaction held open before the record it looks for. A producer of
the test's own (TxnHold.java) holds a transaction open in orders.deduped/0,
and key K is written there after it; tests/kafka/find_since.c asks for K
as kdedup's reads do. A read_committed read ends at the last stable offset,
the held transaction's first record: K must not be taken for absent (it
would be forwarded again) but read for again, and found once the held
transaction ends. (Before, "absent" at once: an outside review, 2026-12-07.)

Run with Debian's interpreter, on Apache Kafka:
  tests/kafka/with_kafka.sh 1 /usr/bin/python3 tests/e2e/hanging_txn_test.py
"""
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

os.environ["KD_DELIVERY"] = "transactional"  # the mode's own test (World.read too)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
from harness import DST, PARTS, SRC, Failure, Sidecar, check, gauge, stop, wait_for  # noqa: E402
from world import World, shut_down  # noqa: E402

TXN_TIMEOUT_MS = 30000  # a's transaction.timeout.ms: how long it stays open
HELD_S = 6  # phase "late markers": the held transaction's commit, after r asked
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASKED_AGAIN = "below its high watermark"
PAST_END = re.compile(r"handover: " + re.escape(DST) +
                      r"/(\d+) read \[\d+, (\d+)\).*its high watermark (\d+)")


def holding(kd):
    """True once kd holds every partition, their histories read."""
    return (gauge(kd, "kdedup_assigned_partitions") == PARTS and
            gauge(kd, "kdedup_handover_pending_partitions") == 0)


def run(workdir):
    mock = cluster.start()
    check(mock.real, "Apache Kafka only (the mock cluster has no last stable offset)")
    world = World(mock.bootstrap)
    # ids of their own: suites that share the cluster use kdedup-test-a, -b
    a = Sidecar(os.path.join(workdir, "hang-a"), mock.bootstrap,
                {"pipeline": {"transaction_max_age": "20s"},
                 "kafka": {"producer": {"transaction.timeout.ms": str(TXN_TIMEOUT_MS)}}})
    b = Sidecar(os.path.join(workdir, "hang-b"), mock.bootstrap)
    try:
        # b forwards and commits a first batch: the windows later read are
        # not empty (the historian fetches them, and learns the watermark)
        world.produce(100, 0.2)
        b.start()
        wait_for("b to hold every partition", lambda: holding(b), 60)
        world.settled((b,), "e2e")
        stop(b)
        world.produce(200, 0.2)
        a.start()
        wait_for("a to hold every partition", lambda: holding(a), 60)
        open_at = {}
        wait_for("a's open transaction to hold records downstream",
                 lambda: open_at.update(cluster.open_transactions(
                     mock.bootstrap, DST, range(PARTS))) or open_at, 30)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=30)
        t_kill = time.time()
        b.start()
        wait_for("b to hold every partition", lambda: holding(b), 60)
        with open(os.path.join(b.workdir, "kdedup.log")) as f:
            noted = {int(m.group(1)): (int(m.group(2)), int(m.group(3)))
                     for m in PAST_END.finditer(f.read())}
        check(set(noted) == set(open_at),
              f"b's handover lines name a high watermark past the end for partitions "
              f"{sorted(noted)}, a's transaction was open in {sorted(open_at)}")
        world.produce(100, 0.5)
        t_read = time.time()
        world.read((b,))
        waited = world.transactions_ended_at - t_read
        world.verify(order=False)
        stop(b)
        return (f"a killed with its transaction open in {len(open_at)} downstream "
                f"partition(s) {open_at} (last stable offset, high watermark); b's "
                f"handovers read to the last stable offset {noted}; the oracle waited "
                f"{waited:.1f}s for it to end ({world.transactions_ended_at - t_kill:.1f}s "
                f"after the kill), then read {len(world.first)} keys, each once")
    finally:
        shut_down(mock, world, a, b)


def logged(path, text):
    with open(path) as f:
        return text in f.read()


def markers(workdir):
    """Phase "markers": r's transaction ends (r stops) while the downstream
    topic refuses writes (cluster.refuse_writes, the chaos and faults
    tests' fault); its markers must still be written: the transaction ends
    at once, and r started again is not kept waiting."""
    mock = cluster.start()
    check(mock.real, "Apache Kafka only")
    world = World(mock.bootstrap)
    r = Sidecar(os.path.join(workdir, "hang-r"), mock.bootstrap,
                {"pipeline": {"transaction_max_age": "10s"}})  # below its 15 s timeout
    log = os.path.join(r.workdir, "kdedup.log")
    try:
        world.produce(50, 0.0)
        r.start()
        wait_for("r to hold every partition", lambda: holding(r), 60)
        wait_for("r's open transaction to hold records downstream",
                 lambda: cluster.open_transactions(mock.bootstrap, DST, range(PARTS)), 30)
        mock.refuse_writes(DST)
        world.produce(20, 0.0)
        wait_for("a delivery of r's refused", lambda: logged(log, "too large"), 30)
        stop(r)  # its open transaction ends: aborted (a delivery failed)
        mock.accept_writes(DST)
        t0 = time.time()
        left = {}

        def ended():
            left.clear()
            left.update(cluster.open_transactions(mock.bootstrap, DST, range(PARTS)))
            return not left
        try:
            wait_for("r's transaction ended", ended, 20)
        except Failure as e:
            raise Failure(f"{e}: its markers were refused; still open (partition: (last "
                          f"stable offset, high watermark)) {left}")
        ended = time.time() - t0
        r.update({"pipeline": {"transaction_max_age": "100ms"}})
        r.start()
        wait_for("r to hold every partition again", lambda: holding(r), 60)
        world.read((r,))
        world.verify(order=False)
        stop(r)
        return (f"r's transaction ended while {DST} refused writes: ended "
                f"{ended:.1f}s after the refusal was lifted; r started again, "
                f"{len(world.first)} keys, each once")
    finally:
        shut_down(mock, world, r)


def line_of(proc, timeout_s):
    """The next line proc prints, within timeout_s (else a Failure)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    check(ready, f"nothing from {proc.args[4]} within {timeout_s}s")
    return proc.stdout.readline().strip()


def hold_open(mock, txn_id, first, held):
    """tests/kafka/TxnHold.java on orders.deduped/0: first (key, source) in a
    transaction it commits (None: none), then held (key, source) in one it
    leaves open until told on stdin; returns the process once it said
    "open"."""
    args = list(first or ("-", "-")) + list(held)
    proc = subprocess.Popen(
        ["java", "-Xmx128m", "-cp", os.path.join(cluster.kafka_rig.libs(), "*"),
         os.path.join(ROOT, "tests", "kafka", "TxnHold.java"), mock.bootstrap, DST, "0",
         txn_id] + args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        check(line_of(proc, 120) == "open", "the held transaction did not open")
    except Failure:
        proc.kill()
        proc.wait(timeout=30)
        raise
    return proc


def commit(proc):
    """Tells a hold_open() process to commit its open transaction."""
    proc.stdin.write("commit\n")
    proc.stdin.flush()
    check(line_of(proc, 60) == "committed", "the held transaction was not committed")


def forwarded(world, key, source, value):
    """Writes key's record to orders.deduped/0 as kdedup forwards it (from
    source, now), outside any transaction; returns its offset."""
    headers = [("Idempotency-Key", key.encode()),
               ("kdedup-source", source.encode()),
               ("kdedup-forwarded-at", str(int(time.time() * 1000)).encode())]
    return world.producer.send(DST, partition=0, value=value,
                               headers=headers).get(timeout=60).offset


def late_markers(workdir):
    """Phase "late markers" (see the top)."""
    mock = cluster.start()
    check(mock.real, "Apache Kafka only")
    world = World(mock.bootstrap)
    r = Sidecar(os.path.join(workdir, "hang-m"), mock.bootstrap)
    log = os.path.join(r.workdir, "kdedup.log")
    key = "held-late-markers"
    hold = None
    try:
        hold = hold_open(mock, "kdedup-test-hold", ("warm-late-markers", f"{SRC}/0/0"),
                         (key, f"{SRC}/0/1"))
        r.start()
        wait_for("r's handover to ask for orders.deduped/0's end again",
                 lambda: logged(log, ASKED_AGAIN), 60)
        # held on, as another replica's may be (a killed one's until the
        # broker aborts it): longer than the 3 s the handover once waited
        time.sleep(HELD_S)
        commit(hold)
        wait_for("r to hold every partition", lambda: holding(r), 60)
        learned = gauge(r, "kdedup_handover_keys_total")
        world.producer.send(SRC, partition=0, value=b"the copy",
                            headers=[("Idempotency-Key", key.encode())])
        world.producer.flush(timeout=60)
        wait_for("r to take the copy for a duplicate",
                 lambda: gauge(r, "kdedup_duplicates_total") >= 1, 60)
        stop(r)
        copies = [rec for rec in cluster.read_committed(mock.bootstrap, DST)
                  if rec[3].get("Idempotency-Key") == key]
        check(len(copies) == 1, f"{key} downstream {len(copies)} times (read_committed)")
        with open(log) as f:
            read = re.findall(r"handover: " + re.escape(DST) + r"/0 read \[\d+, \d+\)",
                              f.read())
        return (f"r's handover read orders.deduped/0 to its last stable offset, below the "
                f"held transaction's record, asked again, and learned {learned:.0f} "
                f"key(s) once it was committed ({read[-1] if read else 'no line'}); the "
                f"copy of {key} a duplicate, downstream once")
    finally:
        if hold and hold.poll() is None:
            hold.kill()
            hold.wait(timeout=30)
        shut_down(mock, world, r)


def held_reads(workdir):
    """Phase "held reads" (see the top)."""
    mock = cluster.start()
    check(mock.real, "Apache Kafka only")
    world = World(mock.bootstrap)
    r = Sidecar(os.path.join(workdir, "hang-reads"), mock.bootstrap)  # its config only
    key = "held-reads"
    find_since = os.path.join(ROOT, os.environ.get("BUILD", "build"), "tests", "find_since")
    hold = None
    reader = None
    try:
        hold = hold_open(mock, "kdedup-test-hold-reads", ("warm-held-reads", f"{SRC}/0/0"),
                         ("held-open", f"{SRC}/0/1"))
        at = forwarded(world, key, f"{SRC}/0/2", b"behind the held transaction")
        reader = subprocess.Popen([find_since, r.config, mock.bootstrap, "0", key, "0", "120"],
                                  stdout=subprocess.PIPE, text=True)
        first = line_of(reader, 60)
        check(first == "later", f"{key}, written at {at} behind the held transaction, "
              f"read for: {first!r}, not 'later' (taken for absent, it is forwarded again)")
        t0 = time.time()
        commit(hold)
        last = line_of(reader, 60)
        check(last == f"found {at}", f"{key} read for once the held transaction ended: "
              f"{last!r}, not 'found {at}'")
        return (f"{key} at orders.deduped/0@{at}, behind a transaction held open: "
                f"'later' while it was open, found {time.time() - t0:.1f}s after its commit")
    finally:
        for proc in (hold, reader):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        shut_down(mock, world)


def empty_window(workdir):
    """Phase "empty window" (outside hunt, 2026-12-07): a handover whose
    window is empty (the store's mark is at the partition's last stable
    offset) fetches nothing, so markers_awaited sees no high watermark and
    does not wait, though a transaction is open there with key K's record.
    r reads every (empty) partition once and saves its marks at 0; stopped;
    TxnHold opens a transaction with K's record at orders.deduped/0@0; r
    started again hands over [0, 0) and consumes at once; a copy of K is
    sent; the held transaction is then committed. K must be downstream
    once (read_committed)."""
    mock = cluster.start()
    check(mock.real, "Apache Kafka only")
    world = World(mock.bootstrap)
    r = Sidecar(os.path.join(workdir, "hang-e"), mock.bootstrap)
    log = os.path.join(r.workdir, "kdedup.log")
    key = "held-empty-window"
    hold = None
    try:
        r.start()
        wait_for("r to hold every partition", lambda: holding(r), 60)
        stop(r)  # its marks: at 0, the end of every (empty) partition
        hold = hold_open(mock, "kdedup-test-hold-empty", None, (key, f"{SRC}/0/0"))
        r.start()
        wait_for("r to hold every partition, or to wait for the held transaction",
                 lambda: holding(r) or logged(log, ASKED_AGAIN), 60)
        waited = logged(log, ASKED_AGAIN)
        world.producer.send(SRC, partition=0, value=b"the copy",
                            headers=[("Idempotency-Key", key.encode())])
        world.producer.flush(timeout=60)
        time.sleep(3)  # r forwards the copy now, unless its handover waits
        commit(hold)
        wait_for("r to hold every partition", lambda: holding(r), 60)
        wait_for("r to settle the copy",
                 lambda: gauge(r, "kdedup_duplicates_total") +
                 gauge(r, "kdedup_messages_forwarded_total") >= 1, 60)
        stop(r)
        copies = [rec for rec in cluster.read_committed(mock.bootstrap, DST)
                  if rec[3].get("Idempotency-Key") == key]
        check(len(copies) == 1, f"{key} downstream {len(copies)} times (read_committed); "
              f"r's handover waited for the held transaction: {waited}")
        return (f"r's handover of an empty window waited for the held transaction "
                f"({waited}); {key} downstream once")
    finally:
        if hold and hold.poll() is None:
            hold.kill()
            hold.wait(timeout=30)
        shut_down(mock, world, r)


def orphan_read(workdir):
    """Phase "orphan read" (outside hunt, 2026-12-07): a dead run's claim,
    fresh (seconds old, far from dedup.inflight_timeout), whose delivery is
    committed behind another producer's transaction held open. The copy that
    meets the claim reads downstream for it at once (kd_pl_claim_takeover ->
    resolve_orphan -> kd_recovery_find), and that read ends at the last
    stable offset. dedup.handover false: nothing else reads for it first.
    K must be downstream once (read_committed)."""
    mock = cluster.start()
    check(mock.real, "Apache Kafka only")
    world = World(mock.bootstrap)
    r = Sidecar(os.path.join(workdir, "hang-o"), mock.bootstrap,
                {"dedup": {"handover": False}})
    key = "held-orphan"
    dead_claim = os.path.join(ROOT, os.environ.get("BUILD", "build"), "tests",
                              "dead_claim")
    hold = None
    try:
        # the claim first: the dead run's delivery came after it
        out = subprocess.run([dead_claim, r.config, "beef", key], capture_output=True,
                             text=True, timeout=60)
        check(out.returncode == 0, f"dead_claim: {out.stderr}")
        hold = hold_open(mock, "kdedup-test-hold-orphan", ("warm-orphan", f"{SRC}/0/90"),
                         ("held-open", f"{SRC}/0/91"))
        # the dead run's delivery of K, committed behind the held transaction
        at = forwarded(world, key, f"{SRC}/0/0", b"the dead run's delivery")
        r.start()
        wait_for("r to hold every partition",
                 lambda: gauge(r, "kdedup_assigned_partitions") == PARTS, 60)
        world.producer.send(SRC, partition=0, value=b"the copy",
                            headers=[("Idempotency-Key", key.encode())])
        world.producer.flush(timeout=60)
        time.sleep(3)  # r reads for the claim now (and forwards K, if absent)
        commit(hold)
        wait_for("r to resolve the dead run's claim",
                 lambda: gauge(r, "kdedup_orphans_found_total") +
                 gauge(r, "kdedup_orphans_absent_total") +
                 gauge(r, "kdedup_duplicates_total") >= 1, 60)
        found = gauge(r, "kdedup_orphans_found_total")
        absent = gauge(r, "kdedup_orphans_absent_total")
        time.sleep(2)  # r's transaction commits
        stop(r)
        copies = [rec for rec in cluster.read_committed(mock.bootstrap, DST)
                  if rec[3].get("Idempotency-Key") == key]
        check(len(copies) == 1, f"{key} downstream {len(copies)} times (read_committed; "
              f"the dead run's at {at}); orphans found {found:.0f}, absent {absent:.0f}")
        return f"{key} found behind the held transaction; downstream once"
    finally:
        if hold and hold.poll() is None:
            hold.kill()
            hold.wait(timeout=30)
        shut_down(mock, world, r)


def main():
    """Runs every phase, or those named on the command line (run, markers,
    late_markers, held_reads, empty_window, orphan_read)."""
    workdir = tempfile.mkdtemp(prefix="kdedup-hanging-")
    failed = 0
    for name, fn in (("a killed replica's open transaction", run),
                     ("a transaction ended while downstream refuses writes", markers),
                     ("a handover meets a transaction whose markers come late",
                      late_markers),
                     ("a read for a key meets a transaction held open before it",
                      held_reads),
                     ("a handover of an empty window meets a transaction held open",
                      empty_window),
                     ("a dead run's fresh orphan behind a transaction held open",
                      orphan_read)):
        if sys.argv[1:] and fn.__name__ not in sys.argv[1:]:
            continue
        t0 = time.time()
        try:
            line = fn(workdir)
            print(f"PASS {name} ({time.time() - t0:.1f}s)\n  {line}", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL {name}: {e} (logs in {workdir})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
