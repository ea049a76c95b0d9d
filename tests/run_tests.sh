#!/usr/bin/env bash
# Runs each test given (under $TEST_WRAPPER, if set), each bounded in time
# (TEST_TIMEOUT, 900 s), and ends with one summary line: "tests: N passed,
# N failed". Exits non-zero if any test failed.
#
# TEST_JOBS (1) tests run at a time, started in the order given (so give the
# longest first); with more than one, each test's output is kept and printed
# whole when it ends, with its wall time, so outputs do not interleave.
set -u
passed=0
failed=0
jobs_max=${TEST_JOBS:-1}

# Counts test $1's exit code $2.
count() {
  if [ "$2" -eq 0 ]; then
    passed=$((passed + 1))
  else
    echo "FAILED: $1 (exit $2)"
    failed=$((failed + 1))
  fi
}

run_one() {
  # shellcheck disable=SC2086 # TEST_WRAPPER is a command line
  timeout "${TEST_TIMEOUT:-900}" ${TEST_WRAPPER:-} "$1"
}

if [ "$jobs_max" -le 1 ]; then
  for t in "$@"; do
    echo "=== $(basename "$t")"
    run_one "$t"
    count "$t" $?
  done
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  declare -A test_of start_of
  running=0
  # Waits for any running test, prints its output whole and counts it.
  reap() {
    local pid rc
    wait -n -p pid
    rc=$?
    echo "=== $(basename "${test_of[$pid]}") ($(($(date +%s) - start_of[$pid])) s)"
    cat "$tmp/$pid"
    count "${test_of[$pid]}" "$rc"
    running=$((running - 1))
  }
  for t in "$@"; do
    while [ "$running" -ge "$jobs_max" ]; do reap; done
    run_one "$t" >"$tmp/next" 2>&1 &
    mv "$tmp/next" "$tmp/$!"
    test_of[$!]=$t
    start_of[$!]=$(date +%s)
    running=$((running + 1))
  done
  while [ "$running" -gt 0 ]; do reap; done
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
