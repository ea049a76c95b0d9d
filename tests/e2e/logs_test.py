#!/usr/bin/python3
"""What kdedup writes to its log when something repeats:

- a librdkafka error appears once (librdkafka's own line), not a second
  time from kdedup's error callback;
- key conflicts and denied admin requests, which come at the rate of
  messages or requests, are rate-limited (10 lines a minute per kind;
  test_log.c checks the count of lines left out);
- `partition` and `offset` are JSON numbers.

Run with Debian's interpreter: KDEDUP=build/kdedup /usr/bin/python3 tests/e2e/logs_test.py
"""
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API, SRC, Failure, Sidecar, check, free_port, gauge, wait_for  # noqa: E402
from cluster import Mock  # noqa: E402
from kafka import KafkaProducer  # noqa: E402

TOKEN = "logs-test-token-0123456789"


def lines(kd):
    """kd's log lines so far, parsed; a line still being written (no newline
    yet: kdedup writes while this reads) is left for the next call."""
    kd.log.flush()
    with open(os.path.join(kd.workdir, "kdedup.log")) as f:
        return [json.loads(ln) for ln in f if ln.startswith("{") and ln.endswith("\n")]


def main():
    passed = failed = 0
    workdir = tempfile.mkdtemp(prefix="kdedup-logs-")
    mock = Mock()
    admin = free_port()
    kd = Sidecar(workdir, mock.bootstrap,
                 {"admin": {"listen": f"127.0.0.1:{admin}", "token": TOKEN}})

    def phase(name, fn):
        nonlocal passed, failed
        try:
            fn()
            passed += 1
            print(f"PASS {name}", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)

    def conflicts():
        p = KafkaProducer(bootstrap_servers=mock.bootstrap, api_version=API)
        hdr = [("Idempotency-Key", b"conflicted-1")]
        p.send(SRC, key=b"conflicted-1", value=b"original", headers=hdr)
        for i in range(25):
            p.send(SRC, key=b"conflicted-1", value=f"another payload {i}".encode(),
                   headers=hdr)
        p.flush(timeout=30)
        p.close()
        wait_for("25 conflicts counted", lambda: gauge(kd, "kdedup_key_conflicts_total") == 25)
        got = [ln for ln in lines(kd) if ln["msg"].startswith("key conflict")]
        check(len(got) == 10, f"{len(got)} key conflict lines for 25 conflicts, expected 10")
        check(all(isinstance(ln["partition"], int) and isinstance(ln["offset"], int)
                  for ln in got), f"partition, offset not numbers: {got[0]}")

    def denied():
        for _ in range(25):
            req = urllib.request.Request(f"http://127.0.0.1:{admin}/v1/routes",
                                         headers={"Authorization": "Bearer wrong"})
            try:
                urllib.request.urlopen(req, timeout=5)
                check(False, "a wrong token was let in")
            except urllib.error.HTTPError as e:
                check(e.code == 401, f"a wrong token answered {e.code}")
        got = [ln for ln in lines(kd) if ln.get("action") == "denied"]
        check(len(got) == 10, f"{len(got)} denied audit lines for 25 requests, expected 10")

    def errors_once():
        mock.cmd("broker-down 1")
        wait_for("kdedup's error callback to report the brokers down",
                 lambda: any("brokers are down" in ln["msg"] and "source" not in ln
                             for ln in lines(kd)), 60)
        all_lines = lines(kd)
        # The same text from another client (the recovery scanner's "2/2
        # brokers are down") is another error: compared client by client.
        theirs = [(ln.get("client"), ln["msg"]) for ln in all_lines
                  if ln.get("source") == "librdkafka"]
        ours = [ln["msg"] for ln in all_lines if "source" not in ln and ": " in ln["msg"]]
        twice = [m for m in ours
                 if any(c == m.split(": ", 1)[0] and t.endswith(m.split(": ", 1)[1])
                        for c, t in theirs)]
        check(any(ln.get("facility") == "FAIL" for ln in all_lines),
              "no librdkafka FAIL line to compare with")
        check(not twice, f"{len(twice)} librdkafka errors logged twice, e.g. {twice[:2]}")
        mock.cmd("broker-up 1")

    try:
        kd.start()
        wait_for("kdedup ready", lambda: gauge(kd, "kdedup_assigned_partitions") > 0, 60)
        phase("key conflicts: 10 lines for 25, partition and offset numbers", conflicts)
        phase("denied admin requests: 10 audit lines for 25", denied)
        phase("a librdkafka error is logged once", errors_once)
    except Failure as e:
        failed += 1
        print(f"FAIL setup: {e}", flush=True)
    finally:
        if kd.proc and kd.proc.poll() is None:
            kd.signal(15)
        mock.stop()
    print(f"logs: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
