"""The container images: hadolint on the Dockerfile, and its structure (multi-stage,
small and non-root, the contract ports, every workspace member in the build context,
ONNX Runtime but no models in the model image, a tight .dockerignore).
"""

import re
import tomllib

import pytest
from dockerfile_parse import DockerfileParser

from conftest import ROOT, explain, run, tool


def contract_ports():
    text = (ROOT / "docs" / "contracts.md").read_text()
    ports = {}
    for service, port in re.findall(r"^\| (model service|app service) \|[^|]*\| (\d+) \(", text, re.M):
        ports.setdefault(service.split()[0], set()).add(port)
    return ports


DOCKERFILE = ROOT / "Dockerfile"


def stages():
    """Instructions grouped by stage: {"from": image with ARG defaults substituted,
    "name": the stage's AS name, "ins": [...]}."""
    args = {}
    result = []
    for ins in DockerfileParser(path=str(DOCKERFILE)).structure:
        if ins["instruction"] == "ARG" and not result:
            key, _, default = ins["value"].partition("=")
            args[key] = default
        if ins["instruction"] == "FROM":
            image, _, name = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ins["value"]).partition(" AS ")
            result.append({"from": image.strip(), "name": name.strip(), "ins": []})
        elif result:
            result[-1]["ins"].append(ins)
    return result


def stage(name):
    found = [s for s in stages() if s["name"] == name]
    assert len(found) == 1, f"the Dockerfile has no single stage named {name}: {[s['name'] for s in stages()]}"
    return found[0]


def test_hadolint_passes():
    proc = run([tool("hadolint"), "--failure-threshold", "info", DOCKERFILE])
    assert proc.returncode == 0, explain(proc)


def test_hadolint_really_lints(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    proc = run([tool("hadolint"), bad])
    assert proc.returncode != 0 and "DL3006" in proc.stdout, explain(proc)


@pytest.mark.parametrize("name", ["app-service", "model-service"])
def test_image_is_multi_stage_small_and_non_root(name):
    build = [s for s in stages() if s["from"].startswith("rust:")]
    assert len(build) == 1 and build[0]["from"].startswith("rust:1.95-slim"), [s["from"] for s in stages()]
    runtime = stage(name)
    assert re.match(r"gcr\.io/distroless/cc-debian\d+:nonroot$|debian:\w+-slim$", runtime["from"])
    user = [i["value"] for i in runtime["ins"] if i["instruction"] == "USER"]
    assert user and user[-1].split(":")[0] == "65532"
    build_cmd = " ".join(i["value"] for i in build[0]["ins"] if i["instruction"] == "RUN")
    assert f"--package {name}" in build_cmd and "--release" in build_cmd and "--locked" in build_cmd
    copies = [i["value"] for i in runtime["ins"] if i["instruction"] == "COPY"]
    assert all(c.startswith("--from=") for c in copies), "the runtime gets only built artifacts"
    assert f"--from=build /out/{name} /usr/local/bin/{name}" in copies
    entry = [i["value"] for i in runtime["ins"] if i["instruction"] == "ENTRYPOINT"]
    assert entry == [f'["/usr/local/bin/{name}"]']


@pytest.mark.parametrize("name", ["app-service", "model-service"])
def test_image_exposes_the_contract_ports(name):
    exposed = set()
    for ins in stage(name)["ins"]:
        if ins["instruction"] == "EXPOSE":
            exposed |= set(ins["value"].split())
    assert exposed == contract_ports()[name.split("-")[0]], exposed


def test_build_context_holds_every_workspace_member():
    """The build stage copies the context, and .dockerignore lets every crate in."""
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    build = [s for s in stages() if s["from"].startswith("rust:")][0]
    assert [i["value"] for i in build["ins"] if i["instruction"] == "COPY"] == [". ."]
    allowed = dockerignore_allowed()
    assert {"Cargo.toml", "Cargo.lock", *members} <= allowed, (members, allowed)


def test_model_image_carries_onnx_runtime_but_no_models():
    text = DOCKERFILE.read_text()
    # The version and the extraction live in scripts/ensure-ort.sh alone (tests/house checks
    # every other mention against it); the image runs it.
    assert 'ORT_VERSION="' in (ROOT / "scripts" / "ensure-ort.sh").read_text()
    ort = stage("ort")
    assert any("scripts/ensure-ort.sh" in i["value"] for i in ort["ins"] if i["instruction"] == "RUN")
    runtime = stage("model-service")["ins"]
    copies = [i["value"] for i in runtime if i["instruction"] == "COPY"]
    assert "--from=ort /ort/libonnxruntime.so /usr/lib/onnxruntime/libonnxruntime.so" in copies
    env = " ".join(i["value"] for i in runtime if i["instruction"] == "ENV")
    assert "ORT_DYLIB_PATH=/usr/lib/onnxruntime/libonnxruntime.so" in env
    assert "MODEL_ROOT=/mnt/shared/models" in env
    assert not re.search(r"^\s*(COPY|ADD)\b.*\bmodels\b", text, re.M), "models must not be baked in"
    assert "models" not in dockerignore_allowed()


def dockerignore_allowed():
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", "allow-list: everything is excluded first"
    assert "**/target/" in lines and "**/*.onnx" in lines
    return {l[1:].rstrip("/") for l in lines if l.startswith("!")}


def test_dockerignore_keeps_the_context_to_the_workspace():
    assert dockerignore_allowed() == {"Cargo.toml", "Cargo.lock", "proto", "runtime", "app-service", "model-service",
                                      "experiment",
                                      "scripts/lib.sh", "scripts/ensure-ort.sh"}
