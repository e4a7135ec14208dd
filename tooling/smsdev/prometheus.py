"""A real Prometheus (Debian's package) for the local stack: its configuration equivalent to
the chart's ServiceMonitors (a static scrape of the local processes with the labels the
Prometheus operator adds), the rule files it evaluates, and the process itself as a
Service of smsdev.stack. Used by the observability suite (the cluster runs its own,
configured by the Prometheus Operator). Standard library only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from smsdev.stack import Service

NAMESPACE = "sms-app"  # the chart's release namespace, as the scrape adds it


def tool(name: str) -> str:
    """Path of an installed program (Prometheus from Debian's package: the scripts that need
    it run `apt_ensure prometheus`); a missing one is an error that says so."""
    path = shutil.which(name)
    assert path, f"{name} is not installed: the scripts that use it install it (apt_ensure {name} in scripts/lib.sh)"
    return path


def scrape_config(targets: list[dict], interval: str = "1s", rule_files: list = ()) -> dict:
    """A Prometheus configuration equivalent to the chart's ServiceMonitors.

    The operator's ServiceMonitor makes job = the Service's name and adds namespace, pod,
    service and endpoint; a static config with the same labels gives the same series.
    `targets` items: {job, address, pod, endpoint} and optionally namespace (default
    NAMESPACE). The services label their own series with version (and source).
    """
    jobs: dict[str, list] = {}
    for t in targets:
        jobs.setdefault(t["job"], []).append({
            "targets": [t["address"]],
            "labels": {"namespace": t.get("namespace", NAMESPACE), "pod": t["pod"], "service": t["job"],
                       "endpoint": t["endpoint"]},
        })
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval,
                   "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "metrics_path": "/metrics", "scheme": "http",
                            "static_configs": cfgs} for job, cfgs in jobs.items()],
    }
    if rule_files:
        config["rule_files"] = [str(f) for f in rule_files]
    return config


def write_config(path: Path, config: dict) -> Path:
    """Writes a Prometheus configuration or rule file (JSON is YAML), replacing the old one
    in one step (a reload never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(path)
    return path


def server(name: str = "prometheus", *, listen: str, workdir: Path, config: dict,
               retention: str = "1h", log_level: str = "info", args: tuple = ()) -> Service:
    """A real Prometheus (Debian's package) with this configuration (written to
    `workdir/prometheus.yml`; SIGHUP re-reads it) and its data in `workdir/data`. Ready when
    `/-/ready` answers 200."""
    cfg = write_config(workdir / "prometheus.yml", config)
    return Service(name, tool("prometheus"), {}, f"http://{listen}/-/ready", {"url": f"http://{listen}"}, [
        f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={listen}",
        f"--storage.tsdb.retention.time={retention}", f"--log.level={log_level}", *args])

