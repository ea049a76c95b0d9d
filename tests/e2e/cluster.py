"""The Kafka cluster under an end-to-end test: librdkafka's mock cluster in a
`kdedup mock` process (the default), or Apache Kafka when KDEDUP_BOOTSTRAP
names one (`make test-kafka` starts one with tests/kafka/rig.py and sets it).

    c = cluster.start(brokers=3, topics={"orders": 4, "orders.deduped": 4})
    c.bootstrap        the address kdedup and the test's clients use
    c.real             True on Apache Kafka
    c.topic(name, partitions, leader=2, replicas=[1, 2, 3])   creates (afresh) a topic
    c.slow(2, 150)     broker 2 answers late (0: on time again)
    c.silent(2) / c.speak(2)   broker 2 accepts but answers nothing, then does
    c.down(2) / c.up(2)        broker 2 gone (refusing), then back
    c.stall_writes(topic) / c.resume_writes(topic)
                       deliveries to topic wait (in flight) until resumed (mock only)
    c.refuse_writes(topic) / c.accept_writes(topic)
                       deliveries to topic fail for good (NOT_PERSISTED)
    c.stop()

On Apache Kafka, a test's topics are deleted and created again when it
starts (which also drops every group's offsets of them), so suites can
share one cluster; `leader` becomes the preferred leader of the topic's
replica assignment. Faults act on the rig's processes: `down` is kill -9
and `up` a restart over the node's data (leaderships move, the ISR shrinks
and grows); `silent` is SIGSTOP and `speak` SIGCONT; `slow` pauses the node
half of every `ms`. `refuse_writes` sets the topic's max.message.bytes
below any record batch's size (not a transaction marker's): the broker refuses every produce request with
MESSAGE_TOO_LARGE, which the producer does not retry (on the mock: produce
errors on broker 2, KAFKA_STORAGE_ERROR past the producer's retries). Faults only the mock has (errors pushed into its
answers, leaders or coordinators moved on command) raise Unsupported there.
Every wait is bounded.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "kafka"))
import rig as kafka_rig  # noqa: E402

KDEDUP = os.environ.get("KDEDUP", "build/kdedup")
API = (2, 5, 0)  # a protocol level both brokers speak; skips version probing
DEFAULT_TOPICS = {"orders": 4, "orders.deduped": 4, "orders.dlq": 1}
STORAGE_ERROR = 56
READY_S = 60
# refuse_writes' max.message.bytes: below any record batch kdedup writes,
# above a transaction marker's (a 78-byte control batch). Apache Kafka's
# transaction coordinator takes MESSAGE_TOO_LARGE for a marker as fatal and
# never writes it again: the transaction stays open (read_committed readers
# stop there) and its transactional.id is answered CONCURRENT_TRANSACTIONS
# until the coordinator moves. At 64 bytes it did (chaos seed 2 in the
# transactional mode, 2026-12-06; hanging_txn_test.py, "markers").
REFUSING_BYTES = "100"


class Unsupported(Exception):
    """A fault this broker cannot inject."""


class ClusterError(Exception):
    pass


def real():
    """True when the tests run against Apache Kafka (KDEDUP_BOOTSTRAP set)."""
    return bool(os.environ.get("KDEDUP_BOOTSTRAP"))


def read_committed(bootstrap, topic, idle_ms=6000):
    """[(partition, offset, value, {header: value})] of every committed record
    of topic, read by Apache Kafka's own console consumer with
    isolation.level=read_committed: an oracle independent of librdkafka that
    skips aborted transactions' records (kafka-python 2.0.2 returns them).
    Reads until no record came for idle_ms."""
    # printable: the tool trims its properties' values (Java's trim() drops
    # every character up to the space, control characters too)
    sep, hsep = "<kd|sep>", "<kd|hdr>"
    r = subprocess.run(
        ["java", "-Xmx256m", "-cp", os.path.join(kafka_rig.libs(), "*"),
         "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap,
         "--topic", topic, "--from-beginning", "--isolation-level", "read_committed",
         "--timeout-ms", str(idle_ms), "--property", "print.partition=true",
         "--property", "print.offset=true", "--property", "print.headers=true",
         "--property", f"key.separator={sep}", "--property", f"headers.separator={hsep}"],
        capture_output=True, text=True, timeout=300)
    out = []
    for line in r.stdout.splitlines():
        fields = line.split(sep)
        if len(fields) != 4 or not fields[0].startswith("Partition:"):
            continue
        hdrs = {}
        for h in fields[2].split(hsep) if fields[2] != "NO_HEADERS" else []:
            k, _, v = h.partition(":")
            hdrs[k] = v
        out.append((int(fields[0].split(":")[1]), int(fields[1].split(":")[1]), fields[3],
                    hdrs))
    if r.returncode != 0 and not out:
        raise ClusterError(f"the console consumer failed: {r.stderr[-500:]}")
    return out


def open_transactions(bootstrap, topic, partitions):
    """{partition: (last stable offset, high watermark)} of the partitions of
    topic where a transaction is still open (its last stable offset below the
    high watermark): a read_committed reader stops at the transaction's first
    record until it ends, and sees nothing written after it either. A killed
    producer's transaction whose transactional.id nobody takes up stays open
    until the broker aborts it: transaction.timeout.ms after it began, and up
    to transaction.abort.timed.out.transaction.cleanup.interval.ms (10 s)
    later. kafka-python 2.0.2 asks for offsets read_uncommitted only: this
    sends its ListOffsets v2 requests by hand, once with each isolation
    level. Apache Kafka only. Raises ClusterError when a leader does not
    answer within 10 s."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.protocol.offset import OffsetRequest

    c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API, enable_auto_commit=False)
    try:
        client, leaders = c._client, {}
        c.partitions_for_topic(topic)  # the topic's metadata
        for p in partitions:
            leaders.setdefault(client.cluster.leader_for_partition(TopicPartition(topic, p)),
                               []).append(p)
        ends = {}  # partition -> [read_uncommitted end, read_committed end]
        for node, parts in leaders.items():
            for isolation in (0, 1):
                end = time.time() + 10
                while True:
                    if client.ready(node):
                        future = client.send(node, OffsetRequest[2](
                            replica_id=-1, isolation_level=isolation,
                            topics=[(topic, [(p, -1) for p in parts])]))
                        client.poll(future=future, timeout_ms=5000)
                        if future.succeeded():
                            break
                    if time.time() > end:
                        raise ClusterError(f"the offsets of {topic} from broker {node}: no "
                                           f"answer")
                    client.poll(timeout_ms=100)
                for _, answers in future.value.topics:
                    for p, err, _, offset in answers:
                        if err:
                            raise ClusterError(f"the offsets of {topic}/{p}: error {err}")
                        ends.setdefault(p, [0, 0])[isolation] = offset
        return {p: (stable, high) for p, (high, stable) in ends.items() if stable < high}
    finally:
        c.close()


def start(brokers=1, topics=None):
    """The cluster for one test: topics ({name: partitions}) created afresh."""
    topics = DEFAULT_TOPICS if topics is None else topics
    return Real(brokers, topics) if real() else Mock(brokers, topics)


class Mock:
    """librdkafka's mock cluster in a `kdedup mock` process of its own."""

    real = False

    def __init__(self, brokers=1, topics=None):
        args = [a for name, n in (topics or {}).items() for a in ("--topic", f"{name}:{n}")]
        self.brokers = brokers
        self.proc = subprocess.Popen([KDEDUP, "mock", "--brokers", str(brokers), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.bootstrap = self.proc.stdout.readline().strip()
        if not self.bootstrap.startswith("127.0.0.1:"):
            raise ClusterError("mock cluster did not start")

    def cmd(self, line):
        """One command of tools/mockd.c; it must answer ok."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        if reply != "ok":
            raise ClusterError(f"mock: {line}: {reply}")

    def topic(self, name, partitions, leader=None, replicas=None):
        self.cmd(f"topic {name} {partitions}")
        if leader:
            for p in range(partitions):
                self.set_leader(name, p, leader)

    def set_leader(self, topic, partition, broker):
        self.cmd(f"leader {topic} {partition} {broker}")

    def coordinator(self, group, broker):
        self.cmd(f"coordinator {group} {broker}")

    def slow(self, broker, ms):
        self.cmd(f"rtt {broker} {ms}")

    def silent(self, broker):
        self.cmd(f"rtt {broker} 600000")

    def speak(self, broker):
        self.cmd(f"rtt {broker} 0")

    def down(self, broker):
        self.cmd(f"broker-down {broker}")

    def up(self, broker):
        self.cmd(f"broker-up {broker}")

    def produce_errors(self, broker, count, code):
        self.cmd(f"broker-produce-errors {broker} {count} {code}")

    def stall_writes(self, topic):
        self.slow(1, 4000)

    def resume_writes(self, topic):
        self.slow(1, 0)

    def refuse_writes(self, topic, count=40):
        self.produce_errors(2, count, STORAGE_ERROR)

    def accept_writes(self, topic):
        pass  # the errors pushed run out by themselves

    def commit_errors(self, count, code):
        self.cmd(f"commit-errors {count} {code}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


class Real:
    """Apache Kafka at KDEDUP_BOOTSTRAP; faults through the rig's processes."""

    real = True

    def __init__(self, brokers=1, topics=None):
        from kafka import KafkaAdminClient
        self.bootstrap = os.environ["KDEDUP_BOOTSTRAP"]
        self.rig = kafka_rig.Rig.load(required=False)
        self.brokers = len(self.rig.nodes) if self.rig else brokers
        if self.rig and self.brokers < brokers:
            raise ClusterError(f"this test needs {brokers} brokers; the rig has "
                               f"{self.brokers} (KAFKA_NODES={brokers} make kafka-up)")
        self.admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, api_version=API,
                                      request_timeout_ms=10000)
        self.slowing = {}
        self.paused = set()
        for name, n in (topics or {}).items():
            self.topic(name, n)

    # -- topics and placement

    def topic(self, name, partitions, leader=None, replicas=None):
        """Creates the topic afresh (deleting an older one of that name) and
        waits until every partition has a leader. leader: the preferred
        leader's broker id (or a function of the partition); replicas: the
        brokers that hold it (all, by default)."""
        from kafka.admin import NewTopic
        self.delete_topic(name)
        rf = min(3, self.brokers)
        if leader or replicas:
            ids = replicas or list(range(1, self.brokers + 1))
            lead = leader if callable(leader) else (lambda p: leader or ids[0])
            plan = {p: [lead(p)] + [b for b in ids if b != lead(p)][:rf - 1]
                    for p in range(partitions)}
            new = NewTopic(name, -1, -1, replica_assignments=plan)
        else:
            new = NewTopic(name, partitions, rf)
        self.retry(f"create {name}", lambda: self.admin.create_topics([new]))
        self.wait(f"{name}'s leaders", lambda: self.leaders(name) and
                  len(self.leaders(name)) == partitions and
                  all(b >= 0 for b in self.leaders(name).values()))

    def delete_topic(self, name):
        from kafka.errors import UnknownTopicOrPartitionError
        try:
            self.admin.delete_topics([name], timeout_ms=10000)
        except UnknownTopicOrPartitionError:
            return
        self.wait(f"{name} deleted", lambda: name not in self.admin.list_topics())

    def leaders(self, topic):
        """{partition: leader broker id (-1: none)}, or {} when unknown."""
        try:
            for t in self.admin.describe_topics([topic]):
                if t["error_code"] == 0:
                    return {p["partition"]: p["leader"] for p in t["partitions"]}
        except Exception:  # a connection a fault closed: unknown for now
            pass
        return {}

    def set_topic_config(self, topic, configs):
        """Sets a topic's dynamic configs (as kafka-configs --alter would)."""
        from kafka.admin import ConfigResource, ConfigResourceType
        res = ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)
        self.retry(f"alter {topic}", lambda: self.admin.alter_configs([res]))

    def stall_writes(self, topic):
        raise Unsupported("Apache Kafka holds no delivery in flight on request")

    def resume_writes(self, topic):
        raise Unsupported("Apache Kafka holds no delivery in flight on request")

    def refuse_writes(self, topic, count=None):
        """Until accept_writes: every produce request to topic refused. The
        config reaches every broker through the metadata log: waited for."""
        self.set_topic_config(topic, {"max.message.bytes": REFUSING_BYTES})
        self.wait(f"{topic} refusing writes", lambda: self.topic_config(topic).get(
            "max.message.bytes") == REFUSING_BYTES)
        time.sleep(1)  # the brokers apply what the controller answered with

    def accept_writes(self, topic):
        self.set_topic_config(topic, {})
        time.sleep(1)

    def topic_config(self, topic):
        from kafka.admin import ConfigResource, ConfigResourceType
        try:
            res = self.admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            return {e[0]: e[1] for r in res for e in r.resources[0][4]}
        except Exception:  # a connection a fault closed: unknown for now
            return {}

    def coordinator_of(self, group):
        """The broker id of the group's coordinator."""
        return self.retry(f"the coordinator of {group}",
                          lambda: self.admin._find_coordinator_ids([group])[group])

    def set_leader(self, topic, partition, broker):
        raise Unsupported("on Apache Kafka, move_leaders moves a whole topic's leaders")

    def replicas(self, topic):
        """{partition: [replica broker ids, the preferred leader first]}."""
        for t in self.retry(f"describe {topic}", lambda: self.admin.describe_topics([topic])):
            if t["error_code"] == 0:
                return {p["partition"]: p["replicas"] for p in t["partitions"]}
        raise ClusterError(f"{topic} is not described")

    def move_leaders(self, topic, broker):
        """Makes broker the leader of every partition of topic without any
        broker going down: its replicas put in a new order, broker first
        (kafka-reassign-partitions), then a preferred leader election
        (kafka-leader-elections). Connections stay open, so a client learns
        of it only when it asks the old leader, or refreshes its metadata."""
        plan = [{"topic": topic, "partition": p,
                 "replicas": [broker] + [b for b in reps if b != broker]}
                for p, reps in sorted(self.replicas(topic).items())]
        with tempfile.TemporaryDirectory() as tmp:
            moves, elect = os.path.join(tmp, "moves.json"), os.path.join(tmp, "elect.json")
            with open(moves, "w") as f:
                json.dump({"version": 1, "partitions": plan}, f)
            with open(elect, "w") as f:
                json.dump({"partitions": [{"topic": topic, "partition": m["partition"]}
                                          for m in plan]}, f)
            for what, args in (
                    ("reassign", ["org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
                                  "--bootstrap-server", self.bootstrap,
                                  "--reassignment-json-file", moves, "--execute"]),
                    ("elect", ["org.apache.kafka.tools.LeaderElectionCommand",
                               "--bootstrap-server", self.bootstrap,
                               "--election-type", "PREFERRED",
                               "--path-to-json-file", elect])):
                if what == "elect":
                    self.wait(f"{topic}'s replicas reordered", lambda: all(
                        r[0] == broker for r in self.replicas(topic).values()), 60)
                r = kafka_rig.java(*args)
                if r.returncode != 0:
                    raise ClusterError(f"{what} {topic}: {r.stdout[-400:]} {r.stderr[-400:]}")
        self.wait(f"{topic}'s leaders on broker {broker}", lambda: self.leaders(topic) and all(
            b == broker for b in self.leaders(topic).values()), 60)

    def coordinator(self, group, broker):
        raise Unsupported("a group's coordinator follows its offsets partition")

    def produce_errors(self, broker, count, code):
        raise Unsupported("Apache Kafka fails produce requests only for a reason")

    def commit_errors(self, count, code):
        raise Unsupported("Apache Kafka fails commits only for a reason")

    # -- faults on the rig's processes

    def need_rig(self):
        if not self.rig:
            raise Unsupported("faults need the rig's processes (make kafka-up), not only "
                              "KDEDUP_BOOTSTRAP")
        return self.rig

    def down(self, broker):
        """kill -9 of the broker."""
        self.stop_slowing(broker)
        self.paused.discard(broker)
        self.need_rig().kill(broker)

    def up(self, broker):
        """Restarts the broker over its data and waits until it answers."""
        rig = self.need_rig()
        rig.start(broker)
        port = rig.node(broker)["port"]
        self.wait(f"broker {broker} to answer", lambda: kafka_rig.answers(port), 90)
        self.wait(f"broker {broker} in the metadata",
                  lambda: broker in rig.metadata_brokers(), 90)

    def silent(self, broker):
        """SIGSTOP: the broker's connections stay open and nothing answers."""
        self.stop_slowing(broker)
        self.need_rig().pause(broker)
        self.paused.add(broker)

    def speak(self, broker):
        self.stop_slowing(broker)
        self.need_rig().resume(broker)
        self.paused.discard(broker)

    def slow(self, broker, ms):
        """Answers late: the broker is paused for ms of every 2 * ms (0: stop)."""
        self.stop_slowing(broker)
        if ms <= 0:
            return
        rig, halt = self.need_rig(), threading.Event()

        def run():
            while not halt.is_set():
                rig.pause(broker)
                halt.wait(ms / 1000)
                rig.resume(broker)
                halt.wait(ms / 1000)
            rig.resume(broker)
        t = threading.Thread(target=run, daemon=True)
        self.slowing[broker] = (halt, t)
        t.start()

    def stop_slowing(self, broker):
        halt, t = self.slowing.pop(broker, (None, None))
        if halt:
            halt.set()
            t.join(timeout=10)

    # -- helpers

    def wait(self, what, cond, timeout_s=READY_S):
        end = time.time() + timeout_s
        while time.time() < end:
            if cond():
                return
            time.sleep(0.1)
        raise ClusterError(f"timed out waiting for {what}")

    def retry(self, what, fn, timeout_s=READY_S):
        """fn()'s answer, asked again while the cluster answers with an error."""
        from kafka.errors import KafkaError, TopicAlreadyExistsError
        end = time.time() + timeout_s
        while True:
            try:
                return fn()
            except TopicAlreadyExistsError:
                raise
            except (KafkaError, OSError) as e:
                if time.time() > end:
                    raise ClusterError(f"{what}: {e!r}")
                time.sleep(0.3)

    def stop(self):
        """Heals what this test did to the cluster: every node runs and answers."""
        for b in list(self.slowing):
            self.stop_slowing(b)
        if self.rig:
            for n in self.rig.nodes:
                self.rig.resume(n["id"])
                if not self.rig.alive(n):
                    self.up(n["id"])
        self.paused.clear()
        self.admin.close()
