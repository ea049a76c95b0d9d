#!/usr/bin/python3
"""The end-to-end suites' harness: a kdedup process (Sidecar), its metrics
and log, and the small helpers every suite uses (check, wait_for, gauge).
What was produced and what downstream holds is world.py's World.

The cluster is librdkafka's mock in its own process (`kdedup mock`), or
Apache Kafka when KDEDUP_BOOTSTRAP is set (cluster.py). Import it from a
script in this directory with Debian's interpreter (/usr/bin/python3).
"""
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import urllib.error
import urllib.request

from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import API, KDEDUP  # noqa: E402,F401

SRC, DST, PARTS = "orders", "orders.deduped", 4
DEADLINE_S = 120


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


SECRET = "e2e-s3cret-never-logged"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def raw_http(port, data, timeout=5):
    """Sends raw bytes; returns what came back (b"" if the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            return s.recv(4096)
        except (socket.timeout, ConnectionResetError):
            return b""


def wait_for(what, cond, timeout_s=60):
    end = time.time() + timeout_s
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    check(False, f"timed out waiting for {what}")


def gauge(kd, name, missing=None, **labels):
    """A metric of a running kdedup. Fails when the process has exited, when
    its /metrics does not answer for 10 s, or when the metric is missing
    (unless `missing` is given: then that is returned)."""
    end = time.time() + 10
    while True:
        check(kd.proc and kd.proc.poll() is None,
              f"{kd.workdir}: kdedup is not running (exit {kd.proc and kd.proc.returncode})")
        try:
            return scrape(kd.port)[1](name, **labels)
        except Failure:
            if missing is None:
                raise
            return missing
        except OSError as e:
            check(time.time() < end, f"{kd.workdir}: /metrics does not answer: {e}")
            time.sleep(0.2)


def scrape(port):
    """(families, value) of kdedup's /metrics: value(name, **labels) sums the
    matching samples and fails when there are none."""
    status, text = http_get(port, "/metrics")
    check(status == 200, f"/metrics answered {status}")
    # An independent parser: every family must parse. (It names counter
    # families without their _total suffix; samples keep it.)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [smp for f in fams.values() for smp in f.samples]

    def value(name, **labels):
        found = [smp.value for smp in samples if smp.name == name and
                 all(smp.labels.get(k) == v for k, v in labels.items())]
        check(found, f"{name}{labels} not in /metrics")
        return sum(found)
    return fams, value


def state_of(sidecars):
    """What each running kdedup's /metrics says about the messages it holds
    (every non-zero kdedup_ sample but the latency histograms'): for a
    failure whose process is gone afterwards."""
    out = []
    for kd in sidecars:
        try:
            _, text = http_get(kd.port, "/metrics")
        except OSError as e:
            out.append(f"{kd.workdir}: /metrics: {e}")
            continue
        keep = [ln for ln in text.splitlines()
                if ln.startswith("kdedup_") and "_bucket" not in ln and
                float(ln.rsplit(" ", 1)[-1]) != 0]
        out.append(f"{kd.workdir}: " + "; ".join(keep))
    return "\n".join(out)


# " fp=" and the payload's fingerprint, when the route fingerprints (the default).
RECEIPT = re.compile(r"v1 to=(\S+)/(\d+)@(\d+) ts=-?\d+ from=(\S+)/(\d+)@(\d+)"
                     r"(?: fp=[0-9a-f]{64})?")


def lookup(kd, keys):
    """{key: (state, receipt)} from kd's store, read with `kdedup lookup`
    (kd must be stopped: the store is opened by one process at a time)."""
    out = subprocess.run([KDEDUP, "lookup", "--config", kd.config], capture_output=True,
                         input="".join(k + "\n" for k in keys), text=True, timeout=300)
    check(out.returncode == 0, f"kdedup lookup exited {out.returncode}: {out.stderr}")
    found = {}
    for line in out.stdout.splitlines():
        o = json.loads(line)
        found[o["key"]] = (o.get("state", o.get("error")), o.get("receipt"))
    check(len(found) == len(set(keys)), f"lookup answered {len(found)} of {len(set(keys))}")
    return found


def merge(into, extra):
    """Merges the dict extra into the dict into, recursively."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v


# Core dumps of any size the hard limit allows, for this process and the
# kdedup processes it starts (inherited): a crash leaves its core in the
# process's workdir, and Sidecar.signal() prints its backtrace.
resource.setrlimit(resource.RLIMIT_CORE, (resource.getrlimit(resource.RLIMIT_CORE)[1],) * 2)


def print_backtrace(workdir, pid):
    """Prints every thread's backtrace from the core a crashed kdedup left
    in workdir (core or core.<pid>), with gdb when the machine has it."""
    cores = [os.path.join(workdir, n) for n in (f"core.{pid}", "core")
             if os.path.exists(os.path.join(workdir, n))]
    gdb = shutil.which("gdb")
    if not cores or not gdb:
        print(f"  kdedup (pid {pid}) crashed; no core in {workdir} or no gdb", flush=True)
        return
    out = subprocess.run([gdb, "-batch", "-nx", "-ex", "thread apply all bt",
                          os.path.abspath(KDEDUP), cores[0]],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=120).stdout
    print(f"  kdedup (pid {pid}) crashed; backtrace from {cores[0]}:", flush=True)
    for line in out.splitlines()[-200:]:
        print("    " + line, flush=True)


class Sidecar:
    """A kdedup process with a store, config and log in workdir; `extra`
    is merged into the config's sections."""

    def __init__(self, workdir, bootstrap, extra=None):
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.config = os.path.join(workdir, "kdedup.json")
        self.log = open(os.path.join(workdir, "kdedup.log"), "a")
        self.port = free_port()
        config = {
            "kafka": {"brokers": bootstrap, "group_id": "e2e",
                      # a killed member's partitions move on after 6s, not 45s
                      "consumer": {"session.timeout.ms": "6000",
                                   "heartbeat.interval.ms": "500",
                                   "statistics.interval.ms": "500"},
                      # a secret that must never reach a log line
                      "producer": {"sasl.password": SECRET}},
            "routes": [{"from": SRC, "to": DST, "key_header": "Idempotency-Key",
                        "on_missing_key": "dead_letter",
                        "dead_letter_topic": "orders.dlq"}],
            "store": {"path": os.path.join(workdir, "store")},
            "http": {"listen": f"127.0.0.1:{self.port}"},
            "pipeline": {"shutdown_grace": "20s"},
        }
        if os.environ.get("KD_DELIVERY"):  # the suites in another delivery mode
            # a transactional.id of its own, the same across its restarts
            merge(config, {"pipeline": {"delivery": os.environ["KD_DELIVERY"],
                                        "transactional_id": "kdedup-test-" +
                                        os.path.basename(os.path.normpath(workdir))}})
        merge(config, extra or {})
        self.settings = config
        self.write_config()
        self.proc = None
        self.env = None  # the process's environment; None: the test's

    def write_config(self):
        with open(self.config, "w") as f:
            json.dump(self.settings, f)

    def update(self, extra):
        """Merges extra into the config file; the next start() reads it."""
        merge(self.settings, extra)
        self.write_config()

    def start(self):
        # In its workdir: a crash leaves its core there (kernel.core_pattern
        # "core", the default), and signal() prints its backtrace, since CI
        # keeps no /tmp.
        self.proc = subprocess.Popen([os.path.abspath(KDEDUP), "--config",
                                      os.path.abspath(self.config)],
                                     stdout=self.log, stderr=self.log, env=self.env,
                                     cwd=self.workdir)
        time.sleep(0.5)
        check(self.proc.poll() is None, f"kdedup exited {self.proc.returncode} at start")

    def signal(self, sig):
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=60)
        if rc in (-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS, -signal.SIGFPE):
            print_backtrace(self.workdir, self.proc.pid)
        return rc



def stop(*sidecars):
    """SIGTERM to each; each must exit 0."""
    for kd in sidecars:
        rc = kd.signal(signal.SIGTERM)
        check(rc == 0, f"{kd.workdir}: kdedup exited {rc} on SIGTERM")


def asking(what, fn, tries=20):
    """fn()'s answer, asked again while the cluster answers with an error (a
    connection the faults closed)."""
    for _ in range(tries - 1):
        try:
            return fn()
        except KafkaError:
            time.sleep(0.5)
    try:
        return fn()
    except KafkaError as e:
        raise Failure(f"{what}: {e!r}")


def log_lines(kd, since=0):
    """kdedup's JSON log lines from byte `since` of its log: (objects, end)."""
    with open(kd.log.name, "rb") as f:
        f.seek(since)
        data = f.read()
    lines = []
    for raw in data.decode(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            pass
    return lines, since + len(data)


class Stream:
    """Produces chunks with duplicates in a thread until stopped."""

    def __init__(self, world, chunk=100, dup_share=0.3, pause_s=0.2):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(world, chunk, dup_share, pause_s))
        self.thread.start()

    def run(self, world, chunk, dup_share, pause_s):
        while not self.stop.is_set():
            world.produce(chunk, dup_share)
            time.sleep(pause_s)

    def end(self):
        self.stop.set()
        self.thread.join()
