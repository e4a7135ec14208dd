// Validates custom resources against the CRD schemas that @kubernetes-models ships.
// Usage: node validate_crd.mjs FILE...   (exit 1 and one line per error on failure)
import fs from "node:fs";
import yaml from "js-yaml";
import { IstioOperator } from "@kubernetes-models/istio/install.istio.io/v1alpha1";

const models = { "install.istio.io/v1alpha1/IstioOperator": IstioOperator };
let failed = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    if (!doc) continue;
    const key = `${doc.apiVersion}/${doc.kind}`;
    const Model = models[key];
    if (!Model) {
      console.log(`FAIL ${file}: no schema for ${key}`);
      failed++;
      continue;
    }
    try {
      new Model(doc).validate();
      checked++;
      console.log(`ok ${file}: ${key} ${doc.metadata?.name}`);
    } catch (err) {
      failed++;
      console.log(`FAIL ${file}: ${key} ${doc.metadata?.name}: ${err.message}`);
    }
  }
}
console.log(`${checked} valid, ${failed} invalid`);
process.exit(failed || !checked ? 1 : 0);
