"""Synthetic pose photos: drawn human figures whose pose is set by body geometry alone.

For tests, the demo and the benchmark, where no real check-in photos may be used. It is not
a substitute for real data: a model trained on it learns these drawings, not athletes.

Each pose is a set of joint angles (arms, legs), a torso width (front, quarter, profile) and a
head mark (a face for front views, a hair cap for back views, a nose for profiles and quarter
turns). Everything else is random and shared by all classes: body proportions, skin and
clothing colours, background and clutter, scale, placement, small rotations, JPEG quality.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

from mappings import load_poses

__all__ = ["PHOTO_SIZES", "POSE_GEOMETRY", "SyntheticPhoto", "generate", "render_pose"]


@dataclass(frozen=True, slots=True)
class Geometry:
    view: str  # front, back, side, quarter
    arms: tuple[tuple[float, float], tuple[float, float]]  # (upper angle, elbow bend) near, far
    legs: tuple[float, float]  # hip angles (degrees from straight down, outward positive)
    knee: float = 0.0  # bend of the front knee
    facing: int = 1  # +1 right, -1 left (side and quarter views)
    flippable: bool = True  # may be mirrored without changing the pose


# Angles: 0 = straight down, 90 = horizontal outward (forward in profile), 180 = straight up.
POSE_GEOMETRY: dict[str, Geometry] = {
    "1": Geometry("front", ((45, -95), (45, -95)), (10, 10)),  # Front Lat Spread
    "2": Geometry("front", ((90, 95), (90, 95)), (10, 10)),  # Front Double Biceps
    "5": Geometry("back", ((90, 95), (90, 95)), (10, 10)),  # Back Double Biceps
    "7": Geometry("back", ((45, -95), (45, -95)), (10, 10)),  # Back Lat Spread
    "11": Geometry("front", ((150, 85), (150, 85)), (4, 28)),  # Abs & Thighs
    "14": Geometry("side", ((60, 80), (35, 95)), (12, -8), knee=25),  # Side Chest
    "16": Geometry("side", ((-25, 0), (-40, -70)), (10, -6), knee=15),  # Side Triceps
    "20": Geometry("front", ((12, 4), (12, 4)), (7, 7)),  # Front Relaxed
    "21": Geometry("back", ((12, 4), (12, 4)), (7, 7)),  # Back Relaxed
    "22": Geometry("quarter", ((15, 10), (8, 2)), (6, 4), facing=-1, flippable=False),  # QT Left
    "23": Geometry("quarter", ((15, 10), (8, 2)), (6, 4), facing=1, flippable=False),  # QT Right
}

PHOTO_SIZES = (
    (4032, 3024),
    (3024, 4032),
    (1920, 1080),
    (1080, 1920),
    (1280, 960),
    (800, 1000),
    (640, 480),
)

TORSO = {"front": 0.13, "back": 0.13, "quarter": 0.085, "side": 0.05}


@dataclass(frozen=True, slots=True)
class SyntheticPhoto:
    pose_id: str
    data: bytes
    size: tuple[int, int]


def _rgb(rng: random.Random, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _luma(c: tuple[int, ...]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _contrasting(rng: random.Random, against: float, lo: int, hi: int) -> tuple[int, int, int]:
    """A random colour whose brightness differs from ``against`` by at least 70 (of 255),
    as a photo's subject stands out from its background."""
    for _ in range(100):
        c = _rgb(rng, lo, hi)
        if abs(_luma(c) - against) >= 70:
            return c
    return (250, 250, 250) if against < 128 else (20, 20, 20)


def _near(rng: random.Random, base: tuple[int, int, int], spread: int) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, v + rng.randint(-spread, spread))) for v in base)
    return (r, g, b)


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    base = _rgb(rng)
    small = Image.new("RGB", (16, 16), base)
    draw = ImageDraw.Draw(small)
    for _ in range(rng.randint(2, 6)):  # soft patches around the base colour
        x, y = rng.randint(0, 15), rng.randint(0, 15)
        draw.rectangle(
            (x, y, x + rng.randint(2, 8), y + rng.randint(2, 8)), fill=_near(rng, base, 40)
        )
    image = small.resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 3)):  # clutter: furniture-ish blocks
        x, y = rng.randint(0, w), rng.randint(0, h)
        draw.rectangle(
            (x, y, x + rng.randint(w // 20, w // 5), y + rng.randint(h // 20, h // 5)),
            fill=_near(rng, base, 60),
        )
    return image


def render_pose(pose_id: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Draw one figure in ``pose_id`` on a random scene of ``size`` (width, height)."""
    g = POSE_GEOMETRY[pose_id]
    w, h = size
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    unit = min(w, h) * rng.uniform(0.55, 0.8) if h >= w else h * rng.uniform(0.6, 0.85)
    cx = w / 2 + rng.uniform(-0.15, 0.15) * w
    cy = h / 2 + rng.uniform(-0.08, 0.08) * h
    tilt = math.radians(rng.uniform(-7, 7))
    mirror = -1 if g.flippable and rng.random() < 0.5 else 1
    facing = g.facing * mirror
    background = _luma(image.resize((1, 1)).getpixel((0, 0)))
    skin, cloth = _contrasting(rng, background, 40, 250), _rgb(rng)
    limb = unit * rng.uniform(0.04, 0.055)
    torso_w = TORSO[g.view] * rng.uniform(0.9, 1.15)
    arm_len, fore_len = 0.16 * rng.uniform(0.92, 1.08), 0.15 * rng.uniform(0.92, 1.08)
    thigh, shin = 0.23 * rng.uniform(0.94, 1.06), 0.23 * rng.uniform(0.94, 1.06)

    def pt(x: float, y: float) -> tuple[float, float]:
        x, y = x * mirror, y
        return (
            cx + unit * (x * math.cos(tilt) - y * math.sin(tilt)),
            cy + unit * (x * math.sin(tilt) + y * math.cos(tilt)),
        )

    def direction(angle: float, side: float) -> tuple[float, float]:
        a = math.radians(angle)
        return side * math.sin(a), math.cos(a)

    def line(
        a: tuple[float, float], b: tuple[float, float], width: float, fill: tuple[int, int, int]
    ) -> None:
        draw.line([pt(*a), pt(*b)], fill=fill, width=max(2, int(width)))
        r = width / 2
        for x, y in (pt(*a), pt(*b)):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)

    # Sides: front/back views put one limb on each side; profiles put both on the facing side.
    profile = g.view in ("side", "quarter")
    sides = (facing, facing) if g.view == "side" else (1.0, -1.0)
    shoulders = [
        (s * torso_w, -0.32) for s in ((1, -1) if not profile else (0.3 * facing, -0.3 * facing))
    ]
    hips = [
        (s * torso_w * 0.8, 0.06)
        for s in ((1, -1) if not profile else (0.3 * facing, -0.3 * facing))
    ]
    # legs
    for i, (hip, angle) in enumerate(zip(hips, g.legs, strict=True)):
        side = facing if g.view == "side" else (1 if i == 0 else -1)
        dx, dy = direction(angle, side)
        knee = (hip[0] + dx * thigh, hip[1] + dy * thigh)
        bend = g.knee if i == 0 else 0.0
        kx, ky = direction(angle - bend, side)
        foot = (knee[0] + kx * shin, knee[1] + ky * shin)
        line(hip, knee, limb * 1.35, skin)
        line(knee, foot, limb * 1.1, skin)
        line(foot, (foot[0] + 0.05 * (facing if profile else side), foot[1]), limb * 0.8, skin)
    # torso and trunks
    draw.polygon([pt(*shoulders[0]), pt(*shoulders[1]), pt(*hips[1]), pt(*hips[0])], fill=skin)
    draw.polygon(
        [pt(hips[0][0], 0.0), pt(hips[1][0], 0.0), pt(hips[1][0], 0.12), pt(hips[0][0], 0.12)],
        fill=cloth,
    )
    shade = tuple(max(0, c - 70) for c in skin)
    if g.view == "back":  # spine and shoulder blades
        line((0, -0.31), (0, 0.02), limb * 0.5, shade)
        for sx in (-1, 1):
            line((sx * torso_w * 0.25, -0.27), (sx * torso_w * 0.7, -0.17), limb * 0.45, shade)
    elif g.view == "front":  # chest line and navel
        line((-torso_w * 0.8, -0.2), (0, -0.15), limb * 0.45, shade)
        line((torso_w * 0.8, -0.2), (0, -0.15), limb * 0.45, shade)
        nx, ny = pt(0, -0.03)
        nr = limb * 0.45
        draw.ellipse((nx - nr, ny - nr, nx + nr, ny + nr), fill=shade)
    # arms
    for i, (shoulder, (upper, bend)) in enumerate(zip(shoulders, g.arms, strict=True)):
        side = sides[i]
        dx, dy = direction(upper, side)
        elbow = (shoulder[0] + dx * arm_len, shoulder[1] + dy * arm_len)
        fx, fy = direction(upper + bend, side)
        hand = (elbow[0] + fx * fore_len, elbow[1] + fy * fore_len)
        line(shoulder, elbow, limb * 1.2, skin)
        line(elbow, hand, limb, skin)
    # neck and head with its view mark
    line((0, -0.32), (0, -0.38), limb, skin)
    hx, hy = pt(0, -0.45)
    r = unit * 0.07
    draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=skin)
    mark = tuple(255 - c for c in skin)
    if g.view == "front":
        for ex in (-0.025, 0.025):
            x, y = pt(ex, -0.46)
            draw.ellipse((x - r * 0.18, y - r * 0.18, x + r * 0.18, y + r * 0.18), fill=mark)
        draw.line([pt(-0.02, -0.415), pt(0.02, -0.415)], fill=mark, width=max(2, int(r * 0.15)))
    elif g.view == "back":
        draw.chord((hx - r, hy - r, hx + r, hy + r), 180, 360, fill=mark)
    else:
        nose = [pt(0.06 * facing, -0.46), pt(0.095 * facing, -0.44), pt(0.06 * facing, -0.42)]
        draw.polygon(nose, fill=skin)
        x, y = pt(0.03 * facing, -0.46)
        draw.ellipse((x - r * 0.18, y - r * 0.18, x + r * 0.18, y + r * 0.18), fill=mark)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=unit * 0.003))
    return image


def encode(image: Image.Image, rng: random.Random, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=rng.randint(70, 95), progressive=rng.random() < 0.2)
    else:
        image.save(out, fmt)
    return out.getvalue()


def generate(
    count: int,
    *,
    seed: int = 0,
    sizes: tuple[tuple[int, int], ...] = PHOTO_SIZES,
    pose_ids: tuple[str, ...] | None = None,
) -> Iterator[SyntheticPhoto]:
    """``count`` JPEG photos, poses in rotation, sizes drawn from ``sizes``."""
    rng = random.Random(seed)
    ids = pose_ids or tuple(p for p in load_poses() if p in POSE_GEOMETRY)
    for i in range(count):
        pose_id = ids[i % len(ids)]
        size = sizes[rng.randrange(len(sizes))]
        yield SyntheticPhoto(
            pose_id=pose_id, data=encode(render_pose(pose_id, size, rng), rng), size=size
        )
