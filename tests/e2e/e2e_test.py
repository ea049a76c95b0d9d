#!/usr/bin/python3
"""End-to-end test of the real kdedup binary, driven by an independent Kafka
client (kafka-python, a pure-Python protocol implementation).

A mock cluster runs in its own process (`kdedup mock`); kafka-python produces
messages with repeated idempotency keys and reads the downstream topic back.
Phases: a clean run; a SIGTERM in mid-stream and a restart; a kill -9 in
mid-stream and a restart. The oracle after each: every unique key is
downstream (no loss), exactly once (after kill -9, re-forwards of claims the
dead process left are counted and reported), with its first copy's payload
and headers, and each source partition's messages in order.

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/e2e_test.py
"""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

KDEDUP = os.environ.get("KDEDUP", "build/kdedup")
API = (2, 5, 0)  # the mock cluster's protocol level; skips version probing
SRC, DST, PARTS = "orders", "orders.deduped", 4
DEADLINE_S = 120


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Mock:
    def __init__(self):
        self.proc = subprocess.Popen(
            [KDEDUP, "mock", "--brokers", "1", "--topic", f"{SRC}:{PARTS}",
             "--topic", f"{DST}:{PARTS}", "--topic", "orders.dlq:1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.bootstrap = self.proc.stdout.readline().strip()
        check(self.bootstrap.startswith("127.0.0.1:"), "mock cluster did not start")

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Sidecar:
    def __init__(self, workdir, bootstrap):
        self.workdir = workdir
        self.config = os.path.join(workdir, "kdedup.json")
        self.log = open(os.path.join(workdir, "kdedup.log"), "a")
        with open(self.config, "w") as f:
            json.dump({
                "kafka": {"brokers": bootstrap, "group_id": "e2e",
                          # a killed member's partitions move on after 6s, not 45s
                          "consumer": {"session.timeout.ms": "6000",
                                       "heartbeat.interval.ms": "500"}},
                "routes": [{"from": SRC, "to": DST, "key_header": "Idempotency-Key",
                            "on_missing_key": "dead_letter",
                            "dead_letter_topic": "orders.dlq"}],
                "store": {"path": os.path.join(workdir, "store")},
                "http": {"listen": "127.0.0.1:0"},
                "pipeline": {"shutdown_grace": "20s"},
            }, f)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([KDEDUP, "--config", self.config],
                                     stdout=self.log, stderr=self.log)
        time.sleep(0.5)
        check(self.proc.poll() is None, f"kdedup exited {self.proc.returncode} at start")

    def signal(self, sig):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


class World:
    """What was produced, and what downstream holds."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=API,
                                      acks="all", linger_ms=5)
        self.first = {}      # key -> (value, trace) of its first copy
        self.keys = []       # every key produced, in order
        self.downstream = []  # (partition, offset, key, value, headers dict)
        self.reader = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API,
                                    enable_auto_commit=False, group_id=None)
        parts = [TopicPartition(DST, p) for p in range(PARTS)]
        self.reader.assign(parts)
        self.reader.seek_to_beginning(*parts)
        self.rng = random.Random(7)

    def produce_in_background(self, n, dup_share, chunks=20, pause_s=0.1):
        """Produces n messages in chunks over about chunks * pause_s seconds."""
        def run():
            for _ in range(chunks):
                self.produce(n // chunks, dup_share)
                time.sleep(pause_s)
        t = threading.Thread(target=run)
        t.start()
        return t

    def produce(self, n, dup_share):
        for i in range(n):
            if self.keys and self.rng.random() < dup_share:
                key = self.rng.choice(self.keys)
            else:
                key = f"order-{len(self.first):06d}"
            value = f"{key} payload {len(self.keys)} " + "x" * self.rng.randint(10, 80)
            trace = f"trace-{len(self.keys)}"
            self.first.setdefault(key, (value, trace))
            self.keys.append(key)
            self.producer.send(SRC, key=key.encode(), value=value.encode(),
                               headers=[("Idempotency-Key", key.encode()),
                                        ("trace", trace.encode())])
        self.producer.flush(timeout=60)

    def read(self, quiet_s=2.0):
        """Reads downstream until every key is there, then quiet_s more."""
        end = time.time() + DEADLINE_S
        quiet_end = None
        while time.time() < end and (quiet_end is None or time.time() < quiet_end):
            for tp, records in self.reader.poll(timeout_ms=200).items():
                for r in records:
                    hdrs = {k: v.decode() for k, v in r.headers}
                    self.downstream.append((r.partition, r.offset, hdrs.get("Idempotency-Key"),
                                            r.value.decode(), hdrs))
            seen = {d[2] for d in self.downstream}
            if quiet_end is None and all(k in seen for k in self.first):
                quiet_end = time.time() + quiet_s

    def verify(self, allow_duplicates=False):
        counts = {}
        for _, _, key, value, hdrs in self.downstream:
            counts[key] = counts.get(key, 0) + 1
        lost = [k for k in self.first if k not in counts]
        dups = {k: c for k, c in counts.items() if c > 1}
        check(not lost, f"{len(lost)} keys lost, e.g. {lost[:3]}")
        check(allow_duplicates or not dups, f"{len(dups)} keys duplicated, e.g. {list(dups)[:3]}")
        check(set(counts) <= set(self.first), "downstream holds keys never produced")
        for _, _, key, value, hdrs in self.downstream:
            want_value, want_trace = self.first[key]
            if counts[key] == 1:
                check(value == want_value, f"{key}: payload changed: {value!r}")
                check(hdrs.get("trace") == want_trace, f"{key}: trace header changed")
            check(hdrs.get("kdedup-source", "").startswith(SRC + "/"), f"{key}: no source header")
        # Per source partition, source offsets only grow within a downstream partition.
        last = {}
        for part, _, key, _, hdrs in sorted(self.downstream, key=lambda d: (d[0], d[1])):
            _, src_part, src_off = hdrs["kdedup-source"].rsplit("/", 2)
            k = (part, src_part)
            check(int(src_off) > last.get(k, -1) or counts[key] > 1,
                  f"order broken in {DST}/{part} for source partition {src_part}")
            last[k] = int(src_off)
        return len(dups)


def main():
    passed = failed = 0
    workdir = tempfile.mkdtemp(prefix="kdedup-e2e-")
    mock = Mock()
    world = World(mock.bootstrap)
    kd = Sidecar(workdir, mock.bootstrap)
    phases = []

    def phase(name, fn):
        nonlocal passed, failed
        t0 = time.time()
        try:
            fn()
            passed += 1
            print(f"PASS {name} ({time.time() - t0:.1f}s)", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)

    def clean_run():
        world.produce(2000, 0.25)
        kd.start()
        world.read()
        world.verify()
        phases.append(f"clean run: {len(world.keys)} produced, {len(world.first)} unique")

    def sigterm_mid_stream():
        producing = world.produce_in_background(4000, 0.25)
        time.sleep(0.7)
        before = len(world.keys)
        rc = kd.signal(signal.SIGTERM)
        check(rc == 0, f"kdedup exited {rc} on SIGTERM")
        kd.start()
        producing.join()
        check(before < len(world.keys), "SIGTERM came after the stream ended")
        world.read()
        world.verify()
        phases.append(f"SIGTERM: {len(world.keys)} produced, {len(world.first)} unique")

    def kill9_mid_stream():
        producing = world.produce_in_background(4000, 0.25)
        time.sleep(0.7)
        before = len(world.keys)
        kd.signal(signal.SIGKILL)
        kd.start()
        producing.join()
        check(before < len(world.keys), "kill -9 came after the stream ended")
        world.read()
        dups = world.verify(allow_duplicates=True)
        phases.append(f"kill -9: {len(world.keys)} produced, {len(world.first)} unique, "
                      f"{dups} re-forwarded after the crash (at-least-once recovery)")

    try:
        phase("clean run: every unique key once, payloads, headers, order", clean_run)
        phase("SIGTERM mid-stream, restart: nothing lost, nothing twice", sigterm_mid_stream)
        phase("kill -9 mid-stream, restart: nothing lost", kill9_mid_stream)
    finally:
        if kd.proc and kd.proc.poll() is None:
            kd.signal(signal.SIGTERM)
        world.reader.close()
        world.producer.close()
        mock.stop()
    for p in phases:
        print("  " + p)
    if failed:
        print(f"kdedup log: {kd.log.name}")
    print(f"e2e: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
