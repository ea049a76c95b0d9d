#!/usr/bin/env bash
# Every line of tests/mutate/mutations.jsonl still applies to the code (its
# `find` is one whole line of its file): a mutation whose code moved would
# otherwise be found out only by the next `make mutate`.
cd "$(dirname "$0")/../.." && exec /usr/bin/python3 tests/mutate/mutate.py --check
