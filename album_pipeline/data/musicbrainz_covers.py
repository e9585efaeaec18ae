"""Labelled covers from MusicBrainz and the Cover Art Archive: album release groups found by tag.

A release group is listed by the tags of one or more classes; its own tag votes choose the class it trains
under. Its front cover's thumbnail URL goes to ``covers``, which fetches, validates and stores it like any
source's (the archive's 404 says the album has no art).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from album_pipeline.data.covers import (
    CoverCandidate,
    CrawlOptions,
    check_albums_per_genre,
    classes_fed_by,
    crawl_covers,
)
from album_pipeline.data.crawl_state import CrawlState
from album_pipeline.data.results import IngestResult, Log, safe_log
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import GenreClass, classes_in_order, strongest_class

# Shaped like napster_covers.py (imports, an options class): each source's crawl in its own module.
from album_pipeline.sources.musicbrainz import (
    THUMBNAIL_SIZES,
    CoverArtClient,
    MusicBrainzClient,
    check_thumbnail_size,
)

MUSICBRAINZ = "musicbrainz"


@dataclass(frozen=True)
class MusicBrainzCrawlOptions(CrawlOptions):
    """What a MusicBrainz crawl collects, on top of how every source's covers are fetched and kept."""

    albums_per_genre: int = field(
        default=1000,
        metadata={"doc": "Distinct album release groups to collect per genre class, over its tags."},
    )
    thumbnail_size: int = field(
        default=250,
        metadata={"doc": f"Cover Art Archive thumbnail size: one of {', '.join(map(str, THUMBNAIL_SIZES))}."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_albums_per_genre(self.albums_per_genre)
        check_thumbnail_size(self.thumbnail_size)


def crawl_musicbrainz(
    musicbrainz: MusicBrainzClient,
    coverart: CoverArtClient,
    store: ImageStore,
    state: CrawlState,
    genre_map: Sequence[GenreClass],
    *,
    options: MusicBrainzCrawlOptions | None = None,
    log: Log | None = None,
) -> IngestResult:
    """Find album release groups by each class's MusicBrainz tags and store their Cover Art Archive fronts."""
    classes = classes_fed_by(genre_map, "musicbrainz_tags", "MusicBrainz tag")
    options = options or MusicBrainzCrawlOptions()
    say = safe_log(log)
    musicbrainz.check()
    groups, listed_in = _release_groups(musicbrainz, classes, options.albums_per_genre, say)
    candidates = _musicbrainz_candidates(coverart, groups, listed_in, classes, options.thumbnail_size)
    result = crawl_covers(MUSICBRAINZ, candidates, coverart.fetch_image, store, state, options, log=say)
    result.stats["albums_per_genre"] = {
        genre.name: sum(1 for classes_of in listed_in.values() if genre.name in classes_of)
        for genre in classes
    }
    return result


def _release_groups(
    musicbrainz: MusicBrainzClient, classes: Sequence[GenreClass], albums_per_genre: int, say: Log
) -> tuple[dict[str, dict], dict[str, set[str]]]:
    """Distinct release groups by id, and the classes whose tags listed each."""
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
    return groups, listed_in


def _musicbrainz_candidates(
    coverart: CoverArtClient,
    groups: Mapping[str, dict],
    listed_in: Mapping[str, set[str]],
    classes: Sequence[GenreClass],
    thumbnail_size: int,
) -> list[CoverCandidate]:
    """One candidate per release group, by id, trained under the class its tags vote for most."""
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
    return candidates


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
