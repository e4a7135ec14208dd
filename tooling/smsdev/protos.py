"""Python modules generated from .proto files for the suites (grpcio-tools' protoc, which
the virtualenv that calls this holds), as subpackages of this package:
`generate(name, root, files)` writes them to tooling/smsdev/generated/<name>/ (not
tracked) and returns the package's name, e.g. `smsdev.generated.sms_v1`, whose modules
are then imported by name (`smsdev.generated.sms_v1.sms.v1.classifier_pb2`).

protoc writes the imports between generated modules as absolute imports of the .proto
files' own folders (`from sms.v1 import classifier_pb2`), which resolve only with the
output folder on the import path; here they are rewritten to the subpackage's
(`from smsdev.generated.sms_v1.sms.v1 import classifier_pb2`), so nothing is added to the
import path. Imports of modules that are not generated here (protobuf's well-known types,
`google.protobuf`) are left as they are. The .proto files keep their own names in
protobuf's descriptor pool, so one process imports a .proto file's modules from one
subpackage only.

A subpackage is made again only when its inputs change (the .proto files, the options
and grpcio-tools' version); one process generates at a time (a lock). Standard library
only, besides grpc_tools at generation time.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import re
import shutil
from pathlib import Path

GENERATED = Path(__file__).resolve().parent / "generated"
PACKAGE = f"{__package__}.generated"


def generate(name: str, root: Path, files: list[str], grpc: bool = False) -> str:
    """Messages (and with `grpc`, gRPC stubs) for `files` (paths relative to `root`, which
    is also where their imports of each other are found), as the package
    `smsdev.generated.<name>`, whose name is returned."""
    from grpc_tools import protoc  # noqa: PLC0415 - only the suites that generate need it

    if not name.isidentifier():
        raise ValueError(f"{name!r} is not a package name")
    assert files, f"no .proto files to generate from {root}"
    well_known = Path(protoc.__file__).parent / "_proto"
    stamp = hashlib.sha256()
    for f in sorted(files):
        stamp.update(f.encode() + b"\0" + (root / f).read_bytes() + b"\0")
    stamp.update(f"grpc={grpc} grpcio-tools={_version()}".encode())
    out = GENERATED / name
    GENERATED.mkdir(exist_ok=True)
    (GENERATED / "__init__.py").touch()
    with open(GENERATED / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / ".stamp").is_file() and (out / ".stamp").read_text() == stamp.hexdigest():
            return f"{PACKAGE}.{name}"
        tmp = GENERATED / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        args = ["protoc", f"-I{root}", f"-I{well_known}", f"--python_out={tmp}"]
        if grpc:
            args.append(f"--grpc_python_out={tmp}")
        rc = protoc.main([*args, *files])
        if rc != 0:
            raise RuntimeError(f"protoc failed ({rc}) on {files} from {root}")
        tops = {f.split("/")[0] if "/" in f else Path(f).stem + "_pb2" for f in files}
        _as_package(tmp, f"{PACKAGE}.{name}", tops)
        (tmp / ".stamp").write_text(stamp.hexdigest())
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    importlib.invalidate_caches()  # the folder is new to the import system's directory caches
    return f"{PACKAGE}.{name}"


def _as_package(folder: Path, package: str, tops: set[str]) -> None:
    """Every folder a package, and the generated modules' imports of each other (their
    top-level folders, or modules for .proto files at the root: `tops`; protoc writes
    `from a.b import c_pb2 as ...` and `import c_pb2 as ...`) made imports of `package`'s
    modules."""
    top = "|".join(re.escape(t) for t in sorted(tops))
    from_import = re.compile(rf"^(\s*)from ((?:{top})(?:\.\w+)*) import ", re.M)
    plain_import = re.compile(rf"^(\s*)import ((?:{top})(?:\.\w+)*) as ", re.M)
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    for py in folder.rglob("*_pb2*.py"):
        text = py.read_text()
        text = from_import.sub(rf"\1from {package}.\2 import ", text)
        text = plain_import.sub(rf"\1import {package}.\2 as ", text)
        py.write_text(text)


def _version() -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version("grpcio-tools")
