#!/usr/bin/env node
// Validates Kubernetes objects (YAML, any number of documents per file)
// against the Kubernetes API schemas bundled in the npm package
// kubernetes-models (and the Prometheus Operator's, for PodMonitor), with no
// cluster. Prints one line per object; exits 1 if any is invalid or of a
// kind it cannot check.
//
//   node validate.js FILE...
"use strict";
const fs = require("fs");
const yaml = require("js-yaml");

// apiVersion "group/version" or "version" -> module path, kind -> class.
function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates = group === "monitoring.coreos.com"
    ? [`@kubernetes-models/prometheus-operator/${group}/${version}`]
    : [group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`];
  for (const path of candidates) {
    try {
      const mod = require(path);
      if (mod[kind]) return mod[kind];
    } catch (e) { /* no such group/version */ }
  }
  return null;
}

let failed = 0, checked = 0;
for (const file of process.argv.slice(2)) {
  const docs = yaml.loadAll(fs.readFileSync(file, "utf8")).filter((d) => d);
  for (const doc of docs) {
    const name = `${file}: ${doc.kind || "?"}/${(doc.metadata || {}).name || "?"}`;
    const Model = doc.apiVersion && doc.kind ? modelFor(doc.apiVersion, doc.kind) : null;
    checked++;
    if (!Model) {
      console.log(`INVALID ${name}: unknown apiVersion/kind ${doc.apiVersion} ${doc.kind}`);
      failed++;
      continue;
    }
    try {
      new Model(doc).validate();
      console.log(`valid   ${name}`);
    } catch (e) {
      console.log(`INVALID ${name}: ${e.message.split("\n").slice(0, 3).join(" ")}`);
      failed++;
    }
  }
}
console.log(`validate: ${checked - failed} valid, ${failed} invalid`);
process.exit(failed || !checked ? 1 : 0);
