#!/usr/bin/python3
"""What a suite produced and what downstream holds: World produces messages
with repeated idempotency keys (kafka-python), reads the downstream topic
back once every kdedup has settled, and checks it (every unique key once,
its first copy's payload and headers, each partition in order, receipts).
"""
import os
import random
import signal
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
from harness import (API, DEADLINE_S, DST, PARTS, RECEIPT, SRC, Failure, check,  # noqa: E402
                     gauge, lookup, state_of, wait_for)

class World:
    """What was produced, and what downstream holds."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=API,
                                      acks="all", linger_ms=5)
        self.first = {}      # key -> (value, trace) of its first copy
        self.copies = {}     # value -> the traces of its copies
        self.keys = []       # every key produced, in order
        self.repeats = 0     # copies of an earlier key
        self.conflicts = 0   # ... with another payload (the others are retries)
        self.downstream = []  # (partition, offset, key, value, headers dict)
        self.reader = KafkaConsumer(bootstrap_servers=bootstrap, api_version=API,
                                    enable_auto_commit=False, group_id=None)
        parts = [TopicPartition(DST, p) for p in range(PARTS)]
        self.reader.assign(parts)
        self.next_offset = {}  # downstream partition -> the next offset to read
        self.rng = random.Random(7)
        self.stamp = lambda: None  # a message's timestamp (ms); None: now
        self.lock = threading.Lock()  # produce() from several threads
        self.resent = 0  # records sent again after a failed send

    def produce_in_background(self, n, dup_share, chunks=20, pause_s=0.1):
        """Produces n messages in chunks over about chunks * pause_s seconds."""
        def run():
            for _ in range(chunks):
                self.produce(n // chunks, dup_share)
                time.sleep(pause_s)
        t = threading.Thread(target=run)
        t.start()
        return t

    def produce(self, n, dup_share, conflict_every=10):
        """Produces n messages; a share dup_share of them repeat an earlier
        key. Such a copy is a retry (the first copy's payload again, with a
        trace header of its own, which the fingerprint leaves out), but for
        every conflict_every-th one: a key conflict (another payload), which
        the route skips as a duplicate too. Safe from several threads."""
        with self.lock:
            self.produce_locked(n, dup_share, conflict_every)

    def produce_locked(self, n, dup_share, conflict_every):
        sends = []
        for i in range(n):
            key, retry = None, False
            if self.keys and self.rng.random() < dup_share:
                key = self.rng.choice(self.keys)
                self.repeats += 1
                retry = self.repeats % conflict_every != 0
            else:
                key = f"order-{len(self.first):06d}"
            # The same draws from rng whatever the copy is, so that a seed
            # makes the same keys as before retries kept their payload.
            value = f"{key} payload {len(self.keys)} " + "x" * self.rng.randint(10, 80)
            if retry:
                value = self.first[key][0]
            else:
                self.conflicts += key in self.first
            trace = f"trace-{len(self.keys)}"
            self.first.setdefault(key, (value, trace))
            self.copies.setdefault(value, set()).add(trace)
            self.keys.append(key)
            record = dict(key=key.encode(), value=value.encode(), timestamp_ms=self.stamp(),
                          headers=[("Idempotency-Key", key.encode()),
                                   ("trace", trace.encode())])
            sends.append((self.producer.send(SRC, **record), record))
        self.flush(sends)

    def flush(self, sends):
        """Waits for sends [(future, record)]; sends a record again while the
        cluster refuses it (a broker a fault stopped), counting each resend:
        a send that timed out may have been written, so the source may hold
        up to `resent` copies more than `keys`."""
        # Bounded in time, not in tries: a refusal comes at once (on Apache
        # Kafka, NOT_ENOUGH_REPLICAS while a fault holds a replica), and a
        # fault may last tens of seconds.
        end = time.time() + 120
        while time.time() < end:
            self.producer.flush(timeout=60)
            sends = [(self.producer.send(SRC, **r), r) for f, r in sends if f.failed()]
            if not sends:
                return
            self.resent += len(sends)
            time.sleep(0.5)
        raise Failure(f"the test's producer could not write {len(sends)} records")

    def check_committed(self, committed):
        """The source messages committed are every one produced (and at most
        the copies resent)."""
        check(len(self.keys) <= committed <= len(self.keys) + self.resent,
              f"committed {committed} of {len(self.keys)} produced ({self.resent} resent)")

    def settled(self, sidecars, group):
        """Waits until no kdedup of sidecars (each must be running and
        answering) holds a message
        (kdedup_inflight_messages counts every message consumed and not yet
        done: in flight, waiting for a retry, being resolved) and group's
        committed offset of every source partition is the partition's end.
        Returns the sum of those ends."""
        c = KafkaConsumer(bootstrap_servers=self.bootstrap, api_version=API,
                          group_id=group, enable_auto_commit=False)
        try:
            parts = [TopicPartition(SRC, p) for p in range(PARTS)]
            ends = c.end_offsets(parts)

            left = {}  # what the last look found unsettled, for the failure

            def committed_to_end():
                try:
                    left["committed"] = {tp.partition: (c.committed(tp), ends[tp])
                                         for tp in parts}
                except KafkaError:
                    return False  # a connection a fault closed: asked again
                return all(a == b for a, b in left["committed"].values())

            def held():
                left["inflight"] = [gauge(kd, "kdedup_inflight_messages") for kd in sidecars]
                return any(left["inflight"])
            try:
                wait_for("every message settled and committed",
                         lambda: not held() and committed_to_end(), DEADLINE_S)
            except Failure as e:
                raise Failure(f"{e}: held by each kdedup {left.get('inflight')}, committed "
                              f"(partition: (committed, end)) {left.get('committed')}; "
                              f"{state_of(sidecars)}")
            return sum(ends.values())
        finally:
            c.close()

    def wait_transactions_ended(self):
        """Waits until no transaction is open in a downstream partition;
        sets transactions_ended_at (time.time()) and transactions_waited_s."""
        left, t0 = {}, time.time()

        def ended():
            left.clear()
            left.update(cluster.open_transactions(self.bootstrap, DST, range(PARTS)))
            return not left
        try:
            wait_for("every downstream transaction ended", ended, DEADLINE_S)
        except Failure as e:
            raise Failure(f"{e}: still open (partition: (last stable offset, high "
                          f"watermark)) {left}")
        self.transactions_ended_at = time.time()
        self.transactions_waited_s = self.transactions_ended_at - t0

    def read(self, sidecars, group="e2e"):
        """Once everything is settled (see settled()), reads every
        downstream partition up to its end. Returns the source messages
        committed."""
        committed = self.settled(sidecars, group)
        if os.environ.get("KD_DELIVERY") == "transactional":
            # committed records only, read by a client that honours
            # read_committed (kafka-python 2.0.2 would return aborted ones),
            # once no transaction is open downstream: a killed replica's,
            # left open until the broker aborts it (up to 25 s with kdedup's
            # transaction.timeout.ms), hides every record written after it
            # from such a reader, whose read ends when nothing came for 6 s
            # (chaos seed 5 on 2026-12-06: 30 keys a later owner committed
            # were missed so)
            self.wait_transactions_ended()
            self.downstream = [(part, off, hdrs.get("Idempotency-Key"), value, hdrs)
                               for part, off, value, hdrs in cluster.read_committed(
                                   self.bootstrap, DST)]
            return committed
        parts = [TopicPartition(DST, p) for p in range(PARTS)]
        # A client of its own for each read, from past the last record read:
        # one left idle for minutes (the memory soak) read from the wrong
        # place or nothing at all.
        self.reader.close()
        self.reader = KafkaConsumer(bootstrap_servers=self.bootstrap, api_version=API,
                                    enable_auto_commit=False, group_id=None)
        self.reader.assign(parts)
        for tp in parts:
            self.reader.seek(tp, self.next_offset.get(tp.partition, 0))
        ends = self.reader.end_offsets(parts)
        starts = self.reader.beginning_offsets(parts)
        check(all(starts[tp] <= self.next_offset.get(tp.partition, 0) for tp in parts),
              f"the mock cluster dropped downstream records (its retention: first "
              f"offsets {[starts[tp] for tp in parts]}): the oracle cannot read them")
        end = time.time() + DEADLINE_S
        while any(self.reader.position(tp) < ends[tp] for tp in parts):
            check(time.time() < end, "downstream could not be read to its end")
            for tp, records in self.reader.poll(timeout_ms=200).items():
                for r in records:
                    hdrs = {k: v.decode() for k, v in r.headers}
                    self.downstream.append((r.partition, r.offset, hdrs.get("Idempotency-Key"),
                                            r.value.decode(), hdrs))
                    self.next_offset[r.partition] = r.offset + 1
        return committed

    def check_none_lost(self):
        """Every key produced is downstream, and only those."""
        seen = {key for _, _, key, _, _ in self.downstream}
        lost = [k for k in self.first if k not in seen]
        check(not lost, f"{len(lost)} keys lost, e.g. {lost[:3]}")
        check(seen <= set(self.first), "downstream holds keys never produced")

    def verify(self, order=True):
        """Checks downstream: no key lost, none written by two runs, none
        written twice by one run. Sets later_copies, inversions (records
        behind a later one of their source partition) and inverted (their
        source partitions and offsets); with order, requires no inversion."""
        counts, runs, sends = {}, {}, {}
        for _, _, key, value, hdrs in self.downstream:
            counts[key] = counts.get(key, 0) + 1
            runs.setdefault(key, []).append(hdrs.get("kdedup-run"))
            sends.setdefault(key, []).append(hdrs.get("kdedup-forwarded-at"))
        lost = [k for k in self.first if k not in counts]
        # Copies from different runs are duplicates across a restart or a
        # move; copies from one run are a delivery sent again (a retry the
        # broker kept, or kdedup resending what may already be there),
        # unless they share their kdedup-forwarded-at: then they are one
        # produce call appended twice, by librdkafka 2.0.2's idempotent
        # producer after a permanent error of another batch (librdkafka
        # #4953, RELIABILITY "Where the promise stops"), counted apart as
        # chaos_test does; the transactional mode allows none.
        dups = {k: r for k, r in runs.items() if len(set(r)) > 1}
        same_run = {k: r for k, r in runs.items() if len(r) > len(set(r))}
        self.producer_duplicates = 0
        if os.environ.get("KD_DELIVERY") != "transactional":
            for k in list(same_run):
                if len(set(sends[k])) == 1:
                    self.producer_duplicates += 1
                    del same_run[k]
        check(not lost, f"{len(lost)} keys lost, e.g. {lost[:3]}")
        check(not dups, f"{len(dups)} keys forwarded by two runs, e.g. {list(dups.items())[:2]}")
        check(not same_run, f"{len(same_run)} keys written twice by one run, e.g. "
              f"{list(same_run)[:3]}")
        check(set(counts) <= set(self.first), "downstream holds keys never produced")
        self.later_copies = 0
        for _, _, key, value, hdrs in self.downstream:
            # A copy's payload with its own headers. It is the first copy's,
            # unless the first one's delivery failed for good and its claim
            # was released while a later copy was waiting: then that one.
            check(value.startswith(key + " ") and value in self.copies,
                  f"{key}: payload changed: {value!r}")
            check(hdrs.get("trace") in self.copies[value], f"{key}: trace header changed")
            self.later_copies += hdrs.get("trace") != self.first[key][1]
            check(hdrs.get("kdedup-source", "").startswith(SRC + "/"), f"{key}: no source header")
        # Per source partition, source offsets only grow within a downstream partition.
        last, self.inversions, self.inverted = {}, 0, []
        for part, _, key, _, hdrs in sorted(self.downstream, key=lambda d: (d[0], d[1])):
            _, src_part, src_off = hdrs["kdedup-source"].rsplit("/", 2)
            k = (part, src_part)
            if int(src_off) <= last.get(k, -1) and counts[key] == 1:
                self.inversions += 1
                self.inverted.append((int(src_part), int(src_off)))
                check(not order, f"order broken in {DST}/{part} for source partition {src_part}")
            last[k] = max(last.get(k, -1), int(src_off))

    def check_receipts(self, *stores):
        """Reads every key's state in each stopped kdedup's store: every
        key is completed in at least one, and every receipt names a
        downstream record that carries the key and came from where the
        receipt says. Returns the number of receipts checked."""
        at = {(p, o): (key, hdrs.get("kdedup-source")) for p, o, key, _, hdrs in self.downstream}
        done, checked = set(), 0
        for kd in stores:
            for key, (state, receipt) in lookup(kd, list(self.first)).items():
                if state != "completed":
                    continue
                m = RECEIPT.fullmatch(receipt or "")
                check(m, f"{key}: receipt {receipt!r} unreadable")
                to, part, off, src, src_part, src_off = m.groups()
                rec = at.get((int(part), int(off)))
                check(to == DST and rec and rec[0] == key,
                      f"{key}: receipt {receipt!r} names a record of {rec and rec[0]!r}")
                check(rec[1] == f"{src}/{src_part}/{src_off}",
                      f"{key}: receipt {receipt!r}, record from {rec[1]}")
                done.add(key)
                checked += 1
        missing = [k for k in self.first if k not in done]
        check(not missing, f"{len(missing)} keys without a receipt, e.g. {missing[:3]}")
        return checked


def shut_down(mock, world, *sidecars):
    """Stops what a test started: the sidecars still running, the world's
    clients, the mock cluster."""
    for kd in sidecars:
        if kd.proc and kd.proc.poll() is None:
            kd.signal(signal.SIGTERM)
    world.reader.close()
    world.producer.close()
    mock.stop()

