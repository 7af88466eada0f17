"""Factories for real encoded image files, good and broken."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
from PIL import Image

from training.synthetic import render_pose


def photo(size: tuple[int, int] = (640, 480), seed: int = 0, pose_id: str = "2") -> Image.Image:
    return render_pose(pose_id, size, random.Random(seed))


def encode(im: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def jpeg(size: tuple[int, int] = (640, 480), seed: int = 0, **params: object) -> bytes:
    return encode(photo(size, seed), "JPEG", quality=90, **params)


def with_orientation(im: Image.Image, orientation: int) -> bytes:
    """A JPEG whose stored pixels, once EXIF ``orientation`` is applied, show ``im`` upright."""
    inverse = {
        1: lambda i: i,
        2: lambda i: i.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        3: lambda i: i.transpose(Image.Transpose.ROTATE_180),
        4: lambda i: i.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        5: lambda i: i.transpose(Image.Transpose.TRANSPOSE),
        6: lambda i: i.transpose(Image.Transpose.ROTATE_90),
        7: lambda i: i.transpose(Image.Transpose.TRANSVERSE),
        8: lambda i: i.transpose(Image.Transpose.ROTATE_270),
    }[orientation]
    stored = inverse(im)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def good_variants() -> dict[str, bytes]:
    """Every kind of real photo file that must be classified, not rejected."""
    base = photo((400, 300), seed=3)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.new("L", base.size, 128))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    gray16 = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    frames = [photo((200, 150), seed=s) for s in (1, 2, 3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "plain.jpg": encode(base, "JPEG", quality=90),
        "progressive.jpg": encode(base, "JPEG", quality=90, progressive=True),
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG", quality=90),
        "gray.jpg": encode(base.convert("L"), "JPEG", quality=90),
        "rgb.png": encode(base, "PNG"),
        "alpha.png": encode(rgba, "PNG"),
        "palette-transparent.png": encode(palette, "PNG"),
        "la.png": encode(base.convert("LA"), "PNG"),
        "gray16.png": encode(gray16, "PNG"),
        "photo.webp": encode(base, "WEBP", quality=90),
        "animated.gif": gif.getvalue(),
        "photo.bmp": encode(base, "BMP"),
        "photo.tiff": encode(base, "TIFF"),
        "rotated-6.jpg": with_orientation(base, 6),
        "phone-4032x3024.jpg": jpeg((4032, 3024), seed=5),
    }


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_variants() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, the error kind it must produce)."""
    good = jpeg((800, 600), seed=9)
    eps = encode(photo((64, 48)).convert("RGB"), "EPS")
    return {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (good[: len(good) // 2], "truncated"),
        "random.jpg": (random.Random(1).randbytes(5000), "not_an_image"),
        "notes.txt.jpg": (b"just some text, not a photo\n" * 10, "not_an_image"),
        "error-page.png": (
            b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>",
            "not_an_image",
        ),
        "bomb.png": (png_header_only(50_000, 50_000), "too_many_pixels"),
        "vector.eps.jpg": (eps, "unsupported_format"),
        "doc.pdf.jpg": (
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
            "unsupported_format",
        ),
        "layers.psd.jpg": (
            b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 48, 64, 8, 3) + b"\x00" * 64,
            "unsupported_format",
        ),
        "iphone.heic.jpg": (
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
            "unsupported_format",
        ),
    }
