#!/usr/bin/python3
"""A seeded chaos test: replicas in one consumer group under continuous
production with duplicates, while faults land at random moments. It hunts
for the next bug where partitions change owner or processes stop.

Each seed runs a three-broker mock cluster (source partitions led by broker
1, downstream by broker 2, the group's coordinator on broker 3) and up to
three kdedup replicas with stores of their own. For `KD_CHAOS_SECONDS`
(30) it picks, at random moments, among: SIGTERM and restart; kill -9 and
restart; a start killed again within 3 s (mid-join, mid-handover); a replica
added; produce errors; downstream answers slower than message.timeout.ms;
the downstream broker down and up; messages stamped days ago. Then it heals
everything, leaves one replica running, sends duplicates of every key, and
checks the oracle of world.py:

- no key lost, and every source partition committed to its end;
- no key forwarded by two runs, except where the later run could not have
  known: the first copy landed past the point up to which the later run
  had read that downstream partition when it was assigned (its handover
  log line). That is the documented zombie-owner limit (RELIABILITY.md),
  counted and reported apart, never in the pass figure;
- no key written twice by one run (the mock cluster does not deduplicate
  idempotent retries, but with these settings none happens: such a copy
  is kdedup sending again what may already be there);
- downstream is read once every source partition is committed to its end
  and the last replica holds no message; every SIGTERM exits 0.

Usage: chaos_test.py [SEED ...]  (default: the seeds in KD_CHAOS_SEEDS, or 1 2).
A failure prints its seed; run `chaos_test.py SEED` to replay it.
"""
import json
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
from harness import DST, PARTS, SRC, Failure, Sidecar, check, gauge, stop, wait_for  # noqa: E402
from world import World  # noqa: E402

STORAGE_ERROR = 56
REAL_FAULTS = ("produce-errors", "slow-downstream", "broker-down",
               "broker-paused-past-session", "controller-restart")
DAY_MS = 24 * 3600 * 1000
CONFIG = {
    "kafka": {"producer": {"message.timeout.ms": "5000", "retries": "2",
                           "retry.backoff.ms": "50"}},
    "pipeline": {"shutdown_grace": "3s"},
}
HANDOVER = re.compile(r"handover: " + re.escape(DST) + r"/(\d+) read \[(\d+), (\d+)\)")
BOOT = re.compile(r"boot id ([0-9a-f]{16})")
# a partition's messages handed over by the consumer while it was paused for
# its handover (held until it was done: RELIABILITY, "Handover")
EARLY = "consumed while the partition is paused for its handover"


class Stamped(World):
    """A World whose producer stamps a share (old_share) of messages days ago."""

    def __init__(self, bootstrap, rng):
        super().__init__(bootstrap)
        self.rng = rng
        self.old_share = 0.0
        self.stamp = self.maybe_old

    def maybe_old(self):
        if self.rng.random() < self.old_share:
            return int(time.time() * 1000) - self.rng.randint(2, 9) * DAY_MS
        return None


class Stream:
    """Produces chunks with duplicates in a thread until stopped."""

    def __init__(self, world):
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self.run, args=(world,))
        self.thread.start()

    def run(self, world):
        try:
            while not self.stop.is_set():
                world.produce(40, 0.3)
                time.sleep(0.1)
        except Exception as e:  # reported at the end, not lost in the thread
            self.error = e

    def end(self):
        self.stop.set()
        self.thread.join()
        check(self.error is None, f"the producer failed: {self.error!r}")


def early_consumptions(kds):
    """How many partitions' handovers saw messages consumed before they were
    done (logged once a handover)."""
    n = 0
    for kd in kds:
        with open(os.path.join(kd.workdir, "kdedup.log")) as f:
            n += sum(EARLY in line for line in f)
    return n


def handover_reads(kds):
    """{run id: {downstream partition: highest end read by its handovers}}
    from the replicas' logs."""
    reads = {}
    for kd in kds:
        run = None
        with open(os.path.join(kd.workdir, "kdedup.log")) as f:
            for line in f:
                m = BOOT.search(line)
                if m:
                    run = m.group(1)
                    continue
                m = HANDOVER.search(line)
                if m and run:
                    part, hi = int(m.group(1)), int(m.group(3))
                    runs = reads.setdefault(run, {})
                    runs[part] = max(runs.get(part, 0), hi)
    return reads


def judge(world, kds):
    """The oracle; returns (zombie duplicates, producer duplicates).

    A producer duplicate is one produce call of kdedup's appended twice
    (every copy from the run carries the same kdedup-forwarded-at):
    librdkafka 2.0.2's idempotent producer re-sends a series of in-flight
    batches after a permanent error of one (MESSAGE_TOO_LARGE here), and
    Apache Kafka can append some of them twice (librdkafka #4953). kdedup
    never produces one message twice in the same millisecond. Counted apart
    and reported, as the zombies are; the transactional mode allows neither
    (run_seed)."""
    copies = {}
    for part, off, key, _, hdrs in world.downstream:
        copies.setdefault(key, []).append((part, off, hdrs.get("kdedup-run"),
                                           hdrs.get("kdedup-forwarded-at")))
    lost = [k for k in world.first if k not in copies]
    check(not lost, f"{len(lost)} keys lost, e.g. {lost[:3]}")
    check(set(copies) <= set(world.first), "downstream holds keys never produced")
    reads = handover_reads(kds)
    zombies, producer, same_run, bad = 0, 0, [], []
    for key, cs in copies.items():
        cs.sort()
        by_run = {}
        for c in cs:
            by_run.setdefault(c[2], []).append(c)
        for run_copies in by_run.values():
            if len(run_copies) < 2:
                continue
            if len({c[3] for c in run_copies}) == 1:
                producer += 1  # one produce call, appended twice
            else:
                same_run.append(key)
        first_of = {run: rc[0] for run, rc in by_run.items()}
        if len(first_of) < 2:
            continue
        ordered = sorted(first_of.values(), key=lambda c: c[1])
        for earlier, later in zip(ordered, ordered[1:]):
            read = reads.get(later[2], {}).get(earlier[0], -1)
            if read >= 0 and earlier[1] >= read:
                zombies += 1  # landed after the later run had read its partition
            else:
                bad.append((key, earlier, later, read))
    check(not bad, f"{len(bad)} keys forwarded by two runs, e.g. {bad[:2]}")
    detail = {k: [(part, off, h.get("kdedup-source"), h.get("kdedup-forwarded-at"))
                  for part, off, key, _, h in world.downstream if key == k]
              for k in same_run[:3]}
    check(not same_run, f"{len(same_run)} keys written twice by one run, e.g. {detail} "
                        f"(downstream partition, offset, source, forwarded at)")
    return zombies, producer


class Chaos:
    def __init__(self, seed, workdir):
        self.rng = random.Random(seed)
        self.mock = cluster.start(brokers=3, topics={})
        self.mock.topic(SRC, PARTS, leader=1)
        self.mock.topic(DST, PARTS, leader=2)
        self.mock.topic("orders.dlq", 1, leader=1)
        if not self.mock.real:
            self.mock.coordinator("e2e", 3)
        # its own generator: the faults' sequence is the seed's, whatever the producer does
        self.world = Stamped(self.mock.bootstrap, random.Random(seed * 7919 + 1))
        self.kds = [Sidecar(os.path.join(workdir, n), self.mock.bootstrap, CONFIG)
                    for n in "abc"]
        self.faults = {}
        self.log = os.path.join(workdir, "faults.log")  # each fault, when it began and ended
        self.broker_down = False
        self.paused = None  # a broker silenced (real) or slowed (mock), to heal

    def running(self):
        return [kd for kd in self.kds if kd.proc and kd.proc.poll() is None]

    def stopped(self):
        return [kd for kd in self.kds if not kd.proc or kd.proc.poll() is not None]

    def count(self, name):
        self.faults[name] = self.faults.get(name, 0) + 1

    def note(self, t0, what):
        """Writes a fault with its moments (UTC) to faults.log: the replicas'
        logs are read against it."""
        def at(t):
            return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"
        with open(self.log, "a") as f:
            f.write(f"{at(t0)} .. {at(time.time())} {what}\n")

    def step(self):
        """One random fault."""
        rng, up, down, t0 = self.rng, self.running(), self.stopped(), time.time()
        choice = rng.choice(["sigterm", "kill", "kill-mid-join", "start", "produce-errors",
                             "slow-downstream", "broker-down", "old-stamps"] +
                            (["broker-paused-past-session", "controller-restart"]
                             if self.mock.real else []))
        what = choice
        if choice == "sigterm" and len(up) > 1:
            kd = rng.choice(up)
            what = f"{choice} {os.path.basename(kd.workdir)}"
            rc = kd.signal(signal.SIGTERM)
            check(rc == 0, f"{kd.workdir}: exit {rc} on SIGTERM")
        elif choice == "kill" and len(up) > 1:
            kd = rng.choice(up)
            what = f"{choice} {os.path.basename(kd.workdir)}"
            kd.proc.send_signal(signal.SIGKILL)
            kd.proc.wait(timeout=30)
        elif choice == "kill-mid-join" and down:
            kd = rng.choice(down)
            what = f"{choice} {os.path.basename(kd.workdir)}"
            kd.start()
            time.sleep(rng.uniform(0, 3))
            kd.proc.send_signal(signal.SIGKILL)
            kd.proc.wait(timeout=30)
        elif choice == "start" and down:
            kd = rng.choice(down)
            what = f"{choice} {os.path.basename(kd.workdir)}"
            kd.start()
        elif self.mock.real and choice in REAL_FAULTS:
            what = f"{choice} {self.real_fault(choice)}"
        elif choice == "produce-errors":
            self.mock.produce_errors(2, rng.randint(5, 40), STORAGE_ERROR)
        elif choice == "slow-downstream" and not self.broker_down:
            self.mock.slow(2, rng.randint(5500, 8000))
            time.sleep(rng.uniform(1, 4))
            self.mock.slow(2, 0)
        elif choice == "broker-down" and not self.broker_down:
            self.mock.down(2)
            self.broker_down = True
            time.sleep(rng.uniform(1, 8))
            self.mock.up(2)
            self.broker_down = False
        elif choice == "old-stamps":
            self.world.old_share = 0.0 if self.world.old_share else 0.3
        else:
            return
        self.count(choice)
        self.note(t0, what)

    def real_fault(self, choice):
        """The faults of Apache Kafka's processes, on a broker picked at random:
        produce requests refused (MESSAGE_TOO_LARGE, not retried); a broker silent (SIGSTOP) longer than message.timeout.ms, its
        requests answered late; a broker killed (-9) and restarted over its
        data; one paused past its session (fenced, leaderships move); the
        active controller killed and restarted. Returns what it acted on."""
        rng, m = self.rng, self.mock
        broker = rng.randint(1, 3)
        if choice == "produce-errors":
            m.refuse_writes(DST)
            time.sleep(rng.uniform(0, 3))
            m.accept_writes(DST)
            return f"({DST})"
        elif choice == "slow-downstream":
            m.silent(broker)
            time.sleep(rng.uniform(5.5, 8))
            m.speak(broker)
        elif choice == "broker-down":
            m.down(broker)
            time.sleep(rng.uniform(1, 8))
            m.up(broker)
        elif choice == "broker-paused-past-session":
            m.silent(broker)
            time.sleep(rng.uniform(10, 14))
            m.speak(broker)
        elif choice == "controller-restart":
            ctl = m.rig.quorum_leader() or broker
            m.down(ctl)
            time.sleep(rng.uniform(0, 3))
            m.up(ctl)
            return f"broker {ctl}"
        return f"broker {broker}"

    def heal(self):
        if self.mock.real:
            self.mock.stop_slowing(2)
            for b in (1, 2, 3):
                self.mock.speak(b)
        else:
            self.mock.slow(2, 0)
        if self.broker_down:
            self.mock.up(2)
        for kd in self.running()[1:]:
            rc = kd.signal(signal.SIGTERM)
            check(rc == 0, f"{kd.workdir}: exit {rc} on SIGTERM")
        if not self.running():
            self.stopped()[0].start()

    def close(self):
        for kd in self.running():
            kd.signal(signal.SIGTERM)  # run_seed checked the last one's exit
        self.world.reader.close()
        self.world.producer.close()
        self.mock.stop()


def run_seed(seed, seconds, workdir):
    chaos = Chaos(seed, workdir)
    try:
        chaos.world.produce(300, 0.2)
        for kd in chaos.kds[:2]:
            kd.start()
        stream = Stream(chaos.world)
        try:
            end = time.time() + seconds
            while time.time() < end:
                time.sleep(chaos.rng.uniform(0.5, 3))
                chaos.step()
        finally:
            stream.end()
        chaos.heal()
        last = chaos.running()[0]
        wait_for("the last replica to hold every partition",
                 lambda: gauge(last, "kdedup_assigned_partitions") == PARTS, 120)
        chaos.world.old_share = 0.0
        chaos.world.produce(500, 0.8)  # duplicates of keys from every phase
        committed = chaos.world.read((last,))
        chaos.world.check_committed(committed)
        zombies, producer = judge(chaos.world, chaos.kds)
        # the transactional mode fences zombies and the producer's own
        # duplicates: no duplicate is excused
        check(zombies + producer == 0 or os.environ.get("KD_DELIVERY") != "transactional",
              f"keys downstream twice in the transactional mode: {zombies} a zombie's, "
              f"{producer} the producer's")
        stop(last)
        report = {"seed": seed, "produced": len(chaos.world.keys),
                  "unique": len(chaos.world.first), "faults": chaos.faults,
                  "zombie_duplicates": zombies, "producer_duplicates": producer,
                  "held_for_handover": early_consumptions(chaos.kds)}
        if hasattr(chaos.world, "transactions_waited_s"):  # a killed replica's, say
            report["open_transactions_waited_s"] = round(chaos.world.transactions_waited_s, 1)
        return report
    finally:
        chaos.close()


def main():
    seeds = [int(s) for s in sys.argv[1:]] or \
        [int(s) for s in os.environ.get("KD_CHAOS_SEEDS", "1 2").split()]
    seconds = float(os.environ.get("KD_CHAOS_SECONDS", "30"))
    root = tempfile.mkdtemp(prefix="kdedup-chaos-")
    passed = failed = 0
    totals = {}
    for i, seed in enumerate(seeds):
        t0 = time.time()
        # a seed given twice runs twice afresh, not over its first run's stores
        workdir = os.path.join(root, f"seed-{seed}" + (f".{i}" if seed in seeds[:i] else ""))
        try:
            r = run_seed(seed, seconds, workdir)
            passed += 1
            for k, v in r["faults"].items():
                totals[k] = totals.get(k, 0) + v
            for k in ("zombie_duplicates", "producer_duplicates", "held_for_handover"):
                totals[k] = totals.get(k, 0) + r[k]
            print(f"PASS seed {seed} ({time.time() - t0:.0f}s): {json.dumps(r)}", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL seed {seed}: {e} (replay: tests/e2e/chaos_test.py {seed}; "
                  f"logs in {workdir})", flush=True)
    print(f"  faults injected over {passed + failed} seeds: {json.dumps(totals)}")
    print(f"chaos: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
