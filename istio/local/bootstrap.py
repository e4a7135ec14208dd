"""The Envoy bootstrap of a local proxy: only the admin port and the way to Istio's
control plane (ADS over plaintext gRPC on 127.0.0.1). Every listener, route and cluster
comes from Istio over xDS; this file holds none, so nothing here can disagree with Istio.

The node is introduced as istio-agent would: id `TYPE~IP~NAME~NAMESPACE.svc.cluster.local`
and the metadata istiod reads (namespace, labels, cluster, interception mode NONE so the
sidecar's outbound listeners bind real loopback ports instead of waiting for iptables).
"""

from __future__ import annotations

import json


def bootstrap(kind: str, ip: str, name: str, namespace: str, labels: dict, xds: str, admin: str,
              cluster: str = "Kubernetes") -> dict:
    xhost, xport = xds.rsplit(":", 1)
    ahost, aport = admin.rsplit(":", 1)
    return {
        "node": {
            "id": f"{kind}~{ip}~{name}~{namespace}.svc.cluster.local",
            "cluster": f"{labels.get('app', name)}.{namespace}",
            "metadata": {
                "NAME": name,
                "NAMESPACE": namespace,
                "LABELS": labels,
                "CLUSTER_ID": cluster,
                "INTERCEPTION_MODE": "NONE",
                "INSTANCE_IPS": ip,
                "WORKLOAD_NAME": name,
            },
        },
        "admin": {"address": {"socket_address": {"address": ahost, "port_value": int(aport)}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [{
                "name": "xds-grpc",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {
                    "cluster_name": "xds-grpc",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": xhost, "port_value": int(xport)}}}}]}],
                },
            }],
        },
    }


def dump(boot: dict) -> str:
    """JSON (Envoy reads a .json bootstrap as such)."""
    return json.dumps(boot, indent=1) + "\n"
