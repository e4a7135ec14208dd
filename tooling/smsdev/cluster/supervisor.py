"""`make cluster`'s supervisor: a real Kubernetes on this machine, and the chart installed on
it with the real helm, step by step, and stopped in order. See docs/local-cluster.md.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kube-proxy (built from
k8s.io/kubernetes), and the project's node (cluster/node: a virtual-kubelet whose pods are
processes, each in a network namespace of its own) run inside one network namespace that
the cluster creates (smsdev.cluster.netns), so nothing of the machine's own network
changes; the API server, the gateway and Prometheus are relayed to 127.0.0.1. The CRDs the
chart uses are installed from their projects' own modules (smsdev.cluster.gomod), then
`helm install sms-app helm/ -n sms-app`. Every child dies with the supervisor however it
ends (the parent-death signal, smsdev.procs) and is recorded in its run state
(smsdev.runstate) while it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from smsdev import ROOT
from smsdev.cluster import gomod, netns, pki
from smsdev.cluster.objects import (BRIDGE, COREFILE, DNS_OBJECTS, FLAGGER, GATE_PORT, GATE_SETTINGS, GATEWAY_VALUES,
                                    HOST, ISTIOD_VALUES, LOCAL_VALUES, NODE, NODE_RBAC, PROMETHEUS_OBJECTS,
                                    PROMETHEUS_OPERATOR, PROMETHEUS_URL)
from smsdev.cluster.settings import Settings
from smsdev.console import log as say
from smsdev.procs import Proc, ProcGroup, poll
from smsdev.runstate import RunState


class Cluster:
    """The cluster's processes, network namespaces and relays, and the steps that bring it
    up (prepare, control_plane, node, networking, install_crds, istio, gateway_up,
    prometheus, flagger, install_chart, wait_pods: `__main__` runs them in this order)."""

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
    def install_crds(self) -> None:
        files = gomod.crd_files(self.s.state)
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
        s, istio = self.s, gomod.istio_dir(self.s.state)
        charts = istio / "manifests" / "charts"
        # pilot-agent runs Envoy as uid 1337: the bootstrap template it reads must be
        # readable by that user (the module cache is not).
        template = s.state / "istio" / "envoy_bootstrap_tmpl.json"
        template.parent.mkdir(parents=True, exist_ok=True)
        template.write_bytes((istio / "tools/packaging/common/envoy_bootstrap.json").read_bytes())
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
        rbac = gomod.prometheus_operator_dir(self.s.state) / "example" / "rbac"
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
        chart = gomod.flagger_dir(self.s.state) / "charts" / "flagger"
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
        say(f"the ingress gateway serves http://127.0.0.1:{self.s.gateway_port} (Host {HOST})")

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
