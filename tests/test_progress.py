"""Following a job: the live view, its bounded cost on large jobs, and queues without a DLQ."""

from __future__ import annotations

import pytest

from tests.conftest import INPUT, RESULTS
from tests.test_producer import RESULTS_URI, drain, run, upload, write_results


@pytest.fixture
def plain_queue(sqs) -> str:
    """A tasks queue with no RedrivePolicy: SQS answers GetQueueAttributes without Attributes."""
    return sqs.create_queue(QueueName="no-dlq")["QueueUrl"]


def test_wait_follows_a_job_whose_queue_has_no_dead_letter_queue(
    s3, sqs, queues, plain_queue, capsys
):
    # Given a job sent to a queue without a redrive policy, every task with its result
    assert "Attributes" not in sqs.get_queue_attributes(
        QueueUrl=plain_queue, AttributeNames=["RedrivePolicy"]
    )
    upload(s3, [f"p/{i}.jpg" for i in range(5)])
    code, out, _ = run(
        capsys,
        *("--bucket", INPUT, "--prefix", "p/", "--job-id", "nodlq", "--task-size", "2"),
        *("--queue-url", plain_queue, "--results", RESULTS_URI),
    )
    assert code == 0 and out["tasks"] == 3
    for task in drain(sqs, plain_queue):
        write_results(s3, task, broken={"p/3.jpg"})
    # When status --wait follows it
    code, _, err = run(
        capsys, "status", "nodlq", "--wait", "--queue-url", plain_queue, "--results", RESULTS_URI
    )
    # Then it completes and says once that there is no dead-letter queue
    assert code == 0, err
    assert err.count("no dead-letter queue") == 1
    assert "5/5 images (1 failed)" in err and "complete, 5 images" in err
    assert s3.list_objects_v2(Bucket=RESULTS, Prefix="results/nodlq/")["KeyCount"] == 4
