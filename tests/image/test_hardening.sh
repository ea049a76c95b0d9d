#!/usr/bin/env bash
# The build's hardening, read off the binary with readelf (issue 26, item
# 12): a position-independent executable, full RELRO (a read-only GOT after
# start: GNU_RELRO and BIND_NOW), a stack that is not executable, the stack
# protector (__stack_chk_fail) and _FORTIFY_SOURCE (checked __*_chk
# variants of libc's functions). Ends with "hardening: N passed, N failed".
#
#   tests/image/test_hardening.sh [BINARY...]   (default: $KDEDUP, else build/kdedup)
#
# `make test` runs it on build/kdedup; tests/image/test_image.sh on the
# image's own (stripped) binary. A build with HARDEN=0 fails it; a sanitized
# one (SANITIZE=..., which turns the hardening off) is skipped.
set -u
cd "$(dirname "$0")/../.." || exit 1
[ $# -gt 0 ] || set -- "${KDEDUP:-build/kdedup}"
passed=0
failed=0
ok() { echo "PASS $*"; passed=$((passed + 1)); }
ko() { echo "FAIL $*"; failed=$((failed + 1)); }

command -v readelf >/dev/null || { echo "FAIL readelf missing (binutils)"; exit 1; }
for bin in "$@"; do
  if ! header=$(readelf -hW "$bin" 2>&1); then
    ko "$bin: not an ELF file: $header"
    continue
  fi
  dynamic=$(readelf -dW "$bin")
  if grep -Eq 'NEEDED.*\[lib(a|ub|t|l)san\.' <<<"$dynamic"; then
    echo "SKIP $bin: a sanitized build (SANITIZE=...), which is built without hardening"
    continue
  fi
  segments=$(readelf -lW "$bin")
  symbols=$(readelf --dyn-syms -W "$bin" | awk '$7 == "UND" { sub(/@.*/, "", $8); print $8 }')

  grep -q 'Type:[[:space:]]*DYN' <<<"$header" && grep -q 'FLAGS_1.*\bPIE\b' <<<"$dynamic" &&
    ok "$bin: a position-independent executable (PIE)" || ko "$bin: not PIE"
  grep -q '^[[:space:]]*GNU_RELRO' <<<"$segments" &&
    ok "$bin: GNU_RELRO segment" || ko "$bin: no GNU_RELRO segment (-Wl,-z,relro)"
  grep -Eq '\(FLAGS\).*\bBIND_NOW\b|\(FLAGS_1\).*\bNOW\b' <<<"$dynamic" &&
    ok "$bin: BIND_NOW (with GNU_RELRO: full RELRO)" || ko "$bin: no BIND_NOW (-Wl,-z,now)"
  stack=$(awk '$1 == "GNU_STACK" { print $7 }' <<<"$segments")
  [ "$stack" = RW ] && ok "$bin: non-executable stack" || ko "$bin: GNU_STACK flags '$stack'"
  grep -qx '__stack_chk_fail' <<<"$symbols" &&
    ok "$bin: stack protector (__stack_chk_fail)" || ko "$bin: no stack protector"
  chk=$(grep -E '^__[a-z0-9_]+_chk$' <<<"$symbols" | grep -vx '__stack_chk_fail' | sort -u)
  [ -n "$chk" ] && ok "$bin: _FORTIFY_SOURCE ($(echo $chk | wc -w) checked functions, e.g. $(echo $chk | cut -d' ' -f1-3))" ||
    ko "$bin: no __*_chk function: not built with _FORTIFY_SOURCE"
done
echo "hardening: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
