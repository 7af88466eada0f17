"""PNG charts drawn with Pillow: confusion matrix, per-class scores, and a prediction figure
(the image beside its probability bars, as the seed's test script showed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["confusion_png", "per_class_png", "prediction_png"]

WHITE, INK, GRID, BAR, BEST = (
    (255, 255, 255),
    (30, 30, 30),
    (200, 200, 200),
    (70, 130, 180),
    (220, 90, 40),
)


def _font(size: int = 14) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def confusion_png(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, *, cell: int = 48
) -> Path:
    k = len(labels)
    left, top = 190, 40
    image = Image.new("RGB", (left + k * cell + 20, top + k * cell + 190), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text(
        (left, 10), "Confusion matrix (rows: true, columns: predicted)", fill=INK, font=_font(16)
    )
    font = _font(13)
    for r, row in enumerate(matrix):
        total = sum(row) or 1
        for c, n in enumerate(row):
            shade = int(255 - 200 * n / total)
            x, y = left + c * cell, top + r * cell
            draw.rectangle((x, y, x + cell, y + cell), fill=(shade, shade, 255), outline=GRID)
            draw.text(
                (x + cell / 2, y + cell / 2),
                str(n),
                fill=INK if shade > 120 else WHITE,
                font=font,
                anchor="mm",
            )
        draw.text(
            (left - 8, top + r * cell + cell / 2), labels[r][:24], fill=INK, font=font, anchor="rm"
        )
    for c, label in enumerate(labels):
        text = Image.new("RGBA", (180, 20), (0, 0, 0, 0))
        ImageDraw.Draw(text).text((0, 2), label[:24], fill=INK, font=font)
        rotated = text.rotate(60, expand=True)
        image.paste(
            rotated, (left + c * cell + cell // 2 - rotated.width + 10, top + k * cell + 5), rotated
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def per_class_png(per_class: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    names = list(per_class)
    metrics = ("precision", "recall", "f1")
    colors = {"precision": (70, 130, 180), "recall": (120, 180, 90), "f1": (220, 90, 40)}
    row_h, left, width = 3 * 12 + 14, 190, 420
    image = Image.new("RGB", (left + width + 60, 60 + row_h * len(names)), WHITE)
    draw = ImageDraw.Draw(image)
    font = _font(13)
    draw.text((left, 10), "Per-class precision / recall / F1", fill=INK, font=_font(16))
    for i, name in enumerate(names):
        y = 45 + i * row_h
        draw.text((left - 8, y + row_h / 2 - 6), name[:24], fill=INK, font=font, anchor="rm")
        for j, m in enumerate(metrics):
            v = float(per_class[name][m])
            draw.rectangle(
                (left, y + j * 12, left + int(width * v), y + j * 12 + 10), fill=colors[m]
            )
            draw.text(
                (left + int(width * v) + 4, y + j * 12 - 2), f"{v:.2f}", fill=INK, font=_font(11)
            )
    for j, m in enumerate(metrics):
        draw.rectangle((left + 250 + j * 70, 14, left + 260 + j * 70, 24), fill=colors[m])
        draw.text((left + 264 + j * 70, 12), m, fill=INK, font=_font(11))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def prediction_png(
    image: Image.Image, probabilities: Mapping[str, float], path: Path, *, title: str = ""
) -> Path:
    shown = image.convert("RGB")
    shown.thumbnail((420, 420))
    ranked = sorted(probabilities.items(), key=lambda kv: kv[1], reverse=True)
    left, bar_w, row = shown.width + 210, 300, 28
    height = max(shown.height + 60, 70 + row * len(ranked))
    canvas = Image.new("RGB", (left + bar_w + 80, height), WHITE)
    canvas.paste(shown, (10, 50))
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (10, 12),
        title or f"Predicted: {ranked[0][0]} ({ranked[0][1]:.1%})",
        fill=INK,
        font=_font(18),
    )
    for i, (name, p) in enumerate(ranked):
        y = 55 + i * row
        draw.text((left - 8, y + 8), name[:26], fill=INK, font=_font(13), anchor="rm")
        draw.rectangle(
            (left, y, left + max(1, int(bar_w * p)), y + row - 8), fill=BEST if i == 0 else BAR
        )
        draw.text((left + int(bar_w * p) + 6, y + 2), f"{p:.1%}", fill=INK, font=_font(12))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
