#!/usr/bin/python3
"""Mutation testing: breaks the code one line at a time and checks that the
tests named for each break catch it.

Each line of tests/mutate/mutations.jsonl is one mutation: `file`, the exact
text of one line in it (`find`, which must occur exactly once), its
`replace`ment, and the `test` command (run from the repository's root with
KDEDUP set) that must fail on the mutated build. A guard backed by a second
one (defence in depth) is broken together with it: `also` lists further
{file, find, replace} edits applied with the first. For each: apply, build,
run the test RUNS (3) times, restore. A mutation is caught only when its test
failed every time: one that passes once is reported "MISSED (caught k of
3)". A line with "counts": false (and a "why") is a known nondeterministic
catch: it is run and reported, "not counted", and neither passes nor fails
the table. The tree is restored even when interrupted, and rebuilt at the
end. Prints one line per mutation and a summary; exits 1 when any counted
mutation survived (was not caught every time) or could not be applied.

Usage: tests/mutate/mutate.py [NAME-SUBSTRING ...]
       tests/mutate/mutate.py --check   (every line's edits apply: `make test`)
"""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(ROOT, "tests", "mutate", "mutations.jsonl")
BUILD = ["make", "--no-print-directory", "-j2", "build-all"]
TIMEOUT_S = 900
RUNS = 3


def run(cmd, shell=False):
    return subprocess.run(cmd, shell=shell, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=TIMEOUT_S,
                          env=dict(os.environ, KDEDUP="build/kdedup")).returncode


def edits_of(m):
    """The mutation's edits: (file, find, replace), the first one first."""
    return [(e["file"], e["find"], e["replace"]) for e in [m] + m.get("also", [])]


def mutate(m):
    """'caught', 'MISSED', or why it could not be tried."""
    originals = {}
    try:
        for file, find, replace in edits_of(m):
            path = os.path.join(ROOT, file)
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
        if run(BUILD) != 0:
            return "NOT APPLIED (does not build)"
        for i in range(RUNS):
            try:
                rc = run(m["test"], shell=True)
            except subprocess.TimeoutExpired:
                rc = -1
            if rc == 0:
                return f"MISSED (caught {i} of {RUNS})"
        return "caught"
    finally:
        for path, original in originals.items():
            with open(path, "w") as f:
                f.write(original)


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


def main():
    with open(TABLE) as f:
        table = [json.loads(line) for line in f if line.strip()]
    if sys.argv[1:] == ["--check"]:
        return check_table(table)
    wanted = sys.argv[1:]
    table = [m for m in table if not wanted or any(w in m["name"] for w in wanted)]
    files = sorted({e[0] for m in table for e in edits_of(m)})
    check = run(["git", "diff", "--quiet", "--"] + files)
    if check != 0:
        print("mutate: the files to mutate have uncommitted changes; commit them first")
        return 2
    if run(BUILD) != 0:
        print("mutate: the tree does not build")
        return 2
    caught = uncounted = 0
    try:
        for m in table:
            t0 = time.time()
            result = mutate(m)
            if m.get("counts", True):
                caught += result == "caught"
            else:
                uncounted += 1
                result = f"not counted: {result}"
            print(f"{result:<28} {time.time() - t0:6.0f}s  {m['name']}  [{m['file']}]",
                  flush=True)
    finally:
        run(BUILD)
    counted = len(table) - uncounted
    print(f"mutate: {caught} caught ({RUNS} runs of {RUNS}), {counted - caught} not caught,"
          f" of {counted}" + (f"; {uncounted} not counted" if uncounted else ""))
    return 0 if caught == counted else 1


if __name__ == "__main__":
    sys.exit(main())
