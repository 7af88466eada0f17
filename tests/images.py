"""Factories for real encoded image files, good and broken.

HEIF files come from pillow-heif's encoder (libheif with x265) and AVIF files from Pillow's own
(libavif with aom): real encoder output, made when a test asks, never downloaded. Importing
posefleet.preprocess registers the HEIF plugin with Pillow, for reading and writing.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pillow_heif
from PIL import Image

import posefleet.preprocess  # noqa: F401  (registers the HEIF plugin: Image.save(..., "HEIF"))
from training.synthetic import render_pose


def photo(size: tuple[int, int] = (640, 480), seed: int = 0, pose_id: str = "2") -> Image.Image:
    return render_pose(pose_id, size, random.Random(seed))


def encode(im: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def jpeg(size: tuple[int, int] = (640, 480), seed: int = 0, **params: object) -> bytes:
    return encode(photo(size, seed), "JPEG", quality=90, **params)


T = Image.Transpose
# EXIF orientation -> what turns the displayed image into the stored pixels (the inverse of
# what a viewer applies), and what a viewer applies to the stored pixels.
STORE: dict[int, Callable[[Image.Image], Image.Image]] = {
    1: lambda i: i,
    2: lambda i: i.transpose(T.FLIP_LEFT_RIGHT),
    3: lambda i: i.transpose(T.ROTATE_180),
    4: lambda i: i.transpose(T.FLIP_TOP_BOTTOM),
    5: lambda i: i.transpose(T.TRANSPOSE),
    6: lambda i: i.transpose(T.ROTATE_90),
    7: lambda i: i.transpose(T.TRANSVERSE),
    8: lambda i: i.transpose(T.ROTATE_270),
}
DISPLAY: dict[int, Callable[[Image.Image], Image.Image]] = {
    **STORE,
    6: lambda i: i.transpose(T.ROTATE_270),
    8: lambda i: i.transpose(T.ROTATE_90),
}


FAST_X265 = {"preset": "ultrafast"}  # x265's fastest preset: test files in a tenth of a second


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "posefleet tests"  # Make: so the EXIF block is more than the one tag
    exif[0x0112] = orientation
    return exif


def with_orientation(im: Image.Image, orientation: int) -> bytes:
    """A JPEG whose stored pixels, once EXIF ``orientation`` is applied, show ``im`` upright."""
    return encode(STORE[orientation](im), "JPEG", quality=95, exif=exif_with(orientation).tobytes())


def heif(
    im: Image.Image,
    *,
    transform: int = 1,
    exif_orientation: int | None = None,
    fmt: str = "HEIF",
    quality: int = 90,
    **params: object,
) -> bytes:
    """A HEIF (or AVIF, ``fmt="AVIF"``) that shows ``im`` when displayed.

    The stored pixels are ``im`` turned by the inverse of ``transform`` (an EXIF orientation
    value), which the container records as its ``irot``/``imir`` properties: the encoders
    take it from the EXIF orientation they are given. pillow-heif also keeps that EXIF tag,
    as iPhones do (an orientation said twice, to be applied once); ``exif_orientation`` then
    rewrites the tag alone, in place: 1 leaves the container's transform as the only one, and
    with ``transform=1`` another value makes an EXIF orientation without ``irot``/``imir``.
    Pillow's AVIF encoder drops the EXIF tag, so AVIF takes ``transform`` only.
    """
    written = exif_with(transform)
    if fmt == "HEIF":
        params.setdefault("enc_params", FAST_X265)
    else:
        params.setdefault("speed", 10)  # aom's fastest
    data = encode(STORE[transform](im), fmt, quality=quality, exif=written.tobytes(), **params)
    if exif_orientation is not None and exif_orientation != transform:
        if fmt != "HEIF":
            raise ValueError("only pillow-heif keeps the EXIF orientation beside irot/imir")
        old = written.tobytes()[6:]  # the TIFF block, without the "Exif\0\0" marker
        new = exif_with(exif_orientation).tobytes()[6:]
        if data.count(old) != 1:
            raise AssertionError("the EXIF block is not stored verbatim once")
        data = data.replace(old, new)
    return data


def heif_high_bit_depth(im: Image.Image, bit_depth: int, *, grey: bool = False) -> bytes:
    """A 10- or 12-bit HEIC of ``im``: its 8-bit values scaled to 16 bits, then to the depth."""
    mode, src = ("L;16", im.convert("L")) if grey else ("RGB;16", im.convert("RGB"))
    wide = np.asarray(src, dtype=np.uint16) * 257
    out = io.BytesIO()
    pillow_heif.from_bytes(mode, im.size, wide.tobytes()).save(out, quality=90, bit_depth=bit_depth)
    return out.getvalue()


def heif_burst(frames: list[Image.Image], primary: int) -> bytes:
    """One HEIF holding ``frames`` (a burst, a collection), ``frames[primary]`` the primary."""
    out = io.BytesIO()
    frames[0].save(
        out,
        "HEIF",
        save_all=True,
        append_images=frames[1:],
        primary_index=primary,
        quality=90,
        enc_params=FAST_X265,
    )
    return out.getvalue()


ALPHA_AUX = b"urn:mpeg:hevc:2015:auxid:1"


def heif_with_aux(im: Image.Image, aux_type: bytes) -> bytes:
    """A HEIC of ``im`` with one auxiliary image of type ``aux_type`` (26 bytes, e.g. depth:
    ``urn:mpeg:hevc:2015:auxid:2``). The encoder writes auxiliary images only for alpha: the
    alpha plane's type is rewritten in place, so the photo itself has no alpha any more."""
    if len(aux_type) != len(ALPHA_AUX):
        raise ValueError(f"the auxiliary type must be {len(ALPHA_AUX)} bytes to patch in place")
    rgba = im.convert("RGBA")
    rgba.putalpha(Image.new("L", im.size, 0))  # fully clear: were it read as alpha, all white
    data = heif(rgba)
    if data.count(ALPHA_AUX) != 1:
        raise AssertionError("the encoder wrote no single alpha auxiliary image")
    return data.replace(ALPHA_AUX, aux_type)


def declaring(fmt: str, width: int, height: int) -> bytes:
    """A real HEIF or AVIF whose header (``ispe``) declares ``width x height``: a bomb's header.
    Encoded at 64x64, which needs no clean-aperture crop, so ``ispe`` is the size readers see."""
    data = heif(photo((64, 64), seed=1), fmt=fmt, quality=50)
    if data.count(b"ispe") != 1 or b"clap" in data:
        raise AssertionError(f"expected one ispe box and no clap in the {fmt} file")
    at = data.index(b"ispe") + 8  # box type, then version and flags, then width and height
    return data[:at] + struct.pack(">II", width, height) + data[at + 8 :]


def display_p3_icc() -> bytes:
    """An ICC v2 display profile with Display P3's primaries (D50-adapted) and a 2.2 gamma:
    what phones embed, and far enough from sRGB that applying it would move the colours."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    desc_text = b"Display P3 (posefleet tests)\0"
    tags = {
        b"desc": b"desc\0\0\0\0"
        + struct.pack(">I", len(desc_text))
        + desc_text
        + b"\0" * 12
        + b"\0" * 67,
        b"wtpt": xyz(0.9642, 1.0, 0.8249),
        b"rXYZ": xyz(0.5151, 0.2412, -0.0011),
        b"gXYZ": xyz(0.2920, 0.6922, 0.0419),
        b"bXYZ": xyz(0.1571, 0.0666, 0.7841),
        b"rTRC": b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0",
        b"cprt": b"text\0\0\0\0" + b"none\0\0\0\0",
    }
    tags[b"gTRC"] = tags[b"bTRC"] = tags[b"rTRC"]
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, payload in tags.items():
        table += sig + struct.pack(">II", offset + len(body), len(payload))
        body += payload + b"\0" * (-len(payload) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + xyz(0.9642, 1.0, 0.8249)[8:]
        + b"\0" * 48
    )
    return header + struct.pack(">I", len(tags)) + table + body


def good_variants() -> dict[str, bytes]:
    """Every kind of real photo file that must be classified, not rejected: each displays as
    (400, 300) but ``animated.gif`` (200, 150) and ``phone-4032x3024.jpg``."""
    return dict(_good_variants())


@functools.cache
def _good_variants() -> dict[str, bytes]:
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
        # HEIF and AVIF as phones write them: small, but each feature a phone uses
        "iphone-rotated-6.heic": heif(base, transform=6, thumbnails=[160]),
        "mirrored-5.heif": heif(base, transform=5, exif_orientation=1),
        "ten-bit.heic": heif_high_bit_depth(base, 10),
        "alpha.heic": heif(rgba),
        "grid-tiled.hif": heif(base, tile_size=128),
        "burst.heic": heif_burst([photo((400, 300), seed=s) for s in (4, 3, 5)], primary=1),
        "with-depth.heic": heif_with_aux(base, b"urn:mpeg:hevc:2015:auxid:2"),
        "display-p3.heic": heif(base, icc_profile=display_p3_icc()),
        "rotated-8.avif": heif(base, transform=8, fmt="AVIF"),
        "alpha.avif": encode(rgba, "AVIF", quality=90),
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
    return dict(_bad_variants())


@functools.cache
def _bad_variants() -> dict[str, tuple[bytes, str]]:
    good = jpeg((800, 600), seed=9)
    heic = heif(photo((640, 480), seed=9))
    avif = heif(photo((640, 480), seed=9), fmt="AVIF")
    meta = heic.index(b"meta")
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
        # HEIF and AVIF are accepted: a broken one is broken, not unsupported
        "no-meta.heic.jpg": (
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
            "decode_failed",
        ),
        "empty.heic": (b"", "empty"),
        "truncated.heic": (heic[: len(heic) // 2], "truncated"),
        "cut-in-header.heic": (heic[: meta + 200], "truncated"),
        "scrambled-header.heic": (
            heic[: meta + 8] + random.Random(2).randbytes(300) + heic[meta + 308 :],
            "decode_failed",
        ),
        "truncated.avif": (avif[: len(avif) // 2], "truncated"),
        "cut-in-header.avif": (avif[:200], "truncated"),
        "bomb-200mp.heic": (declaring("HEIF", 16384, 12288), "too_many_pixels"),
        "bomb-200mp.avif": (declaring("AVIF", 16384, 12288), "too_many_pixels"),
        "video.mp4.heic": (  # a phone's video under a photo's name
            b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64,
            "not_an_image",
        ),
        # a whole HEIF whose image is in a codec this build does not decode (AV1 labelled as
        # plain HEIF, so that libheif, not the AVIF plugin, reads it)
        "av1-labelled-heif.heif": (
            avif[:8] + b"mif1" + avif[12:16] + avif[16:32].replace(b"avif", b"heic") + avif[32:],
            "unsupported_format",
        ),
        "h264-brand.heif": (  # an H.264 HEIF's brand: named, not decoded
            avif[:8] + b"avci" + avif[12:16] + avif[16:32].replace(b"avif", b"avci") + avif[32:],
            "unsupported_format",
        ),
    }
