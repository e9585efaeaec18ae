"""An emulator of archive.org serving a synthetic version of the OMACIR item ``audio-covers``.

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

``ArchiveEmulator`` serves ``GET /metadata/{item}`` and ``GET``/``HEAD /download/{item}/{file}`` with single
byte ranges, as archive.org does (see /work/shared/reference/data-sources.md, section OMACIR). Opt-in faults:
``cut_first_download_after_bytes`` (the first GET of each file is cut), ``drop_every_bytes`` (every GET is
cut, so a download needs several Range resumes) and ``wrong_md5`` (the metadata lists a wrong md5).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from PIL import Image, ImageDraw

from album_pipeline.emulators.server import LOOPBACK_HOST, LoopbackServer, Request, Response
from album_pipeline.emulators.synthetic import draw_unlabeled_cover, encode_image, unlabeled_cover_style

ITEM_IDENTIFIER = "audio-covers"
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
MIN_IMAGES_PER_ARCHIVE = 10
# Bump when the member mix or encoding changes, so cached builds from older code are not reused.
BUILD_FORMAT_VERSION = 1
# Bump when the planted hostile members change; it is part of the cache key of hostile builds only.
HOSTILE_FORMAT_VERSION = 1
GROUND_TRUTH_FILE = "ground_truth.json"
# Fixed timestamps keep the tars byte-identical across builds.
MEMBER_MTIME = 1_466_000_000
FILE_MTIME = 1_466_496_032
STREAM_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ArchiveMember:
    """Ground truth for one tar member."""

    name: str  # path inside the tar, e.g. album_covers_a/a3f0....jpg
    kind: str  # one of MEMBER_KINDS or HOSTILE_KINDS
    format: str | None  # Pillow format name (as the header says); None for non-images and non-files
    width: int | None
    height: int | None
    style: str | None  # the drawn style (a genre or "other") for drawn covers; else None
    size: int  # bytes of content; 0 for links, devices and FIFOs
    md5: str  # of the content (of no bytes for links, devices and FIFOs)
    linkname: str | None = None  # the target of a symlink or hardlink member


@dataclass(frozen=True)
class ArchiveFile:
    """One tar of the item, with the checksums archive.org publishes for it."""

    name: str
    size: int
    md5: str
    sha1: str
    crc32: str
    members: tuple[ArchiveMember, ...]

    def kinds(self) -> dict[str, str]:
        """Member name -> kind, for comparing a cleaner's decisions with the truth."""
        return {member.name: member.kind for member in self.members}


@dataclass(frozen=True)
class OmacirItem:
    """A built synthetic OMACIR item: its tars on disk and their ground truth."""

    directory: Path
    identifier: str
    archives: tuple[ArchiveFile, ...]

    # --- building -------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        cache_dir: Path,
        letters: tuple[str, ...] | list[str] = ("a", "b"),
        images_per_archive: int = 500,
        seed: int = 0,
        identifier: str = ITEM_IDENTIFIER,
        hostile_members: bool = False,
        oversized_member_bytes: int = DEFAULT_OVERSIZED_MEMBER_BYTES,
    ) -> OmacirItem:
        """Write the tars under ``cache_dir`` (or reuse an earlier build with the same parameters).

        ``hostile_members`` plants the members of ``HOSTILE_KINDS`` in every archive (see the module
        docstring), with the oversized one just over ``oversized_member_bytes``; ``images_per_archive`` still
        counts only the ordinary image members, which are the same as without ``hostile_members``. Without
        it the tars (and the cache folder) are those of earlier versions of this module.
        """
        letters = tuple(letters)
        _check_parameters(letters, images_per_archive)
        if isinstance(oversized_member_bytes, bool) or not isinstance(oversized_member_bytes, int):
            raise ValueError(f"oversized_member_bytes must be an integer, got {oversized_member_bytes!r}")
        if oversized_member_bytes < 1:
            raise ValueError(f"oversized_member_bytes must be positive, got {oversized_member_bytes}")
        parameters: dict[str, object] = {
            "identifier": identifier,
            "letters": list(letters),
            "images_per_archive": images_per_archive,
            "seed": seed,
            "version": BUILD_FORMAT_VERSION,
        }
        if hostile_members:  # only then, so that default builds keep their cache key
            parameters["hostile"] = {
                "oversized_member_bytes": oversized_member_bytes,
                "version": HOSTILE_FORMAT_VERSION,
            }
        key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]
        cache_dir = Path(cache_dir)
        final_dir = cache_dir / f"{identifier}-{key}"
        existing = cls._load(final_dir, identifier)
        if existing is not None:
            return existing
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Build beside the final folder and rename: a concurrent or interrupted build is never seen half-done.
        scratch = Path(tempfile.mkdtemp(prefix=f".{identifier}-building-", dir=cache_dir))
        try:
            archives = [
                _write_archive(
                    scratch / f"album_covers_{letter}.tar",
                    letter,
                    images_per_archive,
                    seed,
                    oversized_member_bytes if hostile_members else None,
                )
                for letter in letters
            ]
            truth = {"parameters": parameters, "archives": [asdict(archive) for archive in archives]}
            (scratch / GROUND_TRUTH_FILE).write_text(json.dumps(truth, indent=1))
            try:
                os.rename(scratch, final_dir)
            except OSError:
                if cls._load(final_dir, identifier) is None:
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        loaded = cls._load(final_dir, identifier)
        assert loaded is not None
        return loaded

    @classmethod
    def _load(cls, directory: Path, identifier: str) -> OmacirItem | None:
        truth_path = directory / GROUND_TRUTH_FILE
        if not truth_path.is_file():
            return None
        truth = json.loads(truth_path.read_text())
        archives = tuple(
            ArchiveFile(
                **{key: value for key, value in archive.items() if key != "members"},
                members=tuple(ArchiveMember(**member) for member in archive["members"]),
            )
            for archive in truth["archives"]
        )
        # A tar that was replaced or truncated since the build makes the cache unusable.
        for archive in archives:
            path = directory / archive.name
            if not path.is_file() or path.stat().st_size != archive.size:
                raise RuntimeError(
                    f"cached OMACIR emulator build {directory} is damaged ({archive.name} is missing or has "
                    f"the wrong size); delete that folder and build again"
                )
        return cls(directory=directory, identifier=identifier, archives=archives)

    # --- access ---------------------------------------------------------------------------------------
    def archive(self, name: str) -> ArchiveFile:
        for archive in self.archives:
            if archive.name == name:
                return archive
        raise KeyError(f"no archive {name!r} in the item; it has {[a.name for a in self.archives]}")

    def path(self, name: str) -> Path:
        return self.directory / self.archive(name).name

    def members(self) -> list[ArchiveMember]:
        return [member for archive in self.archives for member in archive.members]

    def total_size(self) -> int:
        return sum(archive.size for archive in self.archives)

    def expected_kept(self, archive: str | None = None) -> set[str]:
        """Ground truth: names of the members (of all archives, or of ``archive``) whose images a correct client
        keeps: the kinds mapped to None in ``EXPECTED_REASON`` (``cover``, ``png``, ``gif``), each a distinct
        drawing (a few plain drawings are near-identical pictures, which a client may keep once). Placeholder
        copies, near-identical placeholders and every member with a failure reason are left out, under the
        assumptions listed at ``EXPECTED_REASON``. Member names are unique across the
        item (they carry the archive's letter); a manifest's source id is ``{archive name}/{member name}``.
        """
        archives = self.archives if archive is None else (self.archive(archive),)
        return {member.name for each in archives for member in each.members if member.kind in KEPT_KINDS}


def _check_parameters(letters: tuple[str, ...], images_per_archive: int) -> None:
    if not letters:
        raise ValueError("letters must name at least one archive, e.g. ('a', 'b')")
    bad = [letter for letter in letters if not re.fullmatch(r"[0-9a-z]", str(letter))]
    if bad:
        raise ValueError(f"each letter must be one character 0-9 or a-z (OMACIR splits by it), got {bad}")
    if len(set(letters)) != len(letters):
        raise ValueError(f"letters have duplicates: {list(letters)}")
    if not isinstance(images_per_archive, int) or images_per_archive < MIN_IMAGES_PER_ARCHIVE:
        raise ValueError(
            f"images_per_archive must be an integer >= {MIN_IMAGES_PER_ARCHIVE}, got {images_per_archive!r}"
        )


def _member_plan(images_per_archive: int, rng: random.Random) -> list[str]:
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


def placeholder_image_bytes() -> bytes:
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
    with Image.open(io.BytesIO(placeholder_image_bytes())) as decoded:
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


def _make_member(
    kind: str, name_stem: str, rng: random.Random, placeholder: bytes
) -> tuple[str, bytes, dict]:
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


def _tar_info(name: str, size: int, is_directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if is_directory else size
    info.type = tarfile.DIRTYPE if is_directory else tarfile.REGTYPE
    info.mode = 0o755 if is_directory else 0o644
    info.mtime = MEMBER_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@dataclass(frozen=True)
class _Planted:
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


def _hostile_plan(
    folder: str, letter: str, rng: random.Random, oversized_member_bytes: int
) -> list[_Planted]:
    """The hostile members of one archive, in the order they are spread among the ordinary ones."""

    def stem() -> str:
        return f"{folder}/{letter}{rng.getrandbits(60):015x}"

    planted = []
    for name in (f"../../escape_{letter}.jpg", f"{folder}/../../escape2_{letter}.jpg"):
        data, truth = _drawn_jpeg(rng)
        planted.append(_Planted("traversal", name, tarfile.REGTYPE, data, truth=truth))
    data, truth = _drawn_jpeg(rng)
    planted.append(
        _Planted("absolute", f"/tmp/omacir_absolute_{letter}.jpg", tarfile.REGTYPE, data, truth=truth)
    )
    planted.append(_Planted("symlink", f"{stem()}.jpg", tarfile.SYMTYPE, linkname=SYMLINK_TARGET))
    planted.append(_Planted("hardlink", f"{stem()}.jpg", tarfile.LNKTYPE, linkname=None))
    planted.append(
        _Planted("hardlink", f"{stem()}.jpg", tarfile.LNKTYPE, linkname=f"../outside_{letter}.jpg")
    )
    planted.append(_Planted("device", f"{stem()}.jpg", tarfile.CHRTYPE))
    planted.append(_Planted("fifo", f"{stem()}.jpg", tarfile.FIFOTYPE))
    data, truth = _drawn_jpeg(rng)
    planted.append(
        _Planted(
            "oversized",
            f"{stem()}.jpg",
            tarfile.REGTYPE,
            _pad_jpeg(data, oversized_member_bytes),
            truth=truth,
        )
    )
    bomb_truth = {"format": "PNG", "width": BOMB_SIDE, "height": BOMB_SIDE}
    planted.append(_Planted("bomb", f"{stem()}.png", tarfile.REGTYPE, _bomb_png(rng), truth=bomb_truth))
    for _ in range(TRUNCATED_PER_ARCHIVE):
        data, truth = _drawn_jpeg(rng)
        planted.append(
            _Planted("truncated", f"{stem()}.jpg", tarfile.REGTYPE, data[: len(data) * 6 // 10], truth=truth)
        )
    for data, width, height in near_placeholder_variants():
        truth = {"format": "JPEG", "width": width, "height": height}
        planted.append(_Planted("near_placeholder", f"{stem()}.jpg", tarfile.REGTYPE, data, truth=truth))
    rng.shuffle(planted)
    return planted


def _planted_tar_info(planted: _Planted, linkname: str | None) -> tarfile.TarInfo:
    info = _tar_info(planted.name, len(planted.data))
    info.type = planted.type
    if planted.type != tarfile.REGTYPE:
        info.size = 0
    if linkname is not None:
        info.linkname = linkname
    if planted.type == tarfile.SYMTYPE:
        info.mode = 0o777
    elif planted.type == tarfile.CHRTYPE:
        info.mode, info.devmajor, info.devminor = 0o666, 1, 3
    return info


def _member_truth(
    name: str, kind: str, data: bytes, truth: dict, linkname: str | None = None
) -> ArchiveMember:
    return ArchiveMember(
        name=name,
        kind=kind,
        format=truth.get("format"),
        width=truth.get("width"),
        height=truth.get("height"),
        style=truth.get("style"),
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        linkname=linkname,
    )


def _write_archive(
    path: Path, letter: str, images_per_archive: int, seed: int, oversized_member_bytes: int | None = None
) -> ArchiveFile:
    """Stream one tar to disk member by member, then checksum it as archive.org would.

    With ``oversized_member_bytes`` (not None) the hostile members are planted too, from a random stream of
    their own so that the ordinary members are exactly those of the default build."""
    rng = random.Random(f"omacir/{seed}/{letter}/{images_per_archive}")
    placeholder = placeholder_image_bytes()
    folder = path.stem
    used_stems: set[str] = set()
    members: list[ArchiveMember] = []
    plan = _member_plan(images_per_archive, rng)
    # The index of an ordinary member -> the hostile members written just before it.
    planted_before: dict[int, list[_Planted]] = {}
    if oversized_member_bytes is not None:
        hostile_rng = random.Random(f"omacir-hostile/{seed}/{letter}/{images_per_archive}")
        planted = _hostile_plan(folder, letter, hostile_rng, oversized_member_bytes)
        # Spread evenly, never before the first ordinary member (a hardlink needs one to point at).
        for position, hostile in enumerate(planted):
            planted_before.setdefault(1 + position * len(plan) // len(planted), []).append(hostile)
    previous_cover = previous_name = ""  # what a hardlink planted without a target points at
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_tar_info(folder, 0, is_directory=True))
        for index in range(len(plan) + 1):
            for hostile in planted_before.get(index, []):
                linkname = hostile.linkname
                if hostile.type == tarfile.LNKTYPE and linkname is None:
                    linkname = previous_cover or previous_name
                info = _planted_tar_info(hostile, linkname)
                tar.addfile(info, io.BytesIO(hostile.data) if info.isreg() else None)
                data = hostile.data if info.isreg() else b""
                members.append(_member_truth(hostile.name, hostile.kind, data, hostile.truth or {}, linkname))
            if index == len(plan):
                break
            kind = plan[index]
            stem = f"{letter}{rng.getrandbits(60):015x}"
            while stem in used_stems:
                stem = f"{letter}{rng.getrandbits(60):015x}"
            used_stems.add(stem)
            file_name, data, truth = _make_member(kind, stem, rng, placeholder)
            member_name = f"{folder}/{file_name}"
            tar.addfile(_tar_info(member_name, len(data)), io.BytesIO(data))
            members.append(_member_truth(member_name, kind, data, truth))
            previous_name = member_name
            if kind in KEPT_KINDS:
                previous_cover = member_name
    names = [member.name for member in members]
    if len(set(names)) != len(names):  # a 60-bit name collision between ordinary and planted members
        raise RuntimeError(f"duplicate member names in {path.name}; build with another seed")
    md5, sha1, crc32 = _checksums(path)
    return ArchiveFile(path.name, path.stat().st_size, md5, sha1, crc32, tuple(members))


def _checksums(path: Path) -> tuple[str, str, str]:
    md5, sha1, crc = hashlib.md5(), hashlib.sha1(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            md5.update(chunk)
            sha1.update(chunk)
            crc = zlib.crc32(chunk, crc)
    return md5.hexdigest(), sha1.hexdigest(), f"{crc:08x}"


# --- the server ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ServedFile:
    """A file the download endpoint serves: a tar on disk or one of archive.org's small derived files."""

    name: str
    source: str
    format: str
    content_type: str
    size: int
    md5: str
    sha1: str
    crc32: str
    path: Path | None = None
    data: bytes | None = None
    listed_md5: str | None = None  # a wrong md5 to publish in the metadata instead of the true one

    def metadata_entry(self) -> dict[str, str]:
        return {
            "name": self.name,
            "source": self.source,
            "format": self.format,
            "size": str(self.size),  # archive.org publishes sizes as strings
            "md5": self.listed_md5 or self.md5,
            "sha1": self.sha1,
            "crc32": self.crc32,
            "mtime": str(FILE_MTIME),
        }

    def read(self, start: int, length: int) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data[start : start + length]
            return
        assert self.path is not None
        with self.path.open("rb") as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(STREAM_CHUNK_BYTES, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk


def _in_memory_file(name: str, source: str, format: str, content_type: str, data: bytes) -> _ServedFile:
    return _ServedFile(
        name=name,
        source=source,
        format=format,
        content_type=content_type,
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        crc32=f"{zlib.crc32(data):08x}",
        data=data,
    )


def _item_metadata(identifier: str) -> dict[str, object]:
    return {
        "identifier": identifier,
        "mediatype": "data",
        "collection": ["opensource_media"],
        "title": "One Million Audio Cover Images for Research (OMACIR), synthetic emulation",
        "description": "Album cover images split into tar archives by the first character of the file name.",
        "creator": "album_pipeline emulator",
        "publicdate": "2016-06-21 08:00:32",
        "addeddate": "2016-06-21 08:00:32",
    }


def wrong_md5_for(true_md5: str) -> str:
    """The md5 the metadata lists for a file named in ``ArchiveEmulator(wrong_md5=...)``: valid hex, not true."""
    return hashlib.md5(f"not {true_md5}".encode()).hexdigest()


def _served_files(item: OmacirItem) -> dict[str, _ServedFile]:
    tars = [
        _ServedFile(
            name=archive.name,
            source="original",
            format="Tar",
            content_type="application/x-tar",
            size=archive.size,
            md5=archive.md5,
            sha1=archive.sha1,
            crc32=archive.crc32,
            path=item.directory / archive.name,
        )
        for archive in item.archives
    ]
    meta_xml = (
        "<metadata>"
        + "".join(f"<{k}>{v}</{k}>" for k, v in _item_metadata(item.identifier).items())
        + "</metadata>"
    )
    files_xml = "<files>" + "".join(f'<file name="{t.name}" source="original"/>' for t in tars) + "</files>"
    derived = [
        _in_memory_file("__ia_thumb.jpg", "derivative", "Item Tile", "image/jpeg", placeholder_image_bytes()),
        _in_memory_file(f"{item.identifier}_meta.xml", "metadata", "Metadata", "text/xml", meta_xml.encode()),
        _in_memory_file(
            f"{item.identifier}_files.xml", "metadata", "Metadata", "text/xml", files_xml.encode()
        ),
    ]
    # Derived files first and last, so a client that takes the list at face value meets them.
    ordered = derived[:1] + tars + derived[1:]
    return {served.name: served for served in ordered}


def parse_single_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """``(first, last)`` for one satisfiable byte range, None for the whole file, "unsatisfiable" for 416.

    As RFC 9110 allows, a header that is malformed or asks for several ranges is ignored (200, whole file).
    """
    if header is None:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None or (match[1] == "" and match[2] == ""):
        return None
    if match[1] == "":  # suffix range: the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    first = int(match[1])
    if match[2] and int(match[2]) < first:  # syntactically invalid, so ignored rather than refused
        return None
    if first >= size:
        return "unsatisfiable"
    last = int(match[2]) if match[2] else size - 1
    return first, min(last, size - 1)


class ArchiveEmulator(LoopbackServer):
    """archive.org's metadata and download endpoints for one item, on 127.0.0.1."""

    name = "archive"

    def __init__(
        self,
        item: OmacirItem,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        *,
        cut_first_download_after_bytes: int | None = None,
        wrong_md5: Iterable[str] = (),
        drop_every_bytes: int | None = None,
        latency_s: float = 0.0,
    ) -> None:
        """Opt-in faults, for tests of a client's resume and verification:

        - ``cut_first_download_after_bytes`` drops the connection part-way through the first GET of each
          file (later GETs are whole);
        - ``drop_every_bytes`` drops the connection after that many body bytes of EVERY GET of a download
          (200 or 206), so a file larger than that needs several Range requests; the request log
          (``requests``, field ``range``) shows each Range header. With both, the smaller cut wins;
        - ``wrong_md5`` names files (e.g. ``album_covers_a.tar``) whose metadata entry lists a wrong md5
          (``wrong_md5_for`` of the true one); the bytes served, the ETag, sha1 and crc32 stay true;
        - ``latency_s`` delays every response, as on a slow link.
        """
        super().__init__(host, port, latency_s=latency_s)
        for name, value, least in (
            ("cut_first_download_after_bytes", cut_first_download_after_bytes, 0),
            ("drop_every_bytes", drop_every_bytes, 1),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"{name} must be an integer >= {least} or None, got {value!r}")
        self.item = item
        self._files = _served_files(item)
        wrong = [wrong_md5] if isinstance(wrong_md5, str) else list(wrong_md5)
        unknown = sorted(set(wrong) - self._files.keys())
        if unknown:
            raise ValueError(
                f"wrong_md5 names files the item does not have: {unknown}; it has {list(self._files)}"
            )
        for name in wrong:
            served = self._files[name]
            self._files[name] = replace(served, listed_md5=wrong_md5_for(served.md5))
        self._drop_every = drop_every_bytes
        self._cut_after = cut_first_download_after_bytes
        self._already_cut: set[str] = set()
        self._cut_lock = threading.Lock()
        self.add_route("GET", r"/metadata/(?P<identifier>[^/]+)/?", self._metadata)
        self.add_route(("GET", "HEAD"), r"/download/(?P<identifier>[^/]+)/(?P<file>[^/]+)", self._download)

    def not_found(self, path: str) -> Response:
        return Response(
            404, f"404 Not Found: {path}\n".encode(), {"Content-Type": "text/plain; charset=utf-8"}
        )

    def _metadata(self, request: Request) -> Response:
        if request.match["identifier"] != self.item.identifier:
            return self.not_found(request.path)
        files = list(self._files.values())
        return Response.json(
            {
                "created": FILE_MTIME + 1000,
                "d1": "127.0.0.1",
                "dir": f"/items/{self.item.identifier}",
                "files": [served.metadata_entry() for served in files],
                "files_count": len(files),
                "item_last_updated": FILE_MTIME,
                "item_size": sum(served.size for served in files),
                "metadata": _item_metadata(self.item.identifier),
                "server": f"127.0.0.1:{self.port}",
                "workable_servers": ["127.0.0.1"],
            }
        )

    def _download(self, request: Request) -> Response:
        served = self._files.get(request.match["file"])
        if request.match["identifier"] != self.item.identifier or served is None:
            return self.not_found(request.path)
        headers = {
            "Content-Type": served.content_type,
            "Accept-Ranges": "bytes",
            "ETag": f'"{served.md5}"',
        }
        byte_range = parse_single_range(request.header("range"), served.size)
        if byte_range == "unsatisfiable":
            headers["Content-Range"] = f"bytes */{served.size}"
            return Response(416, b"", headers)
        if byte_range is None:
            status, first, last = 200, 0, served.size - 1
        else:
            status, (first, last) = 206, byte_range  # type: ignore[misc]
            headers["Content-Range"] = f"bytes {first}-{last}/{served.size}"
        length = last - first + 1
        streamed_length = length
        if request.method == "GET":
            if self._drop_every is not None:
                streamed_length = min(streamed_length, self._drop_every)
            if self._should_cut(served.name):
                streamed_length = min(streamed_length, self._cut_after or 0)
        return Response(status, served.read(first, streamed_length), headers, content_length=length)

    def _should_cut(self, name: str) -> bool:
        if self._cut_after is None:
            return False
        with self._cut_lock:
            if name in self._already_cut:
                return False
            self._already_cut.add(name)
            return True
