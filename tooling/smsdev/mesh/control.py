"""The running experiment's control API, both ends: the supervisor serves
`POST /upgrade` on 127.0.0.1 (MESH_CONTROL_PORT), and `scripts/mesh.sh upgrade` is its
client, finding it through the run directory's instance record. An upgrade is
`helm upgrade` for the local mesh (LocalMesh.upgrade): refused values leave the running
experiment as it was. Standard library only."""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from smsdev.console import log
from smsdev.mesh import instance

if TYPE_CHECKING:
    from smsdev.mesh.supervisor import LocalMesh


def serve(mesh: LocalMesh, port: int, record) -> ThreadingHTTPServer:
    """The API on 127.0.0.1:`port`, on a thread of its own; `record()` after each upgrade
    (the instance record's values)."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            if self.path != "/upgrade":
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            try:
                result, code = mesh.upgrade(body.get("args", [])), 200
                record()
                log(f"upgraded in {result['seconds']} s: values {' '.join(result['values'])}; started "
                    f"{result['started'] or 'none'}, stopped {result['stopped'] or 'none'}; Istio: "
                    f"updated {len(result['istio']['updated'] or [])} objects, created {len(result['istio']['created'] or [])}, "
                    f"deleted {len(result['istio']['deleted'] or [])}")
            except Exception as err:  # refused values, Istio's validation, a process not starting
                result, code = {"error": str(err)}, 400
                log(f"upgrade refused: {err}")
            data = json.dumps(result).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def upgrade(args: list[str], run: Path) -> int:
    """`scripts/mesh.sh upgrade ARGS`: asks the experiment running from `run` to take these
    values; prints what changed (exit 0) or why not (exit 1)."""
    inst = instance.read(run)
    if not inst:
        print(f"error: no experiment runs from {run} (start it with `make mesh`)", file=sys.stderr)
        return 1
    req = urllib.request.Request(inst["control"] + "/upgrade", method="POST",
                                 data=json.dumps({"args": args}).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            result = json.load(r)
    except urllib.error.HTTPError as e:
        print(f"error: {json.loads(e.read()).get('error')}; the experiment keeps its values", file=sys.stderr)
        return 1
    except (OSError, urllib.error.URLError) as e:
        print(f"error: the experiment (pid {inst['pid']}) does not answer: {e}", file=sys.stderr)
        return 1
    ist = result["istio"]
    print(f"upgraded in {result['seconds']} s, values: {' '.join(result['values'])}\n"
          f"  processes started: {', '.join(result['started']) or 'none'}; stopped: {', '.join(result['stopped']) or 'none'}\n"
          f"  Istio objects updated: {', '.join(ist['updated'] or []) or 'none'}; created: "
          f"{', '.join(ist['created'] or []) or 'none'}; deleted: {', '.join(ist['deleted'] or []) or 'none'}\n"
          f"  pushed to the Envoys and acknowledged ({ist['push_ms']} ms)")
    return 0
