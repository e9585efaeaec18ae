"""Image validation: complete decode, sizes, aspect ratio and decompression bombs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from album_pipeline.data.images import NEAR_IDENTICAL_BITS, InvalidImage, validate_image


def _encode(width: int, height: int, fmt: str, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _reason(data: bytes, **options: object) -> str:
    with pytest.raises(InvalidImage) as caught:
        validate_image(data, **options)
    return caught.value.reason


@pytest.mark.parametrize(("fmt", "extension"), [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif")])
def test_accepts_common_formats_as_they_are(fmt: str, extension: str) -> None:
    info = validate_image(_encode(120, 80, fmt))
    assert (info.width, info.height, info.format, info.extension) == (120, 80, fmt, extension)


def test_truncated_jpeg_is_rejected() -> None:
    data = _encode(100, 100, "JPEG")
    assert _reason(data[: len(data) // 2]) == "truncated"


def test_non_image_bytes_are_rejected() -> None:
    assert _reason(b"<html>404 not found</html>") == "not_an_image"
    assert _reason(b"") == "empty"


def test_other_image_formats_are_unsupported() -> None:
    assert _reason(_encode(64, 64, "BMP")) == "unsupported_format"


def test_tiny_and_elongated_images_are_rejected() -> None:
    assert _reason(_encode(20, 20, "PNG")) == "too_small"
    assert _reason(_encode(40, 40, "PNG"), min_side=50) == "too_small"
    assert _reason(_encode(400, 100, "PNG")) == "aspect_ratio"
    assert validate_image(_encode(300, 100, "PNG")).width == 300  # exactly 3:1 is allowed


def test_images_over_the_pixel_limit_are_bombs() -> None:
    assert _reason(_encode(100, 100, "PNG"), max_pixels=9_999) == "decompression_bomb"


def test_pillow_bomb_warning_is_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    # Our own limit above Pillow's: Pillow's warning (and error past twice its limit) must still reject.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    assert _reason(_encode(80, 80, "PNG"), max_pixels=10**9) == "decompression_bomb"
    assert _reason(_encode(120, 120, "PNG"), max_pixels=10**9) == "decompression_bomb"


def test_picture_hash_comes_from_the_validating_decode_and_survives_re_encoding():
    from album_pipeline.data.images import picture_hash
    from album_pipeline.testing.emulators.omacir_members import (
        dead_link_placeholder_jpeg,
        near_placeholder_variants,
    )
    from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image

    original = dead_link_placeholder_jpeg()
    assert validate_image(original).picture_hash is None
    hashed = validate_image(original, with_picture_hash=True).picture_hash
    assert hashed == picture_hash(original) and len(hashed) == 64

    def bits(a: str, b: str) -> int:
        return (int(a, 16) ^ int(b, 16)).bit_count()

    for variant, _width, _height in near_placeholder_variants():
        assert variant != original and bits(picture_hash(variant), hashed) <= NEAR_IDENTICAL_BITS
    for genre in ("rock", "classical"):
        for seed in range(10):
            picture = draw_cover(genre, seed, 240)
            base = picture_hash(encode_image(picture))
            for copy in (encode_image(picture, quality=50), encode_image(picture, "PNG")):
                assert bits(picture_hash(copy), base) <= NEAR_IDENTICAL_BITS


def test_distinct_covers_with_one_layout_are_not_near_identical():
    from album_pipeline.data.images import picture_hash
    from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image

    for genre in ("classical", "rap-hip-hop"):
        hashes = [int(picture_hash(encode_image(draw_cover(genre, seed, 300))), 16) for seed in range(20)]
        closest = min((a ^ b).bit_count() for i, a in enumerate(hashes) for b in hashes[i + 1 :])
        assert closest > NEAR_IDENTICAL_BITS
