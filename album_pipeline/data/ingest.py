"""Ingest of the unlabelled OMACIR corpus: download (verified), stream, validate and store its images.

It never raises for one bad image or one corrupt archive (that becomes a failure row with a reason) but does
raise for problems that make the whole run pointless (unreachable service, unknown archive name). Labelled
covers are crawled by ``album_pipeline.data.labeled``.
"""

from __future__ import annotations

import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from album_pipeline.data.images import InvalidImage, validate_image
from album_pipeline.data.manifest import UNLABELED_SCHEMA, assign_split
from album_pipeline.data.results import FailureLog, IngestResult, Log, frame_of, safe_log
from album_pipeline.data.storage import ImageStore, image_id_of
from album_pipeline.sources.omacir import ArchiveChecksumError, ArchiveFile, OmacirClient, iter_tar_images

PROGRESS_EVERY = 250  # images between progress lines
OMACIR = "omacir"


def ingest_omacir(
    client: OmacirClient,
    store: ImageStore,
    download_dir: Path,
    *,
    archives: Sequence[str] | None = None,
    max_images: int | None = None,
    placeholder_min_repeats: int = 3,
    log: Log | None = None,
) -> IngestResult:
    """Download (verified), stream, validate and store OMACIR images; drop repeated placeholders.

    An image whose exact bytes appear ``placeholder_min_repeats`` times or more among the members read is a
    dead-link placeholder: none of its copies becomes a row and every copy is a failure row ``placeholder``.
    Fewer repeats keep the first copy; the others are ``duplicate`` rows. ``max_images`` caps the distinct
    valid images read (placeholders found among them are still dropped afterwards).
    """
    if placeholder_min_repeats < 2:
        raise ValueError(f"placeholder_min_repeats must be at least 2, got {placeholder_min_repeats}")
    if max_images is not None and max_images < 0:
        raise ValueError(f"max_images must be non-negative, got {max_images}")
    say = safe_log(log)
    started = time.monotonic()
    selected = _select_archives(client.list_archives(), archives)
    failures = FailureLog(OMACIR)
    candidates: dict[str, dict[str, Any]] = {}  # image_id -> row of its first valid copy
    copies: dict[str, list[str]] = defaultdict(list)  # image_id -> source ids of every valid copy
    rejected: dict[str, str] = {}  # image_id -> reason, so repeated bad bytes are decoded once
    per_archive: dict[str, dict[str, int]] = {}
    bytes_downloaded = 0
    members_read = 0

    for archive in selected:
        if max_images is not None and len(candidates) >= max_images:
            break
        try:
            path, fetched = _download_archive(client, archive, Path(download_dir), say)
        except ArchiveChecksumError as error:
            # One corrupt archive is that archive's problem; an unreachable service (raised) is everyone's.
            say(f"omacir: {archive.name} failed verification: {error}")
            failures.add(archive.name, "archive_checksum_mismatch")
            continue
        bytes_downloaded += fetched
        counts = per_archive.setdefault(archive.name, {"members": 0, "valid": 0})

        def refused(member: str, reason: str, archive_name: str = archive.name) -> None:
            failures.add(f"{archive_name}/{member}", f"unsafe_member:{reason}")

        try:
            for member in iter_tar_images(path, on_refused=refused):
                members_read += 1
                counts["members"] += 1
                rejection = _add_member(
                    store, archive.name, member.name, member.data, candidates, copies, rejected
                )
                if rejection is None:
                    counts["valid"] += 1
                else:
                    failures.add(f"{archive.name}/{member.name}", rejection)
                if members_read % PROGRESS_EVERY == 0:
                    say(f"omacir: {members_read} members read, {len(candidates)} distinct valid images")
                if max_images is not None and len(candidates) >= max_images:
                    break
        except (tarfile.TarError, EOFError) as error:  # a damaged archive ends early; the run goes on
            say(f"omacir: {archive.name} could not be read to the end: {type(error).__name__}: {error}")
            failures.add(archive.name, "archive_unreadable")

    rows = []
    placeholder_ids = 0
    for image_id, row in candidates.items():
        sources = copies[image_id]
        if len(sources) >= placeholder_min_repeats:
            placeholder_ids += 1
            for source_id in sources:
                failures.add(source_id, "placeholder")
            continue
        rows.append(row)
        for source_id in sources[1:]:
            failures.add(source_id, "duplicate")

    seconds = time.monotonic() - started
    rows_per_archive = Counter(row["archive"] for row in rows)
    stats = {
        "archives": [a.name for a in selected],
        "members_read": members_read,
        "rows": len(rows),
        "rows_per_archive": {name: rows_per_archive.get(name, 0) for name in per_archive},
        "members_per_archive": {name: counts["members"] for name, counts in per_archive.items()},
        "placeholder_images": placeholder_ids,
        "failures": len(failures.rows),
        "failures_by_reason": failures.by_reason(),
        "bytes_downloaded": bytes_downloaded,
        "seconds": round(seconds, 3),
    }
    say(
        f"omacir: done in {seconds:.1f}s: {len(rows)} images from {members_read} members, "
        f"{placeholder_ids} placeholders, {len(failures.rows)} failures {stats['failures_by_reason']}"
    )
    return IngestResult(rows=frame_of(rows, UNLABELED_SCHEMA), failures=failures.frame(), stats=stats)


def _select_archives(available: list[ArchiveFile], wanted: Sequence[str] | None) -> list[ArchiveFile]:
    """The archives to ingest: all, or those named (``album_covers_s.tar`` or just its letter ``s``)."""
    if wanted is None:
        return available
    by_name = {a.name: a for a in available}
    selected, unknown = [], []
    for name in wanted:
        full = name if name in by_name else f"album_covers_{name}.tar"
        if full in by_name:
            selected.append(by_name[full])
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"unknown OMACIR archives {unknown}; available: {', '.join(sorted(by_name))}")
    return selected


def _download_archive(
    client: OmacirClient, archive: ArchiveFile, download_dir: Path, say: Log
) -> tuple[Path, int]:
    """The verified archive and the bytes fetched over the network for it (0 when already complete)."""
    partial = download_dir / f"{archive.name}.partial"
    previous = [partial.stat().st_size if partial.exists() else 0]
    fetched = [0]
    last_reported = [-1]

    def progress(done: int, total: int | None) -> None:
        # ``done`` counts bytes on disk; a restart from zero (server ignored Range) makes it drop.
        fetched[0] += done - previous[0] if done >= previous[0] else done
        previous[0] = done
        if total:
            tenth = done * 10 // total
            if tenth > last_reported[0]:
                last_reported[0] = tenth
                say(f"omacir: {archive.name}: {done / 1e6:.1f} of {total / 1e6:.1f} MB")

    path = client.download(archive, download_dir, progress=progress)
    return path, fetched[0]


def _add_member(
    store: ImageStore,
    archive: str,
    member: str,
    data: bytes,
    candidates: dict[str, dict[str, Any]],
    copies: dict[str, list[str]],
    rejected: dict[str, str],
) -> str | None:
    """Validate and store one member: None when it is a valid image (new or a repeat), else the reason."""
    image_id = image_id_of(data)
    source_id = f"{archive}/{member}"
    if image_id in candidates:
        copies[image_id].append(source_id)
        return None
    if image_id in rejected:
        return rejected[image_id]
    try:
        info = validate_image(data)
    except InvalidImage as invalid:
        rejected[image_id] = invalid.reason
        return invalid.reason
    stored = store.put(data, info.extension)
    copies[image_id].append(source_id)
    candidates[image_id] = {
        "image_id": stored.image_id,
        "path": stored.path,
        "source": OMACIR,
        "source_id": source_id,
        "genre": None,
        "width": info.width,
        "height": info.height,
        "format": info.format,
        "split": assign_split(stored.image_id),
        "archive": archive,
        "member": member,
    }
    return None
