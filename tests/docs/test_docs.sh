#!/usr/bin/env bash
# The docs a clone has: docs/architecture.md and its diagram, rendered from
# docs/architecture.dot by graphviz; nothing cites a design document outside
# the repository. Ends with "docs: N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
OUT=${BUILD:-build}/docs
passed=0
failed=0
ok() { echo "PASS $*"; passed=$((passed + 1)); }
ko() { echo "FAIL $*"; failed=$((failed + 1)); }
mkdir -p "$OUT"

if ! command -v dot >/dev/null; then
  ko "graphviz dot is not installed (make deps installs it)"
elif dot -Tpng docs/architecture.dot -o "$OUT/architecture.png" 2>"$OUT/dot.err" &&
     [ "$(head -c 8 "$OUT/architecture.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
  ok "docs/architecture.dot renders to a PNG ($(stat -c %s "$OUT/architecture.png") bytes)"
else
  ko "docs/architecture.dot does not render: $(head -3 "$OUT/dot.err")"
fi
# A broken graph is caught.
sed 's/->/=>/' docs/architecture.dot >"$OUT/broken.dot"
if dot -Tpng "$OUT/broken.dot" -o "$OUT/broken.png" 2>/dev/null; then
  ko "a broken graph rendered"
else ok "a broken graph is refused"; fi
# The committed image is a PNG, and not older than its source in git.
if [ "$(head -c 8 docs/architecture.png | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
  ok "docs/architecture.png is a PNG"
else ko "docs/architecture.png is not a PNG"; fi
grep -q '(architecture.png)' docs/architecture.md && ok "docs/architecture.md shows the diagram" \
  || ko "docs/architecture.md does not show architecture.png"
# (this file names the pattern it looks for, in two halves)
cited='shared/DESIGN''.md\|DESIGN''\.md §'
before=$failed
for f in README.md RELIABILITY.md BENCHMARKS.md $(git ls-files '*.c' '*.h' '*.py' '*.sh'); do
  if grep -q "$cited" "$f"; then ko "$f cites a design document outside the repository"; fi
done
[ "$failed" -eq "$before" ] && ok "no file cites a design document outside the repository"
echo "docs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
