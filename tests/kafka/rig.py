#!/usr/bin/python3
"""Apache Kafka on loopback for kdedup's tests: a KRaft cluster of combined
broker+controller nodes, started from the jars that tests/kafka/pom.xml pins.

    rig.py fetch               resolve the pinned broker into the cache (once)
    rig.py up [--nodes N] [--topic NAME:PARTITIONS]...
                               start N nodes (1), create the topics; print
                               the bootstrap address
    rig.py down                stop exactly the nodes this rig started
    rig.py status              the nodes, and whether each answers
    rig.py node ACTION ID      kill (-9), term, stop (SIGSTOP), cont, start

The jars live outside the source tree, in $KDEDUP_KAFKA_CACHE (default
~/.cache/kdedup/kafka-<version>). The rig's state lives in $KDEDUP_KAFKA_DIR
(default build/kafka): `bootstrap` (the address tests read) and `nodes.json`
(each node's ports, pid, data and log folders). Data goes to a temporary
folder that `down` removes. Each node binds 127.0.0.1 only, on free ports,
with a heap of $KAFKA_HEAP (512m). With three nodes, topics default to
replication factor 3 and min.insync.replicas 2.

Tests import this module for the faults only a real cluster has (Rig.kill,
Rig.pause, Rig.start, Rig.quorum_leader); every wait here is bounded.
"""
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
POM = os.path.join(HERE, "pom.xml")
VERSION = "3.9.2"
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("KDEDUP_KAFKA_CACHE") or os.path.join(base, "kdedup",
                                                                   f"kafka-{VERSION}")


def state_dir():
    return os.path.abspath(os.environ.get("KDEDUP_KAFKA_DIR") or
                           os.path.join(ROOT, "build", "kafka"))


def libs():
    return os.path.join(cache_dir(), "libs")


def pom_digest():
    with open(POM, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fetched():
    """True when the cache holds the jars of this pom."""
    try:
        with open(os.path.join(cache_dir(), "pom.sha256")) as f:
            return f.read().strip() == pom_digest()
    except OSError:
        return False


def fetch():
    """Resolves the pinned broker and its dependencies from Maven Central into
    the cache; does nothing when the cache already holds this pom's jars."""
    if fetched():
        return
    if not shutil.which("mvn") or not shutil.which("java"):
        sys.exit("rig: needs java and mvn (make deps installs openjdk-17-jdk-headless and maven)")
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = libs() + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"rig: fetching Apache Kafka {VERSION} into {cache_dir()}", flush=True)
    r = subprocess.run(["mvn", "-q", "-B", "-f", POM, "dependency:copy-dependencies",
                        f"-DoutputDirectory={tmp}"], timeout=900)
    if r.returncode != 0:
        sys.exit(f"rig: mvn could not resolve {POM} (exit {r.returncode})")
    shutil.rmtree(libs(), ignore_errors=True)
    os.rename(tmp, libs())
    with open(os.path.join(cache_dir(), "pom.sha256"), "w") as f:
        f.write(pom_digest() + "\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port, timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def java(*args, timeout=120):
    """Runs a class from the cache's jars; returns the completed process."""
    return subprocess.run(["java", "-Xmx256m", "-cp", os.path.join(libs(), "*")] + list(args),
                          capture_output=True, text=True, timeout=timeout)


LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients.NetworkClient=WARN
"""


def server_properties(node, nodes, data):
    n = len(nodes)
    voters = ",".join(f"{x['id']}@127.0.0.1:{x['controller_port']}" for x in nodes)
    props = {
        "process.roles": "broker,controller",
        "node.id": node["id"],
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{node['port']},"
                     f"CONTROLLER://127.0.0.1:{node['controller_port']}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node['port']}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": data,
        # Tests create their topics through the admin API, as operators do.
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
        "default.replication.factor": n,
        "min.insync.replicas": min(2, n),
        "offsets.topic.replication.factor": n,
        "offsets.topic.num.partitions": 5,
        "transaction.state.log.replication.factor": n,
        "transaction.state.log.min.isr": min(2, n),
        "transaction.state.log.num.partitions": 5,
        # A test's group forms at once; sessions as short as tests ask.
        "group.initial.rebalance.delay.ms": 0,
        "group.min.session.timeout.ms": 1000,
        # Two cores shared with the tests: few threads.
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 2,
        "num.replica.fetchers": 1,
        # A follower stopped for 10 s leaves the ISR (30 s by default).
        "replica.lag.time.max.ms": 10000,
        "log.segment.bytes": 64 * 1024 * 1024,
        "delete.topic.enable": "true",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


class Rig:
    """A cluster this rig started, as nodes.json describes it."""

    def __init__(self, state):
        self.dir = state_dir()
        self.state = state

    @classmethod
    def load(cls, required=True):
        """The running rig, or None (required=False) when there is none."""
        try:
            with open(os.path.join(state_dir(), "nodes.json")) as f:
                return cls(json.load(f))
        except OSError:
            if required:
                sys.exit(f"rig: no cluster in {state_dir()} (make kafka-up)")
            return None

    @property
    def nodes(self):
        return self.state["nodes"]

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{n['port']}" for n in self.nodes)

    def node(self, node_id):
        for n in self.nodes:
            if n["id"] == int(node_id):
                return n
        raise KeyError(f"rig: no node {node_id}")

    def save(self):
        os.makedirs(self.dir, exist_ok=True)
        tmp = os.path.join(self.dir, "nodes.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
        os.rename(tmp, os.path.join(self.dir, "nodes.json"))
        with open(os.path.join(self.dir, "bootstrap"), "w") as f:
            f.write(self.bootstrap + "\n")

    def alive(self, n):
        """True when n's recorded pid is still the java process this rig
        started for it (a pid reused by anything else is not ours)."""
        pid = n.get("pid")
        if not pid:
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return False
        # Just after a start, the launcher may not have exec'd java yet.
        young = time.time() - n.get("started_at", 0) < 10
        return not zombie and (n["config"].encode() in cmd or young)

    def start(self, node_id):
        """Starts (or restarts) a node over its data; returns at once."""
        n = self.node(node_id)
        if self.alive(n):
            return
        heap = os.environ.get("KAFKA_HEAP", "512m")
        out = open(os.path.join(n["home"], "stdout.log"), "a")
        proc = subprocess.Popen(
            ["java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
             "-Djava.awt.headless=true",
             f"-Dlog4j.configuration=file:{os.path.join(n['home'], 'log4j.properties')}",
             "-cp", os.path.join(libs(), "*"), "kafka.Kafka", n["config"]],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=n["home"])
        out.close()
        n["pid"], n["started_at"] = proc.pid, time.time()
        self.save()

    def signal(self, node_id, sig):
        n = self.node(node_id)
        if self.alive(n):
            os.kill(n["pid"], sig)

    def kill(self, node_id):
        """kill -9 of a node; returns once it is gone."""
        self.signal(node_id, signal.SIGKILL)
        self.wait_gone(self.node(node_id))

    def terminate(self, node_id):
        """A clean stop (SIGTERM); SIGKILL after STOP_TIMEOUT_S."""
        n = self.node(node_id)
        self.signal(node_id, signal.SIGCONT)  # a paused node cannot stop
        self.signal(node_id, signal.SIGTERM)
        if not self.wait_gone(n, STOP_TIMEOUT_S):
            self.kill(node_id)

    def pause(self, node_id):
        self.signal(node_id, signal.SIGSTOP)

    def resume(self, node_id):
        self.signal(node_id, signal.SIGCONT)

    def wait_gone(self, n, timeout_s=STOP_TIMEOUT_S):
        end = time.time() + timeout_s
        while time.time() < end:
            if not self.alive(n):
                return True
            time.sleep(0.1)
        return False

    def wait_ready(self, timeout_s=READY_TIMEOUT_S):
        """Waits until every node is up and the cluster's metadata lists them
        all; exits the program with the nodes' logs' tails when it does not."""
        end = time.time() + timeout_s
        why = "no answer"
        while time.time() < end:
            dead = [n["id"] for n in self.nodes if not self.alive(n)]
            if dead:
                self.fail(f"node {dead} exited")
            if all(answers(n["port"]) for n in self.nodes):
                brokers = self.metadata_brokers()
                if brokers == {n["id"] for n in self.nodes}:
                    return
                why = f"metadata lists brokers {sorted(brokers)}"
            time.sleep(0.5)
        self.fail(f"not ready after {timeout_s}s: {why}")

    def metadata_brokers(self):
        """The broker ids a metadata request lists (empty on any error)."""
        try:
            from kafka import KafkaAdminClient
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, api_version=(2, 5, 0),
                                     request_timeout_ms=5000)
            try:
                return {b["node_id"] for b in admin.describe_cluster()["brokers"]}
            finally:
                admin.close()
        except Exception:  # any client error: not ready yet
            return set()

    def quorum_leader(self):
        """The node id of the active controller (the KRaft quorum's leader),
        read with Apache Kafka's own metadata-quorum tool; None if unknown."""
        live = [n for n in self.nodes if self.alive(n)]
        if not live:
            return None
        r = java("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server",
                 ",".join(f"127.0.0.1:{n['port']}" for n in live), "describe", "--status")
        for line in r.stdout.splitlines():
            if line.startswith("LeaderId:"):
                return int(line.split(":", 1)[1])
        return None

    def fail(self, why):
        for n in self.nodes:
            log = os.path.join(n["home"], "server.log")
            print(f"--- node {n['id']}: {log}", file=sys.stderr)
            for path in (log, os.path.join(n["home"], "stdout.log")):
                try:
                    with open(path) as f:
                        print("".join(f.readlines()[-15:]), file=sys.stderr)
                except OSError:
                    pass
        sys.exit(f"rig: {why}")


def create_topics(bootstrap, topics):
    """Creates topics [(name, partitions)] with the cluster's default
    replication factor."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=(2, 5, 0),
                             request_timeout_ms=30000)
    try:
        admin.create_topics([NewTopic(name, n, -1) for name, n in topics])
    finally:
        admin.close()


def up(count, topics=()):
    """Starts a fresh cluster of count nodes, creates topics; prints its
    bootstrap address."""
    fetch()
    old = Rig.load(required=False)
    if old:
        down(quiet=True)
    data = tempfile.mkdtemp(prefix="kdedup-kafka-")
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    nodes = []
    for i in range(1, count + 1):
        home = os.path.join(data, f"node-{i}")
        os.makedirs(home)
        nodes.append({"id": i, "port": free_port(), "controller_port": free_port(),
                      "home": home, "config": os.path.join(home, "server.properties"),
                      "pid": None})
    for n in nodes:
        with open(n["config"], "w") as f:
            f.write(server_properties(n, nodes, os.path.join(n["home"], "data")))
        with open(os.path.join(n["home"], "log4j.properties"), "w") as f:
            f.write(LOG4J.format(log=os.path.join(n["home"], "server.log")))
        r = java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", n["config"])
        if r.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            sys.exit(f"rig: formatting node {n['id']} failed: {r.stdout}{r.stderr}")
    rig = Rig({"version": VERSION, "cluster_id": cluster_id, "data": data, "nodes": nodes})
    rig.save()
    for n in nodes:
        rig.start(n["id"])
    t0 = time.time()
    rig.wait_ready()
    if topics:
        create_topics(rig.bootstrap, topics)
    print(f"rig: {count} node(s) of Apache Kafka {VERSION} ready in {time.time() - t0:.1f}s; "
          f"data in {data}; bootstrap in {os.path.join(rig.dir, 'bootstrap')}",
          file=sys.stderr)
    print(rig.bootstrap, flush=True)


def down(quiet=False):
    """Stops the nodes this rig started (and only those) and removes their data."""
    rig = Rig.load(required=False)
    if not rig:
        if not quiet:
            print("rig: nothing to stop", file=sys.stderr)
        return
    for n in rig.nodes:
        if rig.alive(n):
            rig.terminate(n["id"])
    data = rig.state.get("data")
    if data and os.path.basename(data).startswith("kdedup-kafka-"):
        shutil.rmtree(data, ignore_errors=True)
    for name in ("nodes.json", "bootstrap"):
        try:
            os.unlink(os.path.join(rig.dir, name))
        except OSError:
            pass
    if not quiet:
        print(f"rig: stopped {len(rig.nodes)} node(s)", file=sys.stderr)


def status():
    rig = Rig.load()
    for n in rig.nodes:
        state = "answers" if rig.alive(n) and answers(n["port"]) else \
            "running" if rig.alive(n) else "down"
        print(f"node {n['id']}: 127.0.0.1:{n['port']} pid {n['pid']} {state}")


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd = argv[1]
    if cmd == "fetch":
        fetch()
    elif cmd == "up":
        count, topics, args = int(os.environ.get("KAFKA_NODES", "1")), [], argv[2:]
        while args:
            if len(args) < 2 or args[0] not in ("--nodes", "--topic"):
                sys.exit(f"rig: up takes --nodes N and --topic NAME:PARTITIONS, not {args}")
            if args[0] == "--nodes":
                count = int(args[1])
            else:
                name, _, parts = args[1].rpartition(":")
                if not name or not parts.isdigit() or int(parts) < 1:
                    sys.exit(f"rig: --topic takes NAME:PARTITIONS, not {args[1]}")
                topics.append((name, int(parts)))
            args = args[2:]
        if count not in (1, 3):
            sys.exit("rig: --nodes takes 1 or 3")
        up(count, topics)
    elif cmd == "down":
        down()
    elif cmd == "status":
        status()
    elif cmd == "node" and len(argv) == 4:
        rig = Rig.load()
        action = {"kill": rig.kill, "term": rig.terminate, "stop": rig.pause,
                  "cont": rig.resume, "start": rig.start}.get(argv[2])
        if not action:
            sys.exit(f"rig: node takes kill, term, stop, cont or start, not {argv[2]}")
        action(int(argv[3]))
    else:
        sys.exit(f"rig: unknown command {' '.join(argv[1:])} (rig.py --help)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
