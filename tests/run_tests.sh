#!/usr/bin/env bash
# Runs each test binary given, each bounded in time, and ends with one
# summary line: "N passed, N failed". Exits non-zero if any binary failed.
set -u
passed=0
failed=0
for t in "$@"; do
  echo "=== $(basename "$t")"
  if timeout "${TEST_TIMEOUT:-600}" "$t"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $t (exit $?)"
    failed=$((failed + 1))
  fi
done
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
