"""The pinned projects' files `make cluster` installs from (CRDs, charts, manifests), found in
Go's module cache and fetched through the module proxy when missing: the versions
smsdev.cluster.objects names, or the one a module of this repository pins. Standard
library only."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from smsdev import ROOT
from smsdev.cluster.objects import FLAGGER, PROMETHEUS_OPERATOR


def module_dir(module: str, workdir: Path, cwd: Path | None = None) -> Path:
    """A Go module's folder in Go's module cache, fetched through the module proxy when
    missing: the version `module@version` names (downloaded from `workdir`), or the one a
    module of this repository (cwd) pins."""
    env = {**os.environ, "GOFLAGS": "-modcacherw", "GOTOOLCHAIN": "local"}
    go = os.environ.get("GO") or "go"
    if cwd:
        out = subprocess.run([go, "list", "-m", "-f", "{{.Dir}}", module], cwd=cwd, env=env,
                             capture_output=True, text=True)
    else:
        out = subprocess.run([go, "mod", "download", "-json", module], cwd=workdir, env=env,
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"cannot fetch {module} through the Go module proxy: {out.stderr.strip()}")
    return Path(out.stdout.strip() if cwd else json.loads(out.stdout)["Dir"])


def istio_dir(workdir: Path) -> Path:
    """The Istio source the cluster's istiod is built from (cluster/build/istio/go.mod): its
    CRDs and charts."""
    return module_dir("istio.io/istio", workdir, cwd=ROOT / "cluster" / "build" / "istio")


def prometheus_operator_dir(workdir: Path) -> Path:
    return module_dir(f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR}", workdir)


def flagger_dir(workdir: Path) -> Path:
    return module_dir(f"github.com/fluxcd/flagger@{FLAGGER}", workdir)


def crd_files(workdir: Path) -> list[Path]:
    """The CRDs the chart's objects need, from each project's own Go module (the
    versions the chart tests validate against): Istio's (the version cluster/build/istio
    pins), the Prometheus Operator's and Flagger's."""
    istio, prom, flagger = istio_dir(workdir), prometheus_operator_dir(workdir), flagger_dir(workdir)
    return [istio / "manifests/charts/base/files/crd-all.gen.yaml",
            *sorted((prom / "example/prometheus-operator-crd").glob("*.yaml")),
            flagger / "artifacts/flagger/crd.yaml"]
