#!/usr/bin/env bash
# README's quickstart, run as written: the shell block between
# <!-- quickstart:begin --> and <!-- quickstart:end --> in bash, from the
# repository's root, in a process group of its own (killed at the end,
# whatever happened), bounded to 180 s. Its output must show one message
# forwarded, one duplicate, and `kdedup lookup` naming each route.
# Ends with "quickstart: N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
OUT=${BUILD:-build}/docs
passed=0
failed=0
ok() { echo "PASS $*"; passed=$((passed + 1)); }
ko() { echo "FAIL $*"; failed=$((failed + 1)); }
mkdir -p "$OUT"

sed -n '/^<!-- quickstart:begin -->$/,/^<!-- quickstart:end -->$/p' README.md \
  | sed '1,2d;$d' | sed '$d' >"$OUT/quickstart.sh"
if [ "$(wc -l <"$OUT/quickstart.sh")" -lt 10 ] || grep -q '^```' "$OUT/quickstart.sh"; then
  ko "README has no quickstart block between its markers"
else
  ok "README's quickstart: $(grep -cv '^\s*\(#\|$\)' "$OUT/quickstart.sh") command lines"
fi
if ss -ltn 2>/dev/null | grep -q ':9464 '; then
  ko "port 9464 (the quickstart's) is taken on this machine"
else
  setsid bash -e "$OUT/quickstart.sh" >"$OUT/quickstart.out" 2>&1 &
  pid=$!
  for _ in $(seq 1800); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    ko "the quickstart did not end within 180 s: $(tail -3 "$OUT/quickstart.out")"
  fi
  kill -TERM -- "-$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  out=$(cat "$OUT/quickstart.out")
  [ "$rc" = 0 ] && ok "it runs to its end (exit 0)" || ko "it exited $rc: $(tail -5 "$OUT/quickstart.out")"
  grep -qx 'kdedup_messages_forwarded_total{route="orders"} 1' <<<"$out" \
    && ok "one forwarded" || ko "not one forwarded: $out"
  dups=$(sed -n 's/^kdedup_duplicates_total{route="orders",state="[a-z_]*"} //p' <<<"$out" \
         | awk '{ n += $1 } END { print n + 0 }')
  [ "$dups" = 1 ] && ok "one duplicate" || ko "duplicates: ${dups:-none}"
  grep -q '^{"route":"orders","key":"order-42","state":"completed","receipt":"v1 to=orders.deduped/' \
    <<<"$out" && ok "lookup: completed on orders" || ko "lookup on orders: $out"
  grep -qx '{"route":"payments","key":"order-42","state":"absent"}' <<<"$out" \
    && ok "lookup: absent on payments" || ko "lookup on payments: $out"
fi
echo "quickstart: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
