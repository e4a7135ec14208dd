"""One run of the bench: its options, its work directory, the servers it started, its load
generators (one per request frame) and the result as it grows, every measured load a row."""

from __future__ import annotations

import argparse
import time

from .common import MESSAGE, MODEL_INFER
from .frames import model_infer_frame
from .loadgen import H2load
from .servers import Servers


class Session:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.work = a.log_dir
        self.work.mkdir(parents=True, exist_ok=True)
        self.servers = Servers(self.work, a.venv, a.mlserver_venv)
        self.h2 = H2load(self.work)
        self.h2_infer = H2load(self.work, model_infer_frame([MESSAGE]), MODEL_INFER, "infer-1")
        self.h2_infer64 = H2load(self.work, model_infer_frame([MESSAGE] * 64), MODEL_INFER, "infer-64")
        self.rows: list[dict] = []
        self.result: dict = {"runs": self.rows}
        self.started = time.monotonic()
