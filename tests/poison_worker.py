"""``python -m tests.poison_worker``: the real worker, except that decoding an image whose
bytes carry :data:`MARK` kills the process at once, as a decoder bug or an OOM kill would.

Fault injection for tests only: the worker, its settings and its queues are the real ones; the
one change is ``worker.prepare.decode_image``, wrapped before the worker starts.
"""

from __future__ import annotations

import os
import sys

MARK = b"posefleet-test-poison"
EXIT_CODE = 86  # what the test's supervisor sees, like an ECS task's exit code


def main() -> None:
    import worker.prepare
    from worker.__main__ import main as worker_main

    real_decode = worker.prepare.decode_image

    def decode_or_die(data: bytes, **kwargs: object) -> object:
        if MARK in data:
            sys.stderr.write('{"event": "poison_decoded"}\n')
            sys.stderr.flush()
            os._exit(EXIT_CODE)
        return real_decode(data, **kwargs)

    worker.prepare.decode_image = decode_or_die
    code = worker_main([])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
