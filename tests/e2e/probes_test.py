#!/usr/bin/python3
"""The probes on a listener of their own (issue 26, item 11).

kdedup runs with `http.probes_listen` on the embedded mock cluster. Its
/metrics listener is crowded out both ways at once: 8 slow connections from
127.0.0.1, the probes' own address (in a pod, the node's: the kubelet's, and
a hostNetwork pod's too), and one from each of 600 other loopback addresses,
each sending a request line and never ending it. A probe of /healthz on the
/metrics listener then gets nothing (the attack is real), while the probes'
listener answers /healthz and /readyz every 100 ms within 1 s, serves no
/metrics (404), and kdedup stops in time.

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/probes_test.py
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, check, free_port  # noqa: E402

KDEDUP = os.path.abspath(os.environ.get("KDEDUP", "build/kdedup"))
NODE_CONNS = 8        # KD_HTTP_PER_IP_CONNECTIONS
OTHERS = 600          # above KD_HTTP_MAX_CONNECTIONS (512)
BUDGET_S = 1.0        # a kubelet probe's default timeoutSeconds
ATTACK_S = 5


def get(port, path, budget_s=BUDGET_S):
    """The status of GET path from 127.0.0.1, or None when no status line
    came within budget_s."""
    deadline = time.monotonic() + budget_s
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=budget_s) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: kdedup\r\n"
                      "Connection: close\r\n\r\n".encode())
            got = b""
            while b"\r\n" not in got:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = s.recv(256)
                if not chunk:
                    return None
                got += chunk
            return int(got.split(b" ")[1])
    except (OSError, ValueError, IndexError):
        return None


def crowd(port):
    """Slow connections to port that never end their request."""
    conns = []
    for i in range(NODE_CONNS + OTHERS):
        h = 2 + i - NODE_CONNS  # 127.0.0.2 on: one connection each
        src = "127.0.0.1" if i < NODE_CONNS else f"127.{h >> 16 & 255}.{h >> 8 & 255}.{h & 255}"
        s = socket.socket()
        s.setblocking(False)
        s.bind((src, 0))
        s.connect_ex(("127.0.0.1", port))
        conns.append(s)
    time.sleep(0.2)  # connected: loopback
    for s in conns:
        try:
            s.send(b"GET /metrics HTTP/1.1\r\nHost: kdedup\r\n")
        except OSError:
            pass  # refused or not accepted yet: it still holds a backlog slot
    return conns


def main():
    workdir = tempfile.mkdtemp(prefix="kdedup-probes-")
    port, probes_port = free_port(), free_port()
    cfg = {
        "kafka": {"brokers": "mock:1", "group_id": "probes"},
        "routes": [{"from": "orders", "to": "orders.deduped", "on_missing_key": "drop"}],
        "store": {"path": os.path.join(workdir, "store")},
        "http": {"listen": f"127.0.0.1:{port}", "probes_listen": f"127.0.0.1:{probes_port}"},
        "pipeline": {"shutdown_grace": "2s"},
    }
    path = os.path.join(workdir, "kdedup.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    log_path = os.path.join(workdir, "kdedup.log")
    passed = failed = 0
    with open(log_path, "w") as log:
        proc = subprocess.Popen([KDEDUP, "--config", path], stdout=log, stderr=log)
    conns = []
    try:
        end = time.monotonic() + 30
        while get(probes_port, "/readyz") != 200:
            check(proc.poll() is None, f"kdedup exited {proc.returncode}")
            check(time.monotonic() < end, "/readyz on the probes' listener: not 200 in 30 s")
            time.sleep(0.2)
        check(get(probes_port, "/metrics") == 404, "the probes' listener serves /metrics")
        check(get(port, "/metrics") == 200, "no /metrics on http.listen")
        conns = crowd(port)
        probes, worst, missed = 0, 0.0, []
        end = time.monotonic() + ATTACK_S
        while time.monotonic() < end:
            for what in ("/healthz", "/readyz"):
                t0 = time.monotonic()
                status = get(probes_port, what)
                took = time.monotonic() - t0
                probes += 1
                worst = max(worst, took)
                if status != 200:
                    missed.append((what, status, round(took, 2)))
            time.sleep(0.1)
        crowded = get(port, "/healthz")
        print(f"  {probes} probes of the probes' listener, slowest {worst * 1000:.0f} ms, "
              f"{len(missed)} without a 200 within {BUDGET_S:.0f} s; /healthz on the "
              f"crowded /metrics listener: {crowded}")
        check(crowded is None, "the attack did not crowd out http.listen: the test proves "
              "nothing")
        check(not missed, f"probes unanswered on the probes' listener: {missed[:5]}")
        check(probes >= 20, f"only {probes} probes")
        passed += 1
        print("PASS the probes answer on their own listener while /metrics is crowded out")
    except Failure as e:
        failed += 1
        print(f"FAIL {e}")
    finally:
        for s in conns:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "killed after 30 s"
    if rc != 0:
        failed += 1
        print(f"FAIL kdedup exited {rc} on SIGTERM")
    if failed:
        print(f"workdir: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"probes: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
