"""CPU of listing a prefix: botocore's default S3 client against ``producer.listing.list_client``.

Both list the same virtual bucket of the scale simulator (benchmarks/scale/simulator.py) through
``producer.listing.list_range``, one stream, twice each, interleaved; the CPU time of this
process is what the producer pays per ListObjectsV2 page (signing, HTTP, parsing, handlers).

    python -m benchmarks.list_cpu --keys 200000
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.scale.__main__ import Sim
from benchmarks.scale.simulator import INPUT_BUCKET, KEY_PREFIX


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.list_cpu", description=__doc__)
    p.add_argument("--keys", type=int, default=200_000)
    args = p.parse_args(argv)
    sim = Sim(args.keys)
    try:
        os.environ.update(sim.env())
        from posefleet.aws import client
        from producer.listing import list_client, list_range

        clients = [("botocore default", lambda: client("s3")), ("list_client", list_client)]
        for name, make in clients:
            for _ in range(2):
                s3 = make()
                started, cpu = time.perf_counter(), time.process_time()
                n = sum(len(keys) for keys, _ in list_range(s3, INPUT_BUCKET, KEY_PREFIX))
                cpu = time.process_time() - cpu
                print(
                    f"{name:18s} {n} keys: {cpu:.2f} s CPU, {cpu / (n / 1000) * 1000:.1f} ms CPU "
                    f"a page, wall {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
