#!/usr/bin/env node
// Checks a rendered overlay (one YAML file of objects) for what a platform
// team expects of the kdedup component:
//  - every object carries app.kubernetes.io/name, part-of and managed-by;
//    workloads and kdedup's own objects also instance or component, version;
//  - no app.kubernetes.io/part-of or managed-by in a selector (a Deployment's
//    is immutable: labels added later could never be applied);
//  - a PodDisruptionBudget and a PrometheusRule select kdedup's pods;
//  - the admin Secret is optional, the signing key comes from a Secret, the
//    Kafka credentials from a Secret.
// Prints "ok"/"FAIL" lines; exits 1 on any FAIL.
//
//   node check_objects.js RENDERED.yaml
"use strict";
const fs = require("fs");
const yaml = require("js-yaml");

let failed = 0;
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failed++;
}

const file = process.argv[2];
const docs = yaml.loadAll(fs.readFileSync(file, "utf8")).filter((d) => d);
const K = "app.kubernetes.io/";
const workloads = docs.filter((d) => ["Deployment", "StatefulSet"].includes(d.kind));

for (const d of docs) {
  const name = `${d.kind}/${d.metadata.name}`;
  const labels = d.metadata.labels || {};
  if (d.kind === "Namespace") continue;
  for (const k of ["name", "part-of", "managed-by"])
    check(labels[K + k], `${name}: label ${K}${k}`);
  if (workloads.includes(d) || labels[K + "name"] === "kdedup")
    for (const k of ["version", workloads.includes(d) ? "instance" : "component"])
      check(labels[K + k], `${name}: label ${K}${k}`);
  const selectors = [
    d.spec && d.spec.selector && d.spec.selector.matchLabels,
    d.kind === "Service" ? d.spec.selector : null,
  ].filter((s) => s);
  for (const s of selectors)
    check(!s[K + "part-of"] && !s[K + "managed-by"],
      `${name}: no part-of / managed-by in its selector`);
}
check(workloads.length > 0, "a workload");
for (const w of workloads) {
  const name = `${w.kind}/${w.metadata.name}`;
  const spec = w.spec.template.spec;
  const kd = (spec.initContainers || []).concat(spec.containers || [])
    .find((c) => c.name === "kdedup");
  check(Boolean(kd), `${name}: a kdedup container`);
  if (!kd) continue;
  const env = Object.fromEntries((kd.env || []).map((e) => [e.name, e]));
  const ref = (n) => env[n] && env[n].valueFrom && env[n].valueFrom.secretKeyRef;
  check(ref("KDEDUP_ADMIN_TOKEN") && ref("KDEDUP_ADMIN_TOKEN").optional === true,
    `${name}: the admin token's Secret is optional (a first deployment starts without it)`);
  check(ref("KAFKA_PASSWORD") && ref("KAFKA_PASSWORD").name === "kdedup-kafka",
    `${name}: the Kafka password from the kdedup-kafka Secret`);
  const signing = (spec.volumes || []).find((v) => v.secret && v.secret.secretName === "kdedup-signing");
  check(signing && (kd.volumeMounts || []).some((m) => m.name === signing.name &&
    m.mountPath === "/etc/kdedup/signing"), `${name}: the signing key mounted from kdedup-signing`);
  const podLabels = w.spec.template.metadata.labels || {};
  for (const kind of ["PodDisruptionBudget", "PrometheusRule"]) {
    const o = docs.find((d) => d.kind === kind);
    check(Boolean(o), `${kind} rendered`);
    if (o && kind === "PodDisruptionBudget")
      check(Object.entries(o.spec.selector.matchLabels || {}).every(([k, v]) => podLabels[k] === v),
        `${name}: the PodDisruptionBudget selects its pods`);
  }
}
process.exit(failed ? 1 : 0);
