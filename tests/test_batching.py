import queue
import threading
import time

import pytest

from worker.batching import collect_batch


def filled(n: int) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    for i in range(n):
        q.put(i)
    return q


@pytest.mark.parametrize(
    ("available", "max_size", "expected"),
    [(0, 4, []), (1, 4, [0]), (4, 4, [0, 1, 2, 3]), (9, 4, [0, 1, 2, 3])],
)
def test_closes_on_size_or_when_nothing_more_arrives(available, max_size, expected):
    assert (
        collect_batch(filled(available), max_size=max_size, max_wait=0.01, first_wait=0.01)
        == expected
    )


def test_closes_on_age_with_a_partial_batch():
    q: queue.Queue = queue.Queue()

    def trickle():
        for i in range(10):
            q.put(i)
            time.sleep(0.05)

    threading.Thread(target=trickle, daemon=True).start()
    batch = collect_batch(q, max_size=100, max_wait=0.12, first_wait=1)
    assert 1 <= len(batch) < 10
    assert batch == list(range(len(batch)))


def test_closes_early_when_more_urgent_work_arrives():
    q: queue.Queue = queue.Queue()
    urgent = threading.Event()

    def trickle():
        for i in range(10):
            q.put(i)
            if i == 2:
                urgent.set()
            time.sleep(0.02)

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    batch = collect_batch(q, max_size=100, max_wait=5, first_wait=1, close_early=urgent.is_set)
    assert batch[:3] == [0, 1, 2] and len(batch) < 10
    assert time.monotonic() - started < 1  # not the 5 s it would wait for a full batch


def test_waits_for_a_late_first_item():
    q: queue.Queue = queue.Queue()
    threading.Timer(0.05, q.put, args=("late",)).start()
    assert collect_batch(q, max_size=2, max_wait=0, first_wait=2) == ["late"]


@pytest.mark.parametrize(("size", "wait", "message"), [(0, 1, "max_size"), (1, -1, "max_wait")])
def test_bad_limits_say_what_to_fix(size, wait, message):
    with pytest.raises(ValueError, match=message):
        collect_batch(filled(1), max_size=size, max_wait=wait)
