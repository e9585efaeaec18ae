"""Labelled covers from MusicBrainz and the Cover Art Archive: album release groups found by tag.

A release group is listed by the tags of one or more classes; its own tag votes choose the classes it carries
and the one it trains under. Only votes above 0 count: real pages list tags whose votes cancelled out, and
such a tag never labels. Albums with an excluded secondary type (compilations, live, remix, DJ-mix and
mixtape releases by default) are skipped and counted; they do not count toward ``albums_per_genre``, so the
crawl pages on until each class has its albums (25 of the 44 recorded real release groups carry a secondary
type: counting them would more than halve a class's yield). Its front cover's thumbnail URL goes to
``covers``, which fetches, validates and stores it like any source's (the archive's 404 says it has no art).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
from album_pipeline.progress import Progress

# Shaped like napster_covers.py (imports, an options class): each source's crawl in its own module.
from album_pipeline.sources.musicbrainz import (
    DEFAULT_EXCLUDED_SECONDARY_TYPES,
    THUMBNAIL_SIZES,
    CoverArtClient,
    MusicBrainzClient,
    artist_credit,
    check_thumbnail_size,
    positive_tag_votes,
    secondary_types,
)

MUSICBRAINZ = "musicbrainz"
# How many search hits per tag a class may look through for its albums: a bound on paging when nearly every
# hit is excluded, far above the recorded share (25 of 44).
MAX_HITS_PER_ALBUM = 10


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

    excluded_secondary_types: tuple[str, ...] = field(
        default=DEFAULT_EXCLUDED_SECONDARY_TYPES,
        metadata={
            "doc": "Album release groups with any of these MusicBrainz secondary types (case-insensitive, "
            "e.g. 'Compilation', 'Live', 'Remix', 'DJ-mix', 'Mixtape/Street', 'Soundtrack') are skipped; "
            "empty keeps them all."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_albums_per_genre(self.albums_per_genre)
        check_thumbnail_size(self.thumbnail_size)
        kinds = self.excluded_secondary_types
        if isinstance(kinds, str) or not all(isinstance(kind, str) and kind.strip() for kind in kinds):
            raise ValueError(
                f"excluded_secondary_types must be a list of secondary type names such as ['Compilation', "
                f"'Live'], got {kinds!r}"
            )
        object.__setattr__(self, "excluded_secondary_types", tuple(kind.strip().lower() for kind in kinds))


@dataclass
class _Listing:
    """What the searches found: kept release groups by id, the classes listing each, and what was skipped."""

    groups: dict[str, dict] = field(default_factory=dict)
    listed_in: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    excluded: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # type -> group ids
    unvoted: set[str] = field(default_factory=set)  # groups found with no positive vote for any class

    def excluded_counts(self) -> dict[str, int]:
        """Distinct release groups skipped per secondary type (a group with two types counts under both)."""
        return {kind: len(ids) for kind, ids in sorted(self.excluded.items())}


def crawl_musicbrainz(
    musicbrainz: MusicBrainzClient,
    coverart: CoverArtClient,
    store: ImageStore,
    state: CrawlState,
    genre_map: Sequence[GenreClass],
    *,
    options: MusicBrainzCrawlOptions | None = None,
    log: Log | None = None,
    progress_bar: bool | None = None,
) -> IngestResult:
    """Find album release groups by each class's MusicBrainz tags and store their Cover Art Archive fronts.

    Progress (albums listed, covers fetched) goes to ``log`` at a steady cadence and to a bar on a terminal."""
    classes = classes_fed_by(genre_map, "musicbrainz_tags", "MusicBrainz tag")
    options = options or MusicBrainzCrawlOptions()
    say = safe_log(log)
    musicbrainz.check()
    listing = _release_groups(musicbrainz, classes, options, say, progress_bar)
    candidates = _musicbrainz_candidates(coverart, listing.groups, classes, options.thumbnail_size)
    result = crawl_covers(
        MUSICBRAINZ,
        candidates,
        coverart.fetch_image,
        store,
        state,
        options,
        log=say,
        progress_bar=progress_bar,
    )
    result.stats["albums_per_genre"] = {
        genre.name: sum(1 for classes_of in listing.listed_in.values() if genre.name in classes_of)
        for genre in classes
    }
    result.stats["excluded_secondary_types"] = listing.excluded_counts()
    result.stats["excluded_release_groups"] = len(set().union(*listing.excluded.values()))
    result.stats["without_tag_votes"] = len(listing.unvoted - set(listing.groups))
    return result


def _release_groups(
    musicbrainz: MusicBrainzClient,
    classes: Sequence[GenreClass],
    options: MusicBrainzCrawlOptions,
    say: Log,
    progress_bar: bool | None,
) -> _Listing:
    """Up to ``albums_per_genre`` kept release groups per class, over its tags.

    A hit counts for a class only when it is not excluded and the class's tags hold a positive vote on it.
    """
    listing = _Listing()
    excluded_types = set(options.excluded_secondary_types)
    class_of_tag = {tag: genre.name for genre in classes for tag in genre.musicbrainz_tags}
    wanted = options.albums_per_genre
    # Each class fills its share of the count; one whose tags run out of albums early jumps to its end.
    shown = Progress(
        "musicbrainz: list albums", len(classes) * wanted, unit="albums", log=say, progress_bar=progress_bar
    )
    for number, genre in enumerate(shown.counting(classes, each=wanted)):
        listed: set[str] = set()
        for tag in genre.musicbrainz_tags:
            hits = musicbrainz.iter_release_groups(tag, max_results=wanted * MAX_HITS_PER_ALBUM)
            for group in hits:
                if len(listed) >= wanted:
                    break
                mbid = str(group["id"])
                excluded = excluded_types.intersection(secondary_types(group))
                for kind in excluded:
                    listing.excluded[kind].add(mbid)
                if excluded:
                    continue
                if genre.name not in _class_votes(group, class_of_tag):
                    listing.unvoted.add(mbid)
                    continue
                listing.groups.setdefault(mbid, group)
                listing.listed_in[mbid].add(genre.name)
                listed.add(mbid)
                shown.reach(number * wanted + len(listed))
        say(f"musicbrainz: class {genre.name} ({', '.join(genre.musicbrainz_tags)}): {len(listed)} albums")
    skipped = listing.excluded_counts()
    if skipped:
        say(f"musicbrainz: skipped release groups by secondary type: {skipped}")
    return listing


def _class_votes(group: Mapping, class_of_tag: Mapping[str, str]) -> dict[str, float]:
    """Class -> the highest positive vote any of its tags holds on the group."""
    votes: dict[str, float] = {}
    for tag, count in positive_tag_votes(group).items():
        name = class_of_tag.get(tag)
        if name is not None:
            votes[name] = max(votes.get(name, 0.0), count)
    return votes


def _musicbrainz_candidates(
    coverart: CoverArtClient,
    groups: Mapping[str, dict],
    classes: Sequence[GenreClass],
    thumbnail_size: int,
) -> list[CoverCandidate]:
    """One candidate per release group, by id, carrying every class its tags vote for, trained under the one
    they vote for most."""
    class_names = [genre.name for genre in classes]
    class_of_tag = {tag: genre.name for genre in classes for tag in genre.musicbrainz_tags}
    candidates = []
    for mbid in sorted(groups):
        group = groups[mbid]
        votes = _class_votes(group, class_of_tag)
        genre = strongest_class(votes, class_names)
        assert genre is not None, "a kept release group holds a positive vote for the class that listed it"
        candidates.append(
            CoverCandidate(
                source_id=mbid,
                url=coverart.front_url(mbid, thumbnail_size),
                genre=genre,
                genres=classes_in_order(set(votes), class_names),
                album_name=group.get("title"),
                artist=artist_credit(group.get("artist-credit")),
                released=group.get("first-release-date") or None,
            )
        )
    return candidates
