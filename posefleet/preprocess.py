"""Preprocessing: the one definition of how image bytes become the model's input.

The worker and training's validation both call :func:`decode_image` then :func:`normalize`
(or :func:`preprocess` for both), so serving never drifts from training.

``decode_image`` turns bytes into a ``uint8`` tensor of shape ``(3, size, size)``:

1. refuse what is not an allowed image, before any pixels are allocated (empty, not an
   image, a format outside :data:`ALLOWED_FORMATS`, more than ``max_pixels`` pixels);
2. JPEG DCT scaling (``Image.draft``): a 12 MP photo is decoded at the smallest 1/2, 1/4 or
   1/8 scale that is still at least ``size`` on each side;
3. the first frame, EXIF orientation applied, any mode (CMYK, palette, LA, 16-bit grey, alpha
   over white) turned into RGB;
4. resized to ``size x size`` (bilinear, antialiased: what torchvision's ``Resize((s, s))``
   does to a PIL image, as the seed did).

``normalize`` turns a batch of those into float input with the checkpoint's mean and std;
it runs on the model's device, so a GPU worker ships bytes, not floats.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from posefleet.result import ErrorKind, ImageError

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DecodedImage",
    "PreprocessSpec",
    "decode_image",
    "normalize",
    "preprocess",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

Image.init()  # register every plugin so formats= below can name them
# A truncated file is an error, never a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# posefleet enforces its own, configurable pixel limit before decoding.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PreprocessSpec:
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.input_size < 16:
            raise ValueError("input_size must be at least 16 pixels")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std all positive")


@dataclass(frozen=True, slots=True)
class DecodedImage:
    pixels: torch.Tensor  # uint8, (3, size, size)
    original_size: tuple[int, int]  # (width, height) as displayed, EXIF orientation applied


_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF"}


def _sniff_unsupported(data: bytes) -> str | None:
    """Formats Pillow cannot open but a photo bucket holds: name them rather than guess."""
    if data.startswith(b"%PDF-"):
        return "PDF"
    if data[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(data[8:12])
    return None


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageError(ErrorKind.EMPTY, "the object is empty (0 bytes)")
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        pass
    except (OSError, SyntaxError, ValueError, struct.error) as e:  # a known header, broken
        raise _decode_error(e, "the image header") from None
    try:  # Is it an image Pillow knows but we do not serve? Header only: nothing is decoded.
        fmt = Image.open(io.BytesIO(data)).format
    except Exception:
        fmt = _sniff_unsupported(data)
    if fmt is None:
        raise ImageError(ErrorKind.NOT_AN_IMAGE, "the bytes are not a recognised image")
    raise ImageError(
        ErrorKind.UNSUPPORTED_FORMAT,
        f"{fmt} images are not accepted; allowed: {', '.join(ALLOWED_FORMATS)}",
    )


def _decode_error(e: Exception, what: str) -> ImageError:
    text = str(e) or type(e).__name__
    truncated = any(w in text.lower() for w in ("truncated", "broken data"))
    kind = ErrorKind.TRUNCATED if truncated else ErrorKind.DECODE_FAILED
    return ImageError(kind, f"{what} could not be decoded: {text}")


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I") and arr.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_image(
    data: bytes, *, input_size: int = 224, max_pixels: int = 60_000_000, draft: bool = True
) -> DecodedImage:
    """Bytes -> ``uint8`` tensor ``(3, input_size, input_size)``; raises :class:`ImageError`."""
    im = _open(data)
    width, height = im.size
    if width * height > max_pixels:
        raise ImageError(
            ErrorKind.TOO_MANY_PIXELS,
            f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels}",
        )
    try:
        orientation = im.getexif().get(0x0112, 1)
        shown = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if draft and im.format in ("JPEG", "MPO"):
            im.draft("RGB", (input_size, input_size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-transparency and EXIF chatter
            im.load()
            im = ImageOps.exif_transpose(im) or im
            im = _to_rgb(im)
            im = im.resize((input_size, input_size), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError, struct.error, MemoryError) as e:
        raise _decode_error(e, f"the {im.format} data") from None
    # HWC -> CHW in numpy: a torch copy here would start an OpenMP team in every decode thread.
    chw = np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
    return DecodedImage(pixels=torch.from_numpy(chw), original_size=shown)


def normalize(batch: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """``uint8 (N, 3, H, W)`` -> float input for the model, on the batch's device."""
    mean = torch.tensor(spec.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=batch.device).view(1, 3, 1, 1)
    return (batch.float().div_(255.0) - mean).div_(std)


def preprocess(data: bytes, spec: PreprocessSpec, *, max_pixels: int = 60_000_000) -> torch.Tensor:
    """Bytes -> float ``(3, size, size)``: the whole contract for one image."""
    decoded = decode_image(data, input_size=spec.input_size, max_pixels=max_pixels)
    return normalize(decoded.pixels.unsqueeze(0), spec)[0]
