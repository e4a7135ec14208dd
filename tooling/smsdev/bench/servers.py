"""The servers the bench starts, each on free ports of 127.0.0.1 and ready before it
returns: ours (the model service, the app) through smsdev.stack, the one description of
the local stack; the FastAPI + onnxruntime comparison (bench/fastapi_onnx.py) and Seldon's
MLServer (bench/mlserver) from their virtualenvs. All are children of one process group,
stopped together."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from smsdev import procs
from smsdev import stack as local

from .common import CHART_MODEL_LOGGING, ROOT

FASTAPI_APP = ROOT / "bench" / "fastapi_onnx.py"
MLSERVER_DIR = ROOT / "bench" / "mlserver"


class Servers:
    def __init__(self, work: Path, venv: str | None, mlserver_venv: str | None):
        self.work = work
        self.venv, self.mlserver_venv = venv, mlserver_venv
        self.stack = local.Stack(work, profile="release")

    def stop_all(self):
        self.stack.stop_all()

    def model(self, name: str, version: str = "v1", root: Path = local.MODELS, **env) -> tuple[local.Service, procs.Proc]:
        """The model service (release build) serving `version` from `root`."""
        svc = local.model(name, grpc=f"127.0.0.1:{procs.free_port()}", metrics=f"127.0.0.1:{procs.free_port()}",
                          version=version, model_root=root,
                          # The chart's logging (helm/values.yaml modelService.logLevel/logFormat):
                          # the headline figures are the model as the chart runs it.
                          **{"MODEL_RELOAD_SECS": "0", **CHART_MODEL_LOGGING, **env})
        return svc, self.stack.up(svc, timeout=60)

    def app(self, name: str, model: local.Service, version: str = "v1", cache: bool = False, **env):
        """The app (release build) in front of `model`, at warn."""
        svc = local.app(name, http=f"127.0.0.1:{procs.free_port()}", model_host=f"http://{model.addresses['grpc']}",
                        version=version, cache=cache, **{"RUST_LOG": "warn", **env})
        return svc, self.stack.up(svc, timeout=60)

    def fastapi(self, name: str, model_dir: Path) -> tuple[str, procs.Proc]:
        """FastAPI + onnxruntime under uvicorn (2 workers, uvloop, httptools) on `model_dir`;
        returns its URL."""
        port = procs.free_port()
        venv = Path(self.venv)
        proc = self.stack.start(name, [venv / "bin" / "python", "-m", "uvicorn", f"{FASTAPI_APP.stem}:app",
                                       "--app-dir", FASTAPI_APP.parent, "--host", "127.0.0.1", "--port", str(port),
                                       "--workers", "2", "--loop", "uvloop", "--http", "httptools",
                                       "--no-access-log", "--log-level", "warning"],
                                env={"MODEL_DIR": str(model_dir)})
        url = f"http://127.0.0.1:{port}"

        def ready():
            proc.check_alive()
            return procs.http_ok(f"{url}/healthz")
        procs.poll(ready, 60, what=f"{name} ready")
        return url, proc

    def mlserver(self) -> tuple[str, procs.Proc]:
        """Seldon's MLServer serving models/v1's model.onnx as `sms-spam` through the minimal
        runtime in bench/mlserver; returns its gRPC address."""
        venv = Path(self.mlserver_venv)
        grpc_port, http_port, metrics_port = procs.free_port(), procs.free_port(), procs.free_port()
        models = self.work / "mlserver-models"
        (models / "sms-spam").mkdir(parents=True, exist_ok=True)
        (models / "settings.json").write_text(json.dumps({
            "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port, "host": "127.0.0.1",
            "debug": False, "logging_level": "WARNING",
            # Inference in the server's own process: MLServer 1.7.1's separate worker
            # processes die at start on Python 3.11 ("There is no current event loop").
            "parallel_workers": 0}))
        (models / "sms-spam" / "model-settings.json").write_text(json.dumps({
            "name": "sms-spam", "implementation": "sms_onnx.SmsOnnx",
            "parameters": {"uri": str(local.MODELS / "v1" / "model.onnx")}}))
        # MLServer imports a model's runtime from the model's own folder.
        shutil.copy(MLSERVER_DIR / "sms_onnx.py", models / "sms-spam" / "sms_onnx.py")
        proc = self.stack.start("mlserver", [venv / "bin" / "mlserver", "start", str(models)])
        url = f"http://127.0.0.1:{http_port}/v2/models/sms-spam/ready"

        def ready():
            proc.check_alive()
            return procs.http_ok(url)
        procs.poll(ready, 120, what="MLServer ready")
        return f"127.0.0.1:{grpc_port}", proc
