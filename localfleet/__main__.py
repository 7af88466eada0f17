"""``python -m localfleet``: a local fleet you point at your photos and your checkpoint.

Starts moto's server on 127.0.0.1 and N ``python -m worker`` processes, creates both lanes'
queues, the buckets and the events topic as infra/ would, uploads a folder of photos and
publishes a checkpoint if given, and prints the environment under which every
``python -m producer`` command and ``python -m training publish`` work against it from another
shell. From then on, every photo put into the input bucket is live work: labelled ahead of any
backfill, its result at its own key (``python -m producer label``), an event for it
(``python -m producer events``). With ``--watch``, new or changed files in the ``--photos``
folder are uploaded as they appear and each one's label is printed on stdout as its event
arrives (``localfleet.watch``). Runs until Ctrl-C or SIGTERM, then stops everything it started
(the workers drain first). The buckets are kept in the state folder, so the next start finds
the previous jobs' results.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from localfleet.fleet import MODELS, Fleet
from localfleet.watch import POLL_SECONDS, WATCH_EVENTS_QUEUE, FolderWatch, LabelPrinter
from posefleet.resources import DEFAULT_INPUT_BUCKET
from posefleet.settings import FleetSettings, explain

EXAMPLES = """examples:
  python -m localfleet --photos ~/checkins --checkpoint models/pose_classifier.pth
  python -m localfleet --photos ~/checkins --watch  # drop a photo in: its pose, a second later
  python -m localfleet --workers 1                  # again later: the same results, same port
  POSEFLEET_FLEET_STATE_DIR=/tmp/fleet python -m localfleet --photos photos/ --prefix 2026/
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m localfleet",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--photos", type=Path, help="a folder to upload into the input bucket (paths as keys)"
    )
    p.add_argument("--prefix", default="", help="key prefix for the uploaded photos")
    p.add_argument(
        "--watch",
        action="store_true",
        help=f"keep watching --photos (every {POLL_SECONDS:g} s): upload each new or changed "
        "file as a live upload and print its label when it comes",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="model to serve: a posefleet checkpoint, or the seed's .pth with "
        "class_mapping.json beside it (default: the one published last)",
    )
    p.add_argument("--workers", type=int, help="worker processes (default 2)")
    p.add_argument("--state", help="state folder (default .posefleet/fleet)")
    p.add_argument("--port", type=int, help="moto's port (default: the last run's, or a free one)")
    return p.parse_args(argv)


def instructions(fleet: Fleet, prefix: str, watched: Path | None) -> str:
    state = fleet.state
    bucket_prefix = f" --prefix {shlex.quote(prefix)}" if prefix else ""
    live = f"s3://{DEFAULT_INPUT_BUCKET}/{prefix}photo.jpg"
    drop = (
        f"Drop a photo into {watched}: it is uploaded and its pose printed here.\n"
        if watched is not None
        else ""
    )
    return f"""
In another shell, point the unchanged commands at this fleet:
  source {state}/env.sh
  python -m producer --bucket {DEFAULT_INPUT_BUCKET}{bucket_prefix} --job-id mine --wait
  python -m producer export mine --out mine.csv
  python -m producer report mine --out mine.html
  python -m training publish --checkpoint model.pt --models {MODELS}   # restart to serve it
The live lane: every photo put into s3://{DEFAULT_INPUT_BUCKET} from now on is labelled ahead of
any backfill.
{drop}  python -m producer label {live} --wait 10   # one photo's result line
  python -m producer events --follow                # "image labelled", "job finished"
Dashboard: {fleet.dashboard_path} (refreshed every {fleet.settings.sync_seconds:g} s)
Buckets kept in {state}/s3/ across restarts. Ctrl-C stops the fleet (workers drain first).
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {"workers": args.workers, "state_dir": args.state, "port": args.port}
    try:
        settings = FleetSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        print(f"localfleet: invalid settings: {explain(e)}", file=sys.stderr)
        return 2
    if args.photos is not None and not args.photos.is_dir():
        print(f"localfleet: --photos {args.photos} is not a folder", file=sys.stderr)
        return 2
    if args.checkpoint is not None and not args.checkpoint.is_file():
        print(f"localfleet: --checkpoint {args.checkpoint} is not a file", file=sys.stderr)
        return 2
    if args.watch and args.photos is None:
        print("localfleet: --watch needs --photos, the folder to watch", file=sys.stderr)
        return 2

    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        (hurry if stop.is_set() else stop).set()  # a second signal: stop without draining

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    fleet = Fleet(settings=settings)
    threads: list[threading.Thread] = []
    done = threading.Event()  # tells the watch and the printer to end
    try:
        env = fleet.open()
        fleet.say(f"moto's server on {env.variables['AWS_ENDPOINT_URL']}, state in {fleet.state}")
        watch = printer = None
        if args.watch:
            printer = LabelPrinter(
                sqs=fleet.sqs, queue_url=fleet.subscribe(WATCH_EVENTS_QUEUE), out=sys.stdout
            )
            watch = FolderWatch(folder=args.photos, prefix=args.prefix, upload=fleet.upload_file)
            watch.prime()  # before the start's upload: a file that comes during it is live
        if args.photos is not None:
            fleet.say(f"uploading {args.photos} into s3://{DEFAULT_INPUT_BUCKET}/{args.prefix}")
            fleet.say(f"uploaded {fleet.upload_photos(args.photos, prefix=args.prefix)} files")
        if args.checkpoint is not None:
            fleet.say(f"published {args.checkpoint} as model {fleet.publish(args.checkpoint)}")
        fleet.route_uploads()  # the back catalogue is in: uploads from now on are live work
        if not fleet.model_published():
            fleet.say(
                "no model yet: the workers start once one is published "
                f"(python -m training publish --models {MODELS}, or --checkpoint)"
            )
        fleet.tick(sync=False, render=True)
        print(env.exports(), end="", flush=True)  # stdout: the environment, then labels
        fleet.say(instructions(fleet, args.prefix, args.photos if args.watch else None))
        if watch is not None and printer is not None:
            threads = [
                threading.Thread(target=run, args=(done,), kwargs={"say": fleet.say}, daemon=True)
                for run in (printer.run, watch.run)
            ]
            for thread in threads:
                thread.start()
            fleet.say(f"watching {args.photos} every {POLL_SECONDS:g} s")
        fleet.serve(stop)
    except (OSError, ValueError, RuntimeError, TimeoutError) as e:
        fleet.say(f"localfleet: {e}")
        return 1
    finally:
        done.set()  # the watch and the printer end within about a second
        for thread in threads:
            thread.join(timeout=10)
        fleet.close(hurry=hurry)
        fleet.say(f"fleet stopped; its buckets are kept in {fleet.state}/s3/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
