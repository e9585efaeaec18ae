"""The unlabelled OMACIR corpus: choose archives, download them verified, extract them safely, merge and clean.

Three steps, each usable alone (the Dagster assets call them one archive per partition):

1. ``download_archive``: resumable download (HTTP Range) to a ``.partial`` file, size and md5 verified before
   the file takes its final name, after a free-disk check that gives the numbers.
2. ``extract_archive``: the tar is streamed member by member and nothing is extracted to disk: members that
   are not plain files with plain relative names, or larger than a cap, are refused; every other member is
   fully decoded under a pixel cap (decompression bombs), checked for size and aspect ratio, and stored by
   content hash in the shared image store. The result lists every valid member, copies included, with a
   perceptual hash of its picture; everything dropped is a failure row with its reason.
3. ``merge_extracted``: across archives, a picture seen ``placeholder_min_repeats`` times or more (the same
   bytes, or a near-identical re-encoding: ``album_pipeline.data.near_duplicates``) is a dead-link
   placeholder and gives no row; other exact copies keep their first occurrence; ``max_images`` keeps the
   first images in archive and member order. The result is the unlabelled manifest.

One corrupt archive never stops the others: ``ingest_omacir`` (all three steps over several archives) records
it and goes on. Progress goes to the log (and to a progress bar on a terminal).
"""

from __future__ import annotations

import io
import shutil
import tarfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image
from tqdm import tqdm

from album_pipeline.data.dedup import keep_one_per_picture
from album_pipeline.data.images import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    InvalidImage,
    validate_image,
)
from album_pipeline.data.manifest import (
    DEFAULT_SPLIT_FRACTIONS,
    EXTRACTED_SCHEMA,
    MANIFEST_SCHEMA,
    assign_split,
)
from album_pipeline.data.near_duplicates import near_duplicate_groups
from album_pipeline.data.overlap import overlapping
from album_pipeline.data.results import FailureLog, IngestResult, Log, frame_of, safe_log
from album_pipeline.data.storage import ImageStore, image_id_of
from album_pipeline.sources.http import SourceError
from album_pipeline.sources.omacir import (
    DEFAULT_MAX_MEMBER_BYTES,
    ArchiveChecksumError,
    ArchiveFile,
    OmacirClient,
    iter_tar_images,
)

OMACIR = "omacir"
PROGRESS_EVERY = 1000  # members between progress lines in the log
CONVERTED_JPEG_QUALITY = 95


class InsufficientDiskSpace(SourceError):
    """Not enough free disk for what a step is about to write; the message gives the numbers."""


@dataclass(frozen=True)
class ExtractOptions:
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES  # larger members are refused unread
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb cap
    min_side: int = DEFAULT_MIN_SIDE
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    convert_to_jpeg: bool = False  # store GIF/PNG covers re-encoded as JPEG instead of as they came

    def __post_init__(self) -> None:
        if self.max_member_bytes < 1 or self.max_pixels < 1 or self.min_side < 1:
            raise ValueError("max_member_bytes, max_pixels and min_side must be positive")


# -- choosing and downloading ---------------------------------------------------------------------------


def select_archives(
    available: Sequence[ArchiveFile],
    wanted: Sequence[str] | None = None,
    *,
    max_images: int | None = None,
    bytes_per_image: int = 150_000,
) -> list[ArchiveFile]:
    """The archives to ingest: those named (``album_covers_s.tar`` or just ``s``), in the order given; or,
    when none are named, the listed ones in order until about ``max_images`` images are covered at
    ``bytes_per_image`` (OMACIR averages ~148 KB an image); or all of them."""
    if wanted:
        by_name = {archive.name: archive for archive in available}
        chosen, unknown = [], []
        for name in wanted:
            full = name if name in by_name else f"album_covers_{name}.tar"
            (chosen if full in by_name else unknown).append(by_name.get(full, name))
        if unknown:
            raise ValueError(f"unknown OMACIR archives {unknown}; the item has: {', '.join(sorted(by_name))}")
        return chosen
    if max_images is None:
        return list(available)
    chosen, covered = [], 0
    for archive in available:
        if covered >= max_images:
            break
        chosen.append(archive)
        covered += max(1, (archive.size or 0) // bytes_per_image)
    return chosen


def ensure_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Raise InsufficientDiskSpace unless ``folder``'s file system has ``needed_bytes`` free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise InsufficientDiskSpace(
            f"{what} needs {needed_bytes / 1e9:,.2f} GB but only {free / 1e9:,.2f} GB is free under {probe}; "
            "free some space, point ALBUM_PIPELINE_HOME at a bigger disk, or ingest fewer archives"
        )


def space_needed(archive: ArchiveFile, download_dir: Path, *, local: bool) -> int:
    """Bytes an archive still needs on disk: what is left to download plus about as much again for the
    images it holds (stored by content, so the two are similar)."""
    size = archive.size or 0
    if local:
        return size
    partial = Path(download_dir) / f"{archive.name}.partial"
    final = Path(download_dir) / archive.name
    on_disk = final.stat().st_size if final.exists() else partial.stat().st_size if partial.exists() else 0
    return max(0, size - on_disk) + size


def download_archive(
    client: OmacirClient,
    archive: ArchiveFile,
    download_dir: Path,
    *,
    log: Log | None = None,
    progress_bar: bool | None = None,
) -> tuple[Path, int]:
    """The verified archive and the bytes fetched over the network for it (0 when already complete).

    Checks free disk space first. An interrupted download resumes from its ``.partial`` file; a size or md5
    mismatch deletes the bad file and raises ArchiveChecksumError, leaving nothing half-written.
    """
    say = safe_log(log)
    download_dir = Path(download_dir)
    ensure_free_space(
        download_dir,
        space_needed(archive, download_dir, local=client.local_dir is not None),
        f"{archive.name} ({(archive.size or 0) / 1e9:,.2f} GB, then its images)",
    )
    partial = download_dir / f"{archive.name}.partial"
    previous = [partial.stat().st_size if partial.exists() else 0]
    fetched = [0]
    last_reported = [-1]
    bar = tqdm(
        total=archive.size, initial=previous[0], unit="B", unit_scale=True, desc=archive.name,
        disable=_bar_disabled(progress_bar), leave=False,
    )  # fmt: skip

    def progress(done: int, total: int | None) -> None:
        # ``done`` counts bytes on disk; a restart from zero (server ignored Range) makes it drop.
        step = done - previous[0] if done >= previous[0] else done
        fetched[0] += step
        previous[0] = done
        bar.update(step)
        if total:
            tenth = done * 10 // total
            if tenth > last_reported[0]:
                last_reported[0] = tenth
                say(f"omacir: {archive.name}: {done / 1e6:,.1f} of {total / 1e6:,.1f} MB downloaded")

    try:
        path = client.download(archive, download_dir, progress=progress)
    finally:
        bar.close()
    return path, fetched[0]


# -- extracting -----------------------------------------------------------------------------------------


def extract_archive(
    tar_path: Path,
    archive_name: str,
    store: ImageStore,
    options: ExtractOptions | None = None,
    *,
    log: Log | None = None,
    progress_bar: bool | None = None,
) -> IngestResult:
    """Every valid image member of one tar (copies included), stored by content; failures for the rest.

    Rows follow EXTRACTED_SCHEMA (the unlabelled manifest's columns plus the picture's perceptual hashes) in
    tar order.
    A tar that ends early (truncated, damaged) keeps the members read before the damage and adds the
    failure ``archive_unreadable``.
    """
    options = options or ExtractOptions()
    say = safe_log(log)
    failures = FailureLog(OMACIR)
    rows: list[dict[str, Any]] = []
    verdicts: dict[str, dict[str, Any] | str] = {}  # sha256 -> stored facts, or the rejection reason
    started = time.monotonic()
    members = 0
    tar_path = Path(tar_path)
    bar = tqdm(
        total=tar_path.stat().st_size, unit="B", unit_scale=True, desc=f"extract {archive_name}",
        disable=_bar_disabled(progress_bar), leave=False,
    )  # fmt: skip

    def refused(member: str, reason: str) -> None:
        failures.add(f"{archive_name}/{member}", f"unsafe_member:{reason}")

    position = [0]

    def advance(offset: int) -> None:
        bar.update(offset - position[0])
        position[0] = offset

    try:
        for member in iter_tar_images(
            tar_path, max_member_bytes=options.max_member_bytes, on_refused=refused, on_position=advance
        ):
            members += 1
            source_id = f"{archive_name}/{member.name}"
            verdict = _verdict(member.data, store, options, verdicts)
            if isinstance(verdict, str):
                failures.add(source_id, verdict)
            else:
                rows.append(
                    {**verdict, "source": OMACIR, "source_id": source_id, "genre": None,
                     "archive": archive_name, "member": member.name}
                )  # fmt: skip
            if members % PROGRESS_EVERY == 0:
                say(f"omacir: {archive_name}: {members:,} members read, {len(rows):,} valid images")
    except (tarfile.TarError, EOFError, OSError) as error:  # a damaged tar ends early; what was read stays
        say(f"omacir: {archive_name} could not be read to the end: {type(error).__name__}: {error}")
        failures.add(archive_name, "archive_unreadable")
    finally:
        bar.close()
    seconds = time.monotonic() - started
    size = tar_path.stat().st_size
    stats = {
        "archive": archive_name,
        "members": members,
        "valid_members": len(rows),
        "distinct_images": len({row["image_id"] for row in rows}),
        "failures": len(failures.rows),
        "failures_by_reason": failures.by_reason(),
        "bytes": size,
        "seconds": round(seconds, 3),
        "images_per_second": round(members / seconds, 1) if seconds else None,
        "mb_per_second": round(size / 1e6 / seconds, 1) if seconds else None,
    }
    say(
        f"omacir: {archive_name}: {members:,} members in {seconds:.1f}s ({stats['mb_per_second']} MB/s), "
        f"{len(rows):,} valid, failures {stats['failures_by_reason']}"
    )
    return IngestResult(rows=frame_of(rows, EXTRACTED_SCHEMA), failures=failures.frame(), stats=stats)


def _verdict(
    data: bytes, store: ImageStore, options: ExtractOptions, verdicts: dict[str, dict[str, Any] | str]
) -> dict[str, Any] | str:
    """The stored image's facts for a valid member, else the rejection reason (each distinct bytes once)."""
    key = image_id_of(data)
    if key in verdicts:
        return verdicts[key]
    try:
        info = validate_image(
            data, min_side=options.min_side, max_pixels=options.max_pixels,
            max_aspect_ratio=options.max_aspect_ratio, with_picture_hash=True,
        )  # fmt: skip
    except InvalidImage as invalid:
        verdicts[key] = invalid.reason
        return invalid.reason
    image_format, extension = info.format, info.extension
    if options.convert_to_jpeg and info.format in ("PNG", "GIF"):
        data = _as_jpeg(data)
        image_format, extension = "JPEG", "jpg"
    stored = store.put(data, extension)
    verdict = {
        "image_id": stored.image_id,
        "path": stored.path,
        "width": info.width,
        "height": info.height,
        "format": image_format,
        "split": assign_split(stored.image_id),
        "picture_hash": info.picture_hash,
    }
    verdicts[key] = verdict
    return verdict


def _as_jpeg(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")  # a GIF's first frame; transparency onto black
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=CONVERTED_JPEG_QUALITY)
    return buffer.getvalue()


def _bar_disabled(progress_bar: bool | None) -> bool | None:
    # None lets tqdm decide: shown on a terminal, silent in logs and under Dagster.
    return None if progress_bar is None else not progress_bar


# -- merging --------------------------------------------------------------------------------------------


def merge_extracted(
    tables: Sequence[pd.DataFrame],
    *,
    max_images: int | None = None,
    placeholder_min_repeats: int = 3,
    split_fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
    exclude: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The unlabelled manifest from per-archive extraction tables (in archive order), its failures, stats.

    ``exclude`` (``image_id`` and ``picture_hash`` of the labelled images) removes those images and their
    near-duplicates first (``overlaps_labeled``), so pretraining never sees a test cover.

    A picture with ``placeholder_min_repeats`` or more copies, counting near-identical ones, is a placeholder:
    all its rows become ``placeholder`` failures. Other pictures keep one copy (``dedup.keep_one_per_picture``:
    the largest, then the first), the rest are ``duplicate`` or ``near_duplicate`` failures.
    ``max_images`` keeps the first images; the rest are left out, not failures.
    """
    if placeholder_min_repeats < 2:
        raise ValueError(f"placeholder_min_repeats must be at least 2, got {placeholder_min_repeats}")
    if max_images is not None and max_images < 0:
        raise ValueError(f"max_images must be non-negative, got {max_images}")
    frames = [table for table in tables if len(table)]
    failures = FailureLog(OMACIR)
    if not frames:
        empty = {"rows": 0, "placeholder_pictures": 0, "overlaps_labeled": 0}
        return frame_of([], MANIFEST_SCHEMA), failures.frame(), empty
    rows = pd.concat(frames, ignore_index=True)
    overlaps = 0
    if exclude is not None and len(exclude):
        labelled = overlapping(rows, exclude)
        overlaps = int(labelled.sum())
        for source_id in rows.loc[labelled, "source_id"]:
            failures.add(source_id, "overlaps_labeled")
        rows = rows[~labelled]
    groups = near_duplicate_groups(rows["picture_hash"])
    group = rows["picture_hash"].map(groups)
    copies = group.map(group.value_counts())
    placeholder = copies >= placeholder_min_repeats
    placeholder_pictures = int(group[placeholder].nunique())
    for source_id in rows.loc[placeholder, "source_id"]:
        failures.add(source_id, "placeholder")
    deduplicated = keep_one_per_picture(rows[~placeholder], groups=groups)
    for source_id, reason in zip(
        deduplicated.dropped["source_id"], deduplicated.dropped["reason"], strict=True
    ):
        failures.add(source_id, reason)
    rows = deduplicated.kept
    left_out = 0
    if max_images is not None and len(rows) > max_images:
        left_out = len(rows) - max_images
        rows = rows.iloc[:max_images]
    manifest = rows.assign(genres=None, album_name=None, artist=None, released=None, fetched_at=pd.NaT)[
        MANIFEST_SCHEMA.names
    ].reset_index(drop=True)
    # From the picture, not the bytes, so that a recrawl keeping another copy keeps the split.
    manifest["split"] = [assign_split(key, split_fractions) for key in manifest["duplicate_group"]]
    stats = {
        "rows": len(manifest),
        "placeholder_pictures": placeholder_pictures,
        "overlaps_labeled": overlaps,
        "left_out_by_max_images": left_out,
        "rows_per_archive": manifest["archive"].value_counts().to_dict(),
    }
    return manifest, failures.frame(), stats


# -- all three, for several archives --------------------------------------------------------------------


def ingest_omacir(
    client: OmacirClient,
    store: ImageStore,
    download_dir: Path,
    *,
    archives: Sequence[str] | None = None,
    max_images: int | None = None,
    placeholder_min_repeats: int = 3,
    options: ExtractOptions | None = None,
    log: Log | None = None,
    progress_bar: bool | None = None,
) -> IngestResult:
    """Download, extract and merge the chosen archives (one corrupt archive is recorded, not fatal)."""
    say = safe_log(log)
    started = time.monotonic()
    selected = select_archives(client.list_archives(), archives, max_images=max_images)
    tables, failure_tables = [], []
    bytes_downloaded = members_read = 0
    for archive in selected:
        try:
            path, fetched = download_archive(
                client, archive, download_dir, log=say, progress_bar=progress_bar
            )
        except ArchiveChecksumError as error:
            say(f"omacir: {archive.name} failed verification: {error}")
            checksum = FailureLog(OMACIR)
            checksum.add(archive.name, "archive_checksum_mismatch")
            failure_tables.append(checksum.frame())
            continue
        bytes_downloaded += fetched
        extracted = extract_archive(path, archive.name, store, options, log=say, progress_bar=progress_bar)
        tables.append(extracted.rows)
        failure_tables.append(extracted.failures)
        members_read += extracted.stats["members"]
    manifest, merge_failures, stats = merge_extracted(
        tables, max_images=max_images, placeholder_min_repeats=placeholder_min_repeats
    )
    failures = pd.concat([*failure_tables, merge_failures], ignore_index=True)
    stats.update(
        archives=[archive.name for archive in selected],
        members_read=members_read,
        failures=len(failures),
        failures_by_reason=dict(Counter(failures["reason"])),
        bytes_downloaded=bytes_downloaded,
        seconds=round(time.monotonic() - started, 3),
    )
    return IngestResult(rows=manifest, failures=failures, stats=stats)
