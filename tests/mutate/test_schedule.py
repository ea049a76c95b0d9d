#!/usr/bin/python3
"""mutate.py's scheduling, without building or running anything: its
run_all over a fake mutate whose Apache Kafka rows hold a lock as the real
ones do. The first Kafka row starts first; the next is taken only once
the one before ended (while other rows are left, the other workers take
those meanwhile), so never two at once; every row is reported once."""
import importlib.util
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("mutate", os.path.join(HERE, "mutate.py"))
mutate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutate)

KAFKA = "tests/kafka/with_kafka.sh 3 true"
TABLE = ([{"name": f"u{i}", "test": "true"} for i in range(6)] +
         [{"name": f"k{i}", "test": KAFKA} for i in range(3)] +
         [{"name": f"u{i}", "test": "true"} for i in range(6, 9)])

started, kafka_lock = [], threading.Lock()
changed = threading.Condition()  # guards started, running and most
running, most = [0], [0]
OTHERS = sum(1 for m in TABLE if not mutate.on_kafka(m))


def others_started():
    return sum(1 for n in started if n.startswith("u"))


def fake(m, tree):
    """A Kafka row holds kafka_lock (as the real flock) until another row
    started after it, or all have: so its end never outruns the workers
    meant to go on meanwhile (events, not sleeps)."""
    with changed:
        started.append(m["name"])
        changed.notify_all()
    if mutate.on_kafka(m):
        with kafka_lock:
            with changed:
                running[0] += 1
                most[0] = max(most[0], running[0])
                before = others_started()
                changed.wait_for(lambda: others_started() > before or
                                 others_started() == OTHERS, timeout=10)
                running[0] -= 1
    return "caught"


def main():
    mutate.mutate = fake
    reported = []
    mutate.run_all(TABLE, ["w0", "w1", "w2"], lambda m, r, s: reported.append(m["name"]))
    kafka_at = [i for i, n in enumerate(started) if n.startswith("k")]
    problems = []
    if sorted(reported) != sorted(m["name"] for m in TABLE):
        problems.append(f"reported {reported}")
    if started[0] != "k0":
        problems.append(f"the first Kafka row started at {kafka_at[0]}, not first")
    if most[0] != 1:
        problems.append(f"{most[0]} Kafka rows ran at once")
    if any(b == a + 1 and any(n.startswith("u") for n in started[b:])
           for a, b in zip(kafka_at, kafka_at[1:])):
        problems.append("a worker took a Kafka row to wait for another while others were left")
    print(f"mutate schedule: started {' '.join(started)}; "
          + ("; ".join(problems) if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
