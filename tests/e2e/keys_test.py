#!/usr/bin/python3
"""Keys from anywhere in the message, and a key reused for another payload,
end to end: the real kdedup binary, kafka-python producing and reading.

Three routes, one per key source:
  byrk   -> byrk.out    the record key;                   conflicts dead-lettered
  byjson -> byjson.out  the JSON value's /order/id;       conflicts skipped (default)
  bycomp -> bycomp.out  header Tenant + the JSON /id;     conflicts forwarded

Each message is sent twice, the copy with another "ts" header and record
timestamp but the same value: an ordinary duplicate, suppressed. The
composite's parts are joined unambiguously: (Tenant "ab", id "c") and
(Tenant "a", id "bc") are two keys. Then a key of each route is resent with
another payload: on byrk it lands in the dead-letter topic saying why and
naming the original's record; on byjson it is skipped; on bycomp it is
forwarded; each counted in kdedup_key_conflicts_total{route,action}. A
value that is not JSON has no key on byjson and is dead-lettered as such.
Last, `kdedup lookup` shows the fingerprint stored with a key, the one its
receipt names.

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/keys_test.py
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
from harness import API, KDEDUP, RECEIPT, Failure, Sidecar, check, scrape  # noqa: E402

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

PARTS = 2
ROUTES = ("byrk", "byjson", "bycomp")
DLQ = "keys.dlq"
N = 30  # keys per route
DEADLINE_S = 60


def keys_topics():
    """This test's topics: {name: partitions}."""
    topics = {f"{r}{suffix}": PARTS for r in ROUTES for suffix in ("", ".out")}
    topics[DLQ] = 1
    return topics


def routes_config():
    common = {"on_missing_key": "dead_letter", "dead_letter_topic": DLQ}
    return [
        dict(common, **{"from": "byrk", "to": "byrk.out", "key": {"from": "record_key"},
                        "on_key_conflict": "dead_letter"}),
        dict(common, **{"from": "byjson", "to": "byjson.out",
                        "key": {"from": "json", "pointer": "/order/id"}}),
        dict(common, **{"from": "bycomp", "to": "bycomp.out",
                        "key": {"from": "composite",
                                "parts": [{"from": "header", "name": "Tenant"},
                                          {"from": "json", "pointer": "/id"}]},
                        "fingerprint": {"headers": ["Tenant"]},
                        "on_key_conflict": "forward"}),
    ]


class Traffic:
    """What is produced, and what comes back."""

    def __init__(self, bootstrap):
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=API,
                                      acks="all", linger_ms=5)
        self.reader = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API,
                                    enable_auto_commit=False, group_id=None)
        parts = [TopicPartition(f"{r}.out", p) for r in ROUTES for p in range(PARTS)]
        parts.append(TopicPartition(DLQ, 0))
        self.reader.assign(parts)
        self.reader.seek_to_beginning(*parts)
        self.out = {t: [] for t in [f"{r}.out" for r in ROUTES] + [DLQ]}
        self.sent = 0

    def send(self, topic, value, key=None, headers=()):
        self.producer.send(topic, key=key and key.encode(), value=value.encode(),
                           headers=[(k, v.encode()) for k, v in headers])
        self.sent += 1

    def read_until(self, want, quiet_s=2.0):
        """Reads until each topic holds at least want[topic] records, then
        quiet_s more (so extra copies would show)."""
        self.producer.flush(timeout=30)
        end, quiet_end = time.time() + DEADLINE_S, None
        while time.time() < end and (quiet_end is None or time.time() < quiet_end):
            for tp, records in self.reader.poll(timeout_ms=200).items():
                for r in records:
                    self.out[tp.topic].append(
                        (r.partition, r.offset, r.key and r.key.decode(), r.value.decode(),
                         {k: v.decode() for k, v in r.headers}))
            if quiet_end is None and all(len(self.out[t]) >= n for t, n in want.items()):
                quiet_end = time.time() + quiet_s
        got = {t: len(self.out[t]) for t in want}
        check(got == want, f"downstream holds {got}, expected {want}")

    def close(self):
        self.reader.close()
        self.producer.close()


def produce_originals(t):
    """N keys per route, each sent twice: the copy differs only in its "ts"
    header (not fingerprinted) and record timestamp."""
    for i in range(N):
        for copy in range(2):
            ts = ("ts", f"{1700000000000 + copy}")
            t.send("byrk", f"rk payload {i}", key=f"rk-{i}", headers=[ts])
            t.send("byjson", json.dumps({"order": {"id": f"j-{i}", "n": i}}),
                   headers=[ts])
            t.send("bycomp", json.dumps({"id": f"c-{i}"}),
                   headers=[("Tenant", "acme" if i % 2 else "globex"), ts])
    # Joined with length prefixes: two keys, not one "abc".
    t.send("bycomp", json.dumps({"id": "c"}), headers=[("Tenant", "ab")])
    t.send("bycomp", json.dumps({"id": "bc"}), headers=[("Tenant", "a")])
    # No key: not JSON at all.
    t.send("byjson", "not json {", headers=[("ts", "1")])


def check_originals(t):
    for route, key_of in (("byrk", lambda r: r[2]),
                          ("byjson", lambda r: json.loads(r[3])["order"]["id"]),
                          ("bycomp", lambda r: (r[4].get("Tenant"), json.loads(r[3])["id"]))):
        recs = t.out[f"{route}.out"]
        keys = [key_of(r) for r in recs]
        check(len(keys) == len(set(keys)), f"{route}: a key forwarded twice")
        for r in recs:
            check(r[4].get("kdedup-source", "").startswith(route + "/"),
                  f"{route}: record without its source header")
            check("kdedup-key" in r[4], f"{route}: no kdedup-key header")
    check({r[2] for r in t.out["byrk.out"]} == {f"rk-{i}" for i in range(N)}, "byrk keys")
    check(all(r[4]["kdedup-key"] == r[2] for r in t.out["byrk.out"]),
          "byrk: kdedup-key is not the record key")
    check({json.loads(r[3])["order"]["id"] for r in t.out["byjson.out"]} ==
          {f"j-{i}" for i in range(N)}, "byjson keys")
    check(all(r[4]["kdedup-key"] == json.loads(r[3])["order"]["id"]
              for r in t.out["byjson.out"]), "byjson: kdedup-key is not /order/id")
    comp = {(r[4].get("Tenant"), json.loads(r[3])["id"]) for r in t.out["bycomp.out"]}
    check(("ab", "c") in comp and ("a", "bc") in comp,
          "composite keys (ab, c) and (a, bc) met")
    dlq = t.out[DLQ]
    check(len(dlq) == 1 and dlq[0][4].get("kdedup-reason") == "missing-key" and
          dlq[0][3] == "not json {", f"the keyless message's dead letter: {dlq}")


def wait_settled(kd, route_names):
    """Until nothing is in flight (every receipt written)."""
    for _ in range(100):
        _, value = scrape(kd.port)
        if value("kdedup_inflight_messages") == 0:
            return value
        time.sleep(0.1)
    raise Failure("messages still in flight")


def main():
    t0 = time.time()
    workdir = tempfile.mkdtemp(prefix="kdedup-keys-")
    mock = cluster.start(topics=keys_topics())
    t = Traffic(mock.bootstrap)
    kd = Sidecar(workdir, mock.bootstrap, {"routes": routes_config(),
                                           "kafka": {"group_id": "keys"}})
    try:
        kd.start()
        produce_originals(t)
        t.read_until({"byrk.out": N, "byjson.out": N, "bycomp.out": N + 2, DLQ: 1})
        check_originals(t)
        value = wait_settled(kd, ROUTES)
        for r in ROUTES:
            route = r  # a route's name: its "from"
            check(value("kdedup_duplicates_total", route=route) == N,
                  f"{route}: {value('kdedup_duplicates_total', route=route)} duplicates, "
                  f"expected {N}")
            check(value("kdedup_key_conflicts_total", route=route) == 0,
                  f"{route}: a conflict among identical copies")
        print(f"PASS keys from the record key, a JSON pointer and a composite: {N} each "
              f"forwarded once, {N} copies with another ts header suppressed each",
              flush=True)

        # A key reused with another payload, on each route.
        t.send("byrk", "rk payload CHANGED", key="rk-3")
        t.send("byjson", json.dumps({"order": {"id": "j-3", "n": 999}}))
        t.send("bycomp", json.dumps({"id": "c-3", "extra": 1}), headers=[("Tenant", "acme")])
        t.read_until({"byrk.out": N, "byjson.out": N, "bycomp.out": N + 3, DLQ: 2})
        value = wait_settled(kd, ROUTES)
        for route, action in (("byrk", "dead_letter"), ("byjson", "skip"),
                              ("bycomp", "forward")):
            name = route
            for a in ("skip", "dead_letter", "forward"):
                got = value("kdedup_key_conflicts_total", route=name, action=a)
                check(got == (1 if a == action else 0),
                      f"{name}: kdedup_key_conflicts_total{{action={a}}} = {got}")
        dl = t.out[DLQ][1]
        hdrs = dl[4]
        check(dl[2] == "rk-3" and dl[3] == "rk payload CHANGED", f"dead letter: {dl[:4]}")
        check(hdrs.get("kdedup-reason") == "key-conflict", f"reason: {hdrs}")
        m = RECEIPT.fullmatch(hdrs.get("kdedup-original", ""))
        check(m, f"kdedup-original is not a receipt: {hdrs.get('kdedup-original')!r}")
        to, part, off = m.group(1), int(m.group(2)), int(m.group(3))
        orig = [r for r in t.out["byrk.out"] if r[0] == part and r[1] == off]
        check(to == "byrk.out" and orig and orig[0][2] == "rk-3" and
              orig[0][3] == "rk payload 3", f"kdedup-original names {to}/{part}@{off}: {orig}")
        fp, ofp = hdrs.get("kdedup-fingerprint", ""), hdrs.get("kdedup-original-fingerprint", "")
        check(re.fullmatch("[0-9a-f]{64}", fp) and re.fullmatch("[0-9a-f]{64}", ofp) and
              fp != ofp, f"fingerprints {fp!r} {ofp!r}")
        check(hdrs["kdedup-original"].endswith(" fp=" + ofp), "the receipt's fp is not the original's")
        fwd = [r for r in t.out["bycomp.out"] if json.loads(r[3]).get("extra") == 1]
        check(len(fwd) == 1 and "kdedup-key" not in fwd[0][4] and
              "kdedup-signature" not in fwd[0][4], f"the forwarded conflict: {fwd}")
        check(not [r for r in t.out["byjson.out"] if json.loads(r[3])["order"]["n"] == 999],
              "the skipped conflict was forwarded")
        print("PASS a key reused with another payload: dead-lettered with the original's "
              "record and both fingerprints (byrk), skipped (byjson), forwarded (bycomp), "
              "each counted once", flush=True)

        # The store shows the fingerprint; the receipt names the same one.
        check(kd.signal(15) == 0, "kdedup did not exit 0 on SIGTERM")
        out = subprocess.run([KDEDUP, "lookup", "--config", kd.config, "--route", "byrk"],
                             input="rk-3\nnever\n", capture_output=True, text=True, timeout=60)
        check(out.returncode == 0, f"lookup: {out.stderr}")
        lines = [json.loads(x) for x in out.stdout.splitlines()]
        check(lines[0]["state"] == "completed" and lines[0]["fingerprint"] == ofp and
              lines[0]["receipt"].endswith(" fp=" + ofp), f"lookup rk-3: {lines[0]}")
        check(lines[1] == {"route": "byrk", "key": "never", "state": "absent"},
              f"lookup never: {lines[1]}")
        out = subprocess.run([KDEDUP, "lookup", "--config", kd.config, "--route", "bycomp"],
                             input="acme\tc-3\nab\tc\nabc\t\n", capture_output=True, text=True,
                             timeout=60)
        lines = [json.loads(x) for x in out.stdout.splitlines()]
        check(out.returncode == 0 and len(lines) == 3, f"lookup bycomp: {out.stdout} {out.stderr}")
        check(lines[0]["state"] == "completed" and len(lines[0]["fingerprint"]) == 64 and
              lines[1]["state"] == "completed" and "error" in lines[2],
              f"lookup of composite keys by their parts: {lines}")
        print("PASS kdedup lookup shows the fingerprint its receipt names; composite keys "
              "looked up by their tab-separated parts", flush=True)
    except Failure as e:
        print(f"FAIL {e} (logs in {workdir})", flush=True)
        return 1
    finally:
        if kd.proc and kd.proc.poll() is None:
            kd.signal(15)
        t.close()
        mock.stop()
    print(f"keys: passed in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
