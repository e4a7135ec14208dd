"""The pre-lean artifact the lean graphs are measured against: models/v1 as it was before
them, taken from the repository's history (needs a clone with its history)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from .common import ROOT, BenchError
from .frames import onnx_metadata_props


def git(*args, binary=False):
    r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=not binary)
    if r.returncode != 0:
        raise BenchError("today's dense artifact comes from the repository's history, and git said: "
                         f"{(r.stderr if not binary else r.stderr.decode()).strip()}\n"
                         "make bench needs a clone with its full history (`git fetch --unshallow`).")
    return r.stdout


def dense_artifact(work: Path, rev: str | None) -> tuple[Path, str]:
    """models/v1 as it was before the lean graphs (the newest committed models/v1/model.onnx
    with a dense `Normalizer` node, unless `rev` names one), with a card copy whose
    onnx_sha256 is that graph's, in a model root of its own. Returns (root, commit)."""
    if rev:
        commits = [git("rev-parse", rev).strip()]
    else:
        commits = git("log", "--format=%H", "--", "models/v1/model.onnx").split()
    for commit in commits:
        graph = git("show", f"{commit}:models/v1/model.onnx", binary=True)
        # A NodeProto whose op_type (field 4) is exactly "Normalizer" (not StringNormalizer).
        if rev or b"\x22\x0aNormalizer" in graph:
            card = json.loads(git("show", f"{commit}:models/v1/model.json"))
            # The model service checks the card against the graph's own name and threshold,
            # which graphs of that time did not carry: added as training adds them now
            # (metadata only; the graph's work is unchanged).
            graph += onnx_metadata_props({"name": card["name"], "threshold": repr(float(card["threshold"]))})
            card["onnx_sha256"] = hashlib.sha256(graph).hexdigest()
            root = work / "dense-model-root"
            (root / "v1").mkdir(parents=True, exist_ok=True)
            (root / "v1" / "model.onnx").write_bytes(graph)
            (root / "v1" / "model.json").write_text(json.dumps(card, indent=2))
            return root, commit
    shallow = git("rev-parse", "--is-shallow-repository").strip() == "true"
    raise BenchError("no committed models/v1/model.onnx with a dense Normalizer was found in the history"
                     + (" (this clone is shallow: `git fetch --unshallow`)" if shallow else "")
                     + "; pass --dense-rev REV to name one")
