#!/usr/bin/python3
# bench/rss_sidecar.py: usage: /usr/bin/python3 bench/rss_sidecar.py build/kdedup
# (run under flock /tmp/kdedup-test.lock on a shared machine).
# Measures kdedup's peak RSS (VmHWM) as a sidecar: 100,000 messages (30%
# retries) through one route over `kdedup mock`, defaults otherwise.
import json, os, subprocess, sys, tempfile, time, urllib.request
from kafka import KafkaProducer
K = sys.argv[1]
d = tempfile.mkdtemp(prefix="kdedup-rss-")
mock = subprocess.Popen([K, "mock", "--topic", "orders:8", "--topic", "orders.deduped:8"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
boot = mock.stdout.readline().strip()
cfg = {"kafka": {"brokers": boot, "group_id": "rss"},
       "routes": [{"from": "orders", "to": "orders.deduped", "on_missing_key": "drop"}],
       "store": {"path": d + "/store"}, "http": {"listen": "127.0.0.1:19464"}}
json.dump(cfg, open(d + "/k.json", "w"))
kd = subprocess.Popen([K, "--config", d + "/k.json"], stderr=open(d + "/log", "w"))
def metric(name):
    try:
        t = urllib.request.urlopen("http://127.0.0.1:19464/metrics", timeout=5).read().decode()
    except OSError:
        return -1
    return sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith(name))
end = time.time() + 60
while metric("kdedup_assigned_partitions") < 8 and time.time() < end:
    time.sleep(0.2)
p = KafkaProducer(bootstrap_servers=boot, linger_ms=20)
import random
rng = random.Random(1); n = 0
for i in range(100000):
    k = rng.randrange(n) if n and rng.random() < 0.3 else n
    n += k == n
    p.send("orders", value=("order %d " % k).encode() + b"x" * 100, key=b"%d" % k,
           headers=[("Idempotency-Key", b"order-%d" % k)])
p.flush()
end = time.time() + 300
while metric("kdedup_messages_consumed_total") < 100000 and time.time() < end:
    time.sleep(0.5)
while metric("kdedup_inflight_messages") != 0 and time.time() < end:
    time.sleep(0.5)
hwm = [l for l in open("/proc/%d/status" % kd.pid) if l.startswith(("VmHWM", "VmRSS"))]
print("consumed", metric("kdedup_messages_consumed_total"), "forwarded",
      metric("kdedup_messages_forwarded_total"), "".join(hwm).replace("\n", " "))
kd.terminate(); kd.wait(60); mock.stdin.close(); mock.wait(30)
