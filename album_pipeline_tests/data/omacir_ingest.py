"""The OMACIR ingest as the pipeline runs it: the core calls of its three assets, one after the other."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from album_pipeline.data.results import IngestResult, Log
from album_pipeline.data.unlabeled import (
    ArchiveSelection,
    ExtractOptions,
    MergeOptions,
    build_unlabeled_manifest,
    choose_archives,
    ingest_archives,
)
from album_pipeline.layout import HomeLayout
from album_pipeline.sources.omacir import OmacirClient


def ingest_omacir(
    client: OmacirClient,
    home: Path,
    *,
    archives: Sequence[str] = (),
    max_images: int | None = MergeOptions.max_images,
    extract: ExtractOptions | None = None,
    log: Log | None = None,
    warn: Log | None = None,
) -> IngestResult:
    """omacir_archives, omacir_archive_images (unpartitioned) and unlabeled_manifest into ``home``: the
    manifest, its failures, and the merge's stats with ``bytes_downloaded`` added."""
    layout = HomeLayout(home)
    choose_archives(client, layout, ArchiveSelection(archives=tuple(archives)))
    ingested = ingest_archives(client, layout, extract=extract, log=log, warn=warn)
    merged = build_unlabeled_manifest(layout, MergeOptions(max_images=max_images), log=log)
    stats = {**merged.stats, "bytes_downloaded": sum(archive["bytes_downloaded"] for archive in ingested)}
    return IngestResult(rows=merged.manifest, failures=merged.failures, stats=stats)
