"""The checkout's tracked files, as the house rules read them."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tracked_text_files():
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True,
                           text=True).stdout.split("\0")
    for name in names:
        path = ROOT / name
        if not name or not path.is_file() or name.endswith((".lock", "go.sum", ".onnx", ".csv", ".png")):
            continue
        try:
            yield name, path.read_text()
        except UnicodeDecodeError:
            continue
