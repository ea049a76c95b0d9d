#!/usr/bin/env bash
# Runs a command against a fresh Apache Kafka cluster of its own:
#   tests/kafka/with_kafka.sh NODES COMMAND [ARGS...]
# starts NODES (1 or 3) KRaft nodes with tests/kafka/rig.py in a folder of
# their own, runs the command with KDEDUP_BOOTSTRAP and KDEDUP_KAFKA_DIR set,
# stops the cluster whatever happens, and exits with the command's status.
# For a mutation's test, or one suite by hand.
set -u
cd "$(dirname "$0")/../.."
nodes=$1
shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/kdedup-with-kafka-XXXXXX")
export KDEDUP_KAFKA_DIR=$dir
trap '/usr/bin/python3 tests/kafka/rig.py down 2>/dev/null; rm -rf "$dir"' EXIT
KDEDUP_BOOTSTRAP=$(/usr/bin/python3 tests/kafka/rig.py up --nodes "$nodes") || exit 1
export KDEDUP_BOOTSTRAP
"$@"
