// The one validator of custom resources (the chart's tests and the provisioning tests use
// it): every Istio and prometheus-operator object of the given YAML files against the
// kubernetes-models schemas (the CRDs' OpenAPI schemas). Prints a JSON report:
// {"validated": [...], "errors": [...], "unknown": [...]}; exits 1 on any error or
// on a custom resource whose kind has no validator.
import fs from "node:fs";
import yaml from "js-yaml";
import * as istioNet from "@kubernetes-models/istio/networking.istio.io/v1beta1";
import * as istioSec from "@kubernetes-models/istio/security.istio.io/v1beta1";
import * as istioInstall from "@kubernetes-models/istio/install.istio.io/v1alpha1";
import * as promV1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import * as promV1a1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1alpha1";

const models = {
  "networking.istio.io/v1beta1": istioNet,
  "security.istio.io/v1beta1": istioSec,
  "install.istio.io/v1alpha1": istioInstall,
  "monitoring.coreos.com/v1": promV1,
  "monitoring.coreos.com/v1alpha1": promV1a1,
};
const crdGroups = /(\.istio\.io|monitoring\.coreos\.com)\//;

const report = { validated: [], errors: [], unknown: [] };
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    if (!doc || !doc.apiVersion || !crdGroups.test(doc.apiVersion)) continue;
    const id = `${file}: ${doc.apiVersion} ${doc.kind} ${doc.metadata?.name}`;
    const Model = models[doc.apiVersion]?.[doc.kind];
    if (!Model) { report.unknown.push(id); continue; }
    try {
      new Model(doc).validate();
      report.validated.push(id);
    } catch (err) {
      report.errors.push(`${id}: ${err.message}`);
    }
  }
}
console.log(JSON.stringify(report, null, 2));
process.exit(report.errors.length || report.unknown.length ? 1 : 0);
