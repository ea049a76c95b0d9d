#!/usr/bin/python3
"""`kdedup demo` as README's first command runs it: duplicates are retries
(same key, same payload) and the few key conflicts it sends on purpose are
counted apart in its summary; the conflicts' warnings are few.

Run with Debian's interpreter: KDEDUP=build/kdedup /usr/bin/python3 tests/e2e/demo_test.py
"""
import os
import re
import subprocess
import sys

KDEDUP = os.environ.get("KDEDUP", "build/kdedup")


def row(out, label):
    m = re.search(rf"^  {label} +(\d+)", out, re.M)
    return int(m.group(1)) if m else None


def main():
    passed = failed = 0

    def check(cond, what):
        nonlocal passed, failed
        print(f"{'PASS' if cond else 'FAIL'} {what}", flush=True)
        passed += bool(cond)
        failed += not cond

    p = subprocess.run([KDEDUP, "demo", "--messages", "6000", "--duplicates", "30",
                        "--conflicts", "7", "--partitions", "4"],
                       capture_output=True, text=True, timeout=300)
    out, err = p.stdout, p.stderr
    print(out, end="")
    check(p.returncode == 0 and "OK: every unique key downstream exactly once" in out,
          f"the demo passes (exit {p.returncode})")
    sent = re.search(r"retries suppressed +(\d+) +\(same key, same payload: (\d+) sent\)", out)
    check(sent and int(sent.group(1)) == int(sent.group(2)) > 1000,
          f"retries suppressed, as many as sent: {sent and sent.groups()}")
    check(row(out, "key conflicts") == 7, f"key conflicts counted apart: {row(out, 'key conflicts')}")
    check(row(out, "forwarded") == row(out, "unique keys produced"),
          "forwarded = unique keys")
    check(row(out, "consumed") == 6000, f"consumed {row(out, 'consumed')}")
    warns = [ln for ln in err.splitlines() if '"key conflict' in ln]
    check(1 <= len(warns) <= 7, f"{len(warns)} key conflict warnings for 7 conflicts")
    print(f"demo: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
