"""`make cluster` (scripts/cluster.sh): a real Kubernetes on this machine with the chart
installed by the real helm, from the start to the stop. What runs is
smsdev.cluster.supervisor's Cluster; see docs/local-cluster.md.

  python -m smsdev.cluster run [helm --set/-f arguments]

One instance at a time (a lock in the state directory); Ctrl-C, SIGTERM or SIGHUP stop
everything it started, in order, and remove the namespaces; a run that could not stop in
order (kill -9) is cleaned up by the next start, which says what it cleaned.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from smsdev.cluster import access
from smsdev.cluster.settings import Settings
from smsdev.cluster.supervisor import Cluster
from smsdev.console import log as say


def cmd_run(args: list[str]) -> int:
    s = Settings()
    c = Cluster(s)
    if not c.run.lock():
        holder = c.run.read().get("supervisor", {})
        say(f"a cluster is already running (pid {holder.get('pid', '?')}); stop it first (Ctrl-C in its terminal)")
        return 1
    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        c.prepare()
        c.control_plane()
        say(f"the API server is ready after {time.monotonic() - c.started:.1f} s")
        c.node()
        c.networking()
        c.install_crds()
        c.istio()
        c.gateway_up()
        c.prometheus()
        c.flagger()
        c.install_chart(args)
        c.wait_pods()
        say(f"cluster ready in {time.monotonic() - c.started:.0f} s: release {s.release} in namespace "
            f"{s.release_namespace}, every pod Running and Ready")
        say(f"export KUBECONFIG={c.kubeconfig} PATH={s.bin}:$PATH   # kubectl, helm")
        access.write(s.state, s.gateway_port, s.prometheus_port)
        while not stopping.wait(1):
            for p in c.procs.procs:
                if not p.alive() and not p.expected_exit:
                    say(f"{p.name} (pid {p.pid}) exited with {p.returncode}; the cluster stops (log: {p.log_path})")
                    stopping.set()
    finally:
        say("stopping the cluster")
        access.remove(s.state)
        c.stop()
        c.run.release()
    return 0



if __name__ == "__main__":
    sys.exit(cmd_run(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "run" else sys.argv[1:]))
