"""docs/cluster.md walks a user from `vagrant up` to the browser, with chart values
that exist.
"""

import re

import yaml

from conftest import ROOT, dotted_keys


def test_cluster_doc_walks_from_vagrant_up_to_the_browser():
    text = (ROOT / "docs" / "cluster.md").read_text()
    for host, ip in [("sms-app.local", "95"), ("sms-istio.local", "96"), ("grafana.local", "95"),
                     ("dashboard.local", "95")]:
        assert re.search(rf"^192\.168\.56\.{ip}\s+.*\b{re.escape(host)}\b", text, re.M), host
    for needle in ("vagrant up", "KUBECONFIG", "docker build", "docker push", "--target app-service",
                   "--target model-service", "image.registry", "appService.image.tag",
                   "modelService.image.tag", "helm upgrade", "http://sms-app.local", "http://sms-istio.local",
                   "http://grafana.local", "https://dashboard.local", "vagrant provision", "SMS_IMAGE_REGISTRY"):
        assert needle in text, needle
    # every chart value the page tells users to set exists in the chart
    chart = dotted_keys(yaml.safe_load((ROOT / "helm" / "values.yaml").read_text()))
    for key in re.findall(r"--set(?:-string)?\s+([\w.]+)=", text):
        assert key in chart, key
