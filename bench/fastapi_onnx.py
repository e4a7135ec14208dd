"""`make bench`'s Python comparison: the same model artifact served the way a Python team
would, FastAPI + onnxruntime under uvicorn (2 workers, uvloop, httptools), so the Rust
services' figures have a baseline measured in the same run on the same cores.

It does what the model service does per call, no more: the text checked and normalized
(trim, whitespace collapsed, at most 1,000 characters), one `session.run` on one thread,
the spam probability against the card's threshold. The handler is `async def` and runs
inference on the event loop (a call is ~40-60 us; a thread-pool hop would cost more than
it saves), which is the faster of FastAPI's two ways for work this short.

  MODEL_DIR=models/v1 .venv/bench/bin/uvicorn fastapi_onnx:app --app-dir bench \
      --host 127.0.0.1 --port 8000 --workers 2 --loop uvloop --http httptools --no-access-log

POST /sms/ {"sms": "..."} -> {"result": "spam"|"ham", "spam_probability": p, "model_version": v}
(the app service's request body, so one wrk script drives both).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

MAX_CHARS = 1000
MODEL_DIR = Path(os.environ["MODEL_DIR"])
CARD = json.loads((MODEL_DIR / "model.json").read_text())
SPAM = CARD["classes"].index("spam")
THRESHOLD = float(CARD["threshold"])

_opts = ort.SessionOptions()
_opts.intra_op_num_threads = 1
_opts.inter_op_num_threads = 1
_opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
SESSION = ort.InferenceSession(str(MODEL_DIR / "model.onnx"), _opts, providers=["CPUExecutionProvider"])

PROBABILITIES = [o.name for o in SESSION.get_outputs()].index("probabilities")

app = FastAPI()


class Sms(BaseModel):
    sms: str


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.post("/sms/")
async def classify(body: Sms) -> dict:
    text = " ".join(body.sms.split())
    if not text or len(text) > MAX_CHARS:
        raise HTTPException(status_code=422, detail=f"sms must be 1 to {MAX_CHARS} characters")
    # Every output, as the model service runs the graph; the spam column of `probabilities`.
    outputs = SESSION.run(None, {"text": np.array([[text]], dtype=object)})
    p = float(outputs[PROBABILITIES][0][SPAM])
    return {"result": "spam" if p >= THRESHOLD else "ham", "spam_probability": p,
            "model_version": CARD["version"]}
