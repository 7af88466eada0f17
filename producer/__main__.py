"""``python -m producer``: enqueue every image under an S3 prefix as tasks; follow and export jobs.

Exit codes: 0 done; 1 the job failed or was cancelled (tasks in the dead-letter queue, --wait
timed out, or the job's record says cancelled or failed); 2 bad usage or settings; 3 nothing to
do (no images under the prefix), or no label yet (``label``); 4 AWS said no (missing bucket,
queue or job, no credentials, access denied); 130 submit interrupted (Ctrl-C): run it again
with the same --job-id to resume.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from pydantic import ValidationError
from tqdm import tqdm

from posefleet.aws import client, new_botocore_session
from posefleet.events import EventChannel
from posefleet.job_record import STATES, JobRecord, JobRecordCorrupt
from posefleet.job_table import JobTable, table_missing
from posefleet.layout import ResultsLocation
from posefleet.logs import configure_logging
from posefleet.resources import Lane
from posefleet.settings import ProducerSettings, explain
from producer.discovery import Endpoints
from producer.job import Job
from producer.job.export import PART_ROWS, READ_THREADS

EXAMPLES = """examples:
  python -m producer --bucket checkins --prefix 2026/11/
  python -m producer --bucket checkins --prefix 2026/11/ --dry-run
  python -m producer --inventory s3://inv/checkins/daily/2026-11-24T01-00Z/manifest.json
  python -m producer --keys retry.csv --job-id retry      # bucket,key lines (S3 Batch CSV)
  python -m producer --bucket checkins --prefix 2026/11/ --job-id nov --skip-done --wait
  python -m producer status nov
  python -m producer jobs --state running          # every job, newest first
  python -m producer cancel nov                    # its tasks get no more work
  python -m producer export nov --out nov.csv
  python -m producer report nov --out nov.html    # charts and galleries, opens offline
  python -m producer redrive --peek              # what is in the dead-letter queue, and why
  python -m producer redrive                     # move the tasks back once the cause is fixed
  python -m producer --keys urgent.txt --bucket checkins --lane live   # ahead of any backfill
  python -m producer label s3://checkins/2026/11/a.jpg --wait 10   # one photo's label
  python -m producer events --follow             # "image labelled", "job finished", as they come
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOTHING, EXIT_AWS = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # Ctrl-C during submit: the job resumes with the same --job-id


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
    submit.add_argument(
        "--bucket", help="input bucket (not needed with --inventory, or a bucket,key --keys CSV)"
    )
    submit.add_argument(
        "--prefix",
        default="",
        help="key prefix to list, or to keep from --inventory/--keys (default: everything)",
    )
    submit.add_argument(
        "--inventory",
        metavar="S3_URI",
        help="enqueue the images of an S3 Inventory report: s3://.../manifest.json",
    )
    submit.add_argument(
        "--keys",
        metavar="FILE",
        help="enqueue the keys in a local file or s3://bucket/key: one key a line, or "
        "bucket,key CSV (URL-encoded keys, as S3 Batch Operations takes)",
    )
    submit.add_argument(
        "--keys-format",
        choices=("lines", "csv"),
        help="format of --keys (default: csv for a .csv name, else lines)",
    )
    submit.add_argument(
        "--job-id",
        help="job id (default: from the prefix and the time); run again with it to resume",
    )
    submit.add_argument(
        "--task-size", type=int, help="keys per task (default: POSEFLEET_TASK_SIZE or 20)"
    )
    submit.add_argument(
        "--lane",
        choices=[lane.value for lane in Lane],
        default=Lane.BACKFILL.value,
        help="backfill (default), or live: urgent, served ahead of any backfill (small jobs)",
    )
    submit.add_argument(
        "--dry-run", action="store_true", help="list and plan, print the plan, send nothing"
    )
    submit.add_argument(
        "--skip-done", action="store_true", help="send no task whose result already exists"
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
    status.add_argument(
        "--exact",
        action="store_true",
        help="count every result (a parallel listing) instead of sampling a large job",
    )
    _common(status)
    jobs = sub.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--state", choices=STATES, help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    jobs.add_argument("--json", action="store_true", help="one JSON object a job")
    _common(jobs)
    cancel = sub.add_parser("cancel", help="stop a job: its tasks get no more work")
    cancel.add_argument("job_id")
    _common(cancel)
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
    label = sub.add_parser("label", help="print an uploaded photo's result line (live lane)")
    label.add_argument("photo", metavar="s3://BUCKET/KEY", help="the photo, as it was uploaded")
    label.add_argument(
        "--wait", type=float, metavar="SECONDS", default=0.0, help="wait this long for it"
    )
    _common(label)
    events = sub.add_parser(
        "events", help="print events (image labelled, job finished) from the events queue"
    )
    events.add_argument("--follow", action="store_true", help="keep printing until Ctrl-C")
    events.add_argument(
        "--keep", action="store_true", help="leave the events on the queue (default: consume)"
    )
    events.add_argument("--events-queue-url", help="default: the stack's events queue")
    _common(events)
    export = sub.add_parser("export", help="merge a job's results into one file")
    export.add_argument("job_id")
    export.add_argument(
        "--out",
        required=True,
        help="a local file or s3://bucket/key; a directory (ending in /) for Parquet part files",
    )
    export.add_argument(
        "--format",
        choices=("csv", "jsonl", "parquet"),
        help="default: from the file's extension (parquet for a directory)",
    )
    export.add_argument(
        "--part-rows",
        type=int,
        default=PART_ROWS,
        help=f"rows per Parquet part file when --out is a directory (default {PART_ROWS:,})",
    )
    export.add_argument(
        "--threads",
        type=int,
        default=READ_THREADS,
        help=f"result objects read at once (default {READ_THREADS})",
    )
    _common(export)
    return p


def _settings(args: argparse.Namespace) -> ProducerSettings:
    overrides = {"queue_url": args.queue_url, "results": args.results}
    if getattr(args, "task_size", None) is not None:  # an explicit size: every task
        overrides |= {"task_size": args.task_size, "large_task_size": 0}
    return ProducerSettings(**{k: v for k, v in overrides.items() if v is not None})


_session: Any = None  # this command's botocore session (main() makes one): models load once


def _client(service: str, **kw: Any) -> Any:
    """A client of this command's botocore session: endpoints and service models are read once
    for all its clients (each client a session of its own took 0.3 s of start-up)."""
    return client(service, botocore_session=_session, **kw)


def _endpoints(settings: ProducerSettings, sqs: object) -> Endpoints:
    return Endpoints(settings, sqs=sqs, ssm=_client("ssm"))


def _records(endpoints: Endpoints) -> tuple[JobTable, EventChannel | None]:
    """The job records' table and the events channel (None without a topic)."""
    table = JobTable(dynamodb=_client("dynamodb"), table=endpoints.jobs_table)
    topic = endpoints.events_topic
    return table, EventChannel(sns=_client("sns"), topic_arn=topic) if topic else None


def cmd_submit(args: argparse.Namespace, settings: ProducerSettings) -> int:
    """Stream the source through planning to SQS (producer/job/submit.py); resumable by job id."""
    from producer.job.record import JobConflict
    from producer.job.submit import Submission, SubmitOptions, default_job_id
    from producer.listing import list_client
    from producer.send import SendError
    from producer.sources import SourceError, make_source

    pool = settings.list_concurrency + settings.send_concurrency + 4
    s3, sqs = list_client(max_pool=pool), _client("sqs", max_pool=pool)
    endpoints = _endpoints(settings, sqs)
    location = ResultsLocation.parse(endpoints.results)
    live = args.lane == Lane.LIVE
    if args.dry_run and not (settings.live_queue_url if live else settings.queue_url):
        queue_url = "(dry run)"
    else:
        queue_url = endpoints.live_queue_url if live else endpoints.queue_url
    try:
        source = make_source(
            s3,
            bucket=args.bucket,
            prefix=args.prefix,
            inventory=args.inventory,
            keys=args.keys,
            keys_format=args.keys_format,
            extensions=settings.extensions,
            list_concurrency=settings.list_concurrency,
            split_depth=settings.split_depth,
            page_size=settings.list_page_size,
        )
    except SourceError as e:
        print(f"producer: {e}", file=sys.stderr)
        return EXIT_USAGE
    job_id = args.job_id or default_job_id(source.bucket, args.prefix)
    options = SubmitOptions(
        job_id=job_id,
        task_size=settings.task_size,
        large_task_size=settings.large_task_size or None,
        location=location,
        queue_url=queue_url,
        model=settings.model,
        dry_run=args.dry_run,
        skip_done=args.skip_done,
        listers=settings.list_concurrency,
        senders=settings.send_concurrency,
    )
    with tqdm(
        desc=f"submitting {source.description}",
        unit="task",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    ) as bar:

        def progress(images: int, tasks: int, sent: int) -> None:
            bar.update(sent - bar.n)
            bar.set_postfix(planned_images=images, planned_tasks=tasks, refresh=False)

        records, events = _records(endpoints)
        submission = Submission(
            s3=s3,
            sqs=sqs,
            source=source,
            options=options,
            on_progress=progress,
            records=records,
            events=events,
        )
        try:
            result = submission.run()
        except (JobConflict, SourceError) as e:
            print(f"producer: {e}", file=sys.stderr)
            return EXIT_USAGE
        except SendError as e:
            print(
                f"producer: {e}; run the same command with --job-id {job_id} to resume",
                file=sys.stderr,
            )
            return EXIT_FAILED
        except KeyboardInterrupt:  # outside the stream (its start or its last writes)
            print(
                f"producer: interrupted; run the same command with --job-id {job_id} to resume",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
    if not result.images:
        print(
            f"producer: no images under {source.description} "
            f"(extensions: {' '.join(settings.extensions)})",
            file=sys.stderr,
        )
        return EXIT_NOTHING
    summary = {
        "job_id": job_id,
        "source": source.description,
        "images": result.images,
        "tasks": result.tasks,
        "to_send": result.sent,
        "skipped_done": result.skipped_done,
        "partitions": result.partitions,
        "results": f"{location.uri}/{job_id}/",
        "manifest": f"s3://{location.bucket}/{location.manifest_key(job_id)}",
    }
    if result.resumed:
        summary |= {
            "resumed": True,
            "already_sent": result.already_sent,
            "resent_shards": result.resent_shards,
        }
    if args.dry_run:
        first = result.first_task
        summary["first_task"] = first.model_dump(mode="json") if first else None
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    if result.ended is not None:
        summary["state"] = result.ended.state  # an already finished job ended by this submit
    if result.cancelled:
        summary |= {
            "cancelled": True,
            "state": result.ended.state if result.ended else "cancelling",
        }
        print(json.dumps(summary, indent=2))
        print(
            f"producer: job {job_id} was cancelled while it was being sent; "
            f"{result.sent + result.already_sent + result.skipped_done} of {result.tasks} "
            f"tasks planned so far were sent; submit it again with --job-id {job_id} to resume",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if result.interrupted:
        summary["interrupted"] = True
        print(json.dumps(summary, indent=2))
        print(
            f"producer: interrupted; run the same command with --job-id {job_id} to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(json.dumps(summary, indent=2))
    if args.wait:
        return _wait(submission.job, sqs, args.timeout, records)
    return EXIT_OK


def _wait(job: Job, sqs: object, timeout: float | None, records: JobTable | None) -> int:
    from producer.job.follow import JobEnded, JobStalled, follow

    try:
        progress = follow(job, sqs, timeout=timeout, records=records)
    except (JobStalled, JobEnded, TimeoutError) as e:
        print(f"producer: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"job {progress.job_id}: complete, {progress.images_done} images", file=sys.stderr)
    return EXIT_OK


def _read_record(records: JobTable, job_id: str) -> JobRecord | None:
    """The job's record, or None (no record, no table, or one that cannot be read: said on
    stderr, and the caller falls back to the results listing)."""
    try:
        return records.read(job_id)
    except JobRecordCorrupt as e:
        print(f"producer: {e}; progress is read from the results instead", file=sys.stderr)
    except ClientError as e:
        if not table_missing(e):
            raise
    return None


def cmd_status(args: argparse.Namespace, settings: ProducerSettings) -> int:
    """The job's record and queues (at most 5 calls), or, without a record or with --exact,
    its progress from the results listing."""
    from producer.job.follow import Follower, queue_depths
    from producer.job.view import record_view
    from producer.listing import list_client

    sqs = _client("sqs")
    endpoints = _endpoints(settings, sqs)
    location = ResultsLocation.parse(endpoints.results)
    records, events = _records(endpoints)
    record = _read_record(records, args.job_id)
    if record is not None and not args.wait and (not args.exact or record.tasks_total == 0):
        if record.final and record.event_pending and events is not None:
            records.publish(args.job_id, events, record=record)  # its first try failed
        print(json.dumps(record_view(record, queue_depths(sqs, record.queue_url)), indent=2))
        return EXIT_OK
    job = Job(s3=list_client(), location=location, job_id=args.job_id)
    if args.wait:
        job.reload()  # a clear error for an unknown job
        return _wait(job, sqs, args.timeout, records if record is not None else None)
    manifest = job.reload()  # a clear error for an unknown job
    if not manifest.complete:
        print(
            json.dumps(
                {
                    "job_id": manifest.job_id,
                    "submitting": True,
                    "tasks_planned": manifest.tasks,
                    "tasks_sent": manifest.tasks_sent,
                    "images_planned": manifest.images,
                    "complete": False,
                },
                indent=2,
            )
        )
        return EXIT_OK
    view = Follower(job, sqs, failures_per_poll=3).poll(exact=args.exact)
    shown = view.as_dict()
    since = _seconds_since(manifest.created_at)
    if since and not view.progress.complete:  # one look: the average rate since submit
        rate = view.progress.images_done / since
        remaining = view.progress.images_total - view.progress.images_done
        shown["images_per_s"] = round(rate, 1)
        shown["eta_s"] = round(remaining / rate) if rate > 0 else None
    if record is not None:
        shown["state"] = record.state
    print(json.dumps(shown, indent=2))
    return EXIT_OK


def _seconds_since(iso: str) -> float | None:
    from datetime import UTC, datetime

    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return max(0.0, (datetime.now(UTC) - then).total_seconds()) or None


def cmd_jobs(args: argparse.Namespace, settings: ProducerSettings) -> int:
    """Every job with a record, newest first."""
    from producer.job.view import jobs_table, record_view

    records, _ = _records(_endpoints(settings, _client("sqs")))
    found = list(records.jobs(state=args.state, limit=args.limit))
    if args.json:
        for record in found:
            print(json.dumps(record_view(record)))
    else:
        print("\n".join(jobs_table(found)))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, settings: ProducerSettings) -> int:
    """The job reads cancelling at once; it reads cancelled once every task is counted."""
    from posefleet.job_table import JobMoved

    records, events = _records(_endpoints(settings, _client("sqs")))
    try:
        was = records.cancel(args.job_id)
    except JobMoved as e:
        print(f"producer: {e}", file=sys.stderr)
        return EXIT_FAILED
    if was is None:
        raise LookupError(f"no job {args.job_id!r} (no record in {records.table})")
    if was in ("complete", "failed"):
        print(f"producer: job {args.job_id} is {was}; there is nothing to cancel", file=sys.stderr)
        return EXIT_USAGE
    ended = records.settle(args.job_id, events=events)  # every task may be counted already
    state = ended.state if ended is not None else "cancelling"
    if was == "cancelled":
        state = was
    print(json.dumps({"job_id": args.job_id, "state": state, "was": was}))
    return EXIT_OK


def cmd_export(args: argparse.Namespace, settings: ProducerSettings) -> int:
    import tempfile

    from producer.job.export import Summary, counted, export, write_parquet_parts
    from producer.listing import list_client

    s3 = list_client(max_pool=max(32, args.threads))
    endpoints = _endpoints(settings, _client("sqs"))
    location = ResultsLocation.parse(endpoints.results)
    job = Job.open(s3, location, args.job_id)  # a clear error for an unknown job
    record = _read_record(_records(endpoints)[0], args.job_id)
    if args.part_rows < 1:
        raise ValueError("--part-rows must be at least 1")
    to_s3 = args.out.startswith("s3://")
    parts = args.out.endswith("/")
    fmt = args.format or ("parquet" if parts else Path(args.out).suffix.lstrip(".").lower())
    if parts and fmt != "parquet":
        raise ValueError("a directory --out (ending in /) takes Parquet part files only")
    summary = Summary()
    lines = counted(job.results(threads=args.threads), summary)
    bucket, _, key = args.out[5:].partition("/") if to_s3 else ("", "", "")
    with tempfile.TemporaryDirectory() as tmp:
        if parts:
            where = Path(tmp) / "parts" if to_s3 else Path(args.out)

            def ship(path: Path) -> None:  # each part goes up as soon as it is closed
                if to_s3:
                    s3.upload_file(str(path), bucket, key + path.name)
                    path.unlink()

            n = write_parquet_parts(lines, where, part_rows=args.part_rows, on_part=ship)
        elif to_s3:
            local = Path(tmp) / Path(key).name
            n = export(lines, local, fmt)
            s3.upload_file(str(local), bucket, key)
        else:
            n = export(lines, Path(args.out), fmt)
    shown = {"written": n, "out": args.out, **summary.as_dict()}
    if record is not None:
        shown["state"] = record.state
        if record.state != "complete":
            print(f"producer: {_partial(record)}", file=sys.stderr)
    print(json.dumps(shown, indent=2))
    return EXIT_OK


def _partial(record: JobRecord) -> str:
    """What a not-complete job's export or report holds, said once."""
    total = "?" if record.tasks_total is None else record.tasks_total
    why = f" ({record.reason})" if record.reason else ""
    return (
        f"job {record.job_id} is {record.state}{why}: these are the results of "
        f"{record.counts.tasks_done} of its {total} tasks"
    )


def cmd_report(args: argparse.Namespace, settings: ProducerSettings) -> int:
    from producer.report import render_report

    s3 = _client("s3")
    endpoints = _endpoints(settings, _client("sqs"))
    location = ResultsLocation.parse(endpoints.results)
    job = Job.open(s3, location, args.job_id)  # a clear error for an unknown job
    record = _read_record(_records(endpoints)[0], args.job_id)
    lines = list(job.results())
    note = _partial(record) if record is not None and record.state != "complete" else None
    page = render_report(job, lines, per_pose=args.per_pose, note=note)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(json.dumps({"out": str(args.out), "images": len(lines), "bytes": len(page)}))
    return EXIT_OK


def cmd_redrive(args: argparse.Namespace, settings: ProducerSettings) -> int:
    from posefleet.deadletter import dead_letter_url
    from producer.redrive import peek, redrive

    sqs = _client("sqs")
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


def cmd_label(args: argparse.Namespace, settings: ProducerSettings) -> int:
    from producer.live import wait_for_label
    from producer.sources import parse_s3_uri

    bucket, key = parse_s3_uri(args.photo)
    location = ResultsLocation.parse(_endpoints(settings, _client("sqs")).results)
    line = wait_for_label(_client("s3"), location, bucket, key, timeout=max(0.0, args.wait))
    if line is None:
        print(
            f"producer: no label yet for {args.photo} "
            f"(s3://{location.bucket}/{location.live_key(bucket, key)})",
            file=sys.stderr,
        )
        return EXIT_NOTHING
    print(line.to_json())
    return EXIT_OK


def cmd_events(args: argparse.Namespace, settings: ProducerSettings) -> int:
    from producer.live import UnreadableEvent, follow_events

    sqs = _client("sqs")
    url = args.events_queue_url or _endpoints(settings, sqs).events_queue_url
    try:
        for event in follow_events(sqs, url, follow=args.follow, keep=args.keep):
            if isinstance(event, UnreadableEvent):
                print(f"producer: not an event, left on the queue: {event}", file=sys.stderr)
                continue
            print(event.to_json(), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


COMMANDS = {
    "submit": cmd_submit,
    "status": cmd_status,
    "jobs": cmd_jobs,
    "cancel": cmd_cancel,
    "export": cmd_export,
    "redrive": cmd_redrive,
    "report": cmd_report,
    "label": cmd_label,
    "events": cmd_events,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "submit")  # `python -m producer --bucket X --prefix Y`
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return EXIT_USAGE
    global _session
    _session = new_botocore_session()
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
