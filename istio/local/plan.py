"""Plan the local experiment from a rendered chart: one local process per rendered
Deployment (its environment taken from the render, addresses moved to 127.0.0.1), and
the Envoy bootstrap whose subset clusters point at those processes.

  plan.py RENDERED.yaml --out-dir DIR [--gateway-listen 127.0.0.1:8000] ...

Writes DIR/envoy.yaml and prints one line per process for scripts/mesh.sh, tab-separated:
NAME, BINARY, MAIN_URL, METRICS_URL, then the environment as `K=V` words.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import translate

COMPONENT = "app.kubernetes.io/component"
# set per process here, whatever the render says (cluster paths and addresses)
DROP = {"HTTP_ADDR", "MODEL_HOST", "GRPC_ADDR", "METRICS_ADDR", "MODEL_ROOT", "LOG_FORMAT"}


def plan(rendered: str, out_dir: Path, gateway: str, mesh: str, admin: str, app_base: int,
         model_base: int, metrics_base: int, local_domains: list[str]) -> list[tuple]:
    docs = translate.load_docs(rendered)
    procs, endpoints = [], {}
    napp = nmodel = 0
    for w in translate.workloads(docs):
        env = {k: v for k, v in w["env"].items() if k not in DROP}
        env["LOG_FORMAT"] = "text"
        comp = w["labels"].get(COMPONENT)
        if comp == "app":
            addr = f"127.0.0.1:{app_base + napp}"
            napp += 1
            env.update(HTTP_ADDR=addr, MODEL_HOST=f"http://{mesh}")
            procs.append((w["name"], "app-service", f"http://{addr}/sms/", f"http://{addr}/metrics", env))
        elif comp == "model":
            addr = f"127.0.0.1:{model_base + nmodel}"
            metrics = f"127.0.0.1:{metrics_base + nmodel}"
            nmodel += 1
            env.update(GRPC_ADDR=addr, METRICS_ADDR=metrics)
            procs.append((w["name"], "model-service", f"grpc://{addr}", f"http://{metrics}/metrics", env))
        else:
            raise SystemExit(f"plan: Deployment {w['name']} has no {COMPONENT} app|model label")
        for key in w["subsets"]:
            endpoints[key] = addr
    boot = translate.translate(docs, endpoints, gateway, mesh, admin, local_domains)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "envoy.yaml").write_text(translate.dump(boot))
    return procs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="plan the local mesh from a rendered chart")
    p.add_argument("rendered")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--gateway-listen", default="127.0.0.1:8000")
    p.add_argument("--mesh-listen", default="127.0.0.1:15001")
    p.add_argument("--admin", default="127.0.0.1:15000")
    p.add_argument("--app-port-base", type=int, default=18080)
    p.add_argument("--model-port-base", type=int, default=18090)
    p.add_argument("--metrics-port-base", type=int, default=19464)
    p.add_argument("--local-domains", action="append", default=None)
    a = p.parse_args(argv)
    try:
        procs = plan(Path(a.rendered).read_text(), Path(a.out_dir), a.gateway_listen, a.mesh_listen, a.admin,
                     a.app_port_base, a.model_port_base, a.metrics_port_base,
                     a.local_domains if a.local_domains is not None else ["*"])
    except (translate.Unsupported, ValueError) as err:
        print(f"plan: {err}", file=sys.stderr)
        return 2
    for name, binary, url, metrics, env in procs:
        if any(" " in v or "\t" in v for v in env.values()):
            print(f"plan: {name}: an environment value holds a blank, not supported", file=sys.stderr)
            return 2
        print("\t".join([name, binary, url, metrics, " ".join(f"{k}={v}" for k, v in env.items())]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
