#!/usr/bin/python3
"""What the real kdedup binary shows and leaves behind (issue 19, items 4
and 5).

Phase "secrets": bad configs whose values come from environment variables
and from a ${file:...} secret, each run with --check-config and started with
--config. No error may hold a value taken from the environment or the file
(the errors name the variable instead), and no output at all (stdout,
stderr, logs; librdkafka's own lines at debug level included) a secret's.

Phase "shown" (issue 31, item 9): only secrets are masked. A broker list, a
topic and a client id taken from the environment or a file appear in the
log as themselves (the broker-down lines name the host, the audit line the
client's address), while the SASL password and the admin token never do.

Phase "files": kdedup started over a store directory someone left 0777 with
0666 files in it: the directory becomes 0700 and every file in it 0600 (old
ones tightened, new ones created under umask 077), core dumps are off. Run
as an unprivileged user, the process is not dumpable (its /proc files are
root's), and a store directory it does not own (an emptyDir's mount point)
gets a warning while its files are still made private.

Run with Debian's interpreter: /usr/bin/python3 tests/e2e/security_test.py
"""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
from harness import Failure, check, free_port, http_get  # noqa: E402

KDEDUP = os.path.abspath(os.environ.get("KDEDUP", "build/kdedup"))
SECRET = "Env-S3cret-0f-kdedup"        # from the environment
FILE_SECRET = "File-S3cret-0f-kdedup"  # from a ${file:...}
CLIENT = "Client-Id-0f-kdedup"         # a client id from the environment: shown
START_S = 8                            # how long a start may run before SIGTERM
NOBODY = 65534


def write_config(workdir, name, cfg):
    path = os.path.join(workdir, name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def base_config(workdir, port=None):
    return {
        # the embedded mock, or Apache Kafka (KDEDUP_BOOTSTRAP)
        "kafka": {"brokers": os.environ.get("KDEDUP_BOOTSTRAP", "mock:1"), "group_id": "sec"},
        "routes": [{"from": "orders", "to": "orders.deduped", "on_missing_key": "drop"}],
        "store": {"path": os.path.join(workdir, "store")},
        "http": {"listen": f"127.0.0.1:{port or free_port()}"},
        "pipeline": {"shutdown_grace": "2s"},
    }


def run(args, env, timeout_s):
    """(exit code, stdout + stderr) of kdedup; SIGTERM (then SIGKILL) when
    it runs longer than timeout_s."""
    proc = subprocess.Popen([KDEDUP] + args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    return proc.returncode, out.decode(errors="replace")


def secrets(workdir):
    secret_file = os.path.join(workdir, "password")
    with open(secret_file, "w") as f:
        f.write(FILE_SECRET + "\n")
    env = dict(os.environ, KD_SECRET=SECRET, KD_TOPIC=SECRET.lower(), KD_CLIENT=CLIENT)
    ref_file = "${file:%s}" % secret_file

    def props(where, **kv):
        def edit(cfg):
            cfg["kafka"].setdefault(where, {}).update(kv)
        return edit

    def section(name, **kv):
        def edit(cfg):
            cfg.setdefault(name, {}).update(kv)
        return edit

    def route(**kv):
        def edit(cfg):
            cfg["routes"][0].update(kv)
        return edit

    # (name, edit, whether it runs) - the issue's two reproductions first.
    cases = [
        ("security.protocol", props("consumer", **{"security.protocol": "${KD_SECRET}"}),
         False),
        ("sasl.mechanisms", props("producer", **{"security.protocol": "SASL_PLAINTEXT",
                                                 "sasl.mechanisms": "${KD_SECRET}"}), False),
        ("sasl.mechanisms from a file",
         props("consumer", **{"security.protocol": "SASL_PLAINTEXT",
                              "sasl.mechanisms": ref_file}), False),
        ("an integer property", props("producer", **{"linger.ms": "${KD_SECRET}"}), False),
        ("a listed property", props("consumer", debug="${KD_SECRET}"), False),
        ("group_id and brokers", section("kafka", group_id="${KD_SECRET}",
                                         brokers="${KD_SECRET}"), False),
        ("a route into itself", route(**{"from": "${KD_TOPIC}", "to": "${KD_TOPIC}"}),
         False),
        ("store.path", section("store", path="/proc/${KD_SECRET}/store"), False),
        ("http.listen", section("http", listen="${KD_SECRET}:1"), False),
        ("a running sidecar logging at debug",
         lambda cfg: (section("log", level="debug")(cfg),
                      props("consumer", **{"client.id": "${KD_CLIENT}", "debug": "all",
                                           "sasl.username": "${KD_SECRET}",
                                           "sasl.password": ref_file})(cfg)), True),
    ]
    # Valid configs whose values fail at start: not secrets, so named as they are.
    RUNTIME_SHOWN = {"store.path": f"/proc/{SECRET}/store", "http.listen": f"{SECRET}:1"}
    for name, edit, runs in cases:
        cfg = base_config(workdir)
        edit(cfg)
        path = write_config(workdir, "case", cfg)
        rc_check, out_check = run(["--check-config", path], env, 15)
        rc_start, out_start = run(["--config", path], env, START_S)
        outs = [("--check-config", out_check), ("--config", out_start)]
        if name in RUNTIME_SHOWN:  # no secret: the error at start names it as it is
            check(RUNTIME_SHOWN[name] in out_start,
                  f"{name}: the error does not name the value: {out_start[-300:]!r}")
            outs.pop()
        for what, out in outs:
            for value in (SECRET, SECRET.lower(), FILE_SECRET):
                check(value not in out,
                      f"{name}: kdedup {what} shows a secret value: {out[-400:]!r}")
        if runs:
            check(rc_check == 0 and rc_start == 0,
                  f"{name}: exits {rc_check} / {rc_start}: {out_start[-300:]!r}")
        else:
            check(rc_start not in (0, None), f"{name}: kdedup started: the case is wrong")
            check(name in RUNTIME_SHOWN or
                  "${KD_" in out_check + out_start or "${file:" in out_check + out_start,
                  f"{name}: no message names the variable or the file: "
                  f"{out_check[-200:]!r} {out_start[-300:]!r}")
        if name.endswith("at debug"):
            check(out_start.count("\n") > 100, f"{name}: logged too little to tell")
            # Not a secret: shown as itself, not as its variable.
            check(CLIENT in out_start and "${KD_CLIENT}" not in out_start,
                  f"{name}: the client id is not shown as itself")
        shutil.rmtree(os.path.join(workdir, "store"), ignore_errors=True)


def shown(workdir):
    """Broker lists, topics and client ids from the environment or a file are
    shown as they are; the password and the token are not."""
    topic_file = os.path.join(workdir, "topic")
    with open(topic_file, "w") as f:
        f.write("orders-from-a-file\n")
    kafka = cluster.start(topics={"orders-from-a-file": 1, "orders.deduped": 1})
    port, admin_port = free_port(), free_port()
    token = "Admin-T0ken-0f-kdedup-" + SECRET
    env = dict(os.environ, KD_BROKERS=kafka.bootstrap, KD_CLIENT=CLIENT,
               KD_PASSWORD=SECRET, KD_TOKEN=token)
    cfg = base_config(workdir, port)
    cfg["kafka"].update(brokers="${KD_BROKERS}", consumer={
        "client.id": "${KD_CLIENT}", "sasl.username": "kdedup",
        "sasl.password": "${KD_PASSWORD}"})
    cfg["routes"][0]["from"] = "${file:%s}" % topic_file
    cfg["admin"] = {"listen": f"127.0.0.1:{admin_port}", "token": "${KD_TOKEN}"}
    path = write_config(workdir, "shown", cfg)
    log_path = os.path.join(workdir, "shown.log")
    # librdkafka's broker-down line, on the mock (on Apache Kafka a broker
    # stays up: the rig is shared, and names its brokers otherwise)
    down = None if kafka.real else f"{kafka.bootstrap}/1: Connect to"

    def log():
        with open(log_path) as f:
            return f.read()

    routes = ""
    try:
        with open(log_path, "w") as out:
            proc = start_and_wait([KDEDUP, "--config", path], port, out, env)
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/v1/routes",
                                         headers={"Authorization": "Bearer " + token})
            with urllib.request.urlopen(req, timeout=5) as r:
                routes = r.read().decode()
            check("orders-from-a-file" in routes, f"/v1/routes hides the topic: {routes}")
            end = time.time() + 30  # the assignment names the topic
            while time.time() < end and "orders-from-a-file/0" not in log():
                time.sleep(0.2)
            if down:
                kafka.down(1)
            end = time.time() + 30
            while time.time() < end and not ((not down or down in log()) and
                                             '"audit":"admin"' in log()):
                time.sleep(0.2)
        finally:
            stop(proc)
    finally:
        kafka.stop()
        shutil.rmtree(os.path.join(workdir, "store"), ignore_errors=True)
    text = log()
    for value, what in ((down, "the broker-down line's host"),
                        ("orders-from-a-file/0", "the topic from a file"),
                        (CLIENT, "the client id"),
                        ('"client":"127.0.0.1"', "the admin client's address")):
        check(not value or value in text, f"{what} is not shown as itself: {text[-600:]!r}")
    for ref in ("${KD_BROKERS}", "${KD_CLIENT}", "${file:"):
        check(ref not in text, f"{ref} stands for a value that is no secret: "
              f"{[line for line in text.splitlines() if ref in line][:2]}")
    for value in (SECRET, token):
        check(value not in text + routes, f"a secret is shown: {text[-400:]!r}")


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def check_private(store):
    check(mode(store) == 0o700, f"store directory is {mode(store):04o}, not 0700")
    files = os.listdir(store)
    check(any(f.endswith(".log") or f.startswith("MANIFEST") for f in files),
          f"no RocksDB files in {store}: {files}")
    loose = {f: f"{mode(os.path.join(store, f)):04o}" for f in files
             if mode(os.path.join(store, f)) & 0o077}
    check(not loose, f"files readable by others: {loose}")


def start_and_wait(cmd, port, log, env=None):
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    end = time.time() + 30
    while time.time() < end:
        check(proc.poll() is None, f"kdedup exited {proc.returncode} at start")
        try:
            if http_get(port, "/healthz", timeout=2)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise Failure("kdedup did not answer /healthz within 30 s")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    check(proc.wait(timeout=60) == 0, f"kdedup exited {proc.returncode} on SIGTERM")


def files(workdir):
    # As root, over a store someone left world-writable.
    store = os.path.join(workdir, "store")
    os.makedirs(store)
    os.chmod(store, 0o777)
    stale = os.path.join(store, "LOG.old.1")
    with open(stale, "w") as f:
        f.write("left by an older kdedup\n")
    os.chmod(stale, 0o666)
    port = free_port()
    path = write_config(workdir, "files", base_config(workdir, port))
    with open(os.path.join(workdir, "files.log"), "w") as log:
        proc = start_and_wait([KDEDUP, "--config", path], port, log)
        try:
            check_private(store)
            check(mode(stale) == 0o600, f"an old file stayed {mode(stale):04o}")
            with open(f"/proc/{proc.pid}/limits") as f:
                core = [line.split() for line in f if line.startswith("Max core file size")]
            check(core and core[0][4:6] == ["0", "0"], f"core dumps are on: {core}")
        finally:
            stop(proc)


def files_unprivileged(workdir):
    """As an unprivileged user: not dumpable, and a mount point it does not
    own (emptyDir: root's, 0777) is warned about while its files are made
    private."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        print("  (skipped: needs root and setpriv to run kdedup as nobody)")
        return
    home = os.path.join(workdir, "nobody")
    os.makedirs(home)
    shutil.copy(KDEDUP, os.path.join(home, "kdedup"))  # the build tree may be private
    mount = os.path.join(home, "volume")
    os.makedirs(mount)
    os.chmod(mount, 0o777)  # root's, like an emptyDir
    for d in (workdir, home):
        os.chmod(d, 0o755)
    port = free_port()
    cfg = base_config(home, port)
    cfg["store"]["path"] = mount
    path = write_config(home, "nobody", cfg)
    os.chmod(path, 0o644)
    log_path = os.path.join(home, "nobody.log")
    with open(log_path, "w") as log:
        proc = start_and_wait(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                               "--clear-groups", os.path.join(home, "kdedup"), "--config",
                               path], port, log)
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                uid = [line.split()[1] for line in f if line.startswith("Uid:")][0]
            check(uid == str(NOBODY), f"kdedup runs as uid {uid}, not nobody")
            owner = os.stat(f"/proc/{proc.pid}/environ").st_uid
            check(owner == 0, f"/proc/PID of kdedup is uid {owner}'s: still dumpable")
            loose = {f: f"{mode(os.path.join(mount, f)):04o}" for f in os.listdir(mount)
                     if mode(os.path.join(mount, f)) & 0o077}
            check(not loose, f"files readable by others: {loose}")
        finally:
            stop(proc)
    with open(log_path) as f:
        log = f.read()
    check("cannot make it private" in log and "subdirectory" in log,
          f"no warning about the store directory it cannot chmod: {log[-500:]!r}")


def main():
    passed = failed = 0
    workdir = tempfile.mkdtemp(prefix="kdedup-security-")
    if cluster.real():
        cluster.start().stop()  # the routes' topics, on Apache Kafka
    for name, fn in (("no value from the environment or a file in an error, no secret "
                      "in any output", secrets),
                     ("only secrets are masked: brokers, topics, client ids shown", shown),
                     ("store 0700, files 0600, no core dumps", files),
                     ("unprivileged: not dumpable, a foreign mount point warned about",
                      files_unprivileged)):
        t0 = time.time()
        try:
            fn(workdir)
            passed += 1
            print(f"PASS {name} ({time.time() - t0:.1f}s)", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
    if failed:
        print(f"workdir: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"security: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
