"""Ingest: fetch, validate and store images from a source, returning manifest rows and failure rows.

These functions are what the Dagster assets call; they never raise for one bad image, one failed album or one
corrupt archive (that becomes a failure row with a reason) but do raise for problems that make the whole run
pointless (bad credentials, unreachable service, unknown genre or archive name).

Genre policy for labelled covers: an album found in the top lists of several target genres keeps all of them
in ``genres`` (in the configured order), and its training ``genre`` is the first of those in the configured
order. Each album gives one row; within one training genre an image (by content) appears once.
"""

from __future__ import annotations

import tarfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa

from album_pipeline.data.images import InvalidImage, validate_image
from album_pipeline.data.manifest import (
    DEFAULT_SPLIT_FRACTIONS,
    FAILURES_SCHEMA,
    LABELED_SCHEMA,
    UNLABELED_SCHEMA,
    assign_split,
)
from album_pipeline.data.storage import ImageStore, image_id_of
from album_pipeline.genres import genre_index
from album_pipeline.sources.http import (
    SourceAuthError,
    SourceError,
    SourceUnavailableError,
    UntrustedURLError,
)
from album_pipeline.sources.napster import NAPSTER_URL_ENV, NapsterClient
from album_pipeline.sources.omacir import ArchiveChecksumError, ArchiveFile, OmacirClient, iter_tar_images

PROGRESS_EVERY = 250  # images between progress lines
NAPSTER = "napster"
OMACIR = "omacir"

Log = Callable[[str], None]
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class IngestResult:
    rows: pd.DataFrame  # columns of LABELED_SCHEMA or UNLABELED_SCHEMA
    failures: pd.DataFrame  # columns of FAILURES_SCHEMA
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Album:
    album_id: str
    name: str | None
    artist: str | None
    released: str | None
    genres: list[str]  # target genres whose top list holds the album, in configured order


class _Failures:
    def __init__(self, source: str) -> None:
        self.source = source
        self.rows: list[dict[str, Any]] = []

    def add(self, source_id: str, reason: str, url: str | None = None) -> None:
        self.rows.append({"source": self.source, "source_id": source_id, "url": url, "reason": reason})

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(row["reason"] for row in self.rows))

    def frame(self) -> pd.DataFrame:
        return _frame(self.rows, FAILURES_SCHEMA)


# -- Napster -------------------------------------------------------------------------------------------------


def crawl_labeled_covers(
    client: NapsterClient,
    store: ImageStore,
    genres: Sequence[str],
    *,
    albums_per_genre: int,
    min_side: int = 200,
    page_size: int = 200,
    download_workers: int = 8,
    split_fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
    log: Log | None = None,
) -> IngestResult:
    """Crawl the top albums of each genre and store one validated cover per album (see the module policy)."""
    if albums_per_genre < 1:
        raise ValueError(f"albums_per_genre must be at least 1, got {albums_per_genre}")
    if download_workers < 1:
        raise ValueError(f"download_workers must be at least 1, got {download_workers}")
    genre_index(list(genres))  # refuses duplicates with a clear message
    if not genres:
        raise ValueError("no genres given; pass at least one Napster genre shortcut such as 'rock'")
    say = _safe_log(log, client.scrub)
    started = time.monotonic()
    client.check()  # fail fast on a bad key or an unreachable API, before any paging

    albums = _collect_albums(client, genres, albums_per_genre, page_size, say)
    failures = _Failures(NAPSTER)
    images = _album_images(client, list(albums), failures, say)

    downloads: list[tuple[_Album, str]] = []
    for album_id, album in albums.items():
        chosen = client.choose_image(images.get(album_id, []), min_side=min_side)
        if chosen is None:
            if album_id in images:  # albums whose lookup failed already have a failure row
                failures.add(album_id, "no_images")
            continue
        downloads.append((album, str(chosen["url"])))

    rows: list[dict[str, Any]] = []
    seen_in_genre: set[tuple[str, str]] = set()
    bytes_downloaded = 0
    fetched_at = datetime.now(UTC)
    results = _ordered_parallel_map(lambda item: client.fetch_image(item[1]), downloads, download_workers)
    for done, ((album, url), outcome) in enumerate(results, start=1):
        if isinstance(outcome, BaseException):
            failures.add(album.album_id, _download_reason(outcome), url)
        else:
            bytes_downloaded += len(outcome)
            row = _store_labeled(
                store, album, url, outcome, failures, seen_in_genre, split_fractions, fetched_at
            )
            if row is not None:
                rows.append(row)
        if done % PROGRESS_EVERY == 0:
            say(
                f"napster: {done}/{len(downloads)} covers fetched, {len(rows)} stored, "
                f"{len(failures.rows)} failed"
            )

    seconds = time.monotonic() - started
    rows_per_genre = Counter(row["genre"] for row in rows)
    stats = {
        "albums": len(albums),
        "albums_per_genre": {g: sum(1 for a in albums.values() if g in a.genres) for g in genres},
        "rows": len(rows),
        "rows_per_genre": {g: rows_per_genre.get(g, 0) for g in genres},
        "failures": len(failures.rows),
        "failures_by_reason": failures.by_reason(),
        "bytes_downloaded": bytes_downloaded,
        "seconds": round(seconds, 3),
    }
    say(
        f"napster: done in {seconds:.1f}s: {len(rows)} covers from {len(albums)} albums, "
        f"{len(failures.rows)} failures {stats['failures_by_reason']}"
    )
    if albums and not rows:
        # Every album failed: a service problem, not bad data; an empty manifest would only fail later.
        raise SourceError(
            f"none of the {len(albums)} Napster albums gave a storable cover (failures by reason: "
            f"{stats['failures_by_reason']}); check that {NAPSTER_URL_ENV} and its image host are reachable"
        )
    return IngestResult(rows=_frame(rows, LABELED_SCHEMA), failures=failures.frame(), stats=stats)


def _collect_albums(
    client: NapsterClient, genres: Sequence[str], albums_per_genre: int, page_size: int, say: Log
) -> dict[str, _Album]:
    """Distinct albums keyed by id, each listing every target genre whose top list holds it."""
    # Resolve every shortcut first, so a typo in the last genre fails before any paging.
    genre_ids = {shortcut: str(client.genre(shortcut)["id"]) for shortcut in genres}
    albums: dict[str, _Album] = {}
    key_of: dict[str, str] = {}  # lower-cased id -> first spelling seen (the API mixes alb./Alb.)
    for shortcut, genre_id in genre_ids.items():
        top = client.iter_top_albums(genre_id, page_size=page_size, max_albums_per_range=albums_per_genre)
        count = 0
        for raw in islice(top, albums_per_genre):
            album_id = str(raw.get("id") or "")
            if not album_id:
                continue
            key = key_of.setdefault(album_id.lower(), album_id)
            count += 1
            if key in albums:
                if shortcut not in albums[key].genres:
                    albums[key].genres.append(shortcut)
            else:
                albums[key] = _Album(
                    album_id=key,
                    name=raw.get("name"),
                    artist=raw.get("artistName"),
                    released=raw.get("released") or raw.get("originallyReleased") or None,
                    genres=[shortcut],
                )
        say(f"napster: genre {shortcut} ({genre_id}): {count} top albums")
    return albums


def _album_images(
    client: NapsterClient, album_ids: list[str], failures: _Failures, say: Log, batch_size: int = 20
) -> dict[str, list[dict]]:
    """Image lists per album; a batch that fails becomes one failure row per album in it."""
    images: dict[str, list[dict]] = {}
    for start in range(0, len(album_ids), batch_size):
        batch = album_ids[start : start + batch_size]
        try:
            images.update(client.album_images(batch, batch_size=batch_size))
        except SourceError as error:
            say(f"napster: image lookup failed for {len(batch)} albums: {error}")
            for album_id in batch:
                failures.add(album_id, "image_lookup_failed")
    return images


def _store_labeled(
    store: ImageStore,
    album: _Album,
    url: str,
    data: bytes,
    failures: _Failures,
    seen_in_genre: set[tuple[str, str]],
    split_fractions: Mapping[str, float],
    fetched_at: datetime,
) -> dict[str, Any] | None:
    try:
        info = validate_image(data)
    except InvalidImage as invalid:
        failures.add(album.album_id, invalid.reason, url)
        return None
    genre = album.genres[0]
    image_id = image_id_of(data)
    if (genre, image_id) in seen_in_genre:
        failures.add(album.album_id, "duplicate_in_genre", url)
        return None
    seen_in_genre.add((genre, image_id))
    stored = store.put(data, info.extension)
    return {
        "image_id": stored.image_id,
        "path": stored.path,
        "source": NAPSTER,
        "source_id": album.album_id,
        "genre": genre,
        "width": info.width,
        "height": info.height,
        "format": info.format,
        "split": assign_split(stored.image_id, split_fractions),
        "album_name": album.name,
        "artist": album.artist,
        "released": album.released,
        "genres": list(album.genres),
        "fetched_at": fetched_at,
    }


def _download_reason(error: BaseException) -> str:
    if isinstance(error, UntrustedURLError):
        return "image_host_not_allowed"
    if isinstance(error, SourceAuthError):
        return "download_refused"
    if isinstance(error, SourceUnavailableError):
        return "download_unavailable"
    if isinstance(error, SourceError):
        return "download_failed"
    return f"download_error:{type(error).__name__}"


# -- OMACIR --------------------------------------------------------------------------------------------------


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
    say = _safe_log(log)
    started = time.monotonic()
    selected = _select_archives(client.list_archives(), archives)
    failures = _Failures(OMACIR)
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
    return IngestResult(rows=_frame(rows, UNLABELED_SCHEMA), failures=failures.frame(), stats=stats)


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


# -- shared --------------------------------------------------------------------------------------------------


def _frame(rows: list[dict[str, Any]], schema: pa.Schema) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=schema.names)
    for name in ("width", "height"):
        if name in frame.columns:
            frame[name] = frame[name].astype("int32")
    if "fetched_at" in frame.columns:
        frame["fetched_at"] = pd.to_datetime(frame["fetched_at"], utc=True)
    return frame


def _safe_log(log: Log | None, scrub: Callable[[str], str] | None = None) -> Log:
    def say(message: str) -> None:
        if log is not None:
            log(scrub(message) if scrub else message)

    return say


def _ordered_parallel_map(
    function: Callable[[T], R], items: Sequence[T], workers: int, window_per_worker: int = 4
) -> Iterator[tuple[T, R | BaseException]]:
    """``(item, result or exception)`` in input order, with at most ``workers * window`` calls in flight.

    Input order keeps deduplication deterministic; the window bounds memory held by finished downloads.
    """
    window = max(1, workers * window_per_worker)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-download") as pool:
        pending: deque[tuple[T, Future[R]]] = deque()
        iterator = iter(items)
        for item in islice(iterator, window):
            pending.append((item, pool.submit(function, item)))
        while pending:
            item, future = pending.popleft()
            try:
                outcome: R | BaseException = future.result()
            except Exception as error:  # reported per item; one failed download never stops the crawl
                outcome = error
            next_item = next(iterator, None)
            if next_item is not None:
                pending.append((next_item, pool.submit(function, next_item)))
            yield item, outcome
