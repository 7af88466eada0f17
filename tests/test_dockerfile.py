"""The worker image, checked by reading its Dockerfile (no Docker engine here; hadolint runs in
`make test`)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")
]


def test_multi_stage_with_a_gpu_variant_by_build_argument():
    stages = [i for i in INSTRUCTIONS if i.startswith("FROM ")]
    assert len(stages) >= 2
    assert "ARG VARIANT=cpu" in INSTRUCTIONS
    assert 'if [ "$VARIANT" = "gpu" ]' in DOCKERFILE


def test_runs_as_a_non_root_user_with_an_exec_form_entrypoint():
    user = [i for i in INSTRUCTIONS if i.startswith("USER ")][-1]
    assert user.split()[1].split(":")[0] not in ("root", "0")
    (entrypoint,) = [i for i in INSTRUCTIONS if i.startswith("ENTRYPOINT ")]
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == ["python", "-m", "worker"]


def test_only_what_the_worker_needs_goes_in():
    copied = {i.split()[1] for i in INSTRUCTIONS if i.startswith("COPY ") and "--from" not in i}
    assert not copied & {"tests", "training", "infra", ".", "docs"}
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything is excluded, then the worker's packages are let back in
    assert not any(re.fullmatch(r"!(tests|training|infra|docs)/?", line) for line in ignore)


def test_torch_versions_match_the_project():
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch = re.search(r"ARG TORCH_VERSION=(\S+)", DOCKERFILE).group(1)
    vision = re.search(r"ARG TORCHVISION_VERSION=(\S+)", DOCKERFILE).group(1)
    assert f"torch>=2.4,<={torch}" in pyproject and f"torchvision>=0.19,<={vision}" in pyproject


def test_the_cpu_image_can_serve_the_openvino_backends():
    pinned = re.search(r"ARG OPENVINO_VERSION=(\d+)\.", DOCKERFILE).group(1)
    floor = re.search(r'openvino = \["openvino>=(\d+)\.', (ROOT / "pyproject.toml").read_text())
    assert int(pinned) >= int(floor.group(1))
    assert 'else pip install --no-cache-dir . "openvino==${OPENVINO_VERSION}"' in DOCKERFILE


@pytest.mark.skipif(
    shutil.which("hadolint") is None and not (ROOT / ".venv/bin/hadolint").exists(),
    reason="hadolint not installed",
)
def test_hadolint_passes():
    exe = shutil.which("hadolint") or str(ROOT / ".venv/bin/hadolint")
    out = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
