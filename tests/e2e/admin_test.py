#!/usr/bin/python3
"""The admin API and config reload, end to end with the real binary and
kafka-python, under the oracle of world.py.

Phase "keys": a key forwarded is looked up (completed, with a receipt that
names its downstream record), forgotten, sent again and forwarded again,
exactly once; 401 without a token, with a wrong one, with another scheme;
404 for an unknown route and an absent key; 409 for a key in flight (a slow
broker, or on Apache Kafka one refusing its writes, keeps it so), with or without ?force=true, since this process holds
it; percent-encoded binary keys (NUL, 0xff, '/', '%') looked up, forgotten
and forwarded again; a key past dedup.max_key_bytes is 400. The metrics
listener serves no admin path.

Phase "travel": a key forgotten on one replica is forwarded again by
another that takes its partitions with an empty store (the forget record
written downstream); consumers skip forget records (the reader here does).

Phase "storm": four threads hammer the admin API (lookups, route lists,
forgets of absent keys) while the pipeline forwards a stream with
duplicates: nothing lost, nothing twice, no 5xx answer.

Phase "reload": a route added by SIGHUP starts forwarding; a route removed
by POST /v1/reload stops, with its offsets committed to the end first; an
invalid file and a refused change (store.path) keep the old config, and
say why in the reload's answer (the message --check-config prints) and in
the log; kdedup_config_reloads_total and kdedup_config_info follow.

The token never appears in the log. Run with Debian's interpreter:
/usr/bin/python3 tests/e2e/admin_test.py
"""
import json
import operator
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
from harness import (API, DST, KDEDUP, PARTS, RECEIPT, SRC, Failure, Sidecar,  # noqa: E402
                     check, free_port, gauge, http_get, scrape, wait_for)
from world import World, shut_down  # noqa: E402

from kafka import KafkaConsumer, TopicPartition  # noqa: E402

TOKEN = "adm1n-t0ken-e2e-never-logged"
PAY, PAY_DST, PAY_PARTS = "payments", "payments.deduped", 2


class Admin:
    def __init__(self, port):
        self.port = port

    def call(self, method, path, token=TOKEN, scheme="Bearer"):
        """(status, JSON body or None) of one request."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        if token is not None:
            req.add_header("Authorization", f"{scheme} {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body

    def key(self, method, key, route=SRC, query=""):
        if isinstance(key, str):
            key = key.encode()
        path = (f"/v1/keys/{urllib.parse.quote(route, safe='')}/"
                f"{urllib.parse.quote(key, safe='')}{query}")
        return self.call(method, path)


def produce(world, topic, items):
    """Produces (key bytes, value str) pairs to topic, with the key in the header."""
    for key, value in items:
        world.producer.send(topic, value=value.encode(), headers=[("Idempotency-Key", key)])
    world.producer.flush(timeout=60)


class Reader:
    """Everything downstream in a topic, read as it comes, as a consumer of
    it should: forget records (header kdedup-forget) set apart."""

    def __init__(self, bootstrap, topic, parts):
        self.c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API,
                               enable_auto_commit=False, group_id=None)
        tps = [TopicPartition(topic, p) for p in range(parts)]
        self.c.assign(tps)
        self.c.seek_to_beginning(*tps)
        self.records = []  # (partition, offset, key bytes, value str)
        self.forgets = []  # (partition, offset, key bytes) of forget records

    def poll(self, seconds):
        end = time.time() + seconds
        while time.time() < end:
            for records in self.c.poll(timeout_ms=200).values():
                for r in records:
                    headers = dict(r.headers)
                    if "kdedup-forget" in headers:
                        check(r.key is None and r.value is None, f"forget record {r}")
                        self.forgets.append((r.partition, r.offset, headers["kdedup-key"]))
                        continue
                    key = headers.get("Idempotency-Key")
                    self.records.append((r.partition, r.offset, key, r.value.decode()))

    def count(self, key):
        return sum(1 for r in self.records if r[2] == key)

    def until(self, what, cond, timeout_s=60):
        end = time.time() + timeout_s
        while time.time() < end:
            self.poll(0.3)
            if cond():
                return
        check(False, f"timed out waiting for {what}")


def write_config(kd, change):
    """Rewrites kd's config file with change(config) applied."""
    with open(kd.config) as f:
        config = json.load(f)
    change(config)
    with open(kd.config, "w") as f:
        json.dump(config, f)


def completed(admin, keys, what):
    """Waits until every key of keys is completed. In the transactional
    mode a record shows to the Reader (kafka-python reads uncommitted
    records) before its transaction commits, and its key completes only
    after the commit."""
    wait_for(what, lambda: all(admin.key("GET", k)[1].get("state") == "completed"
                               for k in keys), timeout_s=30)


def keys_phase(mock, world, kd, admin, out, report):
    keys = [f"adm-{i:03d}".encode() for i in range(40)]
    produce(world, SRC, [(k, f"{k.decode()} first") for k in keys])
    out.until("the first keys downstream", lambda: all(out.count(k) == 1 for k in keys))
    completed(admin, keys, "the first keys completed")

    # auth: no detail for any failure
    for token, scheme in ((None, "Bearer"), ("wrong-" + TOKEN, "Bearer"), (TOKEN, "Basic"),
                          (TOKEN[:-1], "Bearer")):
        status, body = admin.call("GET", "/v1/routes", token=token, scheme=scheme)
        check(status == 401 and body == {"error": "unauthorized"},
              f"token {token!r} {scheme}: {status} {body}")
        status, _ = admin.call("DELETE", f"/v1/keys/{SRC}/adm-001", token=token,
                               scheme=scheme)
        check(status == 401, f"DELETE with token {token!r} {scheme}: {status}")
    status, body = admin.key("GET", keys[1])
    check(status == 200 and body["state"] == "completed", f"adm-001 after denied forgets: {body}")

    # lookup: completed, with a receipt naming its downstream record
    status, body = admin.key("GET", keys[2])
    check(status == 200 and body["state"] == "completed", f"lookup: {status} {body}")
    m = RECEIPT.fullmatch(body["receipt"] or "")
    check(m and m.group(1) == DST and m.group(4) == SRC, f"receipt {body['receipt']!r}")
    at = {(p, o): k for p, o, k, _ in out.records}
    check(at.get((int(m.group(2)), int(m.group(3)))) == keys[2],
          f"receipt {body['receipt']} names another record")
    check(body["owner"] is None and body["claimed_at"] is None, f"completed key: {body}")

    # 404s
    status, body = admin.key("GET", keys[2], route="no-such-topic")
    check(status == 404, f"unknown route: {status} {body}")
    status, body = admin.key("DELETE", keys[2], route="no-such-topic")
    check(status == 404, f"unknown route (DELETE): {status} {body}")
    status, body = admin.key("GET", b"never-sent")
    check(status == 200 and body["state"] == "absent", f"absent key: {status} {body}")
    status, body = admin.key("DELETE", b"never-sent")
    check(status == 404, f"forgetting an absent key: {status} {body}")
    status, _ = admin.call("GET", "/v1/nope")
    check(status == 404, f"unknown admin path: {status}")
    status, body = admin.key("GET", b"k" * 256)
    check(status == 400, f"a key past max_key_bytes: {status} {body}")

    # forget, send again: forwarded again exactly once; the forget is
    # written downstream right after the delivery it forgets
    status, body = admin.key("GET", keys[3])
    m = RECEIPT.fullmatch(body["receipt"] or "")
    status, body = admin.key("DELETE", keys[3])
    check(status == 200 and body["result"] == "forgotten", f"forget: {status} {body}")
    where = re.fullmatch(rf"{re.escape(DST)}/(\d+)@(\d+)", body.get("recorded") or "")
    check(m and where and where.group(1) == m.group(2) and
          int(where.group(2)) > int(m.group(3)), f"recorded {body}, receipt {m and m.group(0)}")
    out.until("the forget record", lambda: (int(where.group(1)), int(where.group(2)),
                                            keys[3]) in out.forgets)
    status, body = admin.key("GET", keys[3])
    check(body["state"] == "absent", f"after forget: {body}")
    status, body = admin.key("DELETE", keys[3])
    check(status == 404, f"forgetting twice: {status} {body}")
    produce(world, SRC, [(keys[3], "adm-003 second"), (keys[3], "adm-003 third"),
                         (keys[4], "adm-004 again")])
    out.until("the forgotten key forwarded again", lambda: out.count(keys[3]) == 2)
    out.poll(2)
    check(out.count(keys[3]) == 2, f"adm-003 downstream {out.count(keys[3])} times, want 2")
    check(out.count(keys[4]) == 1, f"adm-004 (not forgotten) {out.count(keys[4])} times")
    values = [v for _, _, k, v in out.records if k == keys[3]]
    # the two copies sent after the forget may land on two partitions: either goes
    check(values[0] == "adm-003 first" and values[1] in ("adm-003 second", "adm-003 third"),
          f"adm-003 copies: {values}")

    # binary keys, percent-encoded
    binary = [b"bin\x00\xff/%?&#+ k", b"\x00", b"\xff\xfe/..%2F"]
    produce(world, SRC, [(k, f"binary {i}") for i, k in enumerate(binary)])
    out.until("binary keys downstream", lambda: all(out.count(k) == 1 for k in binary))
    completed(admin, binary, "the binary keys completed")
    for k in binary:
        status, body = admin.key("GET", k)
        check(status == 200 and body["state"] == "completed", f"binary {k!r}: {status} {body}")
    status, body = admin.key("DELETE", binary[0])
    check(status == 200, f"forget binary key: {status} {body}")
    check(admin.key("GET", binary[1])[1]["state"] == "completed", "a NUL key was forgotten too")
    produce(world, SRC, [(binary[0], "binary again"), (binary[1], "nul again")])
    out.until("the binary key forwarded again", lambda: out.count(binary[0]) == 2)
    out.poll(1.5)
    check(out.count(binary[1]) == 1, "the key b'\\x00' forwarded again without a forget")

    # 409: in flight, held by this process (a slow broker keeps it so). Apache
    # Kafka holds no delivery in flight on request: the mock's check only.
    if not mock.real:
        in_flight_409(mock, world, admin, out)

    # the metrics listener serves no admin path
    status, _ = http_get(kd.port, "/v1/routes")
    check(status == 404, f"/v1/routes on the metrics listener: {status}")
    report.append(f"keys: lookup with receipt, forget and resend (2 copies, not 3), "
                  f"{len(binary)} binary keys, 401 x8, 404 x5, 400" +
                  (", 409 x2 (in flight, this process)" if not mock.real else ""))


def in_flight_409(mock, world, admin, out):
    """DELETE of a key in flight is 409, forced or not, while this process
    holds it (a slow broker keeps it in flight)."""
    mock.stall_writes(DST)
    produce(world, SRC, [(b"slow-1", "slow")])
    wait_for("slow-1 in flight", lambda: admin.key("GET", b"slow-1")[1]["state"] == "in_flight",
             timeout_s=20)
    status, body = admin.key("GET", b"slow-1")
    check(body["owner_is_this_process"] is True and body["owner"] and body["claimed_at"] > 0,
          f"in flight: {body}")
    status, body = admin.key("DELETE", b"slow-1")
    check(status == 409 and "force" in body["error"], f"forget in flight: {status} {body}")
    status, body = admin.key("DELETE", b"slow-1", query="?force=true")
    check(status == 409 and "this process" in body["error"], f"forced: {status} {body}")
    mock.resume_writes(DST)
    out.until("slow-1 downstream", lambda: out.count(b"slow-1") == 1)
    wait_for("slow-1 completed",
             lambda: admin.key("GET", b"slow-1")[1]["state"] == "completed", timeout_s=30)
    out.poll(1)
    check(out.count(b"slow-1") == 1, "slow-1 forwarded twice")


def answers(admin):
    """True when the admin API answers (it starts after the metrics listener)."""
    try:
        return admin.call("GET", "/v1/routes")[0] == 200
    except urllib.error.URLError:
        return False


def travel_phase(mock, world, kd, admin, out, workdir, report):
    """A forget travels with its partition: forgotten on kd, whose store is
    then out of the picture; a replica with an empty store takes every
    partition, and must forward the copy the operator sends (before forget
    records, its handover learned the key again from its first delivery
    and dropped the copy). A duplicate of a key not forgotten is not
    forwarded."""
    keys = [b"tr-1", b"tr-2"]
    produce(world, SRC, [(k, f"{k.decode()} first") for k in keys])
    out.until("the travel keys downstream", lambda: all(out.count(k) == 1 for k in keys))
    completed(admin, keys, "the travel keys completed")
    status, body = admin.key("DELETE", keys[0])
    check(status == 200 and body["recorded"], f"forget: {status} {body}")
    check(kd.signal(signal.SIGTERM) == 0, "kdedup did not exit 0 on SIGTERM")
    other = Sidecar(os.path.join(workdir, "other"), mock.bootstrap)
    other.start()
    try:
        wait_for("the empty replica to hold every partition",
                 lambda: gauge(other, "kdedup_assigned_partitions") == PARTS)
        produce(world, SRC, [(keys[0], "tr-1 again"), (keys[1], "tr-2 again")])
        out.until("the forgotten key forwarded by the other replica",
                  lambda: out.count(keys[0]) == 2)
        wait_for("the copies committed",
                 lambda: operator.eq(*committed(mock.bootstrap, SRC, PARTS)))
        out.poll(1)
        check(out.count(keys[0]) == 2, f"tr-1 downstream {out.count(keys[0])} times, want 2")
        check(out.count(keys[1]) == 1, f"tr-2 downstream {out.count(keys[1])} times, want 1")
        forgets = gauge(other, "kdedup_handover_forgets_total")
        check(forgets >= 1, f"kdedup_handover_forgets_total {forgets}")
        check(other.signal(signal.SIGTERM) == 0, "the other replica did not exit 0")
    finally:
        if other.proc.poll() is None:
            other.proc.kill()
    kd.start()
    wait_for("kdedup back with every partition",
             lambda: gauge(kd, "kdedup_assigned_partitions") == PARTS)
    wait_for("the admin API back", lambda: answers(admin))
    report.append(f"travel: forgotten on one replica, the copy forwarded by another with "
                  f"an empty store ({int(forgets)} forget record(s) honoured), a duplicate "
                  f"not")


def storm_phase(world, kd, admin, out, report):
    keys = [f"st-{i:05d}".encode() for i in range(1500)]
    sent = []
    stop = threading.Event()
    answers, bad = [0], []

    def hammer(n):
        i = 0
        while not stop.is_set():
            i += 1
            if i % 3 == 0:
                status, _ = admin.call("GET", "/v1/routes")
            elif i % 3 == 1:
                status, _ = admin.key("GET", keys[(i * 7 + n) % len(keys)])
            else:
                status, _ = admin.key("DELETE", f"absent-{n}-{i}".encode())
                status = 200 if status == 404 else status
            answers[0] += 1
            if status != 200:
                bad.append(status)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for chunk in range(10):
            batch = keys[chunk * 150:(chunk + 1) * 150]
            items = [(k, f"{k.decode()} v") for k in batch]
            items += [(k, f"{k.decode()} dup") for k in batch[::3]]  # duplicates
            if chunk:
                items += [(k, f"{k.decode()} old dup") for k in keys[:chunk * 150:7]]
            produce(world, SRC, items)
            sent.extend(items)
        out.until("every storm key downstream", lambda: all(out.count(k) >= 1 for k in keys),
                  timeout_s=60)
        out.poll(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    lost = [k for k in keys if out.count(k) == 0]
    twice = [k for k in keys if out.count(k) > 1]
    check(not lost, f"{len(lost)} storm keys lost")
    check(not twice, f"{len(twice)} storm keys forwarded twice, e.g. {twice[:3]}")
    check(not bad, f"{len(bad)} admin answers not 200/404: {sorted(set(bad))}")
    check(answers[0] > 100, f"only {answers[0]} admin requests in the storm")
    report.append(f"storm: {len(sent)} messages ({len(keys)} keys) forwarded once each "
                  f"while {answers[0]} admin requests were answered, none 5xx")


def committed(bootstrap, topic, parts):
    c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API, group_id="e2e",
                      enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(parts)]
        return {tp.partition: c.committed(tp) for tp in tps}, \
            {tp.partition: o for tp, o in c.end_offsets(tps).items()}
    finally:
        c.close()


def reload_phase(mock, world, kd, admin, out, report):
    pay = Reader(mock.bootstrap, PAY_DST, PAY_PARTS)
    _, value = scrape_value(kd)
    hash0 = info_hash(kd)
    check(value("kdedup_config_reloads_total", result="ok") == 0, "reloads before any")
    status, routes = admin.call("GET", "/v1/routes")
    check(status == 200 and [r["from"] for r in routes] == [SRC], f"routes: {routes}")
    check(routes[0]["dead_letter_topic"] == "orders.dlq" and routes[0]["max_retries"] == 5,
          f"route defaults: {routes[0]}")
    # what one checks first when a dedup misses: where the key comes from,
    # what the fingerprint covers
    check(routes[0]["name"] == SRC and
          routes[0]["key"] == {"from": "header", "name": "Idempotency-Key"} and
          routes[0]["fingerprint"] == {"value": "whole", "json": [], "headers": []},
          f"route key source and fingerprint: {routes[0]}")

    # added by SIGHUP: forwards; the restarted pipeline carries the counters on
    forwarded0 = gauge(kd, "kdedup_messages_forwarded_total", route=SRC)
    check(forwarded0 > 0, "nothing forwarded before the reload")
    produce(world, PAY, [(f"pay-{i}".encode(), "p") for i in range(20)])
    write_config(kd, lambda c: c["routes"].append(
        {"from": PAY, "to": PAY_DST, "on_missing_key": "drop"}))
    kd.proc.send_signal(signal.SIGHUP)
    wait_for("the reload", lambda: [r["from"] for r in admin.call("GET", "/v1/routes")[1]]
             == [SRC, PAY], timeout_s=20)
    pay.until("the added route to forward",
              lambda: all(pay.count(f"pay-{i}".encode()) == 1 for i in range(20)), 60)
    check(gauge(kd, "kdedup_config_reloads_total", result="ok") == 1, "ok reloads != 1")
    check(info_hash(kd) != hash0, "kdedup_config_info kept its hash")
    check(gauge(kd, "kdedup_messages_forwarded_total", route=SRC) >= forwarded0,
          f"{SRC}'s forwarded counter went back across the reload (was {forwarded0})")
    produce(world, SRC, [(b"after-add", "x")])
    out.until("the old route still forwarding", lambda: out.count(b"after-add") == 1)

    # removed by POST /v1/reload: drained, committed to the end, then nothing
    write_config(kd, lambda c: c.__setitem__("routes", c["routes"][1:]))
    status, body = admin.call("POST", "/v1/reload")
    check(status == 200 and body["result"] == "ok" and f"routes removed: {SRC}" in
          body["changed"], f"reload answer: {status} {body}")
    # (while the pipeline restarts, /metrics has no pipeline gauges)
    wait_for("the pipeline restarted with one route",
             lambda: gauge(kd, "kdedup_assigned_partitions", missing=-1) == PAY_PARTS,
             timeout_s=40)
    done, ends = committed(mock.bootstrap, SRC, PARTS)
    check(done == ends, f"{SRC} committed {done}, ends {ends}")
    before = len(out.records)
    produce(world, SRC, [(b"after-remove", "x")])
    produce(world, PAY, [(b"pay-after", "x")])
    pay.until("the remaining route forwarding", lambda: pay.count(b"pay-after") == 1)
    out.poll(2)
    check(len(out.records) == before, f"{len(out.records) - before} forwarded by a removed route")

    # in place, no restart: the log level and the batch size. At "warn" the
    # pipeline's note that it took the config is not written; back at
    # "info" it is.
    restarts = open(kd.log.name).read().count("restarting the pipeline")
    for level, batch in (("warn", 50), ("info", 60)):
        write_config(kd, lambda c: (c.setdefault("log", {}).__setitem__("level", level),
                                    c["pipeline"].__setitem__("batch_max", batch)))
        status, body = admin.call("POST", "/v1/reload")
        was = {"warn": "info", "info": "warn"}[level]
        check(status == 200 and body["changed"] == f"log.level: {was} -> {level}; "
              f"pipeline.batch_max: {1000 if batch == 50 else 50} -> {batch}",
              f"{status} {body}")
        produce(world, PAY, [(f"pay-b{batch}-{i}".encode(), "x") for i in range(200)])
        pay.until(f"forwarding with batch_max {batch}",
                  lambda: all(pay.count(f"pay-b{batch}-{i}".encode()) == 1
                              for i in range(200)))
    log = open(kd.log.name).read()
    check("reload: in force (pipeline.batch_max 50)" not in log, "logged at log.level warn")
    check("reload: in force (pipeline.batch_max 60)" in log, "the pipeline did not take it")
    check(log.count("restarting the pipeline") == restarts, "an in-place change restarted")

    # invalid: nothing changes; the answer and the log say why, as --check-config
    good = open(kd.config).read()
    write_config(kd, lambda c: c["routes"][0].__setitem__("to", 42))
    check_out = subprocess.run([KDEDUP, "--check-config", kd.config], capture_output=True,
                               text=True)
    check(check_out.returncode == 2, f"--check-config exited {check_out.returncode}")
    why = check_out.stderr.strip()
    check("routes[0].to" in why, f"--check-config said {why!r}")
    status, body = admin.call("POST", "/v1/reload")
    check(status == 422 and body == {"result": "invalid", "error": why},
          f"invalid reload: {status} {body}")
    kd.proc.send_signal(signal.SIGHUP)
    wait_for("the SIGHUP's invalid reload",
             lambda: gauge(kd, "kdedup_config_reloads_total", result="invalid") == 2, 20)

    # refused: store.path, with an allowed change beside it
    with open(kd.config, "w") as f:
        f.write(good)
    write_config(kd, lambda c: (c["store"].__setitem__("path", "/elsewhere"),
                                c["routes"].append({"from": SRC, "to": DST,
                                                    "on_missing_key": "drop"})))
    status, body = admin.call("POST", "/v1/reload")
    check(status == 409 and body["result"] == "refused" and
          body["error"].startswith("store.path: cannot change while kdedup runs"),
          f"refused reload: {status} {body}")
    status, routes = admin.call("GET", "/v1/routes")
    check([r["from"] for r in routes] == [PAY], f"routes after refusals: {routes}")
    check(gauge(kd, "kdedup_config_reloads_total", result="refused") == 1, "refused count")
    produce(world, SRC, [(b"after-refused", "x")])
    produce(world, PAY, [(b"pay-after-refused", "x")])
    pay.until("forwarding after refusals", lambda: pay.count(b"pay-after-refused") == 1)
    out.poll(1)
    check(len(out.records) == before, "the refused config's route forwarded")
    with open(kd.log.name) as f:
        log = f.read()
    check(why.replace('"', '\\"') in log, "the invalid file's message is not in the log")
    check("store.path: cannot change while kdedup runs" in log, "the refusal is not logged")
    report.append("reload: route added by SIGHUP forwards; route removed by POST drained "
                  "and committed to the end, then silent; log.level and batch_max in "
                  "place (no restart); invalid (x2) and refused (x1) kept the old config "
                  "and said why")


def scrape_value(kd):
    return scrape(kd.port)


def info_hash(kd):
    fams, _ = scrape_value(kd)
    samples = [s for s in fams["kdedup_config_info"].samples]
    check(len(samples) == 1, f"kdedup_config_info: {samples}")
    return samples[0].labels["hash"]


def main():
    workdir = tempfile.mkdtemp(prefix="kdedup-admin-")
    mock = cluster.start(topics=dict(cluster.DEFAULT_TOPICS,
                                     **{PAY: PAY_PARTS, PAY_DST: PAY_PARTS}))
    world = World(mock.bootstrap)
    os.environ["KD_ADMIN_TOKEN"] = TOKEN
    port = free_port()
    kd = Sidecar(workdir, mock.bootstrap, {
        "admin": {"listen": f"127.0.0.1:{port}", "token": "${KD_ADMIN_TOKEN}"}})
    admin = Admin(port)
    out = Reader(mock.bootstrap, DST, PARTS)
    report, passed, failed = [], 0, 0

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

    try:
        kd.start()
        phase("keys: lookup, forget, resend once; 401/404/409/400; binary keys",
              lambda: keys_phase(mock, world, kd, admin, out, report))
        phase("travel: a forget honoured by the next owner of the partition",
              lambda: travel_phase(mock, world, kd, admin, out, workdir, report))
        phase("storm: admin requests while the pipeline runs lose and repeat nothing",
              lambda: storm_phase(world, kd, admin, out, report))
        phase("reload: add by SIGHUP, remove by POST (committed), invalid and refused kept",
              lambda: reload_phase(mock, world, kd, admin, out, report))
        rc = kd.signal(signal.SIGTERM)
        if rc != 0:
            failed += 1
            print(f"FAIL kdedup exited {rc} on SIGTERM")
    finally:
        out.c.close()
        shut_down(mock, world, kd)
    with open(kd.log.name) as f:
        log = f.read()
    if TOKEN in log:
        failed += 1
        print("FAIL the admin token appears in kdedup's log")
    else:
        passed += 1
        print("PASS the admin token never appears in kdedup's log")
    if '"audit":"admin"' not in log:
        failed += 1
        print("FAIL no audit line in the log")
    for line in report:
        print("  " + line)
    if failed:
        print(f"kdedup log: {kd.log.name}")
    print(f"admin: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
