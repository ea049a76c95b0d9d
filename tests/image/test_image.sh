#!/usr/bin/env bash
# The container image, built with podman and run as Kubernetes runs it:
# read-only root filesystem with no writable /tmp, uid 10001, the store on a
# mounted volume, the config mounted read-only, a network namespace of its
# own (loopback only). Ends with "image: N passed, N failed".
#
#   tests/image/test_image.sh              build the image, then check it
#   tests/image/test_image.sh --build-only build it (`make image`)
#
# Needs root. Installs podman, runc and debootstrap if missing, and makes the
# base images deploy/Dockerfile starts FROM (debian:bookworm and
# debian:bookworm-slim) from the Debian archive this host's apt uses, so no
# container registry is involved (--pull=never). Prints "SKIP image: reason"
# and exits 0 only when podman cannot be installed or cannot run a container
# here; once the image is being built, every failure counts.
#
# The image has no shell: every check of what is in it reads its files from
# the host (podman export), and the service's ids from /proc.
#
# Env: KDEDUP (build/kdedup, for the host-side demo checks), BUILD (build),
# IMAGE (kdedup:<version>), IMAGE_MAX_MB (size ceiling, 60; the image is 33).
set -u
cd "$(dirname "$0")/../.." || exit 1
KDEDUP=${KDEDUP:-build/kdedup}
OUT=$(realpath -m "${BUILD:-build}/image")
VERSION=$(sed -n 's/^#define KD_VERSION "\(.*\)"/\1/p' sidecar/version.h)
IMAGE=${IMAGE:-kdedup:$VERSION}
IMAGE_MAX_MB=${IMAGE_MAX_MB:-60}
BASE=docker.io/library/debian:bookworm
GRACE=45 # the manifests' terminationGracePeriodSeconds
NAME=kdedup-image-test-$$
BUILD_ONLY=0
[ "${1:-}" = --build-only ] && BUILD_ONLY=1

passed=0
failed=0
ok() { echo "PASS $*"; passed=$((passed + 1)); }
ko() { echo "FAIL $*"; failed=$((failed + 1)); }
skip() { # podman cannot work here: not a failure of the image, unless building was asked
  echo "SKIP image: $*"
  echo "image: $passed passed, $failed failed, image checks skipped"
  [ "$failed" -eq 0 ] && [ "$BUILD_ONLY" = 0 ]
  exit
}
die() {
  echo "FAIL $*"
  echo "image: $passed passed, $((failed + 1)) failed"
  exit 1
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
mkdir -p "$OUT"

# --- The demo's temporary directory, on the host binary: it honours TMPDIR
# and says why it cannot create the directory (it printed an uninitialised
# buffer). Runs even when the image checks are skipped.
host_demo() {
  local tmp err
  tmp=$(mktemp -d "$OUT/tmpdir.XXXXXX")
  touch "$tmp/file"
  for case in "$tmp/missing:No such file or directory" "$tmp/file:Not a directory"; do
    if TMPDIR=${case%%:*} timeout 60 "$KDEDUP" demo --messages 10 >/dev/null 2>"$OUT/demo.err"; then
      ko "demo with TMPDIR=${case%%:*} succeeded"
    elif err=$(cat "$OUT/demo.err") &&
      [ "$err" = "demo: cannot create a temporary directory in ${case%%:*} (TMPDIR): ${case#*:}; set TMPDIR to a writable directory" ]; then
      ok "demo names TMPDIR and the reason (${case#*:})"
    else
      ko "demo with TMPDIR=${case%%:*} said: $err"
    fi
  done
  if TMPDIR=$tmp timeout 120 "$KDEDUP" demo --messages 2000 >"$OUT/demo.out" 2>&1 &&
    grep -q '^OK: every unique key' "$OUT/demo.out" && [ "$(ls "$tmp")" = file ]; then
    ok "demo runs in TMPDIR=$tmp and removes its directory"
  else
    ko "demo in a writable TMPDIR: $(tail -3 "$OUT/demo.out"; ls "$tmp")"
  fi
  rm -rf "$tmp"
}
if [ "$BUILD_ONLY" = 0 ]; then
  if [ -x "$KDEDUP" ]; then host_demo; else ko "no $KDEDUP to run the demo checks"; fi
fi

# --- podman on this host.
[ "$(id -u)" = 0 ] || skip "needs root (podman, debootstrap)"
need=""
for p in podman runc debootstrap python3-prometheus-client; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || need="$need $p"
done
if [ -n "$need" ]; then
  echo "image: installing$need"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $need >"$OUT/apt.log" 2>&1; }
  apt_install || { apt-get -o DPkg::Lock::Timeout=300 update -qq >>"$OUT/apt.log" 2>&1 && apt_install; } ||
    skip "cannot install$need: $(tail -1 "$OUT/apt.log")"
fi

# crun refuses this host's hybrid cgroups: runc. The default ulimits
# (nofile 1048576) exceed what root may set here: the host's own hard limits.
limit() { # the hard limit $1 (-n or -u), at most $2
  local l
  l=$(ulimit -H "$1")
  if [ "$l" = unlimited ] || [ "$l" -gt "$2" ]; then echo "$2"; else echo "$l"; fi
}
nofile=$(limit -n 1048576)
nproc=$(limit -u 32768)
cat >"$OUT/containers.conf" <<EOF
# Written by tests/image/test_image.sh.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$OUT/containers.conf

# The Debian archive this host's apt uses ("deb URI SUITE" lines and deb822
# stanzas), for debootstrap and for the base image's own apt.
archive() { # the URI serving suite $1, else $2
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed 's/\[[^]]*\]//' | awk -v s="$1" '$1 == "deb" && $3 == s { print $2; exit }')
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$1" '
    /^[ \t]*$/ { if (hit && u) { print u; exit } hit = 0; u = "" }
    /^URIs:/ { u = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
    END { if (hit && u) print u }' | head -1)
  echo "${uri:-$2}"
}

# Base images from the Debian archive: debian:bookworm (minbase), and
# debian:bookworm-slim as Debian's slim images are made (no docs, man pages
# or locales, kept out by dpkg from then on too). Once per machine, ~40 s.
make_bases() {
  local root mirror security t0
  root=$(mktemp -d /var/tmp/kdedup-rootfs.XXXXXX)
  mirror=$(archive bookworm http://deb.debian.org/debian)
  security=$(archive bookworm-security http://deb.debian.org/debian-security)
  echo "image: debootstrap bookworm from $mirror"
  t0=$(now)
  if ! timeout 900 debootstrap --variant=minbase bookworm "$root" "$mirror" >"$OUT/debootstrap.log" 2>&1; then
    rm -rf "$root"
    die "debootstrap from $mirror: $(tail -1 "$OUT/debootstrap.log")"
  fi
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/etc/apt/sources.list
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Reach the archive as the host does (a snapshot's dates, a proxy).
  apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' \
    >"$root/etc/apt/apt.conf.d/90host-archive"
  # As Debian's images: apt keeps no downloaded packages or caches in a layer.
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  tar -C "$root" --numeric-owner -c . |
    podman import --change 'CMD ["bash"]' - "$BASE" >"$OUT/import.log" 2>&1 ||
    die "podman import $BASE: $(tail -1 "$OUT/import.log")"
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  rm -rf "$root"/usr/share/{groff,info,linda,lintian/overrides,locale,man}/*
  tar -C "$root" --numeric-owner -c . |
    podman import --change 'CMD ["bash"]' - "$BASE-slim" >"$OUT/import.log" 2>&1 ||
    die "podman import $BASE-slim: $(tail -1 "$OUT/import.log")"
  rm -rf "$root"
  echo "image: base images made in $(secs "$t0")s"
}
# One maker at a time (CI and a developer on one machine).
exec 9>/var/lock/kdedup-image-base.lock
flock -w 900 9 || die "waiting for /var/lock/kdedup-image-base.lock"
if ! podman image exists "$BASE" || ! podman image exists "$BASE-slim"; then
  make_bases
fi
flock -u 9
if ! out=$(timeout 120 podman run --rm --pull=never --network none "$BASE-slim" true 2>&1); then
  skip "podman cannot run a container here: $out"
fi

# --- Build. By image id, not tag: another build may retag meanwhile.
old=$(podman image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null)
t0=$(now)
if ! timeout 1200 podman build --pull=never --network host --iidfile "$OUT/iid" \
  -f deploy/Dockerfile -t "$IMAGE" . >"$OUT/build.log" 2>&1; then
  die "podman build: $(tail -5 "$OUT/build.log")"
fi
build_s=$(secs "$t0")
IID=$(sed 's/^sha256://' "$OUT/iid")
# The image it replaced, untagged now: remove it (still used: kept).
if [ -n "$old" ] && [ "$old" != "$IID" ] &&
  [ -z "$(podman image inspect -f '{{join .RepoTags ""}}' "$old" 2>/dev/null)" ]; then
  podman rmi "$old" >/dev/null 2>&1
fi
size_mb=$(($(podman image inspect -f '{{.Size}}' "$IID") / 1000000))
echo "image: built $IMAGE (${IID:0:12}) in ${build_s}s, $size_mb MB"
[ "$BUILD_ONLY" = 1 ] && exit 0

# --- Checks, as Kubernetes runs it.
STORE=$(mktemp -d "$OUT/store.XXXXXX")
chown 10001:10001 "$STORE"
cleanup() {
  podman rm -f -t 0 "$NAME" >/dev/null 2>&1
  rm -rf "$STORE"
}
trap cleanup EXIT
OPTS=(--pull=never --read-only --read-only-tmpfs=false --user 10001 --network none
  -v "$STORE:/var/lib/kdedup")
RUN=(podman run --rm "${OPTS[@]}")
[ "$size_mb" -le "$IMAGE_MAX_MB" ] && ok "image size $size_mb MB (at most $IMAGE_MAX_MB)" ||
  ko "image size $size_mb MB, above $IMAGE_MAX_MB"

# Outputs compared below are stdout; podman's own warnings go to $ERR.
ERR=$OUT/podman.err
user=$(podman image inspect -f '{{.Config.User}}' "$IID")
[ "$user" = 10001:10001 ] && ok "runs as uid/gid 10001 by default (the service's own ids: below)" ||
  ko "image user '$user'"

# --- Every file in the image, from its own filesystem (podman export):
# the binary, the libraries it loads, the CA certificates, copyright files
# and /etc/{passwd,group,nsswitch.conf,ld.so.cache}; no shell, no package
# manager, no setuid or setgid file, everything root's but the store's
# directory. Then the image's own binary's hardening (readelf).
files() {
  local cid
  cid=$(podman create --pull=never "$IID" 2>"$ERR") || return 1
  podman export "$cid" >"$OUT/image.tar" 2>"$ERR"
  local rc=$?
  podman rm -f "$cid" >/dev/null 2>&1
  [ "$rc" = 0 ] && tar --numeric-owner -tvf "$OUT/image.tar" >"$OUT/files.txt"
}
if ! files; then
  ko "podman export of the image: $(cat "$ERR")"
else
  allowed='^(usr/local/bin/kdedup|(usr/)?lib(32|64|x32)?/([a-z0-9_]+-linux-gnu[a-z0-9_]*/)?[^/]+\.so(\.[0-9]+)*|etc/ssl/certs/ca-certificates\.crt|etc/(passwd|group|nsswitch\.conf|ld\.so\.cache)|usr/share/doc/[^/]+/copyright)$'
  # "perms owner/group size date time path [-> target]", path without "./"
  awk '{ p = $6; sub(/^\.\//, "", p); print substr($1, 1, 1), $1, $2, p }' "$OUT/files.txt" \
    >"$OUT/files.lst"
  libs=$(awk '$1 == "-" { print $4 }' "$OUT/files.lst" | grep -c '\.so')
  other=$(awk '$1 == "-" { print $4 }' "$OUT/files.lst" | grep -Ev "$allowed")
  [ -z "$other" ] && ok "only the binary, $libs libraries, the CA certificates, copyrights and /etc files" ||
    ko "files beyond the binary, its libraries and certificates: $(echo $other | cut -c1-400)"
  odd=$(awk '$1 != "-" && $1 != "d" && $1 != "l" { print $4 }' "$OUT/files.lst")
  [ -z "$odd" ] && ok "no device, FIFO or socket file" || ko "special files: $(echo $odd)"
  shells=$(awk '{ print $4 }' "$OUT/files.lst" |
    grep -E '(^|/)(sh|bash|dash|ash|busybox|zsh|apt|apt-get|dpkg|perl|python3?|su|sudo|mount)$')
  [ -z "$shells" ] && ok "no shell, package manager or su" || ko "in the image: $(echo $shells)"
  setid=$(awk 'substr($2, 4, 1) ~ /[sS]/ || substr($2, 7, 1) ~ /[sS]/ { print $4 }' "$OUT/files.lst")
  [ -z "$setid" ] && ok "no setuid or setgid file" || ko "setuid/setgid: $(echo $setid)"
  owners=$(awk '$3 != "0/0" { print $3, $4 }' "$OUT/files.lst" | tr '\n' ',')
  [ "$owners" = "10001/10001 var/lib/kdedup/," ] && ok "everything root's but the store's directory (10001)" ||
    ko "owners other than root: $owners"
  mkdir -p "$OUT/rootfs"
  if tar -xf "$OUT/image.tar" -C "$OUT/rootfs" usr/local/bin/kdedup 2>"$ERR" &&
    tests/image/test_hardening.sh "$OUT/rootfs/usr/local/bin/kdedup" >"$OUT/hardening.log" 2>&1; then
    ok "the image's binary is hardened ($(tail -1 "$OUT/hardening.log"))"
  else
    ko "the image's binary: $(grep FAIL "$OUT/hardening.log" | tr '\n' ' ') $(cat "$ERR")"
  fi
  rm -rf "$OUT/image.tar" "$OUT/rootfs"
fi

v=$(timeout 60 "${RUN[@]}" "$IID" --version 2>"$ERR")
case "$v" in "kdedup $VERSION (librdkafka "*) ok "--version: $v" ;; *) ko "--version: $v $(cat "$ERR")" ;; esac

# No writable /tmp: the demo says so and what to do; with TMPDIR on the
# store volume it runs, and removes its directory.
err=$(timeout 60 "${RUN[@]}" "$IID" demo --messages 10 2>&1)
rc=$?
[ "$rc" = 1 ] && grep -qxF "demo: cannot create a temporary directory in /tmp (the default, TMPDIR is not set): Read-only file system; set TMPDIR to a writable directory" <<<"$err" &&
  ok "demo on a read-only root names /tmp and the reason" || ko "demo on a read-only root: exit $rc, $err"
t0=$(now)
if timeout 180 "${RUN[@]}" -e TMPDIR=/var/lib/kdedup "$IID" demo --messages 2000 >"$OUT/demo.out" 2>&1 &&
  grep -q '^OK: every unique key' "$OUT/demo.out" && [ -z "$(ls -A "$STORE")" ]; then
  ok "demo with TMPDIR on the store volume ($(secs "$t0")s)"
else
  ko "demo with TMPDIR on the store volume: $(tail -3 "$OUT/demo.out"; ls -A "$STORE")"
fi

bad=$OUT/bad.json
echo '{"kafka": {"brokers": 42}}' >"$bad"
CFG=(-v "$PWD/deploy/examples/local.json:/etc/kdedup/kdedup.json:ro")
out=$(timeout 60 "${RUN[@]}" "${CFG[@]}" "$IID" --check-config /etc/kdedup/kdedup.json 2>"$ERR")
rc=$?
[ "$rc" = 0 ] && [ "$out" = "/etc/kdedup/kdedup.json: valid (1 route)" ] &&
  ok "--check-config of local.json: $out" || ko "--check-config of local.json: exit $rc, $out $(cat "$ERR")"
out=$(timeout 60 "${RUN[@]}" -v "$bad:/etc/kdedup/bad.json:ro" "$IID" --check-config /etc/kdedup/bad.json 2>&1)
rc=$?
[ "$rc" = 2 ] && case "$out" in *"bad.json: kafka.brokers: expected"*) true ;; *) false ;; esac &&
  ok "--check-config of an invalid config: exit 2, $out" || ko "--check-config of an invalid config: exit $rc, $out"

# The service itself, with the image's default command.
if ! timeout 60 podman run -d --name "$NAME" "${OPTS[@]}" "${CFG[@]}" -e KDEDUP_STORE=/var/lib/kdedup/store \
  "$IID" >"$OUT/run.log" 2>&1; then
  ko "podman run the service: $(tail -3 "$OUT/run.log")"
else
  pid=$(podman inspect -f '{{.State.Pid}}' "$NAME")
  uids=$(awk '/^(Uid|Gid):/ { printf "%s %s %s %s ", $2, $3, $4, $5 }' "/proc/$pid/status")
  [ "$uids" = "10001 10001 10001 10001 10001 10001 10001 10001 " ] && ok "the service runs as uid/gid 10001" ||
    ko "the service's uid/gid: $uids"
  # Probed from inside its network namespace, as the kubelet probes a pod.
  if nsenter --net="/proc/$pid/ns/net" /usr/bin/python3 - "$VERSION" >"$OUT/probe.log" 2>&1 <<'EOF'; then
import sys, time, urllib.error, urllib.request
from prometheus_client.parser import text_string_to_metric_families

def get(path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:9464" + path, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)

start = time.monotonic()
deadline = start + 60
while True:
    status, body = get("/readyz")
    if status == 200 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
if status != 200:
    sys.exit("/readyz: %s %s" % (status, body.strip()))
print("/readyz: 200 after %.1fs" % (time.monotonic() - start))
status, body = get("/metrics")
if status != 200:
    sys.exit("/metrics: %s %s" % (status, body.strip()))
families = {f.name: f for f in text_string_to_metric_families(body)}
info = [s for s in families["kdedup_build_info"].samples if s.name == "kdedup_build_info"]
if [s.labels.get("version") for s in info] != [sys.argv[1]]:
    sys.exit("/metrics: kdedup_build_info %s" % info)
for name in ("kdedup_inflight_messages", "kdedup_store_write_seconds"):
    if name not in families:
        sys.exit("/metrics: no %s" % name)
print("/metrics: %d families parsed" % len(families))
EOF
    ok "service: $(tr '\n' ',' <"$OUT/probe.log" | sed 's/,$//; s/,/, /')"
  else
    ko "service probes: $(cat "$OUT/probe.log"); log: $(podman logs "$NAME" 2>&1 | tail -3)"
  fi
  t0=$(now)
  timeout $((GRACE + 30)) podman stop -t "$GRACE" "$NAME" >/dev/null 2>&1
  rc=$?
  stop_s=$(secs "$t0")
  code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME" 2>&1)
  podman logs "$NAME" >"$OUT/service.log" 2>&1
  if [ "$rc" = 0 ] && [ "$code" = 0 ] && awk -v s="$stop_s" -v g="$GRACE" 'BEGIN { exit !(s < g) }' &&
    grep -q '"msg":"kdedup stopped"' "$OUT/service.log" && [ -f "$STORE/store/CURRENT" ]; then
    ok "podman stop: exit 0 in ${stop_s}s (grace ${GRACE}s), store on the volume"
  else
    ko "podman stop: rc $rc, exit code $code, ${stop_s}s; $(tail -2 "$OUT/service.log"); $(ls "$STORE")"
  fi
fi

echo "image: $IMAGE ${IID:0:12}, $size_mb MB, built in ${build_s}s"
echo "image: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
