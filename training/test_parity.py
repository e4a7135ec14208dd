"""ONNX Runtime must reproduce scikit-learn on every test-split row, and the committed
models must be what training produces: the same card exactly, and the same graph with
parameters and predictions within the tolerances of reproducible.py (portable across CPU
kinds, whose BLAS kernels differ in the last bits)."""

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort
import pytest

import reproducible
import train

MODELS = Path(__file__).resolve().parent.parent / "models"
STALE = "models/ is stale: run `make models` and commit the result"


@pytest.fixture(scope="module")
def dataset():
    return train.load_dataset()


@pytest.fixture(scope="module")
def trained(dataset):
    """Each version trained once for the whole module: {version: (pipeline, card)}."""
    return {v: train.train(v, dataset) for v in ("v1", "v2")}


def committed(version: str) -> onnx.ModelProto:
    return onnx.load_from_string((MODELS / version / "model.onnx").read_bytes())


def p_spam(model: onnx.ModelProto, texts: list[str], one_at_a_time: bool = False) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    if one_at_a_time:
        return np.array([sess.run(None, {"text": np.array([[t]], dtype=object)})[1][0, 1] for t in texts])
    return sess.run(None, {"text": np.array([[t] for t in texts], dtype=object)})[1][:, 1]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_onnx_matches_sklearn_on_every_test_row(dataset, trained, version):
    pipe, _ = trained[version]
    _, x_test, _, _ = train.split(dataset)
    model = committed(version)
    assert {p.key: p.value for p in model.metadata_props}["classes"] == "ham,spam"

    want = pipe.predict_proba(x_test)[:, 1]
    # One row at a time, as the service calls it, and as one batch: both must match.
    single, batch = p_spam(model, x_test, one_at_a_time=True), p_spam(model, x_test)
    for got in (single, batch):
        diff = np.abs(got - want)
        assert diff.max() <= 1e-5, f"{version}: max |dp| {diff.max():.2e} at row {diff.argmax()}"
        assert ((got >= train.THRESHOLD) == (want >= train.THRESHOLD)).all()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels = sess.run(None, {"text": np.array([[t] for t in x_test], dtype=object)})[0]
    assert list(labels) == list(pipe.predict(x_test))
    print(f"{version}: {len(x_test)} rows, max |dp| vs scikit-learn {np.abs(single - want).max():.1e}")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_committed_model_card_matches_training(trained, version):
    _, card = trained[version]
    on_disk = json.loads((MODELS / version / "model.json").read_text())
    # The card names its own graph's bytes (which differ in the last bits between CPU
    # kinds): it must name the committed graph; everything else is exactly training's.
    graph_sha256 = on_disk.pop("onnx_sha256", None)
    assert graph_sha256 == hashlib.sha256((MODELS / version / "model.onnx").read_bytes()).hexdigest(), (
        "model.json does not name the sha256 of the model.onnx beside it: " + STALE)
    assert reproducible.card_differences(on_disk, card) == [], STALE


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_committed_model_is_what_training_produces(dataset, trained, version):
    pipe, _ = trained[version]
    fresh, model = train.export_onnx(pipe, version), committed(version)
    assert reproducible.model_differences(model, fresh) == [], STALE

    _, x_test, _, _ = train.split(dataset)
    dp = np.abs(p_spam(fresh, x_test) - p_spam(model, x_test)).max()
    assert dp <= reproducible.PROBA_ATOL, f"{STALE} (max |dp| {dp:.2e} on the test split)"
    same_bytes = fresh.SerializeToString() == (MODELS / version / "model.onnx").read_bytes()
    print(f"{version}: max relative parameter difference "
          f"{reproducible.max_relative_param_difference(model, fresh):.1e}, max |dp| {dp:.1e}, "
          f"bytes {'identical' if same_bytes else 'differ (another CPU kind: within tolerance)'}")


def _nudge_largest_weight(model: onnx.ModelProto, delta) -> tuple[onnx.ModelProto, str]:
    """A copy of `model` whose largest-magnitude weight (in the idf * W table) is delta(w)."""
    changed = copy.deepcopy(model)
    table = next(t for t in changed.graph.initializer if t.name == "idf_weights")
    weights = numpy_helper.to_array(table).copy()
    i = np.unravel_index(np.argmax(np.abs(weights)), weights.shape)
    weights[i] = delta(weights[i], float(np.abs(weights).max()))
    table.CopyFrom(numpy_helper.from_array(weights, table.name))
    return changed, table.name


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_changed_weight_or_card_is_caught(version):
    """The check above fails for a model that is really stale, and only for one."""
    model = committed(version)
    # one ulp: what another CPU's BLAS does
    nudged, _ = _nudge_largest_weight(model, lambda w, _: np.nextafter(w, np.float32(np.inf)))
    assert reproducible.model_differences(model, nudged) == []

    # a real change: 10x the tolerance on one weight
    changed, name = _nudge_largest_weight(model, lambda w, scale: w + np.float32(10 * reproducible.PARAM_RTOL * scale))
    problems = reproducible.model_differences(model, changed)
    assert len(problems) == 1 and name in problems[0], problems

    renamed = copy.deepcopy(model)
    renamed.graph.node[0].name += "-x"
    assert reproducible.model_differences(model, renamed)

    card = json.loads((MODELS / version / "model.json").read_text())
    edited = copy.deepcopy(card)
    edited["metrics"]["spam_f1"] = round(edited["metrics"]["spam_f1"] + 0.0001, 4)
    assert reproducible.card_differences(card, edited) == [
        f"metrics.spam_f1: committed {card['metrics']['spam_f1']!r}, training gives {edited['metrics']['spam_f1']!r}"]
    # the drift reference is part of the card: one bucket's share moved fails, naming it
    edited = copy.deepcopy(card)
    edited["reference"]["spam_probability"]["share"][9] += 0.001
    assert [p.split(":")[0] for p in reproducible.card_differences(card, edited)] == [
        "reference.spam_probability.share"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_card_reference_is_what_the_served_graph_gives_on_the_test_split(dataset, version):
    """The card's drift reference (the model service exports it beside its live
    histograms) is the committed graph's own distribution on the held-out split, in the
    service's buckets: scored by ONNX Runtime as the service scores, lengths counted in
    characters of the normalized text, each bucket (previous bound, bound]."""
    _, x_test, _, y_test = train.split(dataset)
    card = json.loads((MODELS / version / "model.json").read_text())
    ref = card["reference"]
    scores = p_spam(committed(version), x_test)
    assert ref["spam_probability"]["le"] == train.SPAM_PROBABILITY_BUCKETS
    assert ref["input_chars"]["le"] == train.INPUT_CHARS_BUCKETS
    assert ref["spam_probability"]["share"] == train.bucket_shares(scores, train.SPAM_PROBABILITY_BUCKETS)
    assert ref["input_chars"]["share"] == train.bucket_shares([len(t) for t in x_test], train.INPUT_CHARS_BUCKETS)
    assert ref["predicted_spam_share"] == round(float((scores >= train.THRESHOLD).mean()), 6)
    assert ref["spam_share"] == round(y_test.count("spam") / len(y_test), 6)
    for quantity in ("spam_probability", "input_chars"):
        assert abs(sum(ref[quantity]["share"]) - 1) < 1e-4, quantity
    # Known answers, so that a bucketing that shifts every value by one bucket fails:
    # bounds are upper-inclusive, as Prometheus' le.
    assert train.bucket_shares([0.1, 0.1000001, 1.0], [0.1, 0.2, 1.0]) == [0.333333, 0.333333, 0.333333]
    assert train.bucket_shares([10, 11, 1000], train.INPUT_CHARS_BUCKETS)[:2] == [0.333333, 0.333333]


# Messages the test split may not cover: no token at all, no known n-gram, one character,
# repeated n-grams (tf > 1), case, non-Latin text and emoji, and rows of unequal length in
# one batch (the Tokenizer pads the shorter ones).
EDGE_MESSAGES = ["", "a", "zqxj zqxj", "free free FREE free", "Call 08712460324 now!!! " * 20,
                 "Ünïcödé ça marche? Да 😀😀", "ok", "hi", "k k k"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_onnx_matches_sklearn_on_edge_cases(trained, version):
    pipe, _ = trained[version]
    texts = [train.normalize(t) for t in EDGE_MESSAGES]
    want = pipe.predict_proba(texts)[:, 1]
    model = committed(version)
    for got in (p_spam(model, texts, one_at_a_time=True), p_spam(model, texts)):
        assert np.abs(got - want).max() <= 1e-5, list(zip(texts, got, want))


# The dense ops this graph avoids: each one works over the whole vocabulary per message.
DENSE_OPS = {"Normalizer", "LinearClassifier", "TfIdfVectorizer", "ReduceL2"}
# Node counts today (v1 27, v2 39) plus a little room: per-node overhead is most of the cost.
MAX_NODES = {"v1": 29, "v2": 41}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_graph_is_lean(trained, version):
    """No op over the dense vocabulary, one linear op for all folds, one sigmoid."""
    model = committed(version)
    ops = [n.op_type for n in model.graph.node]
    assert not DENSE_OPS & set(ops), sorted(DENSE_OPS & set(ops))
    assert len(ops) <= MAX_NODES[version], f"{len(ops)} nodes: {ops}"
    # Only the two per-column tables are vocabulary-sized, and only Gather reads them
    # (per n-gram occurrence): no op multiplies or reduces a vocabulary-sized tensor.
    vocab = len(trained[version][0].named_steps["tfidf"].vocabulary_)
    tables = {t.name: list(t.dims) for t in model.graph.initializer if vocab + 1 in t.dims}
    folds = 5 if version == "v2" else 1
    assert tables == {"idf_weights": [vocab + 1, folds], "idf_squared": [vocab + 1]}, tables
    readers = [(n.op_type, name) for n in model.graph.node for name in n.input if name in tables]
    assert sorted(readers) == [("Gather", "idf_squared"), ("Gather", "idf_weights")], readers
    assert ops.count("Sigmoid") == 1 and ops.count("ScatterElements") == 1


def test_split_is_deduplicated_and_stratified(dataset):
    x_train, x_test, y_train, y_test = train.split(dataset)
    assert not set(x_train) & set(x_test)
    share = lambda ys: sum(y == "spam" for y in ys) / len(ys)
    assert abs(share(y_train) - share(y_test)) < 0.01


def test_normalization_collapses_whitespace():
    assert train.normalize("  WIN\t\ta  prize\n") == "WIN a prize"
