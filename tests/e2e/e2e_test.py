#!/usr/bin/python3
"""End-to-end test of the real kdedup binary, driven by an independent Kafka
client (kafka-python, a pure-Python protocol implementation).

The cluster is librdkafka's mock in its own process (`kdedup mock`), or
Apache Kafka when KDEDUP_BOOTSTRAP is set (tests/e2e/cluster.py); kafka-python produces
messages with repeated idempotency keys and reads the downstream topic back.
Phases: a clean run; a SIGTERM in mid-stream and a restart; kill -9 at a
random moment under load and a restart, KD_KILL_CYCLES times (3; `make soak`
runs more), which must leave claims that the next run resolves. Downstream
is read once everything is settled: no kdedup holds a message (in flight or
waiting for a retry) and every source partition is committed to its end.
The oracle after each: every unique key is downstream (no loss), exactly
once (no duplicate: neither two runs nor one run wrote a key twice; the
mock cluster does not deduplicate idempotent retries, but with the
settings used here none happens, so one run's copies are kdedup's too),
with its first copy's payload and headers, and each source partition's
messages in order.

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/e2e_test.py
"""
import os
import random
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
from harness import (SECRET, SRC, Failure, Sidecar, check, gauge, http_get,  # noqa: E402
                     raw_http, scrape, wait_for)
from world import World, shut_down  # noqa: E402


def main():
    passed = failed = 0
    workdir = tempfile.mkdtemp(prefix="kdedup-e2e-")
    mock = cluster.start()
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

    def metrics():
        return scrape(kd.port)

    def observed_clean_run():
        world.produce(2000, 0.25)
        kd.start()
        first = http_get(kd.port, "/readyz")
        for _ in range(300):
            status, body = http_get(kd.port, "/readyz")
            if status == 200:
                break
            time.sleep(0.1)
        # Apache Kafka assigns within start()'s half second; the mock later.
        check(first[0] == 503 and first[1].strip() or mock.real and first[0] == 200,
              f"/readyz before assignment: {first}")
        check(status == 200, f"/readyz never became ready: {body}")
        world.read((kd,))
        world.verify()
        check(world.later_copies == 0, f"{world.later_copies} keys forwarded a later copy")
        fams, value = metrics()
        produced, unique = len(world.keys), len(world.first)
        route = SRC  # a route's name: its "from"
        check(value("kdedup_messages_consumed_total", topic=SRC) == produced, "consumed")
        check(value("kdedup_messages_forwarded_total", route=route) == unique, "forwarded")
        check(value("kdedup_duplicates_total", route=route) == produced - unique, "duplicates")
        # Most duplicates are retries; the few conflicts are counted apart.
        check(0 < world.conflicts < (produced - unique) / 2, f"conflicts {world.conflicts}")
        check(value("kdedup_key_conflicts_total", route=route, action="skip") ==
              world.conflicts, "key conflicts")
        check(value("kdedup_claims_released_total", route=route) == 0, "released")
        check(value("kdedup_forward_latency_seconds_count") == unique, "latency count")
        check(value("kdedup_store_write_seconds_count") >= 2, "store write count")
        check(value("kdedup_build_info") == 1, "build info")
        for name in ("kdedup_consumer_lag", "kdedup_dedup_collisions", "kdedup_store_errors",
                     "kdedup_produce_errors", "kdedup_missing_key"):
            check(name in fams, f"{name} missing from /metrics")
        phases.append(f"metrics: consumed {produced}, forwarded {unique}, "
                      f"duplicates {produced - unique} ({world.conflicts} key conflicts), "
                      f"latency count {unique}")

    def readiness_follows_broker():
        mock.down(1)
        for _ in range(200):
            status, body = http_get(kd.port, "/readyz")
            check(http_get(kd.port, "/healthz")[0] == 200, "/healthz failed with the broker down")
            if status == 503:
                break
            time.sleep(0.1)
        check(status == 503 and "broker" in body, f"/readyz with the broker down: {status} {body}")
        mock.up(1)
        for _ in range(300):
            status, body = http_get(kd.port, "/readyz")
            if status == 200:
                break
            time.sleep(0.1)
        check(status == 200, f"/readyz after the broker came back: {status} {body}")
        phases.append("readyz: 503 before assignment, 200, 503 with the broker down, 200 again")

    def hostile_http():
        reply = raw_http(kd.port, b"\x00\xff\x13garbage\r\n\r\n")
        check(b" 200 " not in reply.split(b"\r\n")[0], f"garbage answered 200: {reply[:40]!r}")
        check(http_get(kd.port, "/healthz")[0] == 200, "/healthz failed after garbage")
        long_line = b"GET /" + b"a" * 200000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        try:
            reply = raw_http(kd.port, long_line)
            check(not reply or b" 200 " not in reply.split(b"\r\n")[0], "a 200 KB line accepted")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while sending: fine
        reply = raw_http(kd.port, b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        check(b" 405 " in reply.split(b"\r\n")[0], f"unknown method: {reply[:40]!r}")
        check(http_get(kd.port, "/nope")[0] == 404, "an unknown path is not 404")
        idle = []
        for i in range(200):
            # From another address than the probe's, as in a pod (the kubelet
            # probes from the node's): one address holds at most a few slots.
            c = socket.create_connection(("127.0.0.1", kd.port), timeout=5,
                                         source_address=("127.0.0.2", 0))
            if i % 2:
                c.sendall(b"GET /metr")  # a request that never ends
            idle.append(c)
        t0 = time.time()
        status, _ = http_get(kd.port, "/healthz")
        check(status == 200, f"/healthz with 200 idle connections: {status}")
        check(time.time() - t0 < 2, "/healthz stalled behind idle connections")
        for c in idle:
            c.close()
        phases.append("http: garbage, a 200 KB line, BREW (405), /nope (404), "
                      "200 idle connections: survived")

    def wait_assigned():
        """Until kdedup consumes: assigned, and every partition's history read."""
        wait_for("kdedup to be assigned partitions",
                 lambda: gauge(kd, "kdedup_assigned_partitions") > 0 and
                 gauge(kd, "kdedup_handover_pending_partitions") == 0, 30)

    def interrupt_mid_stream(sig, delay_s=0.7):
        """Signals kdedup while input is still arriving and restarts it.
        Returns the orphan counters of the process that was signalled."""
        wait_assigned()  # a process without partitions has nothing in flight
        producing = world.produce_in_background(4000, 0.25, chunks=40, pause_s=0.15)
        for _ in range(300):  # once it forwards: past the backlog of duplicates
            _, value = metrics()
            if value("kdedup_messages_forwarded_total") > 0:
                break
            time.sleep(0.1)
        time.sleep(delay_s)
        before = len(world.keys)
        _, value = metrics()
        orphans = {what: value(f"kdedup_orphans_{what}_total")
                   for what in ("found", "absent", "reforwarded")}
        rc = kd.signal(sig)
        check(sig != signal.SIGTERM or rc == 0, f"kdedup exited {rc} on SIGTERM")
        kd.start()
        producing.join()
        check(before < len(world.keys), "the signal came after the stream ended")
        return orphans

    def sigterm_mid_stream():
        interrupt_mid_stream(signal.SIGTERM)
        world.read((kd,))
        world.verify()
        phases.append(f"SIGTERM: {len(world.keys)} produced, {len(world.first)} unique")

    def kill9_cycles():
        cycles = int(os.environ.get("KD_KILL_CYCLES", "3"))
        rng = random.Random(int(os.environ.get("KD_SEED", "9")))
        totals = {"found": 0, "absent": 0, "reforwarded": 0}
        # A slow broker keeps deliveries in flight longer, so that kills
        # land between claims and receipts and leave claims to resolve. On
        # Apache Kafka the producer lingers instead: pausing the broker also
        # stalls the consumer, and nothing is in flight while it is paused.
        if mock.real:
            kd.update({"kafka": {"producer": {"linger.ms": "150"}}})
            check(kd.signal(signal.SIGTERM) == 0, "kdedup did not exit 0 on SIGTERM")
            kd.start()
        else:
            mock.slow(1, 150)
        for _ in range(cycles):
            # the counters of each process are read just before it is killed,
            # so the last process's resolutions are read at the end
            for what, n in interrupt_mid_stream(signal.SIGKILL, rng.uniform(0.2, 1.5)).items():
                totals[what] += n
        if mock.real:
            del kd.settings["kafka"]["producer"]["linger.ms"]
            kd.write_config()
        else:
            mock.slow(1, 0)
        world.read((kd,))
        _, value = metrics()
        for what in totals:
            totals[what] += value(f"kdedup_orphans_{what}_total")
        world.verify()
        check(totals["reforwarded"] == 0,
              f"{totals['reforwarded']} orphaned claims could not be resolved exactly")
        # Kills that all landed at harmless moments would test no recovery.
        check(totals["found"] + totals["absent"] > 0,
              "no kill left a claim for the next run to resolve")
        phases.append(f"kill -9 x{cycles}: {len(world.keys)} produced, {len(world.first)} "
                      f"unique, 0 lost, 0 duplicated (by two runs or by one); orphaned "
                      f"claims found downstream {int(totals['found'])}, absent and "
                      f"forwarded once {int(totals['absent'])}, unresolved 0")

    def receipts():
        check(kd.signal(signal.SIGTERM) == 0, "kdedup did not exit 0 on SIGTERM")
        n = world.check_receipts(kd)
        phases.append(f"receipts: {n} of {len(world.first)} keys completed, each naming a "
                      f"downstream record with its key and source")

    try:
        phase("clean run: every unique key once, payloads, headers, order; /metrics exact",
              observed_clean_run)
        phase("/readyz follows the broker, /healthz stays up", readiness_follows_broker)
        phase("hostile HTTP input does not stall or crash", hostile_http)
        phase("SIGTERM mid-stream, restart: nothing lost, nothing twice", sigterm_mid_stream)
        phase("kill -9 under load, restarted, repeatedly: nothing lost, nothing twice",
              kill9_cycles)
        phase("every key's receipt names its downstream record", receipts)
    finally:
        shut_down(mock, world, kd)
    with open(kd.log.name) as f:
        log = f.read()
    if SECRET in log:
        failed += 1
        print("FAIL the SASL password appears in kdedup's log")
    else:
        passed += 1
        print("PASS the SASL password never appears in kdedup's log")
    for p in phases:
        print("  " + p)
    if failed:
        print(f"kdedup log: {kd.log.name}")
    print(f"e2e: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
