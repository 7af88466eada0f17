"""``python -m worker``: a long-running worker that serves the tasks queue until stopped.

Settings come from ``POSEFLEET_*`` environment variables; flags override them.
AWS endpoints and credentials come from the standard chain (``AWS_ENDPOINT_URL`` for moto).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from posefleet import metric_names
from posefleet.aws import client
from posefleet.logs import configure_logging, get_logger
from posefleet.settings import WorkerSettings, explain
from worker.cpus import available_cpus

EXAMPLES = """examples:
  python -m worker                                  # serve until SIGTERM
  python -m worker --model ./pose_classifier.pt --exit-when-idle 30
  POSEFLEET_BATCH_SIZE=64 POSEFLEET_DEVICE=cuda python -m worker
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m worker",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--queue-url", help="tasks queue URL (default: looked up from the queue name)")
    p.add_argument("--results", help="s3://bucket/prefix for results of S3-event tasks")
    p.add_argument(
        "--model", help="checkpoint: local path, s3://.../model.pt or s3://.../current.json"
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int)
    p.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit 0 after this long with nothing held and nothing received",
    )
    p.add_argument("--log-level")
    return p.parse_args(argv)


def build_settings(args: argparse.Namespace) -> WorkerSettings:
    overrides = {
        k: v
        for k, v in {
            "queue_url": args.queue_url,
            "results": args.results,
            "model": args.model,
            "device": args.device,
            "batch_size": args.batch_size,
            "log_level": args.log_level,
        }.items()
        if v is not None
    }
    return WorkerSettings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = build_settings(args)
    except ValidationError as e:
        print(f"worker: invalid settings: {explain(e)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    log = get_logger("worker")

    # Signals are caught from here on: a SIGTERM while the model loads still drains cleanly.
    from worker.shutdown import Shutdown

    shutdown = Shutdown()
    shutdown.install()

    cpus = available_cpus()
    torch_threads = settings.torch_threads or cpus
    decode_threads = settings.decode_threads or cpus

    from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

    from posefleet.deadletter import dead_letter_url
    from worker.loop import Worker
    from worker.metrics import Metrics
    from worker.model import Classifier
    from worker.model_source import ModelRefused, resolve_model
    from worker.protection import ScaleInProtection
    from worker.retry import GaveUp, Retry
    from worker.sqs import TaskQueue

    # Start-up calls are retried on transient faults for startup_budget_seconds (a worker
    # started during an outage waits it out), then the worker gives up with a clear message.
    startup = Retry(budget=settings.startup_budget_seconds, stop=shutdown.requested)

    def fail(event: str, what: str, error: BaseException) -> int:
        log.error(event, error=str(error))
        print(f"worker: {what}: {error}", file=sys.stderr)
        return 1

    try:
        s3 = client(
            "s3", max_attempts=settings.aws_max_attempts, max_pool=settings.fetch_threads + 8
        )
        sqs = client("sqs", max_attempts=settings.aws_max_attempts)
        queue_url = settings.queue_url or startup.call(
            lambda: sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"],
            what="sqs:GetQueueUrl",
        )
    except NoRegionError:
        print(
            "worker: no AWS region configured; set AWS_REGION or AWS_DEFAULT_REGION "
            "(e.g. AWS_REGION=us-east-1)",
            file=sys.stderr,
        )
        return 2
    except (ClientError, BotoCoreError, GaveUp) as e:  # no queue, no service
        return fail("queue_lookup_failed", "cannot use the tasks queue", e)
    metrics = Metrics(service=settings.service)

    try:
        resolved = startup.call(  # a refusal is not transient: it is never retried
            lambda: resolve_model(
                settings.model,
                s3=s3,
                cache_dir=Path(settings.model_cache_dir),
                with_int8=settings.backend == "openvino-int8",
                expected_sha256=settings.model_sha256,
            ),
            what="model download",
            model=settings.model,
        )
        classifier = Classifier.from_file(
            resolved.path,
            device=settings.device,
            threads=torch_threads,
            expected_sha256=settings.model_sha256 or resolved.sha256,
            backend=settings.backend,
        )
    except ModelRefused as e:  # not transient: the pointer or a file it names is not trusted
        log.error("model_refused", model=settings.model, error=str(e))
        print(f"worker: refusing the model {settings.model}: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, ClientError, BotoCoreError) as e:  # no model
        log.error("model_load_failed", model=settings.model, error=str(e))
        print(f"worker: cannot load the model {settings.model}: {e}", file=sys.stderr)
        return 1
    metrics.observe(metric_names.MODEL_LOAD_TIME, classifier.load_seconds * 1000)
    log.info(
        "model_loaded",
        path=str(resolved.path),
        seconds=round(classifier.load_seconds, 3),
        cpus=cpus,
        torch_threads=torch_threads,
        decode_threads=decode_threads,
    )

    # After the model: a worker that cannot load its model says so first, whatever the queue.
    try:
        dlq_url = startup.call(
            lambda: dead_letter_url(sqs, queue_url), what="sqs:GetQueueAttributes"
        )
    except (ClientError, BotoCoreError, GaveUp) as e:
        return fail("queue_lookup_failed", "cannot use the tasks queue", e)
    if dlq_url is None:
        log.warning("no_dead_letter_queue", queue=queue_url)
    try:
        live_queue = startup.call(lambda: _live_queue(settings, sqs), what="live lane lookup")
    except (ClientError, BotoCoreError, GaveUp) as e:
        return fail("queue_lookup_failed", "cannot use the live lane's queue", e)
    hooks = []
    if settings.events_topic:
        from posefleet.events import EventChannel
        from worker.announce import Announcer

        channel = EventChannel(
            sns=client("sns", max_attempts=settings.aws_max_attempts),
            topic_arn=settings.events_topic,
        )
        hooks.append(("sns:Publish(image.labelled)", Announcer(channel=channel, metrics=metrics)))

    worker = Worker(
        settings=settings,
        tasks_queue=TaskQueue(sqs=sqs, url=queue_url, dlq_url=dlq_url),
        s3=s3,
        classifier=classifier,
        metrics=metrics,
        shutdown=shutdown.requested,
        decode_threads=decode_threads,
        exit_when_idle=args.exit_when_idle,
        protection=ScaleInProtection(os.environ.get("ECS_AGENT_URI")),
        live_queue=live_queue,
        hooks=hooks,
    )
    return worker.run()


def _live_queue(settings: WorkerSettings, sqs: Any) -> Any:
    """The live lane's queue, with its dead-letter queue; None when there is none (a stack
    without a live lane, or live_queue_name set empty): the worker then serves the backfill
    lane alone."""
    from posefleet.deadletter import dead_letter_url
    from worker.sqs import TaskQueue

    log = get_logger("worker")
    url = settings.live_queue_url
    if not url and settings.live_queue_name:
        try:
            url = sqs.get_queue_url(QueueName=settings.live_queue_name)["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist:
            log.warning("no_live_lane", queue_name=settings.live_queue_name)
            return None
    if not url:
        return None
    return TaskQueue(sqs=sqs, url=url, dlq_url=dead_letter_url(sqs, url))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: a pool thread still inside torch's C++ code would abort it.
    os._exit(code)
