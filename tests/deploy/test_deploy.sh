#!/usr/bin/env bash
# Offline checks of deploy/: the kdedup component (deploy/k8s/components/
# kdedup) and the examples made with it. Every manifest and every rendered
# overlay validates against the Kubernetes API schemas (npm
# kubernetes-models, no cluster) and a broken one is caught; no
# kustomization uses a deprecated field, and the examples take kdedup from
# the component only; every render keeps the pods' token unmounted, admits
# only Prometheus to the metrics port, renders no Secret
# (check_security.js), and carries the app.kubernetes.io labels (none in a
# selector), a PodDisruptionBudget, the PrometheusRule and the Secrets as
# meant (check_objects.js); the alert rules pass `promtool check rules` and
# `promtool test rules` (rules_test.yaml); the dashboard has the panels the
# alerts point at; the configs pass `kdedup --check-config` (the shipped
# ConfigMap --offline, with no environment); the image's runtime packages
# cover every library build/kdedup links. Rendered with kubectl's kustomize,
# v5 or later (Components). Ends with "deploy: N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
KDEDUP=${KDEDUP:-build/kdedup}
OUT=${BUILD:-build}/deploy
passed=0
failed=0
ok() { echo "PASS $*"; passed=$((passed + 1)); }
ko() { echo "FAIL $*"; failed=$((failed + 1)); }
mkdir -p "$OUT"

# The validator's packages, pinned by package-lock.json.
if ! (cd tests/deploy && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
  ko "npm ci in tests/deploy"
fi
validate() { node tests/deploy/validate.js "$@" >"$OUT/validate.log" 2>&1; }

# Patches (move-sidecar, the component's sidecar, the StatefulSet's store)
# are not objects of their own.
manifests=$(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml ! -name move-sidecar.yaml \
            ! -name sidecar.yaml ! -name persistent-store.yaml | sort)
if validate $manifests; then ok "every manifest validates ($(echo $manifests | wc -w) files)"
else ko "manifests: $(grep INVALID "$OUT/validate.log")"; fi

kver=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
if [ "${kver:-0}" -ge 5 ]; then ok "kubectl's kustomize is v$kver (Components, labels)"
else ko "kubectl's kustomize is ${kver:-unknown}: these manifests need v5 or later (kubectl >= 1.27)"; fi
for dir in base statefulset overlays/example overlays/plain-sidecar; do
  out="$OUT/$(echo "$dir" | tr / -).yaml"
  if ! kubectl kustomize "deploy/k8s/$dir" >"$out" 2>"$OUT/kustomize.err"; then
    ko "kustomize $dir: $(tail -1 "$OUT/kustomize.err")"
  elif [ -s "$OUT/kustomize.err" ]; then
    ko "kustomize $dir warns: $(head -2 "$OUT/kustomize.err")"
  elif validate "$out"; then ok "rendered $dir validates ($(grep -c '^kind:' "$out") objects)"
  else ko "rendered $dir: $(grep INVALID "$OUT/validate.log")"; fi
done
# No deprecated kustomize field (commonLabels writes into the immutable
# selectors; bases, patchesJson6902, patchesStrategicMerge and vars have
# successors).
deprecated=$(grep -lE '^(commonLabels|bases|patchesJson6902|patchesStrategicMerge|vars):' \
             $(find deploy/k8s -name kustomization.yaml) || true)
[ -z "$deprecated" ] && ok "no deprecated kustomize field" || ko "deprecated fields in: $deprecated"
for ex in base:deployment statefulset:statefulset; do
  dir=${ex%%:*}
  if grep -q '^  - ../components/kdedup$' "deploy/k8s/$dir/kustomization.yaml" &&
     ! grep -qE 'name: kdedup|image: kdedup|kdedup\.json' "deploy/k8s/$dir/${ex#*:}.yaml"; then
    ok "$dir: kdedup comes from the component, nothing of it in the app's manifest"
  else ko "$dir: does not use ../components/kdedup, or copies kdedup into the app's manifest"; fi
done
# Labels, the PDB, the alerts and the Secrets, on every render.
for r in base statefulset overlays-example overlays-plain-sidecar; do
  if node tests/deploy/check_objects.js "$OUT/$r.yaml" >"$OUT/objects.log" 2>&1; then
    ok "$r: app.kubernetes.io labels (none in selectors), PDB, PrometheusRule, Secrets"
  else ko "$r: $(grep FAIL "$OUT/objects.log" | head -3 | tr '\n' ' ')"; fi
done
# ... and that check can fail: part-of in a selector, no PDB, a required
# admin Secret.
awk '/^    matchLabels:$/ && !done { print; print "      app.kubernetes.io/part-of: orders"; done=1; next } 1' \
  "$OUT/base.yaml" >"$OUT/bad6.yaml"
sed 's/^kind: PodDisruptionBudget$/kind: ConfigMap/' "$OUT/base.yaml" >"$OUT/bad7.yaml"
sed '/optional: true/d' "$OUT/base.yaml" >"$OUT/bad8.yaml"
for bad in bad6 bad7 bad8; do
  if node tests/deploy/check_objects.js "$OUT/$bad.yaml" >/dev/null 2>&1; then
    ko "object check passed $bad.yaml"
  else ok "object check rejects $bad.yaml"; fi
done
# The alerts: promtool on the PrometheusRule's groups, and each alert fired
# on synthetic series (tests/deploy/rules_test.yaml); a changed rule fails.
if ! command -v promtool >/dev/null; then
  ko "promtool missing (Debian package prometheus; make deps installs it)"
else
  rules=deploy/k8s/components/kdedup/prometheusrule.yaml
  NODE_PATH=tests/deploy/node_modules node -e '
    const y = require("js-yaml"), fs = require("fs");
    const doc = y.load(fs.readFileSync(process.argv[1], "utf8"));
    fs.writeFileSync(process.argv[2], y.dump(doc.spec, {lineWidth: -1}));' \
    "$rules" "$OUT/kdedup-rules.yaml" 2>"$OUT/rules.err" || ko "cannot read $rules: $(cat "$OUT/rules.err")"
  cp tests/deploy/rules_test.yaml "$OUT/"
  if promtool check rules "$OUT/kdedup-rules.yaml" >"$OUT/promtool.log" 2>&1; then
    ok "promtool check rules: $(grep -o '[0-9]* rules found' "$OUT/promtool.log")"
  else ko "promtool check rules: $(tail -3 "$OUT/promtool.log")"; fi
  if (cd "$OUT" && promtool test rules rules_test.yaml) >"$OUT/promtool-test.log" 2>&1; then
    ok "promtool test rules: every alert fires on its series, not on a healthy pod"
  else ko "promtool test rules: $(grep -v '^ *$' "$OUT/promtool-test.log" | head -5 | tr '\n' ' ')"; fi
  sed -i 's/(kdedup_backpressure) == 1/(kdedup_backpressure) == 2/' "$OUT/kdedup-rules.yaml"
  if (cd "$OUT" && promtool test rules rules_test.yaml) >/dev/null 2>&1; then
    ko "promtool test rules passed a broken rule"
  else ok "promtool test rules catches a broken rule"; fi
fi
# The dashboard shows what the alerts are about.
missing_panels=""
for m in kdedup_key_conflicts_total kdedup_backpressure kdedup_handover_pending_partitions \
         kdedup_store_errors_total kdedup_store_write_seconds_bucket kdedup_consumer_lag; do
  grep -q "$m" deploy/grafana/kdedup.json || missing_panels="$missing_panels $m"
done
if [ -z "$missing_panels" ] &&
   node -e 'JSON.parse(require("fs").readFileSync("deploy/grafana/kdedup.json", "utf8"))'; then
  ok "the dashboard parses and has panels for conflicts, backpressure, handover, the store, lag"
else ko "the dashboard lacks panels over:$missing_panels"; fi
# Security (issue 19): no service account token, a NetworkPolicy admitting
# only Prometheus to the metrics port, no Secret rendered from the repository.
for dir in base statefulset overlays/example overlays/plain-sidecar; do
  out="$OUT/$(echo "$dir" | tr / -).yaml"
  if node tests/deploy/check_security.js "$out" >"$OUT/security.log" 2>&1; then
    ok "$dir: no token, NetworkPolicy admits Prometheus to metrics only, no Secret"
  else ko "$dir: $(grep FAIL "$OUT/security.log" | head -3 | tr '\n' ' ')"; fi
done
# ... and the check must be able to fail: a token mounted, every peer let in
# (an empty from), the workload's label on the Prometheus selector (what
# commonLabels does to a matchLabels there).
sed '/automountServiceAccountToken/d' "$OUT/base.yaml" >"$OUT/bad3.yaml"
sed '/^  - from:/,/^    ports:/{/^  - from:/!{/^    ports:/!d}}' "$OUT/base.yaml" \
  | sed 's/^  - from:$/  - from: []/' >"$OUT/bad4.yaml"
sed '/^      podSelector:$/a\        matchLabels: {app.kubernetes.io/part-of: orders}' \
  "$OUT/base.yaml" >"$OUT/bad5.yaml"
for bad in bad3 bad4 bad5; do
  if node tests/deploy/check_security.js "$OUT/$bad.yaml" >/dev/null 2>&1; then
    ko "security check passed $bad.yaml"
  else ok "security check rejects $bad.yaml"; fi
done
grep -q "initContainers" "$OUT/overlays-plain-sidecar.yaml" \
  && ko "plain-sidecar still has initContainers" || ok "plain-sidecar runs kdedup as a container"
# readOnlyRootFilesystem: no writable /tmp, so TMPDIR names the store volume
# (tests/image/test_image.sh runs the image so).
for r in base statefulset overlays-example overlays-plain-sidecar; do
  if grep -A1 -- '- name: TMPDIR' "$OUT/$r.yaml" | grep -q 'value: /var/lib/kdedup$' \
     && grep -q 'mountPath: /var/lib/kdedup$' "$OUT/$r.yaml"; then ok "$r: TMPDIR on the store volume"
  else ko "$r: kdedup has no TMPDIR on its store volume"; fi
done
# Static membership (group.instance.id from the pod's name) only where the
# name is stable: the StatefulSet. A Deployment's pods get new names, so a
# static id there would leave each old one's partitions waiting.
grep -q -- '- name: KDEDUP_INSTANCE_ID' "$OUT/statefulset.yaml" \
  && ok "statefulset: static group membership from the pod name" \
  || ko "statefulset: no KDEDUP_INSTANCE_ID"
for r in base overlays-example overlays-plain-sidecar; do
  grep -q -- '- name: KDEDUP_INSTANCE_ID' "$OUT/$r.yaml" \
    && ko "$r: a Deployment must not set a static group.instance.id" \
    || ok "$r: dynamic group membership"
done
# The admin API (issue 16): its token from a Secret; its port (9465, on the
# pod's 127.0.0.1) on no containerPort and no Service.
for r in base statefulset overlays-example overlays-plain-sidecar; do
  if grep -A4 -- '- name: KDEDUP_ADMIN_TOKEN' "$OUT/$r.yaml" | grep -q 'name: kdedup-admin' \
     && ! grep -Eq '(containerPort|port|targetPort): 9465' "$OUT/$r.yaml" \
     && grep -q '"127.0.0.1:9465"' "$OUT/$r.yaml"; then
    ok "$r: admin token from a Secret, admin API on the pod's loopback only"
  else ko "$r: admin token not from a Secret, or the admin port exposed"; fi
done
# The probes on a listener of their own (issue 26 item 11): every probe on
# the container port the config's http.probes_listen names, never on the
# metrics port.
for r in base statefulset overlays-example overlays-plain-sidecar; do
  pport=$(sed -n 's/.*"probes_listen": "[^"]*:\([0-9]*\)".*/\1/p' "$OUT/$r.yaml" | head -1)
  probes=$(grep -A5 -E '(startup|liveness|readiness)Probe:' "$OUT/$r.yaml" | grep -c 'port: probes$')
  if [ -n "$pport" ] && grep -A1 "containerPort: $pport\$" "$OUT/$r.yaml" | grep -q 'name: probes' \
     && [ "$probes" -eq 3 ] \
     && ! grep -A5 -E '(startup|liveness|readiness)Probe:' "$OUT/$r.yaml" | grep -q 'port: metrics'; then
    ok "$r: the three probes on http.probes_listen ($pport), apart from /metrics"
  else ko "$r: probes not on their own listener (probes_listen port '${pport}', $probes probes on it)"; fi
done
grep -q "restartPolicy: Always" "$OUT/base.yaml" \
  && ok "base runs kdedup as a native sidecar" || ko "base has no native sidecar"

# The validator must be able to fail: a wrong type, a missing required field.
sed 's/replicas: 2/replicas: two/' deploy/k8s/base/deployment.yaml >"$OUT/bad1.yaml"
sed 's/^        - name: app$/        - image: x/' deploy/k8s/base/deployment.yaml \
  | sed '0,/^          image: example.org/s//          noname: example.org/' >"$OUT/bad2.yaml"
if validate "$OUT/bad1.yaml"; then ko "replicas: two was accepted"
else ok "replicas: two is rejected"; fi
if validate "$OUT/bad2.yaml"; then ko "a container without a name was accepted"
else ok "a container without a name is rejected"; fi

for cfg in deploy/examples/local.json deploy/examples/production.json; do
  if KAFKA_BROKERS=kafka:9093 KAFKA_USERNAME=u KAFKA_PASSWORD=p POD_NAME=pod-0 \
     KDEDUP_ADMIN_TOKEN=0123456789abcdef0123456789abcdef \
     "$KDEDUP" --check-config "$cfg" >/dev/null 2>"$OUT/check.err"; then ok "check-config $cfg"
  else ko "check-config $cfg: $(cat "$OUT/check.err")"; fi
done
# The shipped ConfigMap and the quickstart's, as CI can lint them: no
# environment, no mounted Secret files.
for cfg in deploy/k8s/components/kdedup/kdedup.json deploy/examples/quickstart.json; do
  if env -i "$KDEDUP" --check-config --offline "$cfg" >"$OUT/check.out" 2>"$OUT/check.err"; then
    ok "check-config --offline $cfg"
  else ko "check-config --offline $cfg: $(cat "$OUT/check.err")"; fi
done
if grep -qF '"signing_key": "${file:/etc/kdedup/signing/key}"' deploy/k8s/components/kdedup/kdedup.json; then
  ok "the shipped config signs what it forwards (dedup.signing_key from a Secret)"
else ko "the shipped config has no dedup.signing_key from a Secret"; fi

# Runtime packages: every library the binary needs comes from one of them
# (or from libc6, in every image). Sanitizer runtimes are skipped: the image
# builds without SANITIZE, while this may run on a sanitized test build.
pkgs=$(sed -n '/^FROM debian:bookworm-slim/,$p' deploy/Dockerfile \
  | sed -n '/apt-get install/,/&& rm/p' | tr ' \\' '\n\n' | grep -E '^lib|^ca-' | sort -u)
missing=""
for lib in $(readelf -d "$KDEDUP" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' \
             | grep -Ev '^lib(a|ub|l|t)san\.'); do
  path=$(ldd "$KDEDUP" | awk -v l="$lib" '$1 == l { print $3 }')
  pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)
  [ -z "$pkg" ] && pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)
  case " libc6 $(echo $pkgs) " in *" $pkg "*) ;; *) missing="$missing $lib($pkg)";; esac
done
if [ -z "$missing" ]; then ok "the image's packages ($(echo $pkgs)) cover what kdedup links"
else ko "the image lacks:$missing"; fi

echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
