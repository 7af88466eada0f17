"""The worker image, run the way ECS runs it, against moto's server on this machine.

Needs buildah (``apt-get install -y buildah``) and the image (``make image``). The test runs when
``POSEFLEET_TEST_IMAGE`` names the image to test (``make image-test`` sets it; a missing buildah
or image then fails the test); otherwise it is skipped with the reason. It is not part of the
default run (nor of CI) even where buildah and an image exist: the image may predate the tree
being tested, and the run takes minutes.

The container is started from the image's own configuration only: its entrypoint and command,
its user, working directory and environment, plus the environment an ECS task definition would
give it. buildah's chroot isolation has no PID namespace, so the entrypoint runs under
``unshare --pid --fork`` (util-linux, in every Debian-based image; the one capability it needs
is dropped again) and ``setpriv`` drops to the image's user: the worker is PID 1 of its
namespace, as in a task, where a signal it has no handler for would be ignored. SIGTERM is sent
to that process from the host, as ECS does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mappings import ClassMapping
from posefleet.checkpoint import save_initialised
from posefleet.resources import QueueSpec
from tests.conftest import Stack
from tests.helpers import all_lines, produce, upload, wait_until
from tests.images import good_variants, jpeg
from tests.processes import Proc, descendants
from training.card import ModelCard, card_path
from training.metrics import classification_report
from training.publish import publish

BUILDAH = [shutil.which("buildah") or "buildah", "--storage-driver", "vfs"]
# Only when asked: an image on disk may predate the tree under test.
IMAGE = os.environ.get("POSEFLEET_TEST_IMAGE")
WHY_NOT = (
    "POSEFLEET_TEST_IMAGE not set: make image builds localhost/posefleet-worker:cpu, "
    "make image-test runs this on it"
)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(IMAGE is None, reason=WHY_NOT),
]


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: list[str]
    cmd: list[str]
    user: str
    workdir: str
    env: dict[str, str]


def image_config(image: str) -> ImageConfig:
    out = subprocess.run(
        [*BUILDAH, "inspect", "--type", "image", image], capture_output=True, text=True
    )
    assert out.returncode == 0, f"{image}: {out.stderr.strip()} (make image builds it)"
    config = json.loads(out.stdout)["OCIv1"]["config"]
    return ImageConfig(
        entrypoint=config.get("Entrypoint") or [],
        cmd=config.get("Cmd") or [],
        user=config.get("User", ""),
        workdir=config.get("WorkingDir") or "/",
        env=dict(v.split("=", 1) for v in config.get("Env", [])),
    )


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """A working container of the image, removed (by name) at the end."""
    name = f"posefleet-image-test-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(
        [*BUILDAH, "from", "--pull-never", "--name", name, IMAGE], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    try:
        yield name
    finally:
        subprocess.run([*BUILDAH, "rm", name], capture_output=True)


def in_container(container: str, *command: str) -> str:
    out = subprocess.run(
        [*BUILDAH, "run", "--isolation", "chroot", container, "--", *command],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def process_status(pid: int) -> dict[str, list[str]]:
    lines = (Path("/proc") / str(pid) / "status").read_text().splitlines()
    return {k: v.split() for k, _, v in (line.partition(":") for line in lines)}


def find_pid_one(root: int, command: list[str], log: Path, timeout: float = 120) -> int:
    """The host PID of the process running ``command`` as PID 1 of its own namespace, below
    ``root`` (buildah run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, argv in descendants(root).items():
            if argv != command:
                continue
            try:
                nspid = process_status(pid).get("NSpid", [])
            except OSError:
                continue
            if nspid[-1:] == ["1"]:
                return pid
        time.sleep(0.2)
    raise AssertionError(
        f"no process {command} as PID 1 under {root} within {timeout}s:\n{log.read_text()[-3000:]}"
    )


def publish_small_model(stack: Stack, tmp_path: Path) -> tuple[str, str]:
    """A real (untrained) ResNet18 with its card, published to a models bucket as training
    publishes; returns the pointer URI and the model version."""
    checkpoint = tmp_path / "model.pt"
    version = save_initialised(checkpoint, arch="resnet18")
    mapping = ClassMapping.for_poses()
    card = ModelCard(
        model_version=version,
        arch="resnet18",
        classes=list(mapping.classes),
        class_names=list(mapping.names),
        input_size=224,
        data={},
        evaluation=classification_report([0], [0], mapping.names),
        history={},
        settings={},
        versions={},
        training_seconds=0.0,
        created_at="now",
    )
    card_path(checkpoint).write_text(card.model_dump_json())
    models = f"models-{stack.suffix}"
    stack.s3.create_bucket(Bucket=models)
    published = publish(stack.s3, checkpoint, f"s3://{models}", min_accuracy=0.0)
    return published.pointer_uri, version


def test_the_image_serves_a_job_as_ecs_runs_it_and_drains_on_sigterm(
    moto_server, container, tmp_path
):
    config = image_config(IMAGE)
    # The image itself says how it starts: a non-root numeric user and an exec-form entrypoint.
    uid, _, gid = config.user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"runs as {config.user or 'root (no USER)'}"
    gid = gid or uid
    command = [*config.entrypoint, *config.cmd]
    assert command[:3] == ["python", "-m", "worker"], command
    # Nothing from the build's proxy setup stayed in the image.
    leftovers = in_container(
        container, "sh", "-c", "cat /etc/pip.conf 2>/dev/null; ls -A /opt/wheels 2>/dev/null"
    )
    assert leftovers.strip() == ""
    home = in_container(container, "getent", "passwd", uid).strip().split(":")[5]

    # Given a job with good photos and two broken files, and a model published to S3
    stack = Stack(
        moto_server, QueueSpec(visibility_timeout=60, max_receive_count=3, receive_wait_seconds=1)
    )
    files = {f"img/good/{name}": data for name, data in list(good_variants().items())[:4]}
    files.update({f"img/photo/{i}.jpg": jpeg((480, 640), seed=i) for i in range(3)})
    files["img/bad/truncated.jpg"] = files["img/photo/0.jpg"][:400]
    files["img/bad/notes.png"] = b"<html>Service Unavailable</html>"
    keys = upload(stack.s3, bucket=stack.input, files=files)
    pointer, version = publish_small_model(stack, tmp_path)

    # When the image runs as a task: its command and user, configured by environment only
    task_env = {
        **moto_server.env(),
        "POSEFLEET_QUEUE_URL": stack.queues.queue_url,
        "POSEFLEET_RESULTS": stack.results_uri,
        "POSEFLEET_MODEL": pointer,
        "POSEFLEET_WAIT_TIME_SECONDS": "1",
        "POSEFLEET_DRAIN_SECONDS": "10",
    }
    env = {"HOME": home, **config.env, **task_env}
    run = [
        *BUILDAH,
        "run",
        "--isolation",
        "chroot",
        "--user",
        "0:0",  # only to make the PID namespace; setpriv drops to the image's user below
        "--cap-add",
        "CAP_SYS_ADMIN",
        "--workingdir",
        config.workdir,
        *(f"--env={k}={v}" for k, v in env.items()),
        container,
        "--",
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--bounding-set=-sys_admin",  # what unshare needed goes, as in Docker's default set
        "--",
        *command,
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    out, err = logs / "image.out", logs / "image.err"
    with out.open("wb") as o, err.open("wb") as e:
        popen = subprocess.Popen(run, stdout=o, stderr=e)
    worker = Proc(name="image", popen=popen, stdout=out, stderr=err)
    pid = None
    try:
        pid = find_pid_one(popen.pid, command, err)
        worker.wait_for("worker_started", timeout=300)
        produce(stack, "img/", "image", task_size=3)
        worker.wait_for("task_done", timeout=300, count=3)
        wait_until(lambda: stack.count(stack.queues.queue_url) == 0, 60, "the queue to drain")

        # Then it ran as the image's user, as PID 1 of its namespace
        status = process_status(pid)
        assert status["Uid"] == [uid] * 4 and status["Gid"] == [gid] * 4
        assert status["NSpid"][-1] == "1"
        # and that user could write the model cache
        cache = Path(f"/proc/{pid}/root") / config.env["POSEFLEET_MODEL_CACHE_DIR"].lstrip("/")
        cached = list(cache.rglob("model.pt"))
        assert [p.stat().st_uid for p in cached] == [int(uid)]
        (loaded,) = worker.events("model_loaded")
        assert loaded["path"].startswith(config.env["POSEFLEET_MODEL_CACHE_DIR"])

        # When ECS stops the task: SIGTERM to the container's PID 1
        os.kill(pid, signal.SIGTERM)
        code = popen.wait(timeout=120)
    finally:
        if popen.poll() is None:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # PID 1 gone: its namespace goes with it
            popen.kill()
            popen.wait()

    # Then it drained and exited 0
    assert code == 0, err.read_text()[-3000:]
    (stopped,) = worker.events("worker_stopped")
    assert stopped["reason"] == "signal" and stopped["images"] == len(keys), stopped
    # and every image of the job has exactly one line, with the published model's version
    lines = all_lines(stack, "image")
    assert sorted(line.key for line in lines) == keys
    by_key = {line.key: line for line in lines}
    assert by_key["img/bad/truncated.jpg"].error_kind == "truncated"
    assert by_key["img/bad/notes.png"].error_kind == "not_an_image"
    good = [line for line in lines if "/bad/" not in line.key]
    assert [(x.key, x.error_message) for x in good if x.status != "ok"] == []
    assert {line.model_version for line in good} == {version}
    assert all(abs(sum(x.all_probabilities.values()) - 1) < 1e-3 for x in good)
    assert stack.count(stack.queues.dlq_url) == 0
    (started,) = worker.events("worker_started")
    assert started["model_version"] == version and started["device"] == "cpu"
    print(
        f"\n{IMAGE}: {len(lines)} result lines ({len(good)} ok), model {version}, the worker "
        f"PID 1 of its namespace as uid {status['Uid'][0]}, exit {code} on SIGTERM"
    )
