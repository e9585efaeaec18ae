"""Extracting one OMACIR tar safely: every member checked and decoded in memory, valid ones stored by content.

Nothing is extracted to disk: members that are not plain files with plain relative names, or larger than a
cap, are refused; every other member is fully decoded under a pixel cap (decompression bombs), checked for
size and aspect ratio, and stored by content hash in the shared image store.
"""

from __future__ import annotations

import io
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from album_pipeline.data.images import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    InvalidImage,
    validate_image,
)
from album_pipeline.data.manifest import EXTRACTED_SCHEMA, assign_split
from album_pipeline.data.results import FailureLog, IngestResult, Log, frame_of, safe_log
from album_pipeline.data.storage import ImageStore, image_id_of
from album_pipeline.progress import Progress
from album_pipeline.sources.omacir import DEFAULT_MAX_MEMBER_BYTES, iter_tar_images

OMACIR = "omacir"
CONVERTED_JPEG_QUALITY = 95


@dataclass(frozen=True)
class ExtractOptions:
    # Part of the fingerprint that lets a later run reuse an extraction (its repr): a new field makes every
    # recorded extraction look stale.
    max_member_bytes: int = field(
        default=DEFAULT_MAX_MEMBER_BYTES, metadata={"doc": "Tar members larger than this are refused unread."}
    )
    max_pixels: int = field(
        default=DEFAULT_MAX_PIXELS,
        metadata={"doc": "Images with more pixels are refused (decompression bombs)."},
    )
    min_side: int = field(
        default=DEFAULT_MIN_SIDE, metadata={"doc": "Images with a shorter side are dropped as too small."}
    )
    max_aspect_ratio: float = field(
        default=DEFAULT_MAX_ASPECT_RATIO,
        metadata={"doc": "More elongated images are dropped (banners, strips)."},
    )
    convert_to_jpeg: bool = field(
        default=False,
        metadata={"doc": "Store GIF and PNG covers re-encoded as JPEG instead of as they came."},
    )

    def __post_init__(self) -> None:
        if self.max_member_bytes < 1 or self.max_pixels < 1 or self.min_side < 1:
            raise ValueError("max_member_bytes, max_pixels and min_side must be positive")


# The ingest steps share one signature shape (inputs, store, options, *, log, progress_bar) so they compose.
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
    shown = Progress(
        f"omacir: extract {archive_name}",
        tar_path.stat().st_size,
        unit="B",
        log=say,
        progress_bar=progress_bar,
        detail=lambda: f"{members:,} members read, {len(rows):,} valid",
    )

    def refused(member: str, reason: str) -> None:
        failures.add(f"{archive_name}/{member}", f"unsafe_member:{reason}")

    try:
        for member in iter_tar_images(
            tar_path, max_member_bytes=options.max_member_bytes, on_refused=refused, on_position=shown.reach
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
    except (tarfile.TarError, EOFError, OSError) as error:  # a damaged tar ends early; what was read stays
        say(f"omacir: {archive_name} could not be read to the end: {type(error).__name__}: {error}")
        failures.add(archive_name, "archive_unreadable")
    finally:
        shown.close()
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
