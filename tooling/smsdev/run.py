"""`make run` (scripts/run-local.sh): model v1 and the app as local processes (smsdev.stack's
description), supervised until Ctrl-C, SIGTERM or SIGHUP, then stopped by PID.

  python -m smsdev.run [--profile release] [--app-port 8080] [--model-port 8081]
                       [--metrics-port 9464] [--inference-port 8082] [--log-dir .cache/run]

Standard library only.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from smsdev import ROOT
from smsdev.console import say
from smsdev.runstate import RunState
from smsdev.stack import Stack, app, model


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m smsdev.run", description="model v1 and the app, until Ctrl-C")
    p.add_argument("--profile", default="release", choices=["release", "debug"])
    p.add_argument("--app-port", type=int, default=8080)
    p.add_argument("--model-port", type=int, default=8081)
    p.add_argument("--metrics-port", type=int, default=9464)
    p.add_argument("--inference-port", type=int, default=8082)
    p.add_argument("--log-dir", type=Path, default=ROOT / ".cache" / "run")
    p.add_argument("--grpcurl", default="grpcurl", help="the grpcurl to show in the example command")
    a = p.parse_args(argv)

    m = model(grpc=f"127.0.0.1:{a.model_port}", metrics=f"127.0.0.1:{a.metrics_port}",
              http=f"127.0.0.1:{a.inference_port}")
    w = app(http=f"127.0.0.1:{a.app_port}", model_host=f"http://127.0.0.1:{a.model_port}")
    state = RunState(a.log_dir, "`make run`")
    if not state.lock():
        other = state.read().get("supervisor") or {}
        print(f"error: `make run` already runs from {os.path.relpath(a.log_dir, Path.cwd())}/ (pid "
              f"{other.get('pid', '?')}); stop it with Ctrl-C in its terminal. Nothing was changed.", file=sys.stderr)
        return 1
    for line in state.clean():
        say(line)
    # Each child in a session of its own: the terminal's signals reach only this process,
    # which stops them in order; and each dies with this process however it ends.
    stack = Stack(a.log_dir, a.profile, supervised=True, state=state)
    stopping = False
    running = False

    class Interrupted(Exception):
        pass

    def on_signal(*_):
        nonlocal stopping
        stopping = True
        if not running:  # still starting: stop waiting for readiness at once
            raise Interrupted()

    # SIGHUP: the terminal was closed (or the session ended); stop as for Ctrl-C
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        for s in (m, w):
            stack.up(s)
        logs = os.path.relpath(a.log_dir, Path.cwd())
        running = True
        say(f"""
  SMS spam detection is running (Ctrl-C stops it; logs in {logs}/):
    web UI        {w.addresses['ui']}
    app metrics   {w.addresses['metrics']}
    model gRPC    {m.addresses['grpc']}   e.g.
      {a.grpcurl} -plaintext -d '{{"text":"WIN a free prize now!"}}' {m.addresses['grpc']} sms.v1.SpamClassifier/Classify
    model metrics {m.addresses['metrics']}
    model Open Inference Protocol: gRPC inference.GRPCInferenceService on {m.addresses['grpc']}, HTTP {m.addresses['inference']}
      curl -d '{{"inputs":[{{"name":"text","shape":[1],"datatype":"BYTES","data":["WIN a free prize now!"]}}]}}' {m.addresses['inference']}/models/sms-spam/infer
""", sys.stdout)
        while not stopping:
            for proc in stack.procs:
                if not proc.alive():
                    say(f"error: {proc.name} exited with {proc.popen.returncode}; last lines of "
                        f"{os.path.relpath(proc.log_path, Path.cwd())}:\n{proc.tail(10)}")
                    return 1
            time.sleep(0.2)
        return 0
    except Interrupted:
        return 0
    except AssertionError as err:
        say(f"error: {err}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        stack.stop_all()
        state.release()
        say("stopped")


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
