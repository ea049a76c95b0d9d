#!/usr/bin/env bash
# `make test-kafka`: the end-to-end suites against Apache Kafka. A fresh
# single node (tests/kafka/rig.py) for e2e, seams, keys, admin and security;
# then a fresh three-node cluster (replication factor 3, min.insync.replicas
# 2) for faults and chaos, with the faults only a real cluster has. Each
# suite takes the broker from KDEDUP_BOOTSTRAP. The clusters are stopped on
# exit, whatever happens. Ends with "test-kafka: N passed, N failed".
#
# KAFKA_SUITES1 / KAFKA_SUITES3 choose the suites (names in tests/e2e/),
# KAFKA_TXN_SUITES1 / KAFKA_TXN_SUITES3 those run again in the transactional
# delivery mode; KD_CHAOS_SEEDS the chaos seeds (two by default here: `make
# chaos-kafka` runs many), KD_TXN_CHAOS_SEEDS those of the transactional run
# (the first of them by default).
set -u
cd "$(dirname "$0")/../.."
: "${KDEDUP:=build/kdedup}"
: "${BUILD:=build}"
: "${KAFKA_SUITES1=e2e_test seams_test keys_test admin_test security_test stall_test}"
: "${KAFKA_SUITES3=faults_test chaos_test}"
# ...and in the transactional delivery mode (KD_DELIVERY): the zombie test
# (which the default mode fails: its documented limit), e2e, admin (a forget
# record is written outside the transactions), a killed replica's open
# transaction (the mode's own), and chaos.
: "${KAFKA_TXN_SUITES1=zombie_test e2e_test admin_test hanging_txn_test}"
# faults_test in this mode (KAFKA_TXN_SUITES3="faults_test chaos_test") is
# not in make test: 2 of 2 by hand once the refused-writes fault let the
# transaction markers through, then in a make test run its broker faults
# timed out waiting for the silenced leader's sign (an aborted
# transaction) (RELIABILITY, "The transactional mode"). On 2026-12-07 that
# came in 2 runs of 3: the loop waited in the transaction's offsets
# request while the coordinator was silent, so nothing timed out; with that
# wait (or a lost session) taken as the sign, 3 of 3 (broker faults and
# late writes each). Back in make test once more runs agree.
: "${KAFKA_TXN_SUITES3=chaos_test}"
# faults_test's phases when run in the transactional mode (late_writes_lost
# looks for the default mode's notes of uncertain deliveries)
: "${KD_TXN_FAULTS:=broker_faults,late_writes}"
: "${KD_CHAOS_SEEDS:=101 102}"
: "${KD_TXN_CHAOS_SEEDS:=${KD_CHAOS_SEEDS%% *}}"
export KDEDUP KD_CHAOS_SEEDS
rig=tests/kafka/rig.py
one=$PWD/$BUILD/kafka-test-1
three=$PWD/$BUILD/kafka-test-3
passed=0
failed=0

stop_all() {
  KDEDUP_KAFKA_DIR=$one /usr/bin/python3 $rig down 2>/dev/null
  KDEDUP_KAFKA_DIR=$three /usr/bin/python3 $rig down 2>/dev/null
}
trap stop_all EXIT

run_suites() { # dir, delivery mode ("" for the default), suites...
  local dir=$1 mode=$2 seeds=$KD_CHAOS_SEEDS
  shift 2
  [ -n "$mode" ] && seeds=$KD_TXN_CHAOS_SEEDS
  for s in "$@"; do
    echo "=== $s (Apache Kafka at $(cat "$dir/bootstrap")${mode:+, delivery $mode})"
    # shellcheck disable=SC2086 # KD_FAULTS=... or nothing
    if env ${mode:+KD_FAULTS=$KD_TXN_FAULTS} \
        KDEDUP_KAFKA_DIR="$dir" KDEDUP_BOOTSTRAP="$(cat "$dir/bootstrap")" KD_DELIVERY="$mode" \
        KD_CHAOS_SEEDS="$seeds" \
        timeout "${TEST_TIMEOUT:-1500}" /usr/bin/python3 "tests/e2e/$s.py"; then
      passed=$((passed + 1))
    else
      echo "FAILED: $s on Apache Kafka${mode:+ ($mode)} (exit $?)"
      failed=$((failed + 1))
    fi
  done
}

if [ -n "$KAFKA_SUITES1$KAFKA_TXN_SUITES1" ]; then
  KDEDUP_KAFKA_DIR=$one /usr/bin/python3 $rig up --nodes 1 >/dev/null || exit 1
  # shellcheck disable=SC2086 # lists of names
  run_suites "$one" "" $KAFKA_SUITES1
  # shellcheck disable=SC2086
  run_suites "$one" transactional $KAFKA_TXN_SUITES1
  KDEDUP_KAFKA_DIR=$one /usr/bin/python3 $rig down
fi
if [ -n "$KAFKA_SUITES3$KAFKA_TXN_SUITES3" ]; then
  KDEDUP_KAFKA_DIR=$three /usr/bin/python3 $rig up --nodes 3 >/dev/null || exit 1
  # shellcheck disable=SC2086
  run_suites "$three" "" $KAFKA_SUITES3
  # shellcheck disable=SC2086
  run_suites "$three" transactional $KAFKA_TXN_SUITES3
fi
echo "test-kafka: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
