#!/usr/bin/python3
"""`kdedup lookup` beside a running kdedup, with two routes:

- without --route it answers for every route, each line naming its route: a
  key forwarded on one route is "completed" there and "absent" on the other
  (never a bare "absent" from whichever route came first);
- --route NAME answers for that route only (a route's name: its "name",
  else its "from"); an unknown name is refused with the names there are;
- it reads the store while the sidecar runs (a RocksDB secondary open);
- it needs none of the config's environment but what it reads: brokers and
  the admin token may be unset ${VARS}; an unset dedup.namespace is refused.

Run with Debian's interpreter: KDEDUP=build/kdedup /usr/bin/python3 tests/e2e/lookup_test.py
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API, DST, KDEDUP, SRC, Failure, Sidecar, check, gauge, wait_for  # noqa: E402
from cluster import Mock  # noqa: E402
from kafka import KafkaProducer  # noqa: E402


def lookup(config, keys, *args, env=None):
    out = subprocess.run([KDEDUP, "lookup", "--config", config, *args], input="".join(
        k + "\n" for k in keys), capture_output=True, text=True, timeout=60, env=env)
    return out.returncode, [json.loads(x) for x in out.stdout.splitlines()], out.stderr


def main():
    passed = failed = 0
    workdir = tempfile.mkdtemp(prefix="kdedup-lookup-")
    mock = Mock()
    for t in ("payments", "payments.out"):
        mock.cmd(f"topic {t} 4")
    routes = [{"from": SRC, "to": DST, "on_missing_key": "drop"},
              {"name": "pay", "from": "payments", "to": "payments.out",
               "on_missing_key": "drop"}]
    kd = Sidecar(workdir, mock.bootstrap, {"routes": routes})

    def phase(name, fn):
        nonlocal passed, failed
        try:
            fn()
            passed += 1
            print(f"PASS {name}", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)

    def every_route():
        rc, lines, err = lookup(kd.config, ["pay-1", "ord-1", "never"])
        check(rc == 0, f"lookup exited {rc}: {err}")
        got = {(ln["route"], ln["key"]): ln["state"] for ln in lines}
        check(got == {(SRC, "pay-1"): "absent", ("pay", "pay-1"): "completed",
                      (SRC, "ord-1"): "completed", ("pay", "ord-1"): "absent",
                      (SRC, "never"): "absent", ("pay", "never"): "absent"},
              f"every route: {lines}")

    def one_route():
        rc, lines, err = lookup(kd.config, ["pay-1"], "--route", "pay")
        check(rc == 0 and len(lines) == 1 and lines[0]["route"] == "pay" and
              lines[0]["state"] == "completed" and lines[0]["receipt"].startswith(
                  "v1 to=payments.out/"), f"--route pay: {rc} {lines} {err}")
        rc, lines, err = lookup(kd.config, ["pay-1"], "--route", "payments")
        check(rc == 2 and not lines and
              'no route named "payments" (the routes: "orders", "pay")' in err,
              f"--route payments (a from, not the name): {rc} {lines} {err}")

    def without_env():
        with open(kd.config) as f:
            cfg = json.load(f)
        cfg["kafka"]["brokers"] = "${LOOKUP_TEST_BROKERS}"
        cfg["kafka"]["producer"] = {"sasl.password": "${file:/nonexistent/kdedup-secret}"}
        cfg["admin"] = {"token": "${LOOKUP_TEST_TOKEN}"}
        path = os.path.join(workdir, "no-env.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_TEST")}
        rc, lines, err = lookup(path, ["pay-1"], "--route", "pay", env=env)
        check(rc == 0 and lines and lines[0]["state"] == "completed",
              f"brokers and token unset: {rc} {lines} {err}")
        cfg.setdefault("dedup", {})["namespace"] = "${LOOKUP_TEST_NS}"
        with open(path, "w") as f:
            json.dump(cfg, f)
        rc, lines, err = lookup(path, ["pay-1"], env=env)
        check(rc == 2 and "dedup.namespace holds a ${...} that is not set here" in err,
              f"namespace unset: {rc} {err}")

    try:
        kd.start()
        wait_for("kdedup assigned", lambda: gauge(kd, "kdedup_assigned_partitions") > 0, 60)
        p = KafkaProducer(bootstrap_servers=mock.bootstrap, api_version=API)
        p.send("payments", value=b"p", headers=[("Idempotency-Key", b"pay-1")])
        p.send(SRC, value=b"o", headers=[("Idempotency-Key", b"ord-1")])
        p.flush(timeout=30)
        p.close()
        wait_for("both forwarded", lambda: gauge(kd, "kdedup_messages_forwarded_total") == 2)
        phase("beside the running sidecar, every route answers, each line names it",
              every_route)
        phase("--route NAME: that route only; an unknown name refused", one_route)
        phase("without the config's environment (brokers, token, a secret file)",
              without_env)
        check(kd.proc.poll() is None, "kdedup stopped while lookup read its store")
    except Failure as e:
        failed += 1
        print(f"FAIL {e} (logs in {workdir})", flush=True)
    finally:
        if kd.proc and kd.proc.poll() is None:
            kd.signal(15)
        mock.stop()
    print(f"lookup: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
