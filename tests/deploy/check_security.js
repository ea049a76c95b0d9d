#!/usr/bin/env node
// Checks what rendered kustomize output must hold for kdedup's security
// (issue 19): every workload's pods mount no service account token; a
// NetworkPolicy selects those pods and admits, on the metrics port only,
// nothing but Prometheus (the node's kubelet is admitted by NetworkPolicy's
// definition); no Secret with credentials is rendered from the repository.
// Prints one line per check; exits 1 if any fails.
//
//   node check_security.js RENDERED.yaml...
"use strict";
const fs = require("fs");
const yaml = require("js-yaml");

let failed = 0;
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failed++;
}

// True when a label selector (matchLabels / matchExpressions "In") selects
// an object with these labels.
function selects(sel, labels) {
  if (!sel) return false;
  for (const [k, v] of Object.entries(sel.matchLabels || {}))
    if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions || [])
    if (e.operator !== "In" || !e.values.includes(labels[e.key])) return false;
  return true;
}

for (const file of process.argv.slice(2)) {
  const docs = yaml.loadAll(fs.readFileSync(file, "utf8")).filter((d) => d);
  const workloads = docs.filter((d) => ["Deployment", "StatefulSet"].includes(d.kind));
  const policies = docs.filter((d) => d.kind === "NetworkPolicy");
  check(workloads.length > 0, `${file}: has a workload`);
  for (const w of workloads) {
    const pod = w.spec.template;
    const name = `${file}: ${w.kind}/${w.metadata.name}`;
    check(pod.spec.automountServiceAccountToken === false,
      `${name}: automountServiceAccountToken: false`);
    const containers = [...(pod.spec.initContainers || []), ...pod.spec.containers];
    const kdedup = containers.find((c) => (c.image || "").includes("kdedup"));
    const port = kdedup && (kdedup.ports || []).find((p) => p.name === "metrics");
    check(Boolean(port), `${name}: kdedup has a port named metrics`);
    const mine = policies.filter((p) => selects(p.spec.podSelector, pod.metadata.labels));
    check(mine.length > 0, `${name}: a NetworkPolicy selects its pods`);
    for (const p of mine) {
      const pname = `${file}: NetworkPolicy/${p.metadata.name}`;
      check((p.spec.policyTypes || []).includes("Ingress"), `${pname}: isolates ingress`);
      const rules = p.spec.ingress || [];
      check(rules.length > 0, `${pname}: has ingress rules`);
      for (const [i, r] of rules.entries()) {
        const ports = (r.ports || []).map((x) => x.port);
        check(ports.length > 0 &&
              ports.every((x) => x === "metrics" || x === port.containerPort),
          `${pname}: ingress[${i}] opens the metrics port only (${ports})`);
        const peers = r.from || [];
        check(peers.length > 0 && peers.every((peer) =>
          !peer.ipBlock && peer.namespaceSelector && peer.podSelector &&
          selects(peer.podSelector, { "app.kubernetes.io/name": "prometheus" }) &&
          !selects(peer.podSelector, pod.metadata.labels)),
        `${pname}: ingress[${i}] admits Prometheus pods only`);
      }
    }
  }
  for (const s of docs.filter((d) => d.kind === "Secret"))
    check(false, `${file}: renders Secret/${s.metadata.name}: credentials belong outside git`);
}
process.exit(failed ? 1 : 0);
