#!/usr/bin/python3
"""Memory soak (`make soak-memory`, out of `make test`): kdedup's resident
memory stays flat under every fault, and nothing is lost or duplicated.

One kdedup against a two-broker mock cluster (source topics led by broker 1,
downstream by broker 2) while orders arrive steadily with 30% duplicates,
after a warm-up minute that starts with a backlog of 30,000 read at full
speed (as after every outage). The rates (50 orders and 25 poison-route
messages a second) keep every partition under the mock cluster's retention
(it drops a partition's oldest records past about 5 MB, and the oracle
needs them all).
In turns, the downstream broker answers slower than message.timeout.ms,
is down for a minute, answers produce errors; and a message larger than the
producer's message.max.bytes arrives on a second route without a dead-letter
topic (its partition is held back, behind a growing backlog).

Every 2 s the RSS of the process (/proc/PID/status) and kdedup's memory
gauges are sampled, and /healthz is read every second. Checks: after the
first minute the RSS stays within 20% of its level at the first minute and
under the manifests' memory limit; /healthz never answers 503; the oracle
of world.py finds every order downstream exactly once; the poisoned
partition is held back and never committed past the poison. Writes
rss.csv and rss.png (matplotlib) into SOAK_OUT.

Environment: SOAK_SECONDS (600), SOAK_OUT (build/soak-memory), KDEDUP.
Run with Debian's interpreter: /usr/bin/python3 tests/e2e/soak_memory.py
"""
import csv
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
import cluster  # noqa: E402
from harness import API, Failure, Sidecar, check, gauge, http_get, scrape, wait_for  # noqa: E402
from world import World, shut_down  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
OUT = os.environ.get("SOAK_OUT", "build/soak-memory")
LIMIT_MIB = 512  # deploy/: the container's memory limit
POISON_SRC, POISON_DST = "poison.in", "poison.out"
BACKLOG = 30000  # about 1.5 MB a partition: under the mock's 5 MB with the stream
GAUGES = ("kdedup_inflight_messages", "kdedup_inflight_bytes", "kdedup_retrying_messages",
          "kdedup_backpressure", "kdedup_partitions_held_back", "kdedup_offsets_tracked",
          "kdedup_scan_cache_bytes", "kdedup_store_block_cache_bytes",
          "kdedup_store_memtable_bytes", "kdedup_left_claims", "kdedup_held_claims")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler:
    """Samples RSS and gauges every 2 s, /healthz every second, in threads."""

    def __init__(self, kd):
        self.kd, self.t0 = kd, time.time()
        self.rows, self.events, self.unhealthy = [], [], []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.sample),
                        threading.Thread(target=self.health)]
        for t in self.threads:
            t.start()

    def now(self):
        return time.time() - self.t0

    def mark(self, what):
        self.events.append((self.now(), what))
        print(f"  {self.now():6.0f}s {what}", flush=True)

    def sample(self):
        while not self.stop.wait(2):
            row = {"t": round(self.now(), 1), "rss_kib": rss_kib(self.kd.proc.pid)}
            try:
                value = scrape(self.kd.port)[1]
                for g in GAUGES:
                    row[g] = value(g)
            except (Failure, OSError):
                pass
            self.rows.append(row)

    def health(self):
        while not self.stop.wait(1):
            try:
                status, body = http_get(self.kd.port, "/healthz", timeout=5)
            except OSError as e:
                status, body = 0, str(e)
            if status != 200:
                self.unhealthy.append((round(self.now()), status, body.strip()))

    def end(self):
        self.stop.set()
        for t in self.threads:
            t.join()


class Stream:
    """Orders (with duplicates) at about rate/s, and the poison route's
    small messages, in a thread until stopped."""

    def __init__(self, world, poison_producer, rate=50):
        self.world, self.poison, self.rate = world, poison_producer, rate
        self.poison_sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            t0 = time.time()
            self.world.produce(self.rate // 5, 0.3)
            for _ in range(5):
                self.poison.send(POISON_SRC, value=b"small", partition=0,
                                 headers=[("Idempotency-Key",
                                           f"p-{self.poison_sent}".encode())])
                self.poison_sent += 1
            self.stop.wait(max(0.0, 0.2 - (time.time() - t0)))

    def end(self):
        self.stop.set()
        self.thread.join()


def plot(rows, events, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4.5))
    t = [r["t"] for r in rows]
    ax.plot(t, [r["rss_kib"] / 1024 for r in rows], label="RSS")
    for name, label in (("kdedup_store_memtable_bytes", "RocksDB memtables"),
                        ("kdedup_store_block_cache_bytes", "RocksDB block cache"),
                        ("kdedup_inflight_bytes", "in-flight bytes")):
        ax.plot(t, [r.get(name, 0) / 2**20 for r in rows], label=label, linewidth=0.8)
    for at, what in events:
        ax.axvline(at, color="grey", linewidth=0.5, linestyle=":")
        ax.text(at, ax.get_ylim()[1] * 0.97, what, rotation=90, fontsize=6, va="top")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.set_title("kdedup memory under faults (make soak-memory)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    os.makedirs(OUT, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="kdedup-soak-")
    mock = cluster.start(brokers=2, topics={})
    mock.topic("orders", 4, leader=1)
    mock.topic("orders.deduped", 4, leader=2)
    mock.topic(POISON_SRC, 1, leader=1)
    mock.topic(POISON_DST, 1, leader=2)
    mock.topic("orders.dlq", 1, leader=1)
    if not mock.real:
        mock.coordinator("e2e", 1)  # the group's coordinator is not the faulty broker
    world = World(mock.bootstrap)
    poison = KafkaProducer(bootstrap_servers=mock.bootstrap, api_version=API,
                           max_request_size=1 << 20, linger_ms=5)
    kd = Sidecar(workdir, mock.bootstrap, {
        "kafka": {"producer": {"message.timeout.ms": "5000", "message.max.bytes": "200000",
                               "retries": "2", "retry.backoff.ms": "50"}},
        # RocksDB sized so that the warm-up's backlog fills it to its bounds
        # within the first minute (the growth measured after it is then
        # kdedup's, not a cache warming); the defaults' model is in README
        # ("Memory").
        "store": {"block_cache_bytes": 4 << 20, "write_buffer_bytes": 4 << 20},
        # held back after 20 s behind the poison; backpressure within seconds
        # while the downstream broker is down
        "pipeline": {"max_inflight": 2000},
    })
    with open(kd.config) as f:
        cfg = json.load(f)
    cfg["routes"].append({"from": POISON_SRC, "to": POISON_DST,
                          "on_missing_key": "forward", "max_retries": 3,
                          "retry_backoff": "1s"})
    with open(kd.config, "w") as f:
        json.dump(cfg, f)
    sampler = stream = None
    try:
        kd.start()
        sampler = Sampler(kd)
        deadline = time.time() + SECONDS
        # The warm-up includes a backlog read at full speed (the consumer's
        # read-ahead full, as after every outage), then the steady stream.
        world.produce(BACKLOG, 0.3)
        sampler.mark(f"backlog of {BACKLOG} produced")
        stream = Stream(world, poison)
        fault_s = max(20, (SECONDS - 60) // 8)
        time.sleep(max(0, min(60, SECONDS // 4) - sampler.now()))
        sampler.mark("warm-up over")
        poison_at = poison.send(POISON_SRC, value=b"x" * 300000, partition=0,
                                headers=[("Idempotency-Key", b"poison")]).get(30).offset
        sampler.mark("poison message")
        turn = 0
        while time.time() + fault_s < deadline:
            which = turn % 3
            if which == 0:
                sampler.mark("downstream slower than message.timeout.ms")
                if mock.real:  # silent: its requests answered late, when it goes on
                    mock.silent(2)
                else:
                    mock.slow(2, 6500)
                time.sleep(fault_s)
                mock.speak(2) if mock.real else mock.slow(2, 0)
            elif which == 1:
                sampler.mark("downstream down")
                mock.down(2)
                time.sleep(min(60, fault_s * 2))
                mock.up(2)
            else:
                sampler.mark("produce errors")
                mock.refuse_writes("orders.deduped", 300)
                time.sleep(fault_s)
                mock.accept_writes("orders.deduped")
            turn += 1
            sampler.mark("healthy")
            time.sleep(min(fault_s, max(0, deadline - time.time() - fault_s)))
        time.sleep(max(0, deadline - time.time()))
        stream.end()
        stream = None
        # everything but the poison settles: then downstream is read to its end
        wait_for("the orders to settle (the poison alone in flight)",
                 lambda: gauge(kd, "kdedup_inflight_messages") <= 1, 180)
        world.read([], "e2e")
        print(f"  read {len(world.downstream)} downstream records; next offsets "
              f"{world.next_offset}", flush=True)
        _, value = scrape(kd.port)
        held_back = value("kdedup_partitions_held_back")
        counts = {name: int(value(name)) for name in (
            "kdedup_messages_consumed_total", "kdedup_messages_forwarded_total",
            "kdedup_duplicates_total", "kdedup_key_conflicts_total",
            "kdedup_claims_released_total", "kdedup_abandoned_total",
            "kdedup_orphans_found_total", "kdedup_uncertain_deliveries_total")}
        print(f"  kdedup: {counts}", flush=True)
        sampler.end()
        check(kd.signal(15) == 0, "kdedup did not exit 0 on SIGTERM")

        rows = sampler.rows
        with open(os.path.join(OUT, "rss.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["t", "rss_kib", *GAUGES], restval="")
            w.writeheader()
            w.writerows(rows)
        try:
            plot(rows, sampler.events, os.path.join(OUT, "rss.png"))
        except ImportError:
            print("  (no matplotlib: no plot; apt-get install python3-matplotlib)")
        seen = {d[2] for d in world.downstream}
        lost = [k for k in world.first if k not in seen]
        if lost:
            print(f"  {len(lost)} keys not downstream of {len(world.first)}; downstream "
                  f"{len(world.downstream)} records; e.g. {lost[:5]}", flush=True)
            for part in range(4):
                offs = sorted(d[1] for d in world.downstream if d[0] == part)
                gaps = sum(1 for a, b in zip(offs, offs[1:]) if b != a + 1)
                print(f"  downstream {part}: {len(offs)} records, offsets "
                      f"{offs[:1]}..{offs[-1:]}, {gaps} gaps", flush=True)
        mock_copies = world.verify(order=False)
        warm = [r["rss_kib"] for r in rows if r["t"] <= 60] or [rows[0]["rss_kib"]]
        base = warm[-1]
        after = [r["rss_kib"] for r in rows if r["t"] > 60]
        peak = max(after or [base])
        c = KafkaConsumer(bootstrap_servers=mock.bootstrap, api_version=API, group_id="e2e",
                          enable_auto_commit=False)
        committed = c.committed(TopicPartition(POISON_SRC, 0)) or 0
        c.close()
        print(f"soak-memory: {SECONDS}s, {len(world.keys)} orders produced, "
              f"{len(world.first)} unique, 0 lost, 0 duplicated (mock copies {mock_copies}); "
              f"RSS at 60s {base / 1024:.1f} MiB, peak after {peak / 1024:.1f} MiB "
              f"({(peak / base - 1) * 100:+.1f}%), limit {LIMIT_MIB} MiB; "
              f"/healthz not 200: {len(sampler.unhealthy)}; poison partition held back "
              f"{int(held_back)}, committed {committed} (poison at {poison_at}); "
              f"samples in {OUT}/rss.csv, plot {OUT}/rss.png")
        check(not sampler.unhealthy, f"/healthz failed: {sampler.unhealthy[:3]}")
        check(peak <= base * 1.2, f"RSS grew {(peak / base - 1) * 100:.1f}% past the first "
              f"minute's {base / 1024:.1f} MiB")
        check(peak < LIMIT_MIB * 1024, f"RSS {peak / 1024:.1f} MiB over the limit")
        check(held_back == 1, f"{held_back} partitions held back, expected the poisoned one")
        check(committed <= poison_at, f"committed {committed}, past the poison at {poison_at}")
        print("PASS soak-memory")
        return 0
    except Failure as e:
        print(f"FAIL soak-memory: {e} (logs in {workdir})")
        return 1
    finally:
        if stream:
            stream.end()
        if sampler and not sampler.stop.is_set():
            sampler.end()
        poison.close()
        shut_down(mock, world, kd)


if __name__ == "__main__":
    sys.exit(main())
