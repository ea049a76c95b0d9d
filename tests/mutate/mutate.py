#!/usr/bin/python3
"""Mutation testing: breaks the code one line at a time and checks that the
tests named for each break catch it.

Each line of tests/mutate/mutations.jsonl is one mutation: `file`, the exact
text of one line in it (`find`, which must occur exactly once), its
`replace`ment, and the `test` command (run from the root of the tree with
KDEDUP set) that must fail on the mutated build. A guard backed by a second
one (defence in depth) is broken together with it: `also` lists further
{file, find, replace} edits applied with the first. For each: apply, build,
run the test RUNS (3) times, restore. A mutation is caught only when its test
failed every time: one that passes once is reported "MISSED (caught k of
3)". A line with "counts": false (and a "why") is a known nondeterministic
catch: it is run and reported, "not counted", and neither passes nor fails
the table. Prints one line per mutation as it ends, and a summary; exits 1
when any counted mutation survived (was not caught every time) or could not
be applied.

With --jobs 1 (the default) the mutations run one at a time in this
checkout, which is restored even when interrupted, and rebuilt at the end.
With --jobs N, N run side by side, each worker in a copy of its own: a git
worktree of HEAD under build/mutate/w<i> (so this checkout must have no
uncommitted changes but to the table, and is never edited), its build/
copied from this checkout's and its files given this checkout's times, so
that make rebuilds only what a mutation changes. The copies are removed at
the end, on an interrupt (Ctrl-C, or SIGTERM: kill), and (left by an
interrupted run) at the start.
Tests that start Apache Kafka (tests/kafka/with_kafka.sh) run one at a time
(a lock on build/mutate/kafka.lock); the others run freely. They take most
of a whole run, so a worker takes the next of them whenever none is taken,
and the others meanwhile take the rest in the table's order.

Usage: tests/mutate/mutate.py [--jobs N] [NAME-SUBSTRING ...]
       tests/mutate/mutate.py --check   (every line's edits apply: `make test`)
"""
import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(ROOT, "tests", "mutate", "mutations.jsonl")
WORKERS = os.path.join(ROOT, "build", "mutate")
BUILD = ["make", "--no-print-directory", "-j2", "build-all"]
TIMEOUT_S = 900
GRACE_S = 60  # for a command interrupted (Ctrl-C) to end before it is killed
RUNS = 3

LOCK = threading.Lock()  # RUNNING, STOP's setting, the next mutation, the tally
RUNNING = set()  # the commands (Popen) running now, each leading a process group
STOP = threading.Event()  # interrupted: no command starts any more


def quiet(cmd, check=False):
    """cmd's exit status, run in this checkout, its output dropped."""
    return subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=TIMEOUT_S, check=check).returncode


def end(p):
    """Interrupts p's process group as Ctrl-C would; kills it if it is still
    there GRACE_S later."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return p.wait(GRACE_S)


def run(cmd, tree, shell=False):
    """cmd's exit status, run in tree with KDEDUP set, in a process group of
    its own (ended on a timeout, which is raised); -1 once interrupted."""
    with LOCK:
        if STOP.is_set():
            return -1
        p = subprocess.Popen(cmd, shell=shell, cwd=tree, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True,
                             env=dict(os.environ, KDEDUP="build/kdedup"))
        RUNNING.add(p)
    try:
        return p.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        end(p)
        raise
    finally:
        with LOCK:
            RUNNING.discard(p)


def on_kafka(m):
    """True when m's test starts Apache Kafka (one such test at a time)."""
    return "tests/kafka/with_kafka.sh" in m["test"]


def edits_of(m):
    """The mutation's edits: (file, find, replace), the first one first."""
    return [(e["file"], e["find"], e["replace"]) for e in [m] + m.get("also", [])]


def mutate(m, tree):
    """'caught', 'MISSED', or why it could not be tried, in tree."""
    originals = {}
    try:
        for file, find, replace in edits_of(m):
            path = os.path.join(tree, file)
            if path not in originals:
                with open(path) as f:
                    originals[path] = f.read()
            with open(path) as f:
                lines = f.read().split("\n")
            hits = [i for i, line in enumerate(lines) if line == find]
            if len(hits) != 1:
                return f"NOT APPLIED ({len(hits)} lines match in {file})"
            lines[hits[0]] = replace
            with open(path, "w") as f:
                f.write("\n".join(lines))
        if run(BUILD, tree) != 0:
            return "NOT APPLIED (does not build)"
        with open(os.path.join(WORKERS, "kafka.lock"), "w") as lock:
            if on_kafka(m):
                fcntl.flock(lock, fcntl.LOCK_EX)  # one Apache Kafka cluster at a time
            for i in range(RUNS):
                try:
                    rc = run(m["test"], tree, shell=True)
                except subprocess.TimeoutExpired:
                    rc = -1
                if rc == 0:
                    return f"MISSED (caught {i} of {RUNS})"
        return "caught"
    finally:
        for path, original in originals.items():
            with open(path, "w") as f:
                f.write(original)


def remove_workers():
    """Removes every worker's copy under build/mutate, this run's or a stale one."""
    for name in os.listdir(WORKERS):
        if name.startswith("w"):
            quiet(["git", "worktree", "remove", "--force", os.path.join(WORKERS, name)])
            shutil.rmtree(os.path.join(WORKERS, name), ignore_errors=True)
    quiet(["git", "worktree", "prune"])


def add_workers(jobs):
    """jobs worktrees of HEAD, with this checkout's build/ and file times."""
    remove_workers()
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split("\0")[:-1]
    seed = [os.path.join(ROOT, "build", n) for n in os.listdir(os.path.join(ROOT, "build"))
            if n != "mutate"]
    trees = [os.path.join(WORKERS, f"w{i}") for i in range(jobs)]
    for tree in trees:
        quiet(["git", "worktree", "add", "--detach", tree, "HEAD"], check=True)
        # git wrote the files now, after every object copied: without this
        # step make would rebuild the whole tree once per worker.
        for path in tracked:
            st = os.stat(os.path.join(ROOT, path), follow_symlinks=False)
            os.utime(os.path.join(tree, path), ns=(st.st_atime_ns, st.st_mtime_ns),
                     follow_symlinks=False)
        os.mkdir(os.path.join(tree, "build"))
        quiet(["cp", "-a"] + seed + [os.path.join(tree, "build")], check=True)
    return trees


def run_all(table, trees, report):
    """One worker per tree, each taking the next mutation until none is
    left; on an interrupt, what runs is interrupted (then killed)."""
    kafka = [m for m in table if on_kafka(m)]
    other = [m for m in table if not on_kafka(m)]
    taken = [0]  # Apache Kafka mutations taken and not yet ended

    def take():
        """The next mutation, or None: the next Apache Kafka one when none
        is taken (they run one at a time and take longest), else the next
        other one, else (the others all taken) the next Apache Kafka one,
        which waits for the one running. Under LOCK."""
        if kafka and (not taken[0] or not other):
            taken[0] += 1
            return kafka.pop(0)
        return other.pop(0) if other else None
    # Released as each worker ends; not join(): Python 3.11's join(), when
    # interrupted, can mark a running thread as ended (bpo-45274's fix).
    ended = threading.Semaphore(0)

    def worker(tree):
        try:
            while True:
                with LOCK:
                    m = take()
                if m is None or STOP.is_set():
                    return
                t0 = time.time()
                try:
                    result = mutate(m, tree)
                finally:
                    if on_kafka(m):
                        with LOCK:
                            taken[0] -= 1
                if not STOP.is_set():
                    report(m, result, time.time() - t0)
        finally:
            ended.release()

    threads = [threading.Thread(target=worker, args=(tree,)) for tree in trees]
    for t in threads:
        t.start()
    try:
        for t in threads:
            ended.acquire()
    except BaseException:
        with LOCK:
            STOP.set()
            running = list(RUNNING)
        for p in running:
            end(p)
        for t in threads:
            t.join()
        raise


def check_table(table):
    """Without building or running anything: every edit's `find` is one
    whole line of its file, so that no mutation rots unnoticed when its code
    moves. Prints each that does not apply; 0 when all do."""
    bad = 0
    for m in table:
        for file, find, _ in edits_of(m):
            with open(os.path.join(ROOT, file)) as f:
                hits = f.read().split("\n").count(find)
            if hits != 1:
                bad += 1
                print(f"NOT APPLICABLE ({hits} lines match in {file}): {m['name']}")
    print(f"mutate --check: {len(table) - bad} of {len(table)} mutations apply")
    return 1 if bad else 0


def interrupted(signum, frame):
    """SIGTERM ends a run as Ctrl-C does (what runs is interrupted, the
    worker trees are removed): a run started in the background, whose
    SIGINT the shell ignores, can then be stopped with kill."""
    raise KeyboardInterrupt


def main():
    signal.signal(signal.SIGTERM, interrupted)
    with open(TABLE) as f:
        table = [json.loads(line) for line in f if line.strip()]
    if sys.argv[1:] == ["--check"]:
        return check_table(table)
    ap = argparse.ArgumentParser(description="Mutation testing (see the docstring).")
    ap.add_argument("--jobs", type=int, default=1, help="mutations at a time (default 1)")
    ap.add_argument("names", nargs="*", metavar="NAME-SUBSTRING")
    args = ap.parse_intermixed_args()
    table = [m for m in table if not args.names or any(w in m["name"] for w in args.names)]
    files = sorted({e[0] for m in table for e in edits_of(m)})
    if quiet(["git", "diff", "--quiet", "--"] + files) != 0:
        print("mutate: the files to mutate have uncommitted changes; commit them first")
        return 2
    if args.jobs > 1 and quiet(["git", "diff", "--quiet", "HEAD", "--", ".",
                                ":!tests/mutate/mutations.jsonl"]) != 0:
        print("mutate: --jobs tests copies of HEAD; commit the uncommitted changes first")
        return 2
    if quiet(BUILD) != 0:
        print("mutate: the tree does not build")
        return 2
    os.makedirs(WORKERS, exist_ok=True)
    tally = {"caught": 0, "uncounted": 0}

    def report(m, result, seconds):
        with LOCK:
            if m.get("counts", True):
                tally["caught"] += result == "caught"
            else:
                tally["uncounted"] += 1
                result = f"not counted: {result}"
            print(f"{result:<28} {seconds:6.0f}s  {m['name']}  [{m['file']}]", flush=True)

    try:
        run_all(table, add_workers(args.jobs) if args.jobs > 1 else [ROOT], report)
    except KeyboardInterrupt:
        print("mutate: interrupted", flush=True)
        return 130
    finally:
        if args.jobs > 1:
            remove_workers()
        else:
            quiet(BUILD)  # the restored files are newer than their objects
    caught, uncounted = tally["caught"], tally["uncounted"]
    counted = len(table) - uncounted
    print(f"mutate: {caught} caught ({RUNS} runs of {RUNS}), {counted - caught} not caught,"
          f" of {counted}" + (f"; {uncounted} not counted" if uncounted else ""))
    return 0 if caught == counted else 1


if __name__ == "__main__":
    sys.exit(main())
