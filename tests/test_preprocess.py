import functools
import io
import time

import numpy as np
import pillow_heif
import pytest
import torch
from PIL import AvifImagePlugin, Image, ImageCms, ImageDraw

from posefleet.preprocess import PreprocessSpec, decode_image, normalize, preprocess
from posefleet.result import ImageError
from posefleet.settings import ProducerSettings, WorkerSettings
from tests.images import (
    DISPLAY,
    bad_variants,
    declaring,
    display_p3_icc,
    encode,
    good_variants,
    heif,
    heif_burst,
    heif_high_bit_depth,
    heif_with_aux,
    jpeg,
    photo,
    png_header_only,
    with_orientation,
)

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


# ---------------------------------------------------------------- HEIF and AVIF


def marked(size: tuple[int, int] = (160, 120), seed: int = 11) -> Image.Image:
    """A photo no rotation or mirror maps onto itself: a block in one corner, a bar off-centre."""
    im = photo(size, seed=seed)
    draw = ImageDraw.Draw(im)
    w, h = size
    draw.rectangle((0, 0, w // 4, h // 4), fill=(230, 20, 20))
    draw.rectangle((w // 2, h * 3 // 4, w - 1, h * 3 // 4 + h // 10), fill=(20, 20, 230))
    return im


@functools.cache
def oriented(fmt: str, transform: int, exif_orientation: int | None) -> bytes:
    return heif(marked(), transform=transform, exif_orientation=exif_orientation, fmt=fmt)


def distance(data: bytes, expected: Image.Image, **kw) -> float:
    return float(np.abs(pixels(data, **kw) - reference(expected)).mean())


def assert_displays(data: bytes, upright: Image.Image) -> None:
    """Decoded as ``upright``, and closer to it than to any other rotation or mirror of it."""
    decoded = decode_image(data)
    assert decoded.original_size == upright.size
    right = distance(data, upright)
    wrong = min(distance(data, DISPLAY[o](upright)) for o in range(2, 9))
    assert right < 6, f"{right:.1f} away from the displayed image"
    assert right < wrong / 4, f"{right:.1f} from upright, {wrong:.1f} from a wrong turn"


# pillow-heif writes the container's irot/imir and keeps the EXIF tag, as iPhones do: applied
# twice, 6 would come out upside down; applied not at all, on its side.
@pytest.mark.parametrize("transform", range(1, 9))
def test_heic_like_an_iphone_irot_imir_and_exif_is_displayed_once(transform):
    assert_displays(oriented("HEIF", transform, None), marked())


@pytest.mark.parametrize("transform", range(1, 9))
def test_heif_irot_imir_alone_are_applied(transform):
    assert_displays(oriented("HEIF", transform, 1), marked())


@pytest.mark.parametrize("transform", range(1, 9))
def test_avif_irot_imir_are_applied(transform):
    assert_displays(oriented("AVIF", transform, None), marked())


@pytest.mark.parametrize("orientation", [2, 6, 7])
def test_heif_exif_orientation_without_irot_imir_is_not_applied(orientation):
    # HEIF's transforms are the container's properties; libheif, and so every reader built on
    # it, ignores an EXIF orientation that they do not carry. posefleet shows what they show.
    data = oriented("HEIF", 1, orientation)
    assert Image.open(io.BytesIO(data)).info["original_orientation"] == orientation
    assert_displays(data, marked())


@pytest.mark.parametrize(("bit_depth", "grey"), [(10, False), (12, False), (10, True)])
def test_ten_and_twelve_bit_heic_is_scaled_to_eight_bits_not_clipped(bit_depth, grey):
    base = photo((160, 120), seed=4)
    data = heif_high_bit_depth(base, bit_depth, grey=grey)
    assert (
        pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False).info["bit_depth"]
        == bit_depth
    )
    expected = base.convert("L") if grey else base
    assert np.abs(pixels(data) - reference(expected)).mean() < 3


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heif_and_avif_transparency_is_composited_over_white(fmt):
    clear = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    assert pixels(heif(clear, fmt=fmt)).min() >= 250  # lossy alpha: white within a few levels


def test_a_burst_decodes_to_its_primary_image():
    frames = [marked(seed=s) for s in (1, 2, 3)]
    data = heif_burst(frames, primary=2)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    away = [distance(data, f) for f in frames]
    assert away[2] < 6 and min(away[:2]) > 4 * away[2], away


def test_an_animated_avif_decodes_to_its_first_frame():
    frames = [marked(seed=s) for s in (1, 2, 3)]
    out = io.BytesIO()
    frames[0].save(out, "AVIF", save_all=True, append_images=frames[1:], quality=90, speed=10)
    assert Image.open(io.BytesIO(out.getvalue())).n_frames == 3
    away = [distance(out.getvalue(), f) for f in frames]
    assert away[0] < 6 and min(away[1:]) > 4 * away[0], away


@pytest.mark.parametrize(
    ("aux_type", "listed"),
    [
        (b"urn:mpeg:hevc:2015:auxid:2", "depth_images"),  # a portrait photo's depth map
        (b"urn:com:posefleet:test:aux", "aux"),  # any other auxiliary image
    ],
)
def test_depth_and_auxiliary_images_are_not_read(aux_type, listed, monkeypatch):
    base = marked()
    data = heif_with_aux(base, aux_type)
    # the file does hold one (pillow-heif sees it when asked to)...
    monkeypatch.setattr(pillow_heif.options, "DEPTH_IMAGES", True)
    monkeypatch.setattr(pillow_heif.options, "AUX_IMAGES", True)
    assert pillow_heif.open_heif(io.BytesIO(data)).info[listed]
    monkeypatch.undo()
    # ...and the photo is the primary image, not white (the aux plane is all zeros)
    assert distance(data, base) < 6


def test_an_embedded_icc_profile_is_not_applied_as_for_jpeg():
    base = photo((160, 120), seed=6)
    icc = display_p3_icc()
    p3 = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    converted = ImageCms.profileToProfile(base, p3, ImageCms.createProfile("sRGB"))
    assert np.abs(reference(converted) - reference(base)).mean() > 3  # applying it would show
    with_icc, without = heif(base, icc_profile=icc), heif(base)
    assert Image.open(io.BytesIO(with_icc)).info["icc_profile"] == icc
    assert np.abs(pixels(with_icc) - pixels(without)).mean() < 0.5
    jpeg_twin = encode(base, "JPEG", quality=95, icc_profile=icc)
    assert np.abs(pixels(with_icc) - pixels(jpeg_twin)).mean() < 3


def test_a_grid_tiled_heic_is_decoded_whole():
    base = marked((300, 200))
    data = heif(base, tile_size=128)
    tiling = pillow_heif.open_heif(io.BytesIO(data)).info["tiling"]
    assert (tiling["num_columns"], tiling["num_rows"]) == (3, 2)
    assert decode_image(data).original_size == (300, 200)
    assert distance(data, base) < 4


class DraftSpy:
    def __init__(self, monkeypatch):
        self.picked = []
        real = pillow_heif.HeifImageFile.draft

        def draft(im, mode, size):
            chosen = real(im, mode, size)
            self.picked.append(chosen)
            return chosen

        monkeypatch.setattr(pillow_heif.HeifImageFile, "draft", draft)


@pytest.mark.parametrize("transform", [1, 6])
def test_a_heic_thumbnail_twice_the_input_is_decoded_instead_of_the_image(transform, monkeypatch):
    base = marked((640, 480))
    data = heif(base, transform=transform, thumbnails=[256])
    spy = DraftSpy(monkeypatch)
    thumb = decode_image(data, input_size=96)
    assert spy.picked == [("RGB", (0, 0, 256, 192))]  # displayed like the image: turned too
    full = decode_image(data, input_size=96, draft=False)
    assert thumb.original_size == full.original_size == (640, 480)
    diff = np.abs(thumb.pixels.numpy().astype(np.float32) - full.pixels.numpy()).mean()
    assert diff < 4
    # one less than twice the model's input is never used: the image is decoded in full
    decode_image(data, input_size=97)
    assert spy.picked[-1] is None


class DecoderSpy:
    """Records every pixel decode of the HEIF and AVIF plugins, and refuses it."""

    def __init__(self, monkeypatch):
        self.calls = []

        def load(im):
            self.calls.append(im.format)
            raise AssertionError("the decoder was called")

        for plugin in (pillow_heif.HeifImageFile, AvifImagePlugin.AvifImageFile):
            monkeypatch.setattr(plugin, "load", load)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
@pytest.mark.parametrize("size", [(16384, 12288), (10000, 9000)])  # 201 MP; 90 MP
def test_a_header_over_the_pixel_limit_is_refused_before_any_decoding(fmt, size, monkeypatch):
    # Given a real HEIF or AVIF whose header declares 201 MP (over twice the 60 MP limit:
    # Pillow's own guard refuses it inside Image.open) or 90 MP (posefleet's check, after it)
    data = declaring(fmt, *size)
    spy = DecoderSpy(monkeypatch)
    started = time.perf_counter()
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.kind == "too_many_pixels"
    assert f"over the limit of {WorkerSettings().max_image_pixels}" in info.value.message
    assert spy.calls == []
    assert time.perf_counter() - started < 1  # a header read, not a 200 MP decode


@pytest.fixture
def pixel_limit():
    yield
    decode_image(GOOD["plain.jpg"])  # back to the default limit for the tests that follow


def test_pillow_keeps_its_own_bomb_guard_at_the_workers_pixel_limit(pixel_limit):
    # Given the worker's pixel limit, decoding sets Pillow's guard to it for the whole process
    limit = WorkerSettings().max_image_pixels
    decode_image(GOOD["plain.jpg"], max_pixels=limit)
    assert limit == Image.MAX_IMAGE_PIXELS
    decode_image(GOOD["plain.jpg"], max_pixels=1_000_000)
    assert Image.MAX_IMAGE_PIXELS == 1_000_000
    # so any other Image.open in the process refuses a bomb too (Pillow: over twice the limit)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(png_header_only(2000, 1001)))
    # and posefleet's own typed refusal comes first for what Pillow would only warn about
    with pytest.raises(ImageError, match="over the limit of 1000000") as info:
        decode_image(png_header_only(1500, 1000), max_pixels=1_000_000)
    assert info.value.kind == "too_many_pixels"


def test_the_formats_phones_write_are_listed_and_decoded():
    listed = ProducerSettings().extensions
    assert {".heic", ".heif", ".hif", ".avif"} <= set(listed)
    for data in (good_variants()["iphone-rotated-6.heic"], good_variants()["rotated-8.avif"]):
        assert decode_image(data).pixels.shape == (3, 224, 224)


def test_the_jpeg_path_is_unchanged_by_the_heif_plugins():
    # JPEG still opens as JPEG, draft-decoded: the same pixels as Pillow's own draft decode
    data = jpeg((4032, 3024), seed=2)
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (224, 224))
    expected = np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    assert np.array_equal(decode_image(data).pixels.permute(1, 2, 0).numpy(), expected)
