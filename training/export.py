"""The ONNX graph of a trained pipeline, built op by op with onnx.helper (deterministic bytes).

Both models are "TF-IDF, L2-normalize, k linear scores, sigmoid, average": v1's logistic
regression is k = 1 score, v2's calibrated SVM is k = 5 (one per calibration fold, each
with its sigmoid calibration). For a message whose vocabulary n-grams j occur tf_j times:

    x_j = tf_j idf_j,   p_spam = mean_f sigmoid( (x . W[:, f]) / max(||x||, eps) + B[f] )

The graph never builds the vocabulary-sized vector x. A message of 84 characters has a few
hundred n-gram occurrences against 39k (v1) or 60k (v2) vocabulary columns, and ONNX
Runtime's dense path (TfIdfVectorizer, Normalizer, LinearClassifier) spent most of its time
on the zeros. Instead, per occurrence o of n-gram j (its feature column, or an all-zero
column for n-grams outside the vocabulary):

- tokens -> integer codes (LabelEncoder), n-grams -> integer keys (base-`radix` digits,
  built with Slice/Mul/Add), keys -> feature columns (LabelEncoder);
- x . W = sum_j tf_j idf_j W_j = sum_o (idf W)_o: one Gather of the [V + 1, k] table
  idf * W and one ReduceSum, all k folds at once;
- ||x||^2 = sum_j tf_j^2 idf_j^2 = sum_o (tf_j idf_j^2)_o: ScatterElements(add) of each
  occurrence's idf^2 into a zeroed [N, V + 1] table (cell j then holds tf_j idf_j^2), read
  back per occurrence (GatherElements) and summed; the zeroing is the only V-sized work;
- the norm divides the k scores, not a V-sized vector;
- v2's calibration a * score + b is folded into the fold's column: W[:, f] = -a_f * w_f,
  B[f] = -(a_f * c_f + b_f), so sigmoid(x . W / ||x|| + B) = expit(-(a_f * svm_f + b_f)),
  which is scikit-learn's _SigmoidCalibration.predict; one Sigmoid and one Gemm [k, 2]
  (the mean over folds and 1 - mean) replace the five LinearClassifiers and ~40 ops of
  per-fold arithmetic.

A message with no vocabulary n-gram has x = 0; scikit-learn leaves a zero row unnormalized
(score = intercept), and so does max(||x||, eps): 0 / eps = 0. Batches work row by row
(the Tokenizer pads rows with PAD, an unknown token; tables are per row).

Outputs, as the model service reads them: `label` [N] (string) and `probabilities` [N, 2]
in the order of the metadata `classes`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

OPSET = 18  # ScatterElements with reduction "add"
IR_VERSION = 8
# sklearn's default token pattern, spelled so ORT's Tokenizer (RE2) reads it the same way.
TOKEN_EXP = r"[\p{L}\p{N}_][\p{L}\p{N}_]+"
CHAR_EXP = "."  # the char analyzer: every character is a token
# The Tokenizer pads the shorter rows of a batch with this; it is in no vocabulary n-gram
# (checked), so it gets UNKNOWN_CODE and no n-gram spans padding.
PAD = "\x01"
# Any positive floor works: a non-zero TF-IDF row has norm >= 1 (counts >= 1, idf >= 1).
NORM_EPS = 1e-12
UNKNOWN_CODE = 1


def linear_parts(clf) -> tuple[np.ndarray, np.ndarray]:
    """W [V, k] and B [k] such that p_spam = mean_f sigmoid(x_normalized @ W[:, f] + B[f])."""
    if isinstance(clf, LogisticRegression):
        return clf.coef_.T.astype(np.float64), clf.intercept_.astype(np.float64)
    if isinstance(clf, CalibratedClassifierCV):
        columns, offsets = [], []
        for fold in clf.calibrated_classifiers_:
            (calibrator,) = fold.calibrators  # binary: one sigmoid on the positive class
            if fold.method != "sigmoid":
                raise ValueError(f"calibration {fold.method!r} is not exported")
            svm = fold.estimator
            columns.append(-calibrator.a_ * svm.coef_[0])
            offsets.append(-(calibrator.a_ * svm.intercept_[0] + calibrator.b_))
        return np.stack(columns, axis=1), np.array(offsets)
    raise ValueError(f"no export for {type(clf).__name__}")


def token_codes(tfidf: TfidfVectorizer) -> tuple[dict[str, int], list[tuple[list[str], int]]]:
    """Each token that occurs in a vocabulary n-gram gets a code >= 2 (sorted, so the
    codes are reproducible); every other token, including the Tokenizer's padding, is
    UNKNOWN_CODE, and so is any n-gram that contains one. Also returns every vocabulary
    n-gram as its tokens with its scikit-learn feature column."""
    split = (lambda term: term.split(" ")) if tfidf.analyzer == "word" else list
    ngrams = [(split(term), int(column)) for term, column in tfidf.vocabulary_.items()]
    alphabet = sorted({token for tokens, _ in ngrams for token in tokens})
    return {token: code for code, token in enumerate(alphabet, start=UNKNOWN_CODE + 1)}, ngrams


def ngram_key(codes: list[int], radix: int) -> int:
    """An n-gram's key, the number with digits `codes` in base `radix`. Codes are >= 1, so
    keys of different lengths never collide: an n-gram's key lies in [radix^(n-1), radix^n)."""
    key = 0
    for code in codes:
        key = key * radix + code
    return key


def build_graph(pipe: Pipeline, classes: list[str]) -> onnx.GraphProto:
    tfidf, clf = pipe.named_steps["tfidf"], pipe.named_steps["clf"]
    if tfidf.norm != "l2" or not tfidf.use_idf or tfidf.sublinear_tf or not tfidf.lowercase:
        raise ValueError("the graph implements lowercase, raw counts, idf and L2 only")
    if classes[1] != "spam":
        raise ValueError(f"the graph puts spam second; classes are {classes}")
    if tfidf.analyzer == "word" and tfidf.token_pattern != r"(?u)\b\w\w+\b":
        raise ValueError(f"TOKEN_EXP mirrors scikit-learn's default token pattern, not {tfidf.token_pattern!r}")
    codes, ngrams = token_codes(tfidf)
    if PAD in codes:
        raise ValueError("the pad character occurs in the vocabulary: padding would match n-grams")
    radix = len(codes) + UNKNOWN_CODE + 1
    lo, hi = tfidf.ngram_range
    if radix ** hi >= 2 ** 63:
        raise ValueError(f"{hi}-gram keys over {radix} tokens overflow int64")
    vocab = len(tfidf.vocabulary_)
    unknown_column = vocab  # a zero row in both tables
    keys = [ngram_key([codes[t] for t in tokens], radix) for tokens, _ in ngrams]
    columns = [column for _, column in ngrams]
    order = np.argsort(keys, kind="stable")  # sorted attributes: the same bytes every run

    weights, offsets = linear_parts(clf)
    folds = weights.shape[1]
    idf = np.append(tfidf.idf_, 0.0)
    idf_weights = np.vstack([tfidf.idf_[:, None] * weights, np.zeros((1, folds))])

    f32 = lambda a: np.asarray(a, dtype=np.float32)
    i64 = lambda a: np.asarray(a, dtype=np.int64)
    init = [
        numpy_helper.from_array(i64([-1]), "flat_shape"),
        numpy_helper.from_array(i64([0]), "zero"),
        numpy_helper.from_array(i64([1]), "axis_1"),
        numpy_helper.from_array(i64([-1]), "minus_one"),
        numpy_helper.from_array(i64([2 ** 62]), "to_end"),
        numpy_helper.from_array(i64([radix]), "radix"),
        numpy_helper.from_array(i64([1, vocab + 1]), "table_columns"),
        numpy_helper.from_array(f32(idf ** 2), "idf_squared"),
        numpy_helper.from_array(f32(idf_weights), "idf_weights"),
        numpy_helper.from_array(f32(offsets), "offsets"),
        numpy_helper.from_array(f32([NORM_EPS]), "norm_eps"),
        numpy_helper.from_array(f32(np.tile([[-1.0 / folds, 1.0 / folds]], (folds, 1))), "average_folds"),
        numpy_helper.from_array(f32([1.0, 0.0]), "ham_spam_offsets"),
        numpy_helper.from_array(np.array(classes, dtype=object), "classes"),
    ]
    node = helper.make_node
    nodes = [
        node("Reshape", ["text", "flat_shape"], ["texts"], name="flatten_input"),
        node("StringNormalizer", ["texts"], ["lowered"], name="lowercase",
             case_change_action="LOWER", is_case_sensitive=0, locale="C.UTF-8"),
        node("Tokenizer", ["lowered"], ["tokens"], name="tokenize", domain="com.microsoft",
             mark=0, mincharnum=1, pad_value=PAD, tokenexp=TOKEN_EXP if tfidf.analyzer == "word" else CHAR_EXP),
        node("LabelEncoder", ["tokens"], ["codes"], name="token_codes", domain="ai.onnx.ml",
             keys_strings=list(codes), values_int64s=list(codes.values()), default_int64=UNKNOWN_CODE),
    ]
    # n-gram keys, [N, T - n + 1] for each n: key_n[i] = key_{n-1}[i] * radix + codes[i + n - 1].
    key_inputs = ["codes"] if lo == 1 else []
    previous = "codes"
    for n in range(2, hi + 1):
        nodes += [
            node("Slice", [previous, "zero", "minus_one", "axis_1"], [f"head_{n}"], name=f"head_{n}"),
            node("Slice", ["codes", f"shift_{n}", "to_end", "axis_1"], [f"tail_{n}"], name=f"tail_{n}"),
            node("Mul", [f"head_{n}", "radix"], [f"shifted_{n}"], name=f"shift_left_{n}"),
            node("Add", [f"shifted_{n}", f"tail_{n}"], [f"keys_{n}"], name=f"keys_{n}"),
        ]
        init.append(numpy_helper.from_array(i64([n - 1]), f"shift_{n}"))
        previous = f"keys_{n}"
        if n >= lo:
            key_inputs.append(previous)
    nodes += [
        node("Concat", key_inputs, ["keys"], name="all_ngrams", axis=1),
        # Every n-gram occurrence's feature column; unknown n-grams get the zero column.
        node("LabelEncoder", ["keys"], ["columns"], name="feature_columns", domain="ai.onnx.ml",
             keys_int64s=[int(keys[i]) for i in order], values_int64s=[columns[i] for i in order],
             default_int64=unknown_column),
        # ||x||^2 = sum_j (tf_j idf_j)^2 = sum over occurrences o of (tf_j idf_j^2) for o's n-gram j:
        # add idf^2 of every occurrence into a zeroed [N, V + 1] table (a memset, no dense
        # arithmetic), so cell j holds tf_j idf_j^2, and sum the cells each occurrence points at.
        node("Gather", ["idf_squared", "columns"], ["occurrence_idf_squared"], name="occurrence_idf_squared"),
        node("Shape", ["text"], ["rows_by_one"], name="rows_by_one"),  # [N, 1]
        node("Mul", ["rows_by_one", "table_columns"], ["table_shape"], name="table_shape"),  # [N, V + 1]
        node("ConstantOfShape", ["table_shape"], ["empty_table"], name="empty_table",
             value=numpy_helper.from_array(f32([0.0]))),
        node("ScatterElements", ["empty_table", "columns", "occurrence_idf_squared"], ["tf_idf_squared"],
             name="tf_idf_squared", axis=1, reduction="add"),
        node("GatherElements", ["tf_idf_squared", "columns"], ["norm_terms"], name="norm_terms", axis=1),
        node("ReduceSum", ["norm_terms", "axis_1"], ["norm_squared"], name="norm_squared", keepdims=1),
        node("Sqrt", ["norm_squared"], ["norm"], name="l2_norm"),
        node("Max", ["norm", "norm_eps"], ["norm_safe"], name="norm_floor"),
        # x . w = sum_j tf_j idf_j w_j = sum over occurrences of idf w, all folds at once.
        node("Gather", ["idf_weights", "columns"], ["occurrence_scores"], name="occurrence_scores"),
        node("ReduceSum", ["occurrence_scores", "axis_1"], ["raw_scores"], name="raw_scores", keepdims=0),
        node("Div", ["raw_scores", "norm_safe"], ["scaled_scores"], name="normalize_scores"),
        node("Add", ["scaled_scores", "offsets"], ["logits"], name="add_offsets"),
        node("Sigmoid", ["logits"], ["fold_p_spam"], name="sigmoid"),
        # [p_ham, p_spam] = [1 - mean_f p_f, mean_f p_f] in one op: p @ [[-1/k, 1/k]...] + [1, 0].
        node("Gemm", ["fold_p_spam", "average_folds", "ham_spam_offsets"], ["probabilities"], name="probabilities"),
        node("ArgMax", ["probabilities"], ["class_index"], name="argmax", axis=1, keepdims=0),
        node("Gather", ["classes", "class_index"], ["label"], name="label", axis=0),
    ]
    return helper.make_graph(
        nodes, "sms_spam",
        inputs=[helper.make_tensor_value_info("text", TensorProto.STRING, [None, 1])],
        outputs=[helper.make_tensor_value_info("label", TensorProto.STRING, [None]),
                 helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=init,
        # The Tokenizer is an ONNX Runtime contrib op that onnx's shape inference does not
        # know; typing its output lets onnx check the graph (it crashes on the untyped input).
        value_info=[helper.make_tensor_value_info("tokens", TensorProto.STRING, [None, None])],
    )


def to_model(pipe: Pipeline, classes: list[str], doc: str, metadata: dict[str, str]) -> onnx.ModelProto:
    model = helper.make_model(
        build_graph(pipe, classes),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 2),
                       helper.make_opsetid("com.microsoft", 1)],
        ir_version=IR_VERSION, producer_name="sms-spam-training", doc_string=doc,
    )
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model
