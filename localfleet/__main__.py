"""``python -m localfleet``: a local fleet you point at your photos and your checkpoint.

Starts moto's server on 127.0.0.1 and N ``python -m worker`` processes, creates the queues and
buckets as infra/ would, uploads a folder of photos and publishes a checkpoint if given, and
prints the environment under which every ``python -m producer`` command and
``python -m training publish`` work against it from another shell. Runs until Ctrl-C or SIGTERM,
then stops everything it started (the workers drain first). The buckets are kept in the state
folder, so the next start finds the previous jobs' results.
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
from posefleet.resources import DEFAULT_INPUT_BUCKET
from posefleet.settings import FleetSettings, explain

EXAMPLES = """examples:
  python -m localfleet --photos ~/checkins --checkpoint models/pose_classifier.pth
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
        "--checkpoint",
        type=Path,
        help="model to serve: a posefleet checkpoint, or the seed's .pth with "
        "class_mapping.json beside it (default: the one published last)",
    )
    p.add_argument("--workers", type=int, help="worker processes (default 2)")
    p.add_argument("--state", help="state folder (default .posefleet/fleet)")
    p.add_argument("--port", type=int, help="moto's port (default: the last run's, or a free one)")
    return p.parse_args(argv)


def instructions(fleet: Fleet, prefix: str) -> str:
    state = fleet.state
    bucket_prefix = f" --prefix {shlex.quote(prefix)}" if prefix else ""
    return f"""
In another shell, point the unchanged commands at this fleet:
  source {state}/env.sh
  python -m producer --bucket {DEFAULT_INPUT_BUCKET}{bucket_prefix} --job-id mine --wait
  python -m producer export mine --out mine.csv
  python -m producer report mine --out mine.html
  python -m training publish --checkpoint model.pt --models {MODELS}   # restart to serve it
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

    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        (hurry if stop.is_set() else stop).set()  # a second signal: stop without draining

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    fleet = Fleet(settings=settings)
    try:
        env = fleet.open()
        fleet.say(f"moto's server on {env.variables['AWS_ENDPOINT_URL']}, state in {fleet.state}")
        if args.photos is not None:
            fleet.say(f"uploading {args.photos} into s3://{DEFAULT_INPUT_BUCKET}/{args.prefix}")
            fleet.say(f"uploaded {fleet.upload_photos(args.photos, prefix=args.prefix)} files")
        if args.checkpoint is not None:
            fleet.say(f"published {args.checkpoint} as model {fleet.publish(args.checkpoint)}")
        if not fleet.model_published():
            fleet.say(
                "no model yet: the workers start once one is published "
                f"(python -m training publish --models {MODELS}, or --checkpoint)"
            )
        fleet.tick(sync=False, render=True)
        print(env.exports(), end="", flush=True)  # stdout: the environment, for eval or a file
        fleet.say(instructions(fleet, args.prefix))
        fleet.serve(stop)
    except (OSError, ValueError, RuntimeError, TimeoutError) as e:
        fleet.say(f"localfleet: {e}")
        return 1
    finally:
        fleet.close(hurry=hurry)
        fleet.say(f"fleet stopped; its buckets are kept in {fleet.state}/s3/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
