"""Labelled covers, the crawl machinery every source shares: fetch, validate and store one cover per album.

Every source (``napster_covers``, ``musicbrainz_covers``) turns its catalogue into ``CoverCandidate``s: an
album, the classes it landed in (see ``album_pipeline.genres`` for the policy) and the URL of its cover.
``crawl_covers`` does the rest the same way for all of them:

- it asks the crawl state (``CrawlState``) first, so a recrawl or a rerun after a kill fetches only what is
  new and never downloads a stored image twice;
- downloads run in parallel over pooled connections, each validated before it is stored (status and content
  type by the client, then magic bytes, a full decode under a pixel cap and a minimum size);
- one bad item becomes a failure row with a reason and never fails the run, but a source that keeps refusing
  stops the crawl with a clear error (what was fetched stays recorded);
- the same bytes served for many albums are a placeholder and give no row; within a class an image appears
  once (the first album by id keeps it).

The labelled manifest built from the sources' crawl tables is ``album_pipeline.data.labeled``'s job.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from album_pipeline.data.crawl_state import MISSING, REJECTED, STORED, CrawlState, Fetch
from album_pipeline.data.images import InvalidImage, validate_image
from album_pipeline.data.manifest import (
    CRAWL_SCHEMA,
    DEFAULT_SPLIT_FRACTIONS,
    UnreadableTableError,
    assign_split,
    read_manifest,
)
from album_pipeline.data.results import (
    FailureLog,
    IngestResult,
    Log,
    frame_of,
    ordered_parallel_map,
    safe_log,
)
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import GenreClass, validate_genre_map
from album_pipeline.progress import Progress
from album_pipeline.recovery import set_aside
from album_pipeline.sources.http import (
    BodyError,
    NoImageError,
    SourceAuthError,
    SourceError,
    SourceUnavailableError,
    TooLargeError,
    UntrustedURLError,
)

# Reasons that say a source has no cover for an album: recorded, but not failures of the crawl.
NOT_FAILURES = frozenset({"no_images", "no_cover_art"})


@dataclass
class CoverCandidate:
    source_id: str
    url: str | None  # None when the source offers no image; ``missing_reason`` says why
    genre: str  # the training class
    genres: list[str]  # every class the album landed in, in class order
    album_name: str | None = None
    artist: str | None = None
    released: str | None = None
    missing_reason: str = "no_images"


@dataclass(frozen=True)
class CrawlOptions:
    """How any source's covers are fetched, validated and kept (each source's options add its own)."""

    download_workers: int = field(
        default=8, metadata={"doc": "Concurrent image downloads over pooled connections."}
    )
    min_stored_side: int = field(
        default=64,
        metadata={"doc": "Covers with a side under this many pixels are rejected (training is 64x64)."},
    )
    placeholder_min_albums: int = field(
        default=3,
        metadata={"doc": "The same bytes served for this many albums are a 'no cover' placeholder: dropped."},
    )
    recheck_missing: bool = field(
        default=False,
        metadata={
            "doc": "Fetch again albums recorded as rejected or without a cover (a recrawl skips them)."
        },
    )
    max_consecutive_unavailable: int = field(
        default=50,
        metadata={
            "doc": "After this many downloads in a row find the image host unreachable, the crawl stops "
            "(keeping what it stored) instead of failing every remaining album."
        },
    )
    # The crawl table's provisional split; the labelled manifest assigns the final one per duplicate group.
    split_fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLIT_FRACTIONS))

    def __post_init__(self) -> None:
        if self.download_workers < 1:
            raise ValueError(f"download_workers must be at least 1, got {self.download_workers}")
        if self.placeholder_min_albums < 2:
            raise ValueError(f"placeholder_min_albums must be at least 2, got {self.placeholder_min_albums}")
        if self.max_consecutive_unavailable < 1:
            raise ValueError("max_consecutive_unavailable must be at least 1")


# Shaped like every ingest step (``unlabeled.extract_archive``): inputs, store, options, then failures and log.
def crawl_covers(
    source: str,
    candidates: Sequence[CoverCandidate],
    fetch_image: Callable[[str], bytes],
    store: ImageStore,
    state: CrawlState,
    options: CrawlOptions | None = None,
    *,
    failures: FailureLog | None = None,
    log: Log | None = None,
    progress_bar: bool | None = None,
) -> IngestResult:
    """Fetch, validate and store the candidates' covers; rows for the stored ones, failures for the rest.

    Progress (covers fetched, failures) goes to ``log`` at a steady cadence and to a bar on a terminal."""
    options = options or CrawlOptions()
    say = safe_log(log)
    failures = failures or FailureLog(source)
    started = time.monotonic()
    outcomes, to_fetch = _reuse_known(candidates, state, store, options, failures)
    reused = len(outcomes)
    say(
        f"{source}: {len(candidates)} albums, {reused} covers already stored, {len(to_fetch)} to fetch "
        f"with {options.download_workers} workers"
    )

    fetched_bytes = 0
    consecutive_unavailable = 0
    results = ordered_parallel_map(lambda c: fetch_image(c.url), to_fetch, options.download_workers)
    shown = Progress(
        f"{source}: fetch covers",
        len(to_fetch),
        unit="covers",
        log=say,
        progress_bar=progress_bar,
        detail=lambda: f"{len(failures.rows)} failures",
    )
    for candidate, outcome in shown.counting(results):
        url = candidate.url or ""
        if isinstance(outcome, bytes):
            consecutive_unavailable = 0
            fetched_bytes += len(outcome)
            fetch = _store_cover(candidate.source_id, url, outcome, store, options)
            state.record(fetch)
            if fetch.outcome == STORED:
                outcomes[candidate.source_id] = fetch
            else:
                failures.add(candidate.source_id, fetch.reason or fetch.outcome, url)
        elif isinstance(outcome, NoImageError):
            consecutive_unavailable = 0
            state.record(Fetch(candidate.source_id, url, MISSING, reason="no_cover_art"))
            failures.add(candidate.source_id, "no_cover_art", url)
        else:
            reason = download_failure_reason(outcome)
            failures.add(candidate.source_id, reason, url)
            consecutive_unavailable = consecutive_unavailable + 1 if reason == "download_unavailable" else 0
            if consecutive_unavailable >= options.max_consecutive_unavailable:
                raise SourceUnavailableError(
                    f"{source}: the last {consecutive_unavailable} cover downloads all failed ({outcome}); "
                    f"stopping. The {len(outcomes)} covers stored so far are kept: run again once the host "
                    "is back and the crawl resumes where it stopped."
                )

    rows = _rows(source, candidates, outcomes, options.split_fractions)
    rows = _drop_placeholders(rows, options.placeholder_min_albums, failures)
    rows = _one_per_class(rows, failures)
    seconds = time.monotonic() - started
    per_genre = Counter(row["genre"] for row in rows)
    failure_reasons = failures.by_reason()
    stats = {
        "albums": len(candidates),
        "rows": len(rows),
        "rows_per_genre": dict(sorted(per_genre.items())),
        "reused": reused,
        "fetched": len(to_fetch),
        "failures": len(failures.rows),
        "failures_by_reason": failure_reasons,
        "failure_ratio": failure_ratio(failure_reasons, len(candidates)),
        "bytes_downloaded": fetched_bytes,
        "seconds": round(seconds, 3),
    }
    say(
        f"{source}: done in {seconds:.1f}s: {len(rows)} covers from {len(candidates)} albums "
        f"({reused} reused, {len(to_fetch)} fetched), failures {failure_reasons}"
    )
    if to_fetch and not outcomes:
        raise SourceError(
            f"{source}: none of the {len(to_fetch)} cover downloads gave a storable image (failures by reason: "
            f"{failure_reasons}); check that the source and its image host are reachable"
        )
    return IngestResult(rows=frame_of(rows, CRAWL_SCHEMA), failures=failures.frame(), stats=stats)


def earlier_crawl(source: str, table: Path, failures: Path, *, log: Log | None = None) -> IngestResult | None:
    """What an earlier crawl of ``source`` stored (its crawl table and failures), for a crawl that is skipped
    and so must not replace them; None when there is none. A file that no longer loads cannot be kept: it is
    set aside (``recovery.set_aside``) and counts as absent."""

    def kept(path: Path) -> pd.DataFrame | None:
        try:
            return read_manifest(path) if path.exists() else None
        except UnreadableTableError as error:
            set_aside(path, error.reason, log)
            return None

    rows = kept(table)
    if rows is None:
        return None
    failed = kept(failures)
    return IngestResult(rows=rows, failures=FailureLog(source).frame() if failed is None else failed)


def _reuse_known(
    candidates: Sequence[CoverCandidate],
    state: CrawlState,
    store: ImageStore,
    options: CrawlOptions,
    failures: FailureLog,
) -> tuple[dict[str, Fetch], list[CoverCandidate]]:
    """The covers an earlier crawl stored (still on disk, same URL), and the candidates left to fetch.

    Candidates without a URL, and those an earlier crawl rejected or found without a cover (unless
    ``recheck_missing``), become failure rows here and are not fetched.
    """
    known = state.all()
    outcomes: dict[str, Fetch] = {}
    to_fetch: list[CoverCandidate] = []
    for candidate in candidates:
        if candidate.url is None:
            failures.add(candidate.source_id, candidate.missing_reason)
            continue
        prior = known.get(candidate.source_id)
        if prior is not None and prior.url == candidate.url:
            if prior.outcome == STORED and prior.path and (store.root / prior.path).is_file():
                outcomes[candidate.source_id] = prior
                continue
            if prior.outcome in (REJECTED, MISSING) and not options.recheck_missing:
                failures.add(candidate.source_id, prior.reason or prior.outcome, candidate.url)
                continue
        to_fetch.append(candidate)
    return outcomes, to_fetch


def failure_ratio(failures_by_reason: Mapping[str, int], items: int) -> float:
    """Share of items that failed, not counting albums the source simply has no cover for."""
    failed = sum(count for reason, count in failures_by_reason.items() if reason not in NOT_FAILURES)
    return round(failed / items, 4) if items else 0.0


def download_failure_reason(error: BaseException) -> str:
    """A short stable code for a failed download, for the failures table."""
    if isinstance(error, UntrustedURLError):
        return "image_host_not_allowed"
    if isinstance(error, BodyError):
        return error.reason
    if isinstance(error, TooLargeError):
        return "too_large"
    if isinstance(error, SourceAuthError):
        return "download_refused"
    if isinstance(error, SourceUnavailableError):
        return "download_unavailable"
    if isinstance(error, SourceError):
        return "download_failed"
    return f"download_error:{type(error).__name__}"


def _store_cover(source_id: str, url: str, data: bytes, store: ImageStore, options: CrawlOptions) -> Fetch:
    try:
        info = validate_image(data, min_side=options.min_stored_side)
    except InvalidImage as invalid:
        return Fetch(source_id, url, REJECTED, reason=invalid.reason)
    stored = store.put(data, info.extension)  # written and renamed into place before the state says so
    return Fetch(
        source_id,
        url,
        STORED,
        image_id=stored.image_id,
        path=stored.path,
        width=info.width,
        height=info.height,
        format=info.format,
        fetched_at=datetime.now(UTC),
    )


def _rows(
    source: str,
    candidates: Sequence[CoverCandidate],
    outcomes: Mapping[str, Fetch],
    split_fractions: Mapping[str, float],
) -> list[dict[str, Any]]:
    rows = []
    for candidate in candidates:
        fetch = outcomes.get(candidate.source_id)
        if fetch is None or fetch.image_id is None:
            continue
        rows.append(
            {
                "image_id": fetch.image_id,
                "path": fetch.path,
                "source": source,
                "source_id": candidate.source_id,
                "genre": candidate.genre,
                "width": fetch.width,
                "height": fetch.height,
                "format": fetch.format,
                "split": assign_split(fetch.image_id, split_fractions),
                "album_name": candidate.album_name,
                "artist": candidate.artist,
                "released": candidate.released,
                "genres": list(candidate.genres),
                "fetched_at": fetch.fetched_at,
            }
        )
    return rows


def _drop_placeholders(
    rows: list[dict[str, Any]], min_albums: int, failures: FailureLog
) -> list[dict[str, Any]]:
    albums_per_image: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        albums_per_image[row["image_id"]].add(row["source_id"])
    placeholders = {image_id for image_id, albums in albums_per_image.items() if len(albums) >= min_albums}
    for row in rows:
        if row["image_id"] in placeholders:
            failures.add(row["source_id"], "placeholder")
    return [row for row in rows if row["image_id"] not in placeholders]


def _one_per_class(rows: list[dict[str, Any]], failures: FailureLog) -> list[dict[str, Any]]:
    kept, seen = [], set()
    for row in sorted(rows, key=lambda r: (r["genre"], r["image_id"], r["source_id"])):
        key = (row["genre"], row["image_id"])
        if key in seen:
            failures.add(row["source_id"], "duplicate_in_genre")
            continue
        seen.add(key)
        kept.append(row)
    return kept


def classes_fed_by(genre_map: Sequence[GenreClass], feed: str, feed_name: str) -> list[GenreClass]:
    """The map's classes that list some ``feed`` (a GenreClass field), refusing a map that would crawl nothing."""
    classes = [genre for genre in validate_genre_map(genre_map) if getattr(genre, feed)]
    if not classes:
        raise ValueError(f"no genre class lists a {feed_name}; add some to the genre map")
    return classes


def check_albums_per_genre(albums_per_genre: int) -> None:
    """A source's options refuse a count that would crawl nothing."""
    if albums_per_genre < 1:
        raise ValueError(f"albums_per_genre must be at least 1, got {albums_per_genre}")
