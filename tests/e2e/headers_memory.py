#!/usr/bin/python3
"""Headers count in kdedup's memory bounds: a measurement, and its checks.

200 messages of about 195 KB each, made of 65,000 empty headers (name "h",
empty value) and a small value, arrive on 10 partitions of a mock cluster.
librdkafka keeps a header it parsed as an allocation of its own (about 70
bytes for an empty one), so such a message takes some 5 MB in memory for
195 KB on the wire; kdedup's byte bounds must count that, not only keys and
values.

Phases (each a fresh kdedup; its peak RSS, VmHWM, is printed):
  values     the same bytes as values, one header each: the baseline
  defaults   the header messages under the default bounds: each is over
             pipeline.max_headers, dead-lettered with kdedup-reason
  forwarded  the same with max_headers/max_header_bytes raised so that they
             are forwarded: pipeline.max_inflight_bytes must hold them back
  handover   a second kdedup with an empty store takes the partitions over
             and reads the forwarded records back (the handover's batches)

Checks (with --check): every message is accounted for (downstream or in the
dead-letter topic, with its reason), and each phase's peak RSS stays under
--limit-mib. Without --check it only prints the figures (for a build that
does not know the options: --old, which leaves max_headers out of the
config and skips the defaults phase).

Run with Debian's interpreter, under the test lock:
  flock /tmp/kdedup-test.lock /usr/bin/python3 tests/e2e/headers_memory.py --check
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API, KDEDUP, Sidecar, check, gauge, wait_for  # noqa: E402

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

PARTS = 10
N = 200
HEADERS = 65000
DEADLINE_S = 300


class HeadersMock:
    """A mock cluster (`kdedup mock`) with one topic trio per phase."""

    def __init__(self, phases):
        topics = []
        for ph in phases:
            for t in (ph, ph + ".out", ph + ".dlq"):
                topics += ["--topic", f"{t}:{PARTS}"]
        self.proc = subprocess.Popen([KDEDUP, "mock", "--brokers", "1", *topics],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.bootstrap = self.proc.stdout.readline().strip()
        check(self.bootstrap.startswith("127.0.0.1:"), "mock cluster did not start")

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def produce(bootstrap, topic, as_values):
    p = KafkaProducer(bootstrap_servers=bootstrap, api_version=API, acks="all",
                      max_request_size=4 << 20)
    many = [("h", b"")] * HEADERS
    t0 = time.time()
    for i in range(N):
        key = f"{topic}-{i}".encode()
        if as_values:
            p.send(topic, partition=i % PARTS, value=b"h" * (3 * HEADERS),
                   headers=[("Idempotency-Key", key)])
        else:
            p.send(topic, partition=i % PARTS, value=b"v",
                   headers=[("Idempotency-Key", key)] + many)
    p.flush(timeout=300)
    p.close()
    print(f"  produced {N} messages to {topic} in {time.time() - t0:.1f}s", flush=True)


def counts(bootstrap, topic):
    """Records in topic, and the kdedup-reason headers among them."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API,
                      enable_auto_commit=False, group_id=None)
    parts = [TopicPartition(topic, p) for p in range(PARTS)]
    c.assign(parts)
    c.seek_to_beginning()
    ends = c.end_offsets(parts)
    reasons, n = {}, 0
    end = time.time() + DEADLINE_S
    while any(c.position(tp) < ends[tp] for tp in parts):
        check(time.time() < end, f"{topic} could not be read to its end")
        for recs in c.poll(timeout_ms=500).values():
            for r in recs:
                n += 1
                why = dict(r.headers).get("kdedup-reason")
                if why is not None:
                    reasons[why.decode()] = reasons.get(why.decode(), 0) + 1
    c.close()
    return n, reasons


def settled(kd, bootstrap, topic):
    c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API,
                      group_id="e2e", enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in range(PARTS)]
    ends = c.end_offsets(parts)
    wait_for(f"{topic}: everything settled and committed",
             lambda: gauge(kd, "kdedup_inflight_messages") == 0 and
             all(c.committed(tp) == ends[tp] for tp in parts), DEADLINE_S)
    c.close()


def sidecar(workdir, bootstrap, topic, pipeline):
    kd = Sidecar(workdir, bootstrap, {
        "routes": [{"from": topic, "to": topic + ".out", "on_missing_key": "dead_letter",
                    "dead_letter_topic": topic + ".dlq"}],
        "pipeline": pipeline,
        "kafka": {"producer": {"message.max.bytes": "4000000"}},
    })
    kd.start()
    return kd


def stop(kd):
    rc = kd.signal(signal.SIGTERM)
    check(rc == 0, f"kdedup exited {rc}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--old", action="store_true",
                    help="a build without pipeline.max_headers: no defaults phase")
    ap.add_argument("--limit-mib", type=float, default=200.0)
    args = ap.parse_args()
    raised = {} if args.old else {"max_headers": 100000, "max_header_bytes": 16 << 20}
    phases = ["values", "forwarded"] + ([] if args.old else ["defaults"])
    workdir = tempfile.mkdtemp(prefix="kdedup-headers-")
    mock = HeadersMock(phases)
    peaks = {}
    try:
        for ph in phases:
            produce(mock.bootstrap, ph, ph == "values")
            kd = sidecar(os.path.join(workdir, ph), mock.bootstrap, ph,
                         raised if ph == "forwarded" else {})
            settled(kd, mock.bootstrap, ph)
            peaks[ph] = peak_rss_mib(kd.proc.pid)
            stop(kd)
            out, _ = counts(mock.bootstrap, ph + ".out")
            dlq, reasons = counts(mock.bootstrap, ph + ".dlq")
            print(f"{ph}: peak RSS {peaks[ph]:.1f} MiB; {out} forwarded, {dlq} "
                  f"dead-lettered {reasons}", flush=True)
            if args.check and ph == "defaults":
                check(out == 0 and dlq == N and reasons == {"too-many-headers": N},
                      f"defaults: {out} forwarded, {dlq} dead-lettered {reasons}")
            elif args.check:
                check(out == N and dlq == 0, f"{ph}: {out} forwarded, {dlq} dead-lettered")
        # A replica with an empty store reads the forwarded records back.
        kd = sidecar(os.path.join(workdir, "handover"), mock.bootstrap, "forwarded",
                     raised)
        wait_for("the handover learned every key",
                 lambda: gauge(kd, "kdedup_handover_keys_total") == N and
                 gauge(kd, "kdedup_handover_pending_partitions") == 0, DEADLINE_S)
        peaks["handover"] = peak_rss_mib(kd.proc.pid)
        stop(kd)
        print(f"handover: peak RSS {peaks['handover']:.1f} MiB; {N} keys learned",
              flush=True)
        if args.check:
            over = {ph: mib for ph, mib in peaks.items() if mib > args.limit_mib}
            check(not over, f"peak RSS over {args.limit_mib} MiB: {over}")
    finally:
        mock.stop()
    print("OK" if args.check else "measured")


if __name__ == "__main__":
    main()
