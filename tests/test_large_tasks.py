"""Tasks of 100 images (producer/job/plan.py's large tasks): crash isolation holds at that size.

One image that kills the worker, among 100 in one task: the worker's isolation (worker/loop.py)
names it after ``crash_attempts`` crashes taken alone and gives it a ``crashed_worker`` line,
while its 99 task-mates get exactly one ``ok`` line each, and nothing is dead-lettered. The
same flow as tests/test_crashes.py's poison test, at the large task size.
"""

from __future__ import annotations

import pytest

from posefleet.settings import WorkerSettings
from tests.conftest import Stack
from tests.helpers import all_lines, upload
from tests.images import jpeg
from tests.poison_worker import MARK
from tests.test_crashes import deployed_spec, serve_with_replacements

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_one_poison_image_in_a_100_image_task_ends_alone_and_its_mates_are_labelled(
    moto_server, processes, checkpoint_path
):
    # Given one task of 100 small photos, the third of which kills the worker when decoded
    spec = deployed_spec()
    stack = Stack(moto_server, spec)
    files = {f"big/{i:03d}.jpg": jpeg((96, 72), seed=i) for i in range(100)}
    poison = "big/002.jpg"
    files[poison] = jpeg((96, 72), seed=2, comment=MARK)
    keys = upload(stack.s3, files, bucket=stack.input)
    env = stack.env(
        POSEFLEET_MODEL=str(checkpoint_path),
        POSEFLEET_VISIBILITY_TIMEOUT=str(spec.visibility_timeout),
        POSEFLEET_HEARTBEAT_SECONDS="2",
    )
    # When two poison-dying workers serve it, each replaced when it dies (as ECS would)
    crashes = serve_with_replacements(
        stack, processes, env, prefix="big/", job="big", task_size=100, objects=1
    )

    # Then the poison image alone has a crashed_worker line, after a bounded number of crashes
    lines = all_lines(stack, "big")
    by_key = {line.key: line for line in lines}
    assert crashes == WorkerSettings().crash_attempts + 2
    assert (by_key[poison].status, by_key[poison].error_kind) == ("error", "crashed_worker")
    # and each of its 99 task-mates one ok line, in the task's one result object
    assert sorted(line.key for line in lines) == keys and len(lines) == 100
    assert [k for k, line in by_key.items() if line.status != "ok"] == [poison]
    assert stack.count(stack.queues.dlq_url) == 0
