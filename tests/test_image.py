"""The worker image, run the way ECS runs it, against moto's server on this machine.

Needs buildah (``apt-get install -y buildah``) and the image (``make image``). The test runs when
``POSEFLEET_TEST_IMAGE`` names the image to test (``make image-test`` sets it; a missing buildah
or image then fails the test); otherwise it is skipped with the reason. It is not part of the
default run (nor of CI) even where buildah and an image exist: the image may predate the tree
being tested, and the run takes minutes.

The container is started from the image's own configuration and the stack's container
definition (infra.components.service.container_definitions, what the task definition holds): its
entrypoint and command, working directory and environment; the definition's user, its read-only
root filesystem, a tmpfs at each of its mountPoints (with the owner and mode of the image's
directory there, as ECS copies a ``VOLUME`` path into the task's volume), and every Linux
capability dropped. buildah's chroot isolation has no PID namespace, so the entrypoint runs
under ``unshare --mount --pid --fork`` (util-linux, in every Debian-based image), which remounts
the root read-only and mounts the volumes, then ``setpriv`` drops to the user with no
capability left, not even in the bounding set, and no_new_privs: the worker is PID 1 of its
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

from infra.components.service import container_definitions
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
    "POSEFLEET_TEST_IMAGE not set: make image builds localhost/posefleet-worker:pypi, "
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


def task_container(image: str, environment: dict[str, str]) -> dict:
    """The container definition the stack deploys for this image and environment."""
    (container,) = json.loads(
        container_definitions(
            image=image, environment=environment, log_group="logs", region="us-east-1", gpu=False
        )
    )
    return container


def as_ecs_runs_it(container: dict, directories: dict[str, str]) -> str:
    """The shell run as PID 1 of the new mount and PID namespaces, before it becomes the worker:
    the root read-only, a tmpfs at each mount point with its image directory's mode and owner
    (``directories``: path -> "mode uid gid"), then the user with no capability at all."""
    uid, _, gid = container["user"].partition(":")
    lines = ["set -e"]
    if container["readonlyRootFilesystem"]:
        lines.append("mount -o remount,bind,ro /")
    for mount in container["mountPoints"]:
        path = mount["containerPath"]
        mode, owner, group = directories[path].split()
        lines.append(
            f"mount -t tmpfs -o mode={mode},uid={owner},gid={group},nosuid,nodev tmpfs {path}"
        )
    assert container["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    lines.append(
        f"exec setpriv --reuid={uid} --regid={gid or uid} --clear-groups --inh-caps=-all "
        '--bounding-set=-all --no-new-privs -- "$@"'
    )
    return "\n".join(lines)


def mounts(pid: int) -> dict[str, tuple[str, set[str]]]:
    """Mount point -> (filesystem type, mount options) of a process's mount namespace."""
    found = {}
    for line in (Path("/proc") / str(pid) / "mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        found[parts[4]] = (rest.split()[0], set(parts[5].split(",")))
    return found


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
    # and the task definition runs it as that user, read-only but for its mount points
    task = task_container(IMAGE, {})
    assert task["user"] == f"{uid}:{gid}" and task["readonlyRootFilesystem"] is True
    writable = [m["containerPath"] for m in task["mountPoints"]]
    directories = {
        path: in_container(container, "stat", "-c", "%a %u %g", path).strip() for path in writable
    }
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

    # When the image runs as a task: its command, the definition's user, read-only root, volumes
    # and no capabilities, configured by environment only
    task_env = {
        **moto_server.env(),
        "POSEFLEET_QUEUE_URL": stack.queues.queue_url,
        "POSEFLEET_RESULTS": stack.results_uri,
        "POSEFLEET_MODEL": pointer,
        "POSEFLEET_WAIT_TIME_SECONDS": "1",
        "POSEFLEET_DRAIN_SECONDS": "10",
    }
    task = task_container(IMAGE, task_env)
    env = {"HOME": home, **config.env, **{e["name"]: e["value"] for e in task["environment"]}}
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
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        as_ecs_runs_it(task, directories),
        "sh",
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

        # Then it ran as the image's user, as PID 1 of its namespace, with no capability
        status = process_status(pid)
        assert status["Uid"] == [uid] * 4 and status["Gid"] == [gid] * 4
        assert status["NSpid"][-1] == "1"
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps][0], 16) == 0, (caps, status[caps])
        assert status["NoNewPrivs"] == ["1"]
        # on a read-only root, writing only to its volumes
        seen = mounts(pid)
        assert "ro" in seen["/"][1], seen["/"]
        for path in writable:
            assert seen[path][0] == "tmpfs" and "rw" in seen[path][1], (path, seen.get(path))
        # and that user could write the model cache
        cache_dir = env["POSEFLEET_MODEL_CACHE_DIR"]
        assert cache_dir in writable
        cache = Path(f"/proc/{pid}/root") / cache_dir.lstrip("/")
        cached = list(cache.rglob("model.pt"))
        assert [p.stat().st_uid for p in cached] == [int(uid)]
        (loaded,) = worker.events("model_loaded")
        assert loaded["path"].startswith(cache_dir)

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
        f"PID 1 of its namespace as uid {status['Uid'][0]} with no capability, on a read-only "
        f"root writing only {', '.join(writable)}, exit {code} on SIGTERM"
    )
