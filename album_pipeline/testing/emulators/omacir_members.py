"""What the synthetic OMACIR tars hold: the kinds of member, their contents and the ground truth of each kind.

``OmacirItem.build`` writes deterministic tars ``album_covers_{letter}.tar``. Every member sits in a folder
named after its archive, ``album_covers_{letter}/{letter}<15 hex digits>.<ext>`` (the tar also holds that
folder's directory entry), and every file name starts with the archive's letter, as OMACIR splits by first
character.
The contents are deliberately a little messy, like the real corpus; each member's ground truth is recorded:

- ``cover``: a JPEG from ``draw_unlabeled_cover`` at 150..400 px, some non-square;
- ``png`` / ``gif``: such a cover stored as PNG or GIF;
- ``placeholder``: copies of one dead-link placeholder image (identical bytes) under different names;
- ``tiny``: a cover at 16x16 or 20x20;
- ``non_image``: a ``.txt`` note and an HTML error page saved under a ``.jpg`` name.

``OmacirItem.build(..., hostile_members=True)`` also plants trouble in every archive, spread among the ordinary
members (which stay exactly those of the default build); see ``HOSTILE_KINDS``:

- ``traversal``: ``../../escape_{letter}.jpg`` and ``album_covers_{letter}/../../escape2_{letter}.jpg``;
- ``absolute``: ``/tmp/omacir_absolute_{letter}.jpg`` (these three hold real JPEG covers);
- ``symlink`` (to ``/etc/passwd``), ``hardlink`` (one to an earlier ordinary cover of the archive, one to
  ``../outside_{letter}.jpg``), ``device`` (a character device, 1:3 like /dev/null) and ``fifo`` members;
- ``oversized``: a valid JPEG padded with comment segments past ``oversized_member_bytes``;
- ``bomb``: a tiny PNG whose header claims 40000 x 40000 pixels, which Pillow refuses to open;
- ``truncated``: three JPEG covers cut to 60 % of their bytes;
- ``near_placeholder``: four re-encodings of the placeholder (JPEG quality 70 and 95, progressive, 4:4:4
  chroma): different bytes, so exact-hash dedup misses them, but the same ``imagehash.dhash`` and ``phash``.

``EXPECTED_REASON`` gives the failure reason a correct client records for each kind, and
``OmacirItem.expected_kept`` the members whose images it keeps.

``album_pipeline.testing.emulators.omacir_item`` writes these members into the tars.
"""

from __future__ import annotations

import io
import random
import tarfile
import zlib
from dataclasses import dataclass

from PIL import Image, ImageDraw

from album_pipeline.testing.emulators.synthetic import (
    draw_unlabeled_cover,
    encode_image,
    unlabeled_cover_style,
)

MEMBER_KINDS = ("cover", "png", "gif", "non_image", "placeholder", "tiny")
# Planted only with ``OmacirItem.build(..., hostile_members=True)``.
HOSTILE_KINDS = (
    "traversal",
    "absolute",
    "symlink",
    "hardlink",
    "device",
    "fifo",
    "oversized",
    "bomb",
    "truncated",
    "near_placeholder",
)
# The failure reason a correct client records for a member of each kind; None: the image is kept.
# Refusals use the codes of ``album_pipeline.sources.omacir._refusal_reason`` (ingest records them as
# ``unsafe_member:{code}``); the others are ``validate_image`` reasons, or ``placeholder`` for the dead-link
# picture, whose exact copies and near-identical re-encodings all count as one repeated image. Assumes:
# - ``oversized``: the client reads with ``max_member_bytes`` below the build's ``oversized_member_bytes``
#   (the client's default limit is larger, so it would keep that image);
# - ``placeholder`` / ``near_placeholder``: the copies reach the client's repeat threshold (3 by default);
#   a default build with under 80 images per archive has only 2 exact copies per archive, and a client that
#   reads just one such archive keeps one copy and records the other as ``duplicate``;
# - ``near_placeholder``: the client compares perceptual hashes; an exact-hash client keeps these.
EXPECTED_REASON: dict[str, str | None] = {
    "cover": None,
    "png": None,
    "gif": None,
    "non_image": "not_an_image",
    "placeholder": "placeholder",
    "tiny": "too_small",
    "traversal": "parent_reference",
    "absolute": "absolute_path",
    "symlink": "symlink",
    "hardlink": "hardlink",
    "device": "device",
    "fifo": "fifo",
    "oversized": "too_large",
    "bomb": "decompression_bomb",
    "truncated": "truncated",
    "near_placeholder": "placeholder",
}
# Kinds that a safe tar reader refuses from the member's header alone, before reading any image bytes.
REFUSED_KINDS = frozenset({"traversal", "absolute", "symlink", "hardlink", "device", "fifo", "oversized"})
KEPT_KINDS = frozenset(kind for kind, reason in EXPECTED_REASON.items() if reason is None)
DEFAULT_OVERSIZED_MEMBER_BYTES = 2 * 1024 * 1024
BOMB_SIDE = 40_000  # the bomb's claimed width and height: 1.6e9 pixels, past twice Pillow's default limit
TRUNCATED_PER_ARCHIVE = 3
SYMLINK_TARGET = "/etc/passwd"


def member_plan(images_per_archive: int, rng: random.Random) -> list[str]:
    """The kinds of an archive's members in tar order; ``images_per_archive`` counts image members only."""
    counts = {
        "placeholder": max(2, images_per_archive // 40),
        "tiny": 2,
        "png": max(1, images_per_archive * 3 // 100),
        "gif": max(1, images_per_archive * 2 // 100),
    }
    counts["cover"] = images_per_archive - sum(counts.values())
    counts["non_image"] = 2  # the .txt note and the fake .jpg
    plan = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(plan)
    return plan


def dead_link_placeholder_jpeg() -> bytes:
    """The dead-link placeholder the image host returned for missing covers: a grey 'no image' picture."""
    image = Image.new("RGB", (300, 300), (214, 214, 214))
    draw = ImageDraw.Draw(image)
    draw.rectangle((90, 100, 210, 200), outline=(150, 150, 150), width=6)
    draw.polygon([(100, 190), (140, 140), (170, 175), (185, 160), (200, 190)], fill=(150, 150, 150))
    draw.ellipse((170, 112, 190, 132), fill=(150, 150, 150))
    return encode_image(image, "JPEG", quality=85)


def near_placeholder_variants() -> list[tuple[bytes, int, int]]:
    """(bytes, width, height) of re-encodings of the placeholder: other bytes, the same picture to a perceptual
    hash, as when an image host recompressed it; all 300 x 300. (No resized copy: resizing moves borderline
    dHash bits when a client decodes JPEGs at reduced scale with Pillow's ``draft``.)"""
    with Image.open(io.BytesIO(dead_link_placeholder_jpeg())) as decoded:
        picture = decoded.convert("RGB")
    variants = []
    for image, options in (
        (picture, {"quality": 70}),
        (picture, {"quality": 95}),
        (picture, {"quality": 85, "progressive": True}),
        (picture, {"quality": 85, "subsampling": 0}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", **options)
        variants.append((buffer.getvalue(), image.width, image.height))
    return variants


def _cover_dimensions(rng: random.Random) -> tuple[int, int]:
    side = rng.randint(150, 400)
    if rng.random() < 0.2:  # a scan or a photo that is not square
        return side, max(150, min(400, round(side * rng.uniform(0.7, 1.4))))
    return side, side


def make_member(kind: str, name_stem: str, rng: random.Random, placeholder: bytes) -> tuple[str, bytes, dict]:
    """(file name, bytes, truth fields) for one member of ``kind``."""
    if kind == "non_image":
        if rng.random() < 0.5:
            return f"{name_stem}.txt", b"cover art downloaded from a dead link; see index\n", {}
        page = b"<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
        return f"{name_stem}.jpg", page, {}
    if kind == "placeholder":
        return f"{name_stem}.jpg", placeholder, {"format": "JPEG", "width": 300, "height": 300}
    seed = rng.randrange(2**31)
    style = unlabeled_cover_style(seed)
    if kind == "tiny":
        side = rng.choice([16, 20])
        width, height = side, side
    else:
        width, height = _cover_dimensions(rng)
    image = draw_unlabeled_cover(seed, max(width, height))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    image_format, extension = {"png": ("PNG", "png"), "gif": ("GIF", "gif")}.get(kind, ("JPEG", "jpg"))
    truth = {"format": image_format, "width": width, "height": height, "style": style}
    return f"{name_stem}.{extension}", encode_image(image, image_format), truth


@dataclass(frozen=True)
class Planted:
    """A hostile member waiting to be written: its tar header fields, content and ground truth."""

    kind: str
    name: str
    type: bytes  # a tarfile type: REGTYPE, SYMTYPE, LNKTYPE, CHRTYPE, FIFOTYPE
    data: bytes = b""
    linkname: str | None = None  # None for a hardlink: link to the last ordinary cover written before it
    truth: dict | None = None  # format, width, height, style


def _drawn_jpeg(rng: random.Random) -> tuple[bytes, dict]:
    seed = rng.randrange(2**31)
    width, height = _cover_dimensions(rng)
    image = draw_unlabeled_cover(seed, max(width, height))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    truth = {"format": "JPEG", "width": width, "height": height, "style": unlabeled_cover_style(seed)}
    return encode_image(image, "JPEG"), truth


def _pad_jpeg(data: bytes, more_than: int) -> bytes:
    """The JPEG with comment (COM) segments after its SOI marker until it is longer than ``more_than`` bytes;
    it still decodes to the same picture."""
    assert data[:2] == b"\xff\xd8"
    needed = max(0, more_than + 1 - len(data))
    segments = []
    filler = b"omacir emulator padding. " * 2700
    while needed > 0:
        payload = min(65533, max(1, needed - 4))  # a segment is 4 bytes of marker and length plus its payload
        segments.append(b"\xff\xfe" + (payload + 2).to_bytes(2, "big") + filler[:payload])
        needed -= payload + 4
    return data[:2] + b"".join(segments) + data[2:]


def _bomb_png(rng: random.Random) -> bytes:
    """A real 8 x 8 PNG whose IHDR (with a correct CRC) claims ``BOMB_SIDE`` x ``BOMB_SIDE`` pixels."""
    small = draw_unlabeled_cover(rng.randrange(2**31), 150).resize((8, 8), Image.Resampling.BILINEAR)
    data = bytearray(encode_image(small, "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = BOMB_SIDE.to_bytes(4, "big") + BOMB_SIDE.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # over the chunk type and its 13 bytes
    return bytes(data)


def hostile_plan(folder: str, letter: str, rng: random.Random, oversized_member_bytes: int) -> list[Planted]:
    """The hostile members of one archive, in the order they are spread among the ordinary ones."""

    def stem() -> str:
        return f"{folder}/{letter}{rng.getrandbits(60):015x}"

    planted = []
    for name in (f"../../escape_{letter}.jpg", f"{folder}/../../escape2_{letter}.jpg"):
        data, truth = _drawn_jpeg(rng)
        planted.append(Planted("traversal", name, tarfile.REGTYPE, data, truth=truth))
    data, truth = _drawn_jpeg(rng)
    planted.append(
        Planted("absolute", f"/tmp/omacir_absolute_{letter}.jpg", tarfile.REGTYPE, data, truth=truth)
    )
    planted.append(Planted("symlink", f"{stem()}.jpg", tarfile.SYMTYPE, linkname=SYMLINK_TARGET))
    planted.append(Planted("hardlink", f"{stem()}.jpg", tarfile.LNKTYPE, linkname=None))
    planted.append(Planted("hardlink", f"{stem()}.jpg", tarfile.LNKTYPE, linkname=f"../outside_{letter}.jpg"))
    planted.append(Planted("device", f"{stem()}.jpg", tarfile.CHRTYPE))
    planted.append(Planted("fifo", f"{stem()}.jpg", tarfile.FIFOTYPE))
    data, truth = _drawn_jpeg(rng)
    planted.append(
        Planted(
            "oversized",
            f"{stem()}.jpg",
            tarfile.REGTYPE,
            _pad_jpeg(data, oversized_member_bytes),
            truth=truth,
        )
    )
    bomb_truth = {"format": "PNG", "width": BOMB_SIDE, "height": BOMB_SIDE}
    planted.append(Planted("bomb", f"{stem()}.png", tarfile.REGTYPE, _bomb_png(rng), truth=bomb_truth))
    for _ in range(TRUNCATED_PER_ARCHIVE):
        data, truth = _drawn_jpeg(rng)
        planted.append(
            Planted("truncated", f"{stem()}.jpg", tarfile.REGTYPE, data[: len(data) * 6 // 10], truth=truth)
        )
    for data, width, height in near_placeholder_variants():
        truth = {"format": "JPEG", "width": width, "height": height}
        planted.append(Planted("near_placeholder", f"{stem()}.jpg", tarfile.REGTYPE, data, truth=truth))
    rng.shuffle(planted)
    return planted
