#!/usr/bin/env bash
# Runs each test binary given (under $TEST_WRAPPER, if set), each bounded in
# time, and ends with one summary line: "tests: N passed, N failed". Exits
# non-zero if any binary failed.
set -u
passed=0
failed=0
for t in "$@"; do
  echo "=== $(basename "$t")"
  # shellcheck disable=SC2086 # TEST_WRAPPER is a command line
  if timeout "${TEST_TIMEOUT:-900}" ${TEST_WRAPPER:-} "$t"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $t (exit $?)"
    failed=$((failed + 1))
  fi
done
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
