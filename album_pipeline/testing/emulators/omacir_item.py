"""Builds the synthetic OMACIR item ``audio-covers``: deterministic tars on disk and their ground truth.

``OmacirItem.build`` writes tars ``album_covers_{letter}.tar`` (the members are described in
``album_pipeline.testing.emulators.omacir_members``), checksums them as archive.org publishes, and caches the
build under a key of its parameters; ``ArchiveEmulator`` (``album_pipeline.testing.emulators.archive``) serves
them.
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
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from album_pipeline.profiles import DEMO_ARCHIVE_LETTERS, DEMO_IMAGES_PER_ARCHIVE
from album_pipeline.testing.emulators.omacir_members import (
    DEFAULT_OVERSIZED_MEMBER_BYTES,
    KEPT_KINDS,
    Planted,
    dead_link_placeholder_jpeg,
    hostile_plan,
    make_member,
    member_plan,
)

ITEM_IDENTIFIER = "audio-covers"
MIN_IMAGES_PER_ARCHIVE = 10
# Bump when the member mix or encoding changes, so cached builds from older code are not reused.
BUILD_FORMAT_VERSION = 1
# Bump when the planted hostile members change; it is part of the cache key of hostile builds only.
HOSTILE_FORMAT_VERSION = 1
GROUND_TRUTH_FILE = "ground_truth.json"
# Fixed timestamps keep the tars byte-identical across builds.
MEMBER_MTIME = 1_466_000_000


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
        letters: tuple[str, ...] | list[str] = DEMO_ARCHIVE_LETTERS,
        images_per_archive: int = DEMO_IMAGES_PER_ARCHIVE,
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


def _tar_info(name: str, size: int, is_directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if is_directory else size
    info.type = tarfile.DIRTYPE if is_directory else tarfile.REGTYPE
    info.mode = 0o755 if is_directory else 0o644
    info.mtime = MEMBER_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _planted_tar_info(planted: Planted, linkname: str | None) -> tarfile.TarInfo:
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
    placeholder = dead_link_placeholder_jpeg()
    folder = path.stem
    used_stems: set[str] = set()
    members: list[ArchiveMember] = []
    plan = member_plan(images_per_archive, rng)
    # The index of an ordinary member -> the hostile members written just before it.
    planted_before: dict[int, list[Planted]] = {}
    if oversized_member_bytes is not None:
        hostile_rng = random.Random(f"omacir-hostile/{seed}/{letter}/{images_per_archive}")
        planted = hostile_plan(folder, letter, hostile_rng, oversized_member_bytes)
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
            file_name, data, truth = make_member(kind, stem, rng, placeholder)
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
