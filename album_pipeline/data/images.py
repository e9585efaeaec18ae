"""Image validation: is this byte string a complete, sensibly sized picture worth storing?

Every image is fully decoded with Pillow before it is stored, so truncated or corrupt files are caught at
ingest rather than halfway through packing training data. The stored bytes keep their original format
(JPEG/PNG/GIF/WebP); conversion to RGB happens when the training shards are built.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import imagehash
from PIL import Image, UnidentifiedImageError

DEFAULT_MIN_SIDE = 32
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_ASPECT_RATIO = 3.0

# Pillow format name -> file extension used in storage. MPO is how Pillow names multi-picture camera JPEGs.
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}
_STORED_FORMAT = {"MPO": "JPEG"}

_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF87a",
    b"GIF89a",
)


class InvalidImage(ValueError):
    """The bytes are not an image the pipeline accepts; ``reason`` is a short stable code for manifests."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str  # Pillow format name: JPEG, PNG, GIF, WEBP
    extension: str  # without the dot: jpg, png, gif, webp
    picture_hash: str | None = None  # set when asked for: see picture_hash()


def _has_known_magic(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def validate_image(
    data: bytes,
    *,
    min_side: int = DEFAULT_MIN_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
    with_picture_hash: bool = False,
) -> ImageInfo:
    """Check, fully decode and measure an image; raise InvalidImage with a reason code when it is unusable.

    ``with_picture_hash`` also computes ``picture_hash`` from the same decode (decoding is most of the cost).

    Reasons: ``empty``, ``not_an_image``, ``unsupported_format``, ``decompression_bomb``, ``truncated``,
    ``corrupt``, ``too_small``, ``aspect_ratio``.
    """
    if not data:
        raise InvalidImage("empty", "no bytes")
    if not _has_known_magic(data):
        raise InvalidImage(_classify_unknown(data), f"starts with {data[:8]!r}")
    try:
        # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that; both count as a bomb here, and
        # max_pixels (checked below before decoding) is our own, usually stricter, limit.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidImage("decompression_bomb", f"{width}x{height} exceeds {max_pixels} pixels")
                image_format = image.format or ""
                image.load()
                hashed = _picture_hash(image) if with_picture_hash else None
    except InvalidImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise InvalidImage("decompression_bomb", str(error)) from None
    except UnidentifiedImageError:
        # The magic bytes said image, but Pillow cannot even read the header.
        raise InvalidImage("corrupt", "header cannot be parsed") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports early end of data as OSError("image file is truncated ...") or
        # "broken data stream"; anything else during decoding is a damaged file.
        message = str(error)
        lowered = message.lower()
        reason = "truncated" if ("truncated" in lowered or "broken data stream" in lowered) else "corrupt"
        raise InvalidImage(reason, message) from None
    if image_format not in _EXTENSIONS:
        raise InvalidImage(
            "unsupported_format", f"format {image_format or 'unknown'} is not JPEG/PNG/GIF/WebP"
        )
    if min(width, height) < min_side:
        raise InvalidImage("too_small", f"{width}x{height} has a side under {min_side} pixels")
    if max(width, height) / min(width, height) > max_aspect_ratio:
        raise InvalidImage("aspect_ratio", f"{width}x{height} is more elongated than {max_aspect_ratio}:1")
    return ImageInfo(
        width=width,
        height=height,
        format=_STORED_FORMAT.get(image_format, image_format),
        extension=_EXTENSIONS[image_format],
        picture_hash=hashed,
    )


# Re-encodings of one picture (JPEG quality 50-95, other subsampling, PNG versus JPEG) differ by at most 12 of
# the 256 bits (99% by 8 or fewer) on the synthetic covers; distinct covers of one style by 18 or more.
NEAR_IDENTICAL_BITS = 14
_HASH_SIZE = 16  # 16 x 16 DCT coefficients: 256 bits
_HASH_WORKING_SIDE = 96


def picture_hash(data: bytes) -> str:
    """A 256-bit perceptual hash (imagehash's pHash, which survives recompression better than dHash) of an
    image's picture, as 64 hex digits, from a full decode. Near-identical pictures differ by at most
    NEAR_IDENTICAL_BITS bits (see ``album_pipeline.data.near_duplicates``).

    Call it on bytes that ``validate_image`` accepted; ``validate_image(..., with_picture_hash=True)`` gives
    the same hash from its own decode, without a second one.
    """
    with Image.open(io.BytesIO(data)) as image:
        return _picture_hash(image)


def _picture_hash(image: Image.Image) -> str:
    gray = image.convert("L")
    # An exact box reduction to about 96 px first: the hash's own Lanczos resize of a full cover costs 5x
    # more and gives the same hash to within a bit.
    factor = min(gray.size) // _HASH_WORKING_SIDE
    if factor > 1:
        gray = gray.reduce(factor)
    return str(imagehash.phash(gray, hash_size=_HASH_SIZE))


def _classify_unknown(data: bytes) -> str:
    """``unsupported_format`` for images Pillow recognises (BMP, TIFF, ...), else ``not_an_image``."""
    try:
        with Image.open(io.BytesIO(data)):
            return "unsupported_format"
    except Exception:  # anything Pillow cannot even identify is simply not an image
        return "not_an_image"
