"""The worker's bound on what it receives ahead of its model, and the gate around risky work."""

from __future__ import annotations

import threading
import time

import pytest

from worker.gate import Gate
from worker.prefetch import Throughput, messages_to_receive, prefetch_limit


@pytest.mark.parametrize(
    ("rate", "seconds", "batch_size", "min_batches", "max_images", "expected"),
    [
        (0.0, 4.0, 32, 2, 256, 64),  # nothing measured yet: the floor, two batches
        (10.0, 4.0, 32, 2, 256, 64),  # a 2-vCPU ResNet50: 40 images of work < the floor
        (25.0, 4.0, 32, 2, 256, 100),  # int8 on the same CPU: four seconds of it
        (400.0, 4.0, 128, 2, 256, 256),  # a GPU: the memory bound caps it
        (3.3, 4.0, 8, 2, 256, 16),  # small batches, slow model: two batches
        (3.3, 4.0, 1, 1, 256, 14),  # rounded up, never below one batch
        (0.0, 4.0, 32, 2, 10, 10),  # the memory bound wins over the floor
    ],
)
def test_prefetch_limit_is_a_few_seconds_of_work_with_a_floor_and_a_memory_cap(
    rate, seconds, batch_size, min_batches, max_images, expected
):
    limit = prefetch_limit(
        rate=rate,
        seconds=seconds,
        batch_size=batch_size,
        min_batches=min_batches,
        max_images=max_images,
    )
    assert limit == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": -1.0}, "rate"),
        ({"seconds": 0.0}, "seconds"),
        ({"batch_size": 0}, "at least 1"),
        ({"max_images": 0}, "at least 1"),
    ],
)
def test_prefetch_limit_refuses_nonsense(kwargs, message):
    args = dict(rate=1.0, seconds=4.0, batch_size=32, min_batches=2, max_images=256) | kwargs
    with pytest.raises(ValueError, match=message):
        prefetch_limit(**args)


@pytest.mark.parametrize(
    ("room", "images_per_message", "expected"),
    [
        (0, 5.0, 0),  # at the bound: no receive at all
        (-7, 5.0, 0),
        (64, None, 1),  # no message seen yet: one, to learn their size
        (64, 5.0, 10),  # SQS's maximum
        (23, 5.0, 4),  # near the bound: fewer than 10
        (3, 20.0, 1),  # less than a message of room: one, so the model is never starved
        (40, 20.0, 2),
        (9, 1.0, 9),  # S3 events: one image each
    ],
)
def test_messages_to_receive_fit_the_room_left(room, images_per_message, expected):
    assert messages_to_receive(room=room, images_per_message=images_per_message) == expected


def test_throughput_is_images_per_second_over_its_window():
    now = [100.0]
    meter = Throughput(window=10.0, clock=lambda: now[0])
    assert meter.rate() == 0.0
    now[0] = 102.0
    meter.add(8)
    assert meter.rate() == pytest.approx(4.0)  # 8 images in the 2 s since it started
    now[0] = 110.0
    meter.add(12)
    assert meter.rate() == pytest.approx(2.0)  # 20 in the last 10 s
    now[0] = 115.0
    assert meter.rate() == pytest.approx(1.2)  # the first 8 have left the window
    now[0] = 200.0
    assert meter.rate() == 0.0  # idle: back to the floor


def test_the_gate_lets_shared_work_overlap_but_an_image_on_trial_runs_alone():
    gate = Gate()
    inside: list[str] = []
    overlaps: list[list[str]] = []
    lock = threading.Lock()

    def enter(name: str, alone: bool) -> None:
        with gate.alone() if alone else gate.shared():
            with lock:
                inside.append(name)
                overlaps.append(list(inside))
            time.sleep(0.05)
            with lock:
                inside.remove(name)

    threads = [threading.Thread(target=enter, args=(f"s{i}", False)) for i in range(4)] + [
        threading.Thread(target=enter, args=(f"x{i}", True)) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert len(overlaps) == 6
    # whoever entered, an image on trial was never inside with anyone else
    assert [seen for seen in overlaps if len(seen) > 1 and any(n[0] == "x" for n in seen)] == []
