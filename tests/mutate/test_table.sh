#!/usr/bin/env bash
# Every line of tests/mutate/mutations.jsonl still applies to the code (its
# `find` is one whole line of its file): a mutation whose code moved would
# otherwise be found out only by the next `make mutate`. And mutate.py's
# scheduling (test_schedule.py: a fake run, nothing built).
cd "$(dirname "$0")/../.." &&
    /usr/bin/python3 tests/mutate/test_schedule.py &&
    exec /usr/bin/python3 tests/mutate/mutate.py --check
