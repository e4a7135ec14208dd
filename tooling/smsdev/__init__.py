"""The project's tooling, one module per job, installed (editable) into every virtualenv the
scripts create (scripts/lib.sh `venv_ensure`), so every suite, supervisor and script imports
it by its package name.

  procs        processes started, watched and stopped by PID (Proc, ProcGroup, ports, polling)
  runstate     a supervisor's run directory: its lock and the processes it runs
  console      a line for the user that a closed terminal cannot turn into an error
  stack        the services' description (which binary, environment, ports, readiness)
  prometheus   a Prometheus scraping the local processes as the chart's ServiceMonitors do
  run          `make run`
  cluster      `make cluster` (and `make mesh`): a real Kubernetes on this machine and its supervisor
  traffic      `make mesh-traffic`: labelled visitors through the cluster's ingress gateway
  protos       Python modules generated from .proto files, as subpackages (smsdev.generated)
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # tooling/smsdev/__init__.py, installed editable
