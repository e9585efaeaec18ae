"""Labelled covers: list albums per genre class from a source, then fetch, validate and store one cover each.

Every source (Napster, MusicBrainz + Cover Art Archive) turns its catalogue into ``CoverCandidate``s: an
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
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pandas as pd

from album_pipeline.data.crawl_state import MISSING, REJECTED, STORED, CrawlState, Fetch
from album_pipeline.data.dedup import keep_one_per_picture
from album_pipeline.data.images import InvalidImage, validate_image
from album_pipeline.data.manifest import CRAWL_SCHEMA, DEFAULT_SPLIT_FRACTIONS, MANIFEST_SCHEMA, assign_split
from album_pipeline.data.results import (
    FailureLog,
    IngestResult,
    Log,
    frame_of,
    ordered_parallel_map,
    safe_log,
)
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import GenreClass, classes_in_order, strongest_class, validate_genre_map
from album_pipeline.sources.http import (
    BodyError,
    NoImageError,
    SourceAuthError,
    SourceError,
    SourceUnavailableError,
    TooLargeError,
    UntrustedURLError,
)
from album_pipeline.sources.musicbrainz import CoverArtClient, MusicBrainzClient
from album_pipeline.sources.napster import NapsterClient

NAPSTER = "napster"
MUSICBRAINZ = "musicbrainz"
PROGRESS_EVERY = 250
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


@dataclass
class CrawlOptions:
    download_workers: int = 8
    min_image_side: int = 64  # smaller covers are useless at the 64x64 training resolution
    placeholder_min_albums: int = 3  # identical bytes for this many albums: a "no cover" placeholder
    recheck_missing: bool = False  # fetch again items recorded as rejected or without a cover
    max_consecutive_unavailable: int = 50  # then the image host is down: stop instead of failing every item
    split_fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLIT_FRACTIONS))

    def __post_init__(self) -> None:
        if self.download_workers < 1:
            raise ValueError(f"download_workers must be at least 1, got {self.download_workers}")
        if self.placeholder_min_albums < 2:
            raise ValueError(f"placeholder_min_albums must be at least 2, got {self.placeholder_min_albums}")
        if self.max_consecutive_unavailable < 1:
            raise ValueError("max_consecutive_unavailable must be at least 1")


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
) -> IngestResult:
    """Fetch, validate and store the candidates' covers; rows for the stored ones, failures for the rest."""
    options = options or CrawlOptions()
    say = safe_log(log)
    failures = failures or FailureLog(source)
    started = time.monotonic()
    known = state.all()
    outcomes: dict[str, Fetch] = {}
    to_fetch: list[CoverCandidate] = []
    reused = 0
    for candidate in candidates:
        if candidate.url is None:
            failures.add(candidate.source_id, candidate.missing_reason)
            continue
        prior = known.get(candidate.source_id)
        if prior is not None and prior.url == candidate.url:
            if prior.outcome == STORED and prior.path and (store.root / prior.path).is_file():
                outcomes[candidate.source_id] = prior
                reused += 1
                continue
            if prior.outcome in (REJECTED, MISSING) and not options.recheck_missing:
                failures.add(candidate.source_id, prior.reason or prior.outcome, candidate.url)
                continue
        to_fetch.append(candidate)
    say(
        f"{source}: {len(candidates)} albums, {reused} covers already stored, {len(to_fetch)} to fetch "
        f"with {options.download_workers} workers"
    )

    fetched_bytes = 0
    consecutive_unavailable = 0
    results = ordered_parallel_map(lambda c: fetch_image(c.url), to_fetch, options.download_workers)
    for done, (candidate, outcome) in enumerate(results, start=1):
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
        if done % PROGRESS_EVERY == 0:
            say(f"{source}: {done}/{len(to_fetch)} covers fetched, {len(failures.rows)} failures so far")

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
        info = validate_image(data, min_side=options.min_image_side)
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


def merge_labeled_sources(
    tables: Sequence[pd.DataFrame],
    hashes: pd.DataFrame,
    split_fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
    class_order: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labelled manifest (MANIFEST_SCHEMA) from per-source crawl tables in priority order, and the rows
    it dropped (FAILURES_SCHEMA).

    ``hashes`` gives the ``picture_hash`` of every ``image_id`` of the tables. Each picture keeps one row, with
    exact copies and near-duplicates across and within sources dropped as ``duplicate`` / ``near_duplicate``
    (see ``dedup.keep_one_per_picture``; among equally large copies the first table wins, then the lowest
    source id). The row kept trains under its own ``genre`` and lists in ``genres`` every class any copy was
    found under, in ``class_order`` (unknown classes last, by name). Splits derive from the near-duplicate
    group. Rows are sorted by class and image.
    """
    frames = [table.assign(_priority=rank) for rank, table in enumerate(tables) if len(table)]
    if not frames:
        return frame_of([], MANIFEST_SCHEMA), FailureLog("").frame()
    merged = pd.concat(frames, ignore_index=True).sort_values(["_priority", "source_id"], ignore_index=True)
    hash_of = dict(zip(hashes["image_id"], hashes["picture_hash"], strict=True))
    unhashed = sorted(set(merged["image_id"]) - hash_of.keys())
    if unhashed:
        raise ValueError(
            f"no picture_hash for {len(unhashed)} image(s), e.g. {unhashed[0]}; hash every image"
        )
    merged["picture_hash"] = merged["image_id"].map(hash_of)
    deduplicated = keep_one_per_picture(merged, rank="_priority")

    rank_of = {name: position for position, name in enumerate(class_order)}
    every_copy = pd.concat([deduplicated.kept, deduplicated.dropped], ignore_index=True)
    classes_per_group: dict[str, set[str]] = defaultdict(set)
    for group, genre, genres in zip(
        every_copy["duplicate_group"], every_copy["genre"], every_copy["genres"], strict=True
    ):
        classes_per_group[group].update([genre, *(genres if genres is not None else [])])
    manifest = deduplicated.kept.drop(columns="_priority").copy()
    manifest["genres"] = [
        sorted(classes_per_group[group], key=lambda name: (rank_of.get(name, len(rank_of)), name))
        for group in manifest["duplicate_group"]
    ]
    manifest["split"] = [assign_split(group, split_fractions) for group in manifest["duplicate_group"]]
    manifest["archive"] = manifest["member"] = None
    manifest = manifest[MANIFEST_SCHEMA.names].sort_values(["genre", "image_id"], ignore_index=True)
    dropped = deduplicated.dropped
    failures = pd.DataFrame(
        {
            "source": dropped["source"],
            "source_id": dropped["source_id"],
            "url": None,
            "reason": dropped["reason"],
        }
    )
    return manifest, failures.reset_index(drop=True)


def _classes_fed_by(
    genre_map: Sequence[GenreClass], feed: str, feed_name: str, albums_per_genre: int
) -> list[GenreClass]:
    """The map's classes that list some ``feed`` (a GenreClass field), refusing a map or a count to crawl nothing."""
    if albums_per_genre < 1:
        raise ValueError(f"albums_per_genre must be at least 1, got {albums_per_genre}")
    classes = [genre for genre in validate_genre_map(genre_map) if getattr(genre, feed)]
    if not classes:
        raise ValueError(f"no genre class lists a {feed_name}; add some to the genre map")
    return classes


# -- Napster -------------------------------------------------------------------------------------------------


@dataclass
class _Album:
    album_id: str
    raw: dict
    classes: set[str] = field(default_factory=set)
    own_classes: list[str] = field(default_factory=list)  # classes fed by the album's own genre ids


def crawl_napster(
    client: NapsterClient,
    store: ImageStore,
    state: CrawlState,
    genre_map: Sequence[GenreClass],
    *,
    albums_per_genre: int,
    min_side: int = 200,
    page_size: int = 200,
    options: CrawlOptions | None = None,
    log: Log | None = None,
) -> IngestResult:
    """Crawl the top albums of every class's Napster genres and store one validated cover per album."""
    classes = _classes_fed_by(genre_map, "napster_shortcuts", "Napster shortcut", albums_per_genre)
    options = options or CrawlOptions()
    say = safe_log(log, client.scrub)
    client.check()  # fail fast on a bad key or an unreachable API, before any paging
    failures = FailureLog(NAPSTER)
    albums = _napster_albums(client, classes, albums_per_genre, page_size, say)
    candidates = _napster_candidates(client, albums, classes, state, min_side, options, failures, say)
    result = crawl_covers(
        NAPSTER, candidates, client.fetch_image, store, state, options, failures=failures, log=say
    )
    result.stats["albums_per_genre"] = {
        genre.name: sum(1 for album in albums.values() if genre.name in album.classes) for genre in classes
    }
    return result


def _napster_albums(
    client: NapsterClient, classes: Sequence[GenreClass], albums_per_genre: int, page_size: int, say: Log
) -> dict[str, _Album]:
    """Distinct albums (keyed by lower-cased id: the API mixes alb./Alb.), each with the classes listing it."""
    # Resolve every shortcut first, so a typo in the last class fails before any paging.
    genre_ids = {
        shortcut: str(client.genre(shortcut)["id"])
        for genre in classes
        for shortcut in genre.napster_shortcuts
    }
    albums: dict[str, _Album] = {}
    for genre in classes:
        listed: set[str] = set()
        for shortcut in genre.napster_shortcuts:
            top = client.iter_top_albums(
                genre_ids[shortcut], page_size=page_size, max_albums_per_range=albums_per_genre
            )
            for raw in top:
                if len(listed) >= albums_per_genre:
                    break
                album_id = str(raw.get("id") or "")
                if not album_id:
                    continue
                album = albums.setdefault(album_id.lower(), _Album(album_id, raw))
                album.classes.add(genre.name)
                listed.add(album_id.lower())
        say(f"napster: class {genre.name} ({', '.join(genre.napster_shortcuts)}): {len(listed)} top albums")
    # Labels also come from the album's own genre ids, when they feed a class.
    class_of_id = {
        genre_ids[shortcut].lower(): genre.name for genre in classes for shortcut in genre.napster_shortcuts
    }
    for album in albums.values():
        own = [class_of_id.get(str(i).lower()) for i in _genre_ids(album.raw)]
        album.own_classes = [name for name in own if name]
        album.classes.update(album.own_classes)
    return albums


def _genre_ids(raw: dict) -> list[str]:
    links = raw.get("links") or {}
    return list(((links.get("genres") or {}).get("ids")) or [])


def _napster_candidates(
    client: NapsterClient,
    albums: Mapping[str, _Album],
    classes: Sequence[GenreClass],
    state: CrawlState,
    min_side: int,
    options: CrawlOptions,
    failures: FailureLog,
    say: Log,
) -> list[CoverCandidate]:
    class_names = [genre.name for genre in classes]
    known = state.all()
    # A recrawl asks for image lists only for albums it has no outcome for.
    need_images = [
        album.album_id
        for album in albums.values()
        if album.album_id not in known
        or (options.recheck_missing and known[album.album_id].outcome != STORED)
    ]
    images = _album_images(client, need_images, failures, say)
    candidates = []
    for album in sorted(albums.values(), key=lambda a: a.album_id):
        labels = classes_in_order(album.classes, class_names)
        own = [name for name in album.own_classes if name in labels]
        if album.album_id in images:
            chosen = client.choose_image(images[album.album_id], min_side=min_side)
            url = str(chosen["url"]) if chosen else None
        elif album.album_id in known:
            url = known[album.album_id].url
        else:
            continue  # its image lookup failed: already a failure row
        raw = album.raw
        candidates.append(
            CoverCandidate(
                source_id=album.album_id,
                url=url,
                genre=own[0] if own else labels[0],
                genres=labels,
                album_name=raw.get("name"),
                artist=raw.get("artistName"),
                released=raw.get("released") or raw.get("originallyReleased") or None,
            )
        )
    return candidates


def _album_images(
    client: NapsterClient, album_ids: list[str], failures: FailureLog, say: Log, batch_size: int = 20
) -> dict[str, list[dict]]:
    """Image lists per album; a batch that fails becomes one failure row per album in it."""
    images: dict[str, list[dict]] = {}
    batches = iter(album_ids)
    while batch := list(islice(batches, batch_size)):
        try:
            images.update(client.album_images(batch, batch_size=batch_size))
        except SourceError as error:
            if isinstance(error, SourceAuthError):
                raise
            say(f"napster: image lookup failed for {len(batch)} albums: {error}")
            for album_id in batch:
                failures.add(album_id, "image_lookup_failed")
    return images


# -- MusicBrainz + Cover Art Archive -------------------------------------------------------------------------


def crawl_musicbrainz(
    musicbrainz: MusicBrainzClient,
    coverart: CoverArtClient,
    store: ImageStore,
    state: CrawlState,
    genre_map: Sequence[GenreClass],
    *,
    albums_per_genre: int,
    thumbnail_size: int = 250,
    options: CrawlOptions | None = None,
    log: Log | None = None,
) -> IngestResult:
    """Find album release groups by each class's MusicBrainz tags and store their Cover Art Archive fronts."""
    classes = _classes_fed_by(genre_map, "musicbrainz_tags", "MusicBrainz tag", albums_per_genre)
    options = options or CrawlOptions()
    coverart.front_url("00000000-0000-0000-0000-000000000000", thumbnail_size)  # refuses a bad size early
    say = safe_log(log)
    musicbrainz.check()
    groups: dict[str, dict] = {}
    listed_in: dict[str, set[str]] = defaultdict(set)
    for genre in classes:
        listed: set[str] = set()
        for tag in genre.musicbrainz_tags:
            for group in musicbrainz.iter_release_groups(tag, max_results=albums_per_genre):
                if len(listed) >= albums_per_genre:
                    break
                mbid = str(group["id"])
                groups.setdefault(mbid, group)
                listed_in[mbid].add(genre.name)
                listed.add(mbid)
        say(f"musicbrainz: class {genre.name} ({', '.join(genre.musicbrainz_tags)}): {len(listed)} albums")

    class_names = [genre.name for genre in classes]
    class_of_tag = {tag: genre.name for genre in classes for tag in genre.musicbrainz_tags}
    candidates = []
    for mbid in sorted(groups):
        group = groups[mbid]
        votes: dict[str, float] = {}
        for tag in group.get("tags") or []:
            name = class_of_tag.get(str(tag.get("name", "")).strip().lower())
            if name is not None:
                votes[name] = max(votes.get(name, 0), _vote_count(tag))
        labels = classes_in_order(set(listed_in[mbid]) | set(votes), class_names)
        candidates.append(
            CoverCandidate(
                source_id=mbid,
                url=coverart.front_url(mbid, thumbnail_size),
                genre=strongest_class(votes, class_names) or labels[0],
                genres=labels,
                album_name=group.get("title"),
                artist=_artist_credit(group.get("artist-credit")),
                released=group.get("first-release-date") or None,
            )
        )
    result = crawl_covers(MUSICBRAINZ, candidates, coverart.fetch_image, store, state, options, log=say)
    result.stats["albums_per_genre"] = {
        name: sum(1 for classes_of in listed_in.values() if name in classes_of) for name in class_names
    }
    return result


def _vote_count(tag: Mapping[str, Any]) -> float:
    try:
        return float(tag.get("count") or 0)
    except (TypeError, ValueError):
        return 0.0


def _artist_credit(credit: Any) -> str | None:
    """The credited artists as MusicBrainz prints them: names joined by their join phrases."""
    if not isinstance(credit, list) or not credit:
        return None
    text = "".join(
        f"{part.get('name', '')}{part.get('joinphrase', '')}" for part in credit if isinstance(part, dict)
    )
    return text.strip() or None
