#!/usr/bin/python3
"""A store write slower than max.poll.interval.ms, end to end (issue 26,
item 4): the loop must not stall with it, and a replica that left its group
must not produce for the partitions it lost.

Replicas a and b share the partitions (max.poll.interval.ms and the session
6 s). a runs over a slow disk: an LD_PRELOAD shim (tests/e2e/sleep_sync.c)
makes each of its fdatasync()/fsync() calls sleep 9 s while a file says so.
A burst of new keys arrives while a's disk is slow, for 15 s. Checked:
a's loop turns on (/healthz 200 with `http.health_timeout` 2 s, /readyz 503
"store slow"), a never leaves the group (no MAX_POLL_EXCEEDED, its
partitions stay its own), and once the disk is fast again every key is
downstream once, from one run, none lost. Before the fix, a's loop waited
for the write in one go: a left the group after 6 s, b took its partitions,
read their history and forwarded the burst, and a produced its batch after
that: keys downstream twice (issue 26: 6 of 16).

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/stall_test.py
(on Apache Kafka: tests/kafka/with_kafka.sh 1 /usr/bin/python3 tests/e2e/stall_test.py)
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
from harness import (KDEDUP, PARTS, Failure, Sidecar, check, gauge, http_get,  # noqa: E402
                     stop, wait_for)
from world import World, shut_down  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SLOW_MS, SLOW_FOR_S = 9000, 15


class SlowSidecar(Sidecar):
    """A kdedup whose synced writes sleep while `slow_file` says so."""

    def __init__(self, workdir, bootstrap, extra, shim):
        super().__init__(workdir, bootstrap, extra)
        self.shim = shim
        self.slow_file = os.path.join(workdir, "slow-ms")

    def start(self):
        env = dict(os.environ, LD_PRELOAD=self.shim, KD_SLOW_SYNC=self.slow_file)
        self.proc = subprocess.Popen([KDEDUP, "--config", self.config],
                                     stdout=self.log, stderr=self.log, env=env)
        time.sleep(0.5)
        check(self.proc.poll() is None, f"kdedup exited {self.proc.returncode} at start")

    def slow(self, ms):
        if ms:
            with open(self.slow_file, "w") as f:
                f.write(str(ms))
        elif os.path.exists(self.slow_file):
            os.unlink(self.slow_file)


def log_of(kd):
    with open(os.path.join(kd.workdir, "kdedup.log")) as f:
        return f.read()


def slow_store(workdir, report):
    shim = os.path.join(workdir, "sleep_sync.so")
    os.makedirs(workdir, exist_ok=True)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", shim,
                    os.path.join(HERE, "sleep_sync.c"), "-ldl"], check=True)
    mock = cluster.start()
    world = World(mock.bootstrap)
    extra = {"kafka": {"consumer": {"session.timeout.ms": "6000",
                                    "max.poll.interval.ms": "6000"}},
             "http": {"health_timeout": "2s"}}
    a = SlowSidecar(os.path.join(workdir, "a"), mock.bootstrap, extra, shim)
    b = Sidecar(os.path.join(workdir, "b"), mock.bootstrap, extra)
    try:
        world.produce(200, 0.2)
        a.start()
        b.start()
        for kd in (a, b):
            wait_for("both replicas assigned, histories read",
                     lambda: gauge(kd, "kdedup_assigned_partitions") > 0 and
                     gauge(kd, "kdedup_handover_pending_partitions") == 0, 90)
        wait_for("the first keys settled", lambda: gauge(a, "kdedup_inflight_messages") == 0 and
                 gauge(b, "kdedup_inflight_messages") == 0, 60)
        held = gauge(a, "kdedup_assigned_partitions")
        a.slow(SLOW_MS)
        t0 = time.time()
        world.produce(400, 0.2)
        unhealthy = slow_seen = 0
        while time.time() - t0 < SLOW_FOR_S:
            status, _ = http_get(a.port, "/healthz")
            unhealthy += status != 200
            status, body = http_get(a.port, "/readyz")
            slow_seen += status == 503 and "store slow" in body
            time.sleep(0.2)
        a.slow(0)
        world.read((a, b))
        log = log_of(a)
        left = log.count('"msg":"lost ') + log.count("MAX_POLL_EXCEEDED")
        world.verify(order=False)
        check(left == 0, f"a lost its partitions {left} time(s) (it left the group)")
        check(unhealthy == 0, f"a's /healthz failed {unhealthy} time(s) while its disk "
                              f"was slow")
        check(gauge(a, "kdedup_assigned_partitions") == held,
              "a's partitions moved while its disk was slow")
        check(slow_seen > 0, "a's /readyz never said \"store slow\"")
        stop(a, b)
        report.append(f"slow_store: a (holding {int(held)} of {PARTS} partitions) synced "
                      f"each write {SLOW_MS / 1000:.0f} s for {SLOW_FOR_S} s under a burst "
                      f"(max.poll.interval.ms 6 s): /readyz \"store slow\", /healthz 200 "
                      f"throughout, stayed in its group; {len(world.first)} keys, each "
                      f"downstream once")
    finally:
        a.slow(0)
        shut_down(mock, world, a, b)


def main():
    workdir = tempfile.mkdtemp(prefix="kdedup-stall-")
    passed = failed = 0
    report = []
    for name, fn in (("a store write slower than max.poll.interval.ms", slow_store),):
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
    print(f"stall: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
