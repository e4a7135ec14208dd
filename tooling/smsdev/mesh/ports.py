"""The local mesh's addresses: every port `make mesh` listens on (MESH_* in the
environment, see scripts/mesh.sh), and whether one is free. Standard library only."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass
class Ports:
    gateway: int = 8000          # the ingress gateway (Envoy)
    gateway_admin: int = 15000   # its admin
    sidecar_admin: int = 15001   # the apps' sidecar (Envoy) admin
    xds: int = 15010             # istio-xds ADS (gRPC)
    istiod: int = 15014          # istio-xds control/debug (HTTP)
    control: int = 15080         # this supervisor's upgrade API (HTTP)
    app: int = 18080             # first app process port (+1 per app process)
    model: int = 18090           # first model gRPC port
    metrics: int = 19464         # first model metrics port
    prometheus: int = 9090       # Prometheus (make experiment's default address)
    vip: str = "127.0.0.2"       # the called Services' address (the sidecar's listener)

    @classmethod
    def from_env(cls) -> "Ports":
        p = cls()
        for k, env in (("gateway", "MESH_PORT"), ("gateway_admin", "MESH_ADMIN_PORT"),
                       ("sidecar_admin", "MESH_SIDECAR_ADMIN_PORT"), ("xds", "MESH_XDS_PORT"),
                       ("istiod", "MESH_ISTIOD_PORT"), ("control", "MESH_CONTROL_PORT"),
                       ("app", "MESH_APP_PORT"), ("model", "MESH_MODEL_PORT"),
                       ("metrics", "MESH_METRICS_PORT"), ("prometheus", "MESH_PROMETHEUS_PORT")):
            if os.environ.get(env):
                setattr(p, k, int(os.environ[env]))
        p.vip = os.environ.get("MESH_VIP", p.vip)
        return p


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nobody listens there. SO_REUSEADDR as the servers set it: connections of a run just
    stopped (TIME_WAIT) do not count, a listener does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
