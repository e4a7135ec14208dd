"""The Envoy bootstrap of a local proxy: only the admin port and the way to Istio's
control plane (ADS over plaintext gRPC on 127.0.0.1). Every listener, route and cluster
comes from Istio over xDS; this file holds none, so nothing here can disagree with Istio.

The node is introduced as istio-agent would: id `TYPE~IP~NAME~NAMESPACE.svc.cluster.local`
and the metadata istiod reads (namespace, labels, cluster, interception mode NONE so the
sidecar's outbound listeners bind real loopback ports instead of waiting for iptables).

Envoy's stats name a cluster by its first dot-free token only: Istio's subset cluster
`outbound|8080|v2|sms-app-app.sms-app.svc.cluster.local` (stat name: the cluster's
`alt_stat_name`, the same with Istio's `;` delimiter) would show in /stats/prometheus as
`envoy_cluster_sms_app_svc_cluster_local__upstream_rq_xx{envoy_cluster_name=
"outbound|8080|v2|sms-app-app"}` (measured on Envoy 1.40). istio-agent's bootstrap extracts the
whole `.svc.cluster.local` name (its `cluster_name` regex); so does this one (and the `;`
after it), under Envoy's own tag name, so the gateway's counts per subset read
`envoy_cluster_upstream_rq_xx{envoy_cluster_name="outbound|8080|v2|sms-app-app.sms-app.svc.cluster.local"}`
as the experiment's rules expect (grafana/rules/sms-experiment.rules.yml, docs/contracts.md).
"""

from __future__ import annotations

import json

# While Envoy's default tags are on, a custom tag with a default's name is skipped (with a
# warning), so the defaults are off and the ones worth reading are listed by name (each
# with its default regex), the cluster name's with istio-agent's regex instead (plus the `;`).
STATS_TAGS = [
    {"tag_name": "envoy.cluster_name", "regex": r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?);?\.)"},
    *({"tag_name": f"envoy.{name}"} for name in (
        "response_code", "response_code_class", "http_conn_manager_prefix", "listener_address", "virtual_host",
        "virtual_cluster", "rds_route_config", "worker_id", "tcp_prefix")),
]


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
        "stats_config": {"use_all_default_tags": False, "stats_tags": STATS_TAGS},
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
