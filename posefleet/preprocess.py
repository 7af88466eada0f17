"""Preprocessing: the one definition of how image bytes become the model's input.

The worker and training's validation both call :func:`decode_image` then :func:`normalize`
(or :func:`preprocess` for both), so serving never drifts from training.

``decode_image`` turns bytes into a ``uint8`` tensor of shape ``(3, size, size)``:

1. refuse what is not an allowed image, before any pixels are allocated (empty, not an
   image, a format outside :data:`ALLOWED_FORMATS`, more than ``max_pixels`` pixels as the
   header declares them; Pillow's own decompression-bomb guard is left on, at the same limit);
2. reduced-resolution decoding where it agrees with the full decode (``draft``): a JPEG at
   the smallest 1/2, 1/4 or 1/8 DCT scale still at least ``size`` on each side, a HEIF from
   an embedded thumbnail at least twice ``size`` on each side (docs/benchmarks.md, "HEIC and
   AVIF");
3. the image as displayed: the first frame (the primary image of a HEIF collection or
   burst), EXIF orientation applied (HEIF and AVIF: the container's ``irot``/``imir``, which
   the decoders apply or report; an EXIF orientation beside them is never applied twice),
   any mode (CMYK, palette, LA, 16-bit grey, 10- and 12-bit HEIF scaled to 8 bits, alpha over
   white) turned into RGB; embedded ICC profiles are not applied, for any format;
4. resized to ``size x size`` (bilinear, antialiased: what torchvision's ``Resize((s, s))``
   does to a PIL image, as the seed did).

``normalize`` turns a batch of those into float input with the checkpoint's mean and std;
it runs on the model's device, so a GPU worker ships bytes, not floats.

Formats: JPEG, PNG, WebP, GIF, BMP and TIFF through Pillow; HEIF (HEIC, ``.heif``, ``.hif``)
through pillow-heif (libheif with libde265); AVIF through Pillow's own plugin (libavif with
dav1d: pillow-heif's wheels carry no AV1 decoder). HEIF depth and auxiliary images are never
read. libheif decodes on one thread per image (its default is four): the worker runs one
decode per CPU at once, where one thread each decoded 8-28% more HEICs a second
(docs/benchmarks.md).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import pillow_heif
import torch
from PIL import AvifImagePlugin, Image, ImageFile, ImageOps, UnidentifiedImageError

from posefleet.result import ErrorKind, ImageError
from posefleet.settings import MAX_IMAGE_PIXELS

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
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")

# HEIF through pillow-heif. Thumbnails stay readable (``draft`` may pick one); depth and
# auxiliary images (portrait depth maps, HDR gain maps, segmentation mattes) are never read;
# one decoding thread per image (the worker decodes one image per CPU at once).
pillow_heif.register_heif_opener(
    thumbnails=True, depth_images=False, aux_images=False, decode_threads=1
)
Image.init()  # register every plugin so formats= below can name them
# A truncated file is an error, never a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow's decompression-bomb guard stays on, at posefleet's limit (decode_image keeps it equal
# to the limit it is given): a header over twice the limit is refused inside Image.open, one
# over the limit by posefleet's own check right after; both before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


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


# ISO-BMFF brands (the ftyp box) of the HEIF family: which plugin reads the file. A structural
# brand (mif1, msf1, miaf) says only "HEIF container": the compatible brands name the codec.
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
# HEIF of other codecs (H.264, JPEG, JPEG 2000, VVC) as the major brand: named, not decoded.
# (Under a structural brand libheif reads them and says that this build has no such decoder.)
_OTHER_HEIF_BRANDS = {
    b"avci": "H.264",
    b"avcs": "H.264",
    b"jpeg": "JPEG",
    b"jpgs": "JPEG",
    b"j2ki": "JPEG 2000",
    b"j2is": "JPEG 2000",
    b"vvic": "VVC",
}
_AV1_BRANDS = frozenset({b"avif", b"avis"})
_STRUCTURAL_BRANDS = frozenset({b"mif1", b"msf1", b"miaf"})
_HEIF_PLUGINS: dict[str, type[ImageFile.ImageFile]] = {
    "HEIF": pillow_heif.HeifImageFile,
    "AVIF": AvifImagePlugin.AvifImageFile,
}


def _heif_family(data: bytes) -> str | None:
    """``"HEIF"`` (HEVC-coded: HEIC and kin) or ``"AVIF"`` from the ftyp box, else ``None``."""
    if data[4:8] != b"ftyp":
        return None
    end = min(int.from_bytes(data[:4], "big"), len(data), 256)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if data[8:12] in _AV1_BRANDS or (data[8:12] in _STRUCTURAL_BRANDS and brands & _AV1_BRANDS):
        return "AVIF"
    if brands & _HEVC_BRANDS or data[8:12] in _STRUCTURAL_BRANDS:
        return "HEIF"
    return None  # MP4, QuickTime, CR3 raw, ...: not a still image posefleet reads


def _sniff_unsupported(data: bytes) -> str | None:
    """Formats Pillow cannot open but a photo bucket holds: name them rather than guess."""
    if data.startswith(b"%PDF-"):
        return "PDF"
    if data[4:8] == b"ftyp" and data[8:12] in _OTHER_HEIF_BRANDS:
        return f"{_OTHER_HEIF_BRANDS[data[8:12]]}-coded HEIF"
    return None


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError(ErrorKind.EMPTY, "the object is empty (0 bytes)")
    family = _heif_family(data)
    if max_pixels != Image.MAX_IMAGE_PIXELS:  # a process serves one limit: written once
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Pillow warns between the limit and twice it; the check after opening refuses those.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=(family,) if family else ALLOWED_FORMATS)
    except Image.DecompressionBombError as e:
        declared = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{declared[1]} pixels" if declared else "more than twice the limit"
        raise ImageError(
            ErrorKind.TOO_MANY_PIXELS,
            f"the header declares {size}, over the limit of {max_pixels}",
        ) from None
    except UnidentifiedImageError:
        if family:  # a HEIF or AVIF its own plugin could not open: say why
            raise _heif_open_error(family, data) from None
    except (OSError, SyntaxError, ValueError, struct.error) as e:  # a known header, broken
        raise _decode_error(e, "the image header", data if family else None) from None
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


def _heif_open_error(family: str, data: bytes) -> ImageError:
    """The reason a HEIF-family file would not open, from its plugin (Image.open drops it)."""
    try:
        _HEIF_PLUGINS[family](io.BytesIO(data))
    except Exception as e:
        return _decode_error(e, f"the {family} header", data)
    return ImageError(ErrorKind.DECODE_FAILED, f"the {family} header could not be read")


def _boxes_cut_short(data: bytes) -> bool:
    """Whether an ISO-BMFF file's top-level boxes (ftyp, meta, mdat) run past its end."""
    at = 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        if size == 1 and at + 16 <= len(data):  # a 64-bit size follows the type
            size = int.from_bytes(data[at + 8 : at + 16], "big")
        if size == 0:  # the last box, to the end of the file
            return False
        if size < 8:
            return at + 16 > len(data)  # a 64-bit size cut off, else a corrupt size
        at += size
    return at != len(data)


_TRUNCATED_WORDS = ("truncated", "broken data")
# libheif: an item whose data lies past the end of the file (cut on a box boundary).
_HEIF_TRUNCATED_WORDS = ("outside of file bounds",)
# libheif's words for a valid file in a codec this build does not decode (AVC, JPEG 2000, ...).
_UNSUPPORTED_WORDS = ("has not been built in", "unsupported codec", "unsupported feature")


def _decode_error(e: Exception, what: str, data: bytes | None = None) -> ImageError:
    """``data``, for a HEIF or AVIF: a file cut short is told from its box sizes, not from a
    decoder's words (libheif says "end of file" for a corrupt size inside a whole file)."""
    text = str(e) or type(e).__name__
    lower = text.lower()
    heif = data is not None
    if any(w in lower for w in _TRUNCATED_WORDS) or (
        heif and (_boxes_cut_short(data) or any(w in lower for w in _HEIF_TRUNCATED_WORDS))
    ):
        kind = ErrorKind.TRUNCATED
    elif heif and any(w in lower for w in _UNSUPPORTED_WORDS):
        kind = ErrorKind.UNSUPPORTED_FORMAT
    else:
        kind = ErrorKind.DECODE_FAILED
    return ImageError(kind, f"{what} could not be decoded: {text}")


# What ``draft`` asks of a reduced decode, in multiples of the model's input on each side. JPEG:
# DCT scaling, a box filter. HEIF: the smallest embedded thumbnail at least twice the input (so
# the resize to the input averages away how the encoder scaled it down; pillow-heif picks only
# a scaled copy of the image). Each measured against the full decode (docs/benchmarks.md).
_DRAFT_SCALE = {"JPEG": 1, "MPO": 1, "HEIF": 2}


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
    data: bytes,
    *,
    input_size: int = 224,
    max_pixels: int = MAX_IMAGE_PIXELS,
    draft: bool = True,
) -> DecodedImage:
    """Bytes -> ``uint8`` tensor ``(3, input_size, input_size)``; raises :class:`ImageError`.

    ``draft``: decode a JPEG at a reduced DCT scale still at least ``input_size`` on each
    side, and a HEIF from an embedded thumbnail (a scaled copy of the image: same orientation,
    crop and colour profile) at least twice ``input_size`` on each side; off, every image is
    decoded in full.
    """
    im = _open(data, max_pixels)
    width, height = im.size
    if width * height > max_pixels:
        raise ImageError(
            ErrorKind.TOO_MANY_PIXELS,
            f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels}",
        )
    try:
        # HEIF: libheif applies irot/imir itself (the size is the displayed one) and
        # pillow-heif resets the EXIF orientation to 1, so it is not applied twice. AVIF:
        # Pillow reports irot/imir as the EXIF orientation, applied below like a JPEG's.
        orientation = im.getexif().get(0x0112, 1)
        shown = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if draft and im.format in _DRAFT_SCALE:
            side = input_size * _DRAFT_SCALE[im.format]
            im.draft("RGB", (side, side))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-transparency and EXIF chatter
            im.load()
            im = ImageOps.exif_transpose(im) or im
            im = _to_rgb(im)
            im = im.resize((input_size, input_size), Image.Resampling.BILINEAR)
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,  # pillow-heif: corrupt data
        RuntimeError,  # libheif: anything else
        struct.error,
        MemoryError,
    ) as e:
        heif = data if im.format in _HEIF_PLUGINS else None
        raise _decode_error(e, f"the {im.format} data", heif) from None
    # HWC -> CHW in numpy: a torch copy here would start an OpenMP team in every decode thread.
    chw = np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
    return DecodedImage(pixels=torch.from_numpy(chw), original_size=shown)


def normalize(batch: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """``uint8 (N, 3, H, W)`` -> float input for the model, on the batch's device."""
    mean = torch.tensor(spec.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=batch.device).view(1, 3, 1, 1)
    return (batch.float().div_(255.0) - mean).div_(std)


def preprocess(
    data: bytes, spec: PreprocessSpec, *, max_pixels: int = MAX_IMAGE_PIXELS
) -> torch.Tensor:
    """Bytes -> float ``(3, size, size)``: the whole contract for one image."""
    decoded = decode_image(data, input_size=spec.input_size, max_pixels=max_pixels)
    return normalize(decoded.pixels.unsqueeze(0), spec)[0]
