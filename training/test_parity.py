"""ONNX Runtime must reproduce scikit-learn on every test-split row, and the committed
models must be what training produces (same metrics, same class order)."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import train

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def dataset():
    return train.load_dataset()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_onnx_matches_sklearn_on_every_test_row(dataset, version):
    pipe, card = train.train(version, dataset)
    _, x_test, _, _ = train.split(dataset)
    sess = ort.InferenceSession(str(MODELS / version / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_modelmeta().custom_metadata_map["classes"] == "ham,spam"

    want = pipe.predict_proba(x_test)[:, 1]
    # One row at a time, as the service calls it, and as one batch: both must match.
    single = np.array([sess.run(None, {"text": np.array([[t]], dtype=object)})[1][0, 1] for t in x_test])
    labels, batch = sess.run(None, {"text": np.array([[t] for t in x_test], dtype=object)})
    for got in (single, batch[:, 1]):
        diff = np.abs(got - want)
        assert diff.max() < 1e-4, f"{version}: max |dp| {diff.max():.2e} at row {diff.argmax()}"
        assert ((got >= train.THRESHOLD) == (want >= train.THRESHOLD)).all()
    assert list(labels) == list(pipe.predict(x_test))
    print(f"{version}: {len(x_test)} rows, max |dp| single {np.abs(single - want).max():.1e}")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_committed_model_card_matches_training(dataset, version):
    pipe, card = train.train(version, dataset)
    committed = json.loads((MODELS / version / "model.json").read_text())
    assert committed == card, "models/ is stale: run `make models` and commit the result"
    onnx_bytes = train.export_onnx(pipe, version).SerializeToString()
    assert onnx_bytes == (MODELS / version / "model.onnx").read_bytes(), "training is not reproducible"


def test_split_is_deduplicated_and_stratified(dataset):
    x_train, x_test, y_train, y_test = train.split(dataset)
    assert not set(x_train) & set(x_test)
    share = lambda ys: sum(y == "spam" for y in ys) / len(ys)
    assert abs(share(y_train) - share(y_test)) < 0.01


def test_normalization_collapses_whitespace():
    assert train.normalize("  WIN\t\ta  prize\n") == "WIN a prize"
