"""``python -m producer``: enqueue every image under an S3 prefix as tasks; follow and export jobs.

Exit codes: 0 done; 1 the job failed (tasks in the dead-letter queue, or --wait timed out);
2 bad usage or settings; 3 nothing to do (no images under the prefix); 4 AWS said no
(missing bucket or queue, no credentials, access denied).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from pydantic import ValidationError
from tqdm import tqdm

from posefleet.aws import client
from posefleet.layout import ResultsLocation
from posefleet.logs import configure_logging
from posefleet.settings import ProducerSettings, explain
from producer.discovery import Endpoints

EXAMPLES = """examples:
  python -m producer --bucket checkins --prefix 2026/11/
  python -m producer --bucket checkins --prefix 2026/11/ --dry-run
  python -m producer --bucket checkins --prefix 2026/11/ --job-id nov --skip-done --wait
  python -m producer status nov
  python -m producer export nov --out nov.csv
  python -m producer report nov --out nov.html    # charts and galleries, opens offline
  python -m producer redrive --peek              # what is in the dead-letter queue, and why
  python -m producer redrive                     # move the tasks back once the cause is fixed
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOTHING, EXIT_AWS = 0, 1, 2, 3, 4


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--queue-url", help="tasks queue URL (default: looked up from POSEFLEET_QUEUE_NAME)"
    )
    p.add_argument(
        "--results", help="where results go, s3://bucket/prefix (default: POSEFLEET_RESULTS)"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m producer",
        description="Enqueue every image under an S3 prefix as tasks for the posefleet workers.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command")
    submit = sub.add_parser("submit", help="list a prefix and enqueue it (the default command)")
    submit.add_argument("--bucket", required=True, help="input bucket")
    submit.add_argument(
        "--prefix", default="", help="key prefix to list (default: the whole bucket)"
    )
    submit.add_argument(
        "--job-id", help="job id (default: from the prefix and the time); reuse it to resume"
    )
    submit.add_argument(
        "--task-size", type=int, help="keys per task (default: POSEFLEET_TASK_SIZE or 20)"
    )
    submit.add_argument(
        "--dry-run", action="store_true", help="list and plan, print the plan, send nothing"
    )
    submit.add_argument(
        "--skip-done", action="store_true", help="skip tasks whose results already exist"
    )
    submit.add_argument(
        "--wait", action="store_true", help="follow the job until every task has a result"
    )
    submit.add_argument(
        "--timeout", type=float, help="with --wait: give up after this many seconds"
    )
    _common(submit)
    status = sub.add_parser("status", help="show a job's progress")
    status.add_argument("job_id")
    status.add_argument("--wait", action="store_true", help="follow until complete")
    status.add_argument("--timeout", type=float)
    _common(status)
    report = sub.add_parser("report", help="write a self-contained HTML report of a job")
    report.add_argument("job_id")
    report.add_argument("--out", required=True, type=Path, help="output .html file")
    report.add_argument(
        "--per-pose", type=int, default=24, help="thumbnails per pose (least confident)"
    )
    _common(report)
    redrive = sub.add_parser("redrive", help="move dead-lettered tasks back to the tasks queue")
    redrive.add_argument("--peek", action="store_true", help="list what is there, move nothing")
    redrive.add_argument(
        "--include-invalid",
        action="store_true",
        help="move bodies that are not tasks too (they will dead-letter again)",
    )
    _common(redrive)
    export = sub.add_parser("export", help="merge a job's results into one file")
    export.add_argument("job_id")
    export.add_argument("--out", required=True, help="a local file, or s3://bucket/key")
    export.add_argument(
        "--format", choices=("csv", "jsonl", "parquet"), help="default: from the file's extension"
    )
    _common(export)
    return p


def _settings(args: argparse.Namespace) -> ProducerSettings:
    overrides = {"queue_url": args.queue_url, "results": args.results}
    if getattr(args, "task_size", None) is not None:
        overrides["task_size"] = args.task_size
    return ProducerSettings(**{k: v for k, v in overrides.items() if v is not None})


def _endpoints(settings: ProducerSettings, sqs: object) -> Endpoints:
    return Endpoints(settings, sqs=sqs, ssm=client("ssm"))


def cmd_submit(args: argparse.Namespace, settings: ProducerSettings) -> int:
    from producer.jobs import default_job_id, done_task_ids, plan_job, submit_job
    from producer.listing import list_image_keys

    s3, sqs = client("s3"), client("sqs")
    endpoints = _endpoints(settings, sqs)
    location = ResultsLocation.parse(endpoints.results)
    queue_url = "(dry run)" if args.dry_run and not settings.queue_url else endpoints.queue_url
    job_id = args.job_id or default_job_id(args.bucket, args.prefix)
    with tqdm(
        desc=f"listing s3://{args.bucket}/{args.prefix}",
        unit="obj",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    ) as bar:
        keys = list(
            list_image_keys(
                s3,
                args.bucket,
                args.prefix,
                extensions=settings.extensions,
                on_page=lambda listed, kept: bar.update(listed),
            )
        )
    if not keys:
        print(
            f"producer: no images under s3://{args.bucket}/{args.prefix} "
            f"(extensions: {' '.join(settings.extensions)})",
            file=sys.stderr,
        )
        return EXIT_NOTHING
    skip = done_task_ids(s3, location, job_id) if args.skip_done else None
    plan = plan_job(
        keys=keys,
        job_id=job_id,
        bucket=args.bucket,
        prefix=args.prefix,
        task_size=settings.task_size,
        location=location,
        queue_url=queue_url,
        model=settings.model,
        skip=skip,
    )
    summary = {
        "job_id": job_id,
        "images": plan.manifest.images,
        "tasks": plan.manifest.tasks,
        "to_send": len(plan.tasks),
        "skipped_done": plan.skipped,
        "results": f"{location.uri}/{job_id}/",
        "manifest": f"s3://{location.bucket}/{location.manifest_key(job_id)}",
    }
    if args.dry_run:
        summary["first_task"] = plan.tasks[0].model_dump(mode="json") if plan.tasks else None
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    with tqdm(
        total=len(plan.tasks),
        desc="sending",
        unit="task",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    ) as bar:
        submit_job(s3, sqs, plan, location, on_sent=bar.update)
    print(json.dumps(summary, indent=2))
    if args.wait:
        return _wait(s3, sqs, location, plan.manifest, args.timeout)
    return EXIT_OK


def _wait(
    s3: object, sqs: object, location: ResultsLocation, manifest: object, timeout: float | None
) -> int:
    from producer.follow import JobStalled, follow

    try:
        progress = follow(s3, sqs, location, manifest, timeout=timeout)  # type: ignore[arg-type]
    except (JobStalled, TimeoutError) as e:
        print(f"producer: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"job {progress.job_id}: complete, {progress.images_done} images", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: ProducerSettings) -> int:
    from producer.results import read_manifest, read_progress

    s3, sqs = client("s3"), client("sqs")
    location = ResultsLocation.parse(_endpoints(settings, sqs).results)
    manifest = read_manifest(s3, location, args.job_id)
    if args.wait:
        return _wait(s3, sqs, location, manifest, args.timeout)
    p = read_progress(s3, location, manifest)
    print(
        json.dumps(
            {
                "job_id": p.job_id,
                "tasks_done": p.tasks_done,
                "tasks_total": p.tasks_total,
                "tasks_remaining": p.tasks_remaining,
                "images_done": p.images_done,
                "images_total": p.images_total,
                "complete": p.complete,
            },
            indent=2,
        )
    )
    return EXIT_OK


def cmd_export(args: argparse.Namespace, settings: ProducerSettings) -> int:
    from producer.results import export, iter_results, read_manifest, summarize

    s3 = client("s3")
    location = ResultsLocation.parse(_endpoints(settings, client("sqs")).results)
    read_manifest(s3, location, args.job_id)  # a clear error for an unknown job
    fmt = args.format or Path(args.out).suffix.lstrip(".").lower()
    lines = list(iter_results(s3, location, args.job_id))
    if args.out.startswith("s3://"):
        import tempfile

        bucket, _, key = args.out[5:].partition("/")
        with tempfile.TemporaryDirectory() as tmp:
            n = export(lines, Path(tmp) / Path(key).name, fmt)
            s3.upload_file(str(Path(tmp) / Path(key).name), bucket, key)
    else:
        n = export(lines, Path(args.out), fmt)
    print(json.dumps({"written": n, "out": args.out, **summarize(lines).as_dict()}, indent=2))
    return EXIT_OK


def cmd_report(args: argparse.Namespace, settings: ProducerSettings) -> int:
    from producer.report import fetcher, render_report
    from producer.results import iter_results, read_manifest

    s3 = client("s3")
    location = ResultsLocation.parse(_endpoints(settings, client("sqs")).results)
    read_manifest(s3, location, args.job_id)
    lines = list(iter_results(s3, location, args.job_id))
    page = render_report(args.job_id, lines, fetcher(s3), per_pose=args.per_pose)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(json.dumps({"out": str(args.out), "images": len(lines), "bytes": len(page)}))
    return EXIT_OK


def cmd_redrive(args: argparse.Namespace, settings: ProducerSettings) -> int:
    from posefleet.deadletter import dead_letter_url
    from producer.redrive import peek, redrive

    sqs = client("sqs")
    queue_url = _endpoints(settings, sqs).queue_url
    dlq_url = dead_letter_url(sqs, queue_url)
    if dlq_url is None:
        print(f"producer: {queue_url} has no dead-letter queue (no RedrivePolicy)", file=sys.stderr)
        return EXIT_USAGE
    if args.peek:
        letters = peek(sqs, dlq_url)
        for d in letters:
            print(
                json.dumps(
                    {
                        "message_id": d.message_id,
                        "reason": d.reason,
                        "receives": d.receives,
                        "problem": d.problem,
                        "body": d.body[:300],
                    }
                )
            )
        print(f"{len(letters)} dead-lettered messages in {dlq_url}", file=sys.stderr)
        return EXIT_OK
    moved, left = redrive(sqs, dlq_url, queue_url, include_invalid=args.include_invalid)
    print(
        json.dumps(
            {"moved": moved, "left_invalid": left, "queue": queue_url, "dead_letter_queue": dlq_url}
        )
    )
    return EXIT_OK


COMMANDS = {
    "submit": cmd_submit,
    "status": cmd_status,
    "export": cmd_export,
    "redrive": cmd_redrive,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "submit")  # `python -m producer --bucket X --prefix Y`
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return EXIT_USAGE
    try:
        settings = _settings(args)
    except ValidationError as e:
        print(f"producer: invalid settings: {explain(e)}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level)
    try:
        return COMMANDS[args.command](args, settings)
    except NoCredentialsError:
        print(
            "producer: no AWS credentials found; "
            "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            file=sys.stderr,
        )
    except ClientError as e:
        error = e.response.get("Error", {})
        print(
            f"producer: AWS refused {e.operation_name}: "
            f"{error.get('Code')}: {error.get('Message')}",
            file=sys.stderr,
        )
    except BotoCoreError as e:
        print(f"producer: cannot reach AWS: {e}", file=sys.stderr)
    except LookupError as e:
        print(f"producer: {e}", file=sys.stderr)
    except ValueError as e:
        print(f"producer: {e}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_AWS


if __name__ == "__main__":
    sys.exit(main())
