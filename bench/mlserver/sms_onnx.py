"""make bench's MLServer comparison: Seldon's MLServer, the server Seldon Core 2
runs and KServe supports, serving the same model.onnx through a minimal onnxruntime runtime
that answers the Open Inference Protocol's ModelInfer as the model service does: input
`text` (BYTES [N] or [N, 1]), outputs `label` (BYTES) and `spam_probability` (FP32)."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SmsOnnx(MLModel):
    async def load(self) -> bool:
        path = Path(self.settings.parameters.uri)
        card = json.loads((path.parent / "model.json").read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as the model service's sessions
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.spam = card["classes"].index("spam")
        self.threshold = card["threshold"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        x = np.array(texts, dtype=object).reshape(-1, 1)
        probabilities = self.session.run(["probabilities"], {"text": x})[0][:, self.spam].astype(np.float32)
        labels = ["spam" if p >= self.threshold else "ham" for p in probabilities]
        return InferenceResponse(model_name=self.name, outputs=[
            StringCodec.encode_output("label", labels),
            NumpyCodec.encode_output("spam_probability", probabilities),
        ])
