#!/usr/bin/env bash
# make test's guard on the instructions per message (issue 29): the small
# form of `make bench-instructions` (bench/instructions.py, callgrind, the
# marginal cost of 60,000 messages over 20,000, with the passthrough in the
# same run) against the figures checked in at bench/instructions-small.json.
# Fails when kdedup's count, the passthrough's or their ratio grew by more
# than 10%. The counts are those of the default build (-O2, no sanitizer):
# after a deliberate change, record new ones with
#   /usr/bin/python3 bench/instructions.py --messages 60000,20000 \
#       --record bench/instructions-small.json
# Starts a mock cluster: run it under the test lock.
set -u
cd "$(dirname "$0")/../.."
if ! command -v valgrind >/dev/null; then
  echo "FAIL valgrind is not installed (make deps installs it)"
  exit 1
fi
exec nice -n 19 /usr/bin/python3 bench/instructions.py --messages 60000,20000 \
  --check bench/instructions-small.json
