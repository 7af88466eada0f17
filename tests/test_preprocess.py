import io

import numpy as np
import pytest
import torch
from PIL import Image

from posefleet.preprocess import PreprocessSpec, decode_image, normalize, preprocess
from posefleet.result import ImageError
from tests.images import bad_variants, encode, good_variants, photo, with_orientation

GOOD = good_variants()
BAD = bad_variants()


def reference(im: Image.Image, size: int = 224) -> np.ndarray:
    """The seed's path: full decode, RGB, Resize((size, size))."""
    return np.asarray(
        im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32
    )


def pixels(data: bytes, **kw) -> np.ndarray:
    return decode_image(data, **kw).pixels.permute(1, 2, 0).numpy().astype(np.float32)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_kind_of_photo_becomes_model_input(name):
    decoded = decode_image(GOOD[name])
    assert decoded.pixels.dtype == torch.uint8
    assert decoded.pixels.shape == (3, 224, 224)
    expected = (4032, 3024) if "4032" in name else (200, 150) if "gif" in name else (400, 300)
    assert decoded.original_size == expected


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_before_resizing(orientation):
    upright = photo((400, 300), seed=11)
    decoded = decode_image(with_orientation(upright, orientation))
    assert decoded.original_size == (400, 300)
    diff = np.abs(
        decoded.pixels.permute(1, 2, 0).numpy().astype(np.float32) - reference(upright)
    ).mean()
    assert diff < 6, f"orientation {orientation} decoded {diff:.1f} away from upright"


def test_transparency_is_composited_over_white():
    clear = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    assert pixels(encode(clear, "PNG")).min() == 255


def test_sixteen_bit_grey_keeps_its_tones():
    grey = photo((300, 200), seed=4).convert("L")
    g16 = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)
    assert np.abs(pixels(encode(g16, "PNG")) - reference(grey)).mean() < 1.5


def test_cmyk_matches_its_rgb_original():
    im = photo((400, 300), seed=8)
    assert np.abs(pixels(encode(im.convert("CMYK"), "JPEG", quality=95)) - reference(im)).mean() < 8


def test_phone_photo_is_decoded_at_reduced_scale_yet_matches_the_full_decode():
    im = photo((4032, 3024), seed=2)
    data = encode(im, "JPEG", quality=90)
    full = reference(Image.open(io.BytesIO(data)))
    assert np.abs(pixels(data) - full).mean() < 4


@pytest.mark.parametrize("name", sorted(BAD))
def test_broken_input_gets_a_stable_error_kind(name):
    data, kind = BAD[name]
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.kind == kind
    assert info.value.message


def test_pixel_limit_is_configurable():
    data = encode(photo((1000, 800)), "JPEG")
    with pytest.raises(ImageError, match="over the limit of 500000") as info:
        decode_image(data, max_pixels=500_000)
    assert info.value.kind == "too_many_pixels"


def test_preprocess_is_decode_then_normalize():
    spec = PreprocessSpec(input_size=160)
    data = GOOD["plain.jpg"]
    x = preprocess(data, spec)
    assert x.shape == (3, 160, 160) and x.dtype == torch.float32
    expected = normalize(decode_image(data, input_size=160).pixels.unsqueeze(0), spec)[0]
    assert torch.equal(x, expected)
    assert float(x.min()) > -2.2 and float(x.max()) < 2.7  # ImageNet-normalised range


def test_spec_refuses_nonsense():
    with pytest.raises(ValueError, match="input_size"):
        PreprocessSpec(input_size=4)
    with pytest.raises(ValueError, match="std"):
        PreprocessSpec(std=(0.0, 1.0, 1.0))
