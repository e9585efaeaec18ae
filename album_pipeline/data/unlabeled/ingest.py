"""Ingesting chosen OMACIR archives: each downloaded, verified and extracted once, several at a time.

An archive's extraction is recorded in three files (``layout.extracted``): its valid members, its failures
and, written last, a summary whose fingerprint (md5, size, extraction options) lets a later run reuse it
without downloading the archive again. One failed archive never hides the others' results: every archive is
attempted, and the failures are raised together at the end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from album_pipeline.atomic import atomic_path
from album_pipeline.data.manifest import (
    EXTRACTED_SCHEMA,
    FAILURES_SCHEMA,
    UnreadableTableError,
    read_manifest,
    write_table,
)
from album_pipeline.data.results import Log, ordered_parallel_map, safe_log
from album_pipeline.data.storage import ImageStore
from album_pipeline.data.unlabeled.archives import chosen_archives, download_archive
from album_pipeline.data.unlabeled.extraction import OMACIR, ExtractOptions, extract_archive
from album_pipeline.layout import HomeLayout
from album_pipeline.recovery import set_aside
from album_pipeline.sources.http import SourceError
from album_pipeline.sources.omacir import ArchiveChecksumError, ArchiveFile, OmacirClient


@dataclass(frozen=True)
class IngestOptions:
    delete_archive_after_extract: bool = field(
        default=False, metadata={"doc": "Delete a downloaded tar once its images are extracted and recorded."}
    )
    parallel_archives: int = field(
        default=2, metadata={"doc": "Archives downloaded and extracted at once when one run handles several."}
    )

    def __post_init__(self) -> None:
        if self.parallel_archives < 1:
            raise ValueError(f"parallel_archives must be at least 1, got {self.parallel_archives}")


def ingest_archives(
    client: OmacirClient,
    layout: HomeLayout,
    names: Sequence[str] | None = None,
    extract: ExtractOptions | None = None,
    options: IngestOptions | None = None,
    *,
    log: Log | None = None,
    warn: Log | None = None,
    progress_bar: bool | None = None,
) -> list[dict[str, Any]]:
    """Each archive's extraction stats plus ``bytes_downloaded``, in the order of ``names`` (None: every
    archive ``choose_archives`` recorded). Raises SourceError naming every archive that failed, once the
    others are extracted and recorded. ``warn`` gets the warnings (a record set aside); ``log`` the rest."""
    chosen = chosen_archives(layout, log=warn)
    names = list(names or chosen)
    unknown = [name for name in names if name not in chosen]
    if unknown:
        raise ValueError(
            f"archives {unknown} are not among those omacir_archives chose ({sorted(chosen)}); materialize "
            "omacir_archives with them in its `archives` config first"
        )
    options = options or IngestOptions()
    store = ImageStore(layout.root)

    def ingest(name: str) -> dict[str, Any]:
        return ingest_archive(
            client,
            store,
            layout,
            chosen[name],
            extract,
            options,
            log=log,
            warn=warn,
            progress_bar=progress_bar,
        )

    workers = max(1, min(options.parallel_archives, len(names)))
    outcomes = dict(ordered_parallel_map(ingest, names, workers))
    failed = {name: outcome for name, outcome in outcomes.items() if isinstance(outcome, BaseException)}
    if failed:
        lines = "\n".join(f"- {name}: {error}" for name, error in failed.items())
        raise SourceError(
            f"{len(failed)} of {len(names)} OMACIR archives failed (the others are extracted and kept):\n{lines}"
        )
    return [outcomes[name] for name in names]


# The ingest steps share one signature shape (inputs, store, options, *, log, progress_bar) so they compose.
def ingest_archive(
    client: OmacirClient,
    store: ImageStore,
    layout: HomeLayout,
    archive: ArchiveFile,
    extract: ExtractOptions | None = None,
    options: IngestOptions | None = None,
    *,
    log: Log | None = None,
    warn: Log | None = None,
    progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Download and extract one archive, unless its extraction is already recorded for these bytes."""
    say = safe_log(log)
    extract = extract or ExtractOptions()
    options = options or IngestOptions()
    summary_path = layout.extracted_summary(OMACIR, archive.name)
    fingerprint = {"md5": archive.md5, "size": archive.size, "options": repr(extract)}
    recorded = recorded_extraction(layout, archive.name, fingerprint, log=warn and safe_log(warn))
    if recorded is not None:
        say(f"omacir: {archive.name} already extracted; reusing it")
        return {**recorded, "bytes_downloaded": 0}
    try:
        path, fetched = download_archive(
            client, archive, layout.omacir_downloads_dir, log=say, progress_bar=progress_bar
        )
    except ArchiveChecksumError as error:
        raise ArchiveChecksumError(f"{error} (nothing from this archive was kept)") from None
    extracted = extract_archive(path, archive.name, store, extract, log=say, progress_bar=progress_bar)
    write_table(extracted.rows, layout.extracted_images(OMACIR, archive.name), EXTRACTED_SCHEMA)
    write_table(extracted.failures, layout.extracted_failures(OMACIR, archive.name), FAILURES_SCHEMA)
    with atomic_path(summary_path) as tmp:  # written last: its presence means the archive is fully recorded
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "stats": extracted.stats}, indent=2))
    if options.delete_archive_after_extract and client.local_dir is None:
        path.unlink(missing_ok=True)
        say(f"omacir: deleted {path} (its images are extracted and recorded)")
    return {**extracted.stats, "bytes_downloaded": fetched}


def recorded_extraction(
    layout: HomeLayout, name: str, fingerprint: dict[str, Any], *, log: Log | None = None
) -> dict[str, Any] | None:
    """The stats of an extraction recorded for these bytes and options, if its files all load; else None.

    The record is a cache: a summary or table that no longer loads is set aside (``recovery.set_aside``) and
    the archive extracted again, so that a damaged file never blocks its own rebuild.
    """
    summary_path = layout.extracted_summary(OMACIR, name)
    tables = (layout.extracted_images(OMACIR, name), layout.extracted_failures(OMACIR, name))
    if not summary_path.exists():
        return None
    try:
        summary = json.loads(summary_path.read_text())
        stats = summary["stats"]
        matches = summary["fingerprint"] == fingerprint and isinstance(stats, dict)
    except (OSError, ValueError, KeyError, TypeError) as error:
        set_aside(summary_path, f"not an extraction summary: {type(error).__name__}: {error}", log)
        return None
    if not matches or not all(path.exists() for path in tables):
        return None
    for path in tables:
        try:
            read_manifest(path)  # in full: the merge reads it next, and a damaged page is not in the footer
        except UnreadableTableError as error:
            set_aside(path, error.reason, log)
            return None
    return stats
