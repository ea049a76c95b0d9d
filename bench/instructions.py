#!/usr/bin/python3
"""Instructions per consumed message, kdedup against the passthrough, counted
by valgrind's callgrind (deterministic: the same binary and inputs give the
same counts whatever else the machine does).

The method of ../shared/PERF-PROFILE.md: bench_e2e runs each side once (one
round, 10^4 keys stored, fingerprints on, librdkafka statistics off, the
producers' linger.ms scaled to valgrind's slowdown: kdedup 200 ms, the
passthrough 100 ms) under callgrind, for two message counts; the marginal
cost per message is (instructions of the larger run - those of the smaller)
/ the difference in messages, over all threads of the child process, so
start-up, group join and shutdown cancel out. The mock cluster runs in a
process of its own and is not counted.

    bench/instructions.py [--messages N1,N2] [--signing] [--check FILE]
                          [--record FILE] [--tolerance PCT]

Prints both counts and the ratio. --check compares with the figures in FILE
(JSON, as --record writes, for the same --messages and --signing) and exits
1 when either side's count grew by more than --tolerance percent (10); the
ratio is printed, not checked (it carries both sides' noise). --record
writes them. `make bench-instructions` runs 200000,50000 without and with
signing (bench/instructions.json, bench/instructions-signing.json); `make
test` a small form, 60000,20000 (tests/perf/instructions_test.sh,
bench/instructions-small.json).

Repeatable, not exact: the work driven by time (idle polls, how many
messages a fetch or a produce request carries, the allocator's state)
varies from run to run, and with the machine's load. Two runs of the small
form back to back agreed within 0.2% (kdedup) and 0.8% (the passthrough);
with two more callgrind runs beside it the passthrough counted up to 6%
less (bigger batches when starved, never more work). 40000,10000 was worse
(1.8% and 3.6% apart: its larger run ends about when RocksDB's first
memtable flush starts, so a flush is in it or not), and so was 20000,5000
(up to 4% for the passthrough). The larger run of the small form makes one
flush, the smaller none.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
BENCH = os.path.join(BUILD, "bench", "bench_e2e")
TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.M)


def count(messages, signing, work):
    """{"A": instructions, "B": instructions} of one bench_e2e run."""
    out = os.path.join(work, f"cg.{messages}")
    os.makedirs(out, exist_ok=True)
    wrap = (f"valgrind --tool=callgrind --callgrind-out-file={out}/cg.%q{{BENCH_SIDE}} "
            "--dump-instr=no --collect-jumps=no -q")
    args = [BENCH, "--messages", str(messages), "--stored", "10000", "--rounds", "1",
            "--stats", "off", "--linger", "200,100", "--wrap", wrap,
            "--dir", os.path.join(work, f"run.{messages}")]
    if signing:
        args += ["--signing-key", "bench-signing-secret-0123456789abcdef"]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                       env=dict(os.environ, KDEDUP=os.path.join(BUILD, "kdedup")))
    if r.returncode != 0:
        sys.exit(f"instructions: bench_e2e failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    counts = {}
    for side in ("A", "B"):
        with open(os.path.join(out, f"cg.{side}")) as f:
            m = TOTALS.search(f.read())
        if not m:
            sys.exit(f"instructions: no totals in {out}/cg.{side}")
        counts[side] = int(m.group(1))
    return counts


def compare(got, check, tolerance):
    """0 when got (as --record writes) is within tolerance percent of the
    figures in the file check, else 1; prints which."""
    with open(check) as f:
        want = json.load(f)
    if want.get("messages") != got["messages"] or want.get("signing") != got["signing"]:
        print(f"instructions: {check} holds figures for --messages "
              f"{want.get('messages')}, signing {want.get('signing')}: not comparable")
        return 1
    worse = [k for k in ("kdedup", "passthrough")
             if got[k] > want[k] * (1 + tolerance / 100)]
    if worse:
        print(f"instructions: REGRESSION over {tolerance:.0f}% against {check} "
              f"({', '.join(f'{k} {want[k]} -> {got[k]}' for k in worse)})")
        return 1
    print(f"instructions: within {tolerance:.0f}% of {check} (kdedup {want['kdedup']:,}, "
          f"passthrough {want['passthrough']:,})")
    return 0


def main(argv):
    n1, n2, signing, check, record, tolerance = 200000, 50000, False, None, None, 10.0
    args = argv[1:]
    while args:
        a = args.pop(0)
        if a == "--messages":
            n1, n2 = (int(x) for x in args.pop(0).split(","))
        elif a == "--signing":
            signing = True
        elif a == "--check":
            check = args.pop(0)
        elif a == "--record":
            record = args.pop(0)
        elif a == "--tolerance":
            tolerance = float(args.pop(0))
        else:
            sys.exit(__doc__)
    if n1 <= n2:
        sys.exit("instructions: --messages N1,N2 needs N1 > N2")
    with tempfile.TemporaryDirectory(prefix="kdedup-instr-") as work:
        big, small = count(n1, signing, work), count(n2, signing, work)
    per = {side: (big[side] - small[side]) / (n1 - n2) for side in ("A", "B")}
    got = {"kdedup": round(per["A"]), "passthrough": round(per["B"]),
           "ratio": round(per["A"] / per["B"], 3), "messages": [n1, n2],
           "signing": signing}
    print(f"instructions per message ({n1} - {n2} messages{', signing on' if signing else ''}):"
          f" kdedup {got['kdedup']:,}, passthrough {got['passthrough']:,}, "
          f"ratio {got['ratio']:.2f}x")
    if record:
        with open(record, "w") as f:
            json.dump(got, f, indent=1)
            f.write("\n")
    return compare(got, check, tolerance) if check else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
