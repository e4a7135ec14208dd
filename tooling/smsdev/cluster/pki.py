"""The local cluster's certificates and kubeconfigs, made with the openssl command line:
one CA signs every serving and client certificate, as kubeadm lays them out. Client
identities are what Kubernetes' RBAC expects (the admin in system:masters, the node in
system:nodes, the components under their system: names). Made once per state directory;
a CA that is about to expire is replaced with everything it signed."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = 365


def _openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {out.stderr.strip()}")


@dataclass(frozen=True)
class Identity:
    """A certificate signed by the cluster CA: `cn`, `org` (a group), `sans` for servers."""
    name: str
    cn: str
    org: str = ""
    sans: tuple[str, ...] = ()
    server: bool = False


def identities(service_ip: str, node: str, bridge_ip: str) -> list[Identity]:
    api_sans = ("IP:127.0.0.1", f"IP:{service_ip}", f"IP:{bridge_ip}", "DNS:localhost", "DNS:kubernetes",
                "DNS:kubernetes.default", "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local")
    return [
        Identity("apiserver", "kube-apiserver", sans=api_sans, server=True),
        Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
        Identity("admin", "sms-cluster-admin", "system:masters"),
        Identity("controller-manager", "system:kube-controller-manager"),
        Identity("scheduler", "system:kube-scheduler"),
        Identity("kube-proxy", "system:kube-proxy"),
        Identity("coredns", "system:coredns"),
        Identity("node", f"system:node:{node}", "system:nodes"),
        Identity("kubelet", node, sans=("IP:127.0.0.1", f"IP:{bridge_ip}", f"DNS:{node}"), server=True),
        Identity("istiod", "istiod", sans=("DNS:istiod.istio-system.svc", "IP:127.0.0.1", f"IP:{bridge_ip}"),
                 server=True),
        Identity("istiod-client", "istiod", "system:masters"),
    ]


def ensure(pki: Path, ids: list[Identity]) -> list[str]:
    """Creates what is missing under `pki` (CA, every identity, the service-account key
    pair). Returns what it made, for the log."""
    pki.mkdir(parents=True, exist_ok=True)
    made = []
    if not (pki / "ca.crt").exists():
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.crt", "-days", str(DAYS * 2), "-subj", "/CN=sms-cluster-ca",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=pki)
        for i in ids:  # a new CA: everything it signs is made anew
            (pki / f"{i.name}.crt").unlink(missing_ok=True)
        made.append("CA")
    for i in ids:
        spec = pki / f"{i.name}.spec"  # what the certificate says: made anew when that changes
        if (pki / f"{i.name}.crt").exists() and spec.exists() and spec.read_text() == repr(i):
            continue
        subj = f"/CN={i.cn}" + (f"/O={i.org}" if i.org else "")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{i.name}.key", "-out", f"{i.name}.csr", "-subj", subj, cwd=pki)
        ext = pki / f"{i.name}.ext"
        lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage=" + ("serverAuth,clientAuth" if i.server else "clientAuth")]
        if i.sans:
            lines.append("subjectAltName=" + ",".join(i.sans))
        ext.write_text("\n".join(lines) + "\n")
        _openssl("x509", "-req", "-in", f"{i.name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{i.name}.crt", "-days", str(DAYS), "-extfile", ext.name, cwd=pki)
        (pki / f"{i.name}.csr").unlink()
        ext.unlink()
        spec.write_text(repr(i))
        made.append(i.name)
    if not (pki / "sa.key").exists():
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=pki)
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        made.append("service-account keys")
    for key in pki.glob("*.key"):
        key.chmod(0o600)
    return made


def kubeconfig(path: Path, server: str, pki: Path, user: str) -> Path:
    """A kubeconfig for `user` (an identity's name) at `server`, with file references."""
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
  - name: sms-cluster
    cluster:
      server: {server}
      certificate-authority: {pki / 'ca.crt'}
users:
  - name: {user}
    user:
      client-certificate: {pki / f'{user}.crt'}
      client-key: {pki / f'{user}.key'}
contexts:
  - name: sms-cluster
    context:
      cluster: sms-cluster
      user: {user}
current-context: sms-cluster
""")
    path.chmod(0o600)
    return path
