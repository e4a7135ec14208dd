"""`make cluster`'s addresses and paths: from the environment (CLUSTER_*), with defaults for
one machine. Standard library only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from smsdev import ROOT


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
