"""Labelled covers from Napster: the top albums of each class's Napster genres, one cover each.

Napster lists an album under a genre's top lists and in its own genre ids; both feed its labels, its own ids
choose the class it trains under. Those ids are mostly sub-genres: they map to a class through the genre tree
read once per crawl (policy in ``album_pipeline.sources.napster_genres``), and the crawl's ``genre_mapping``
stat shows each id's top-level genre, class and album count. Of the sizes an album's image comes in, one is
chosen here; ``covers`` then fetches, validates and stores it like any source's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

from album_pipeline.data.covers import (
    CoverCandidate,
    CrawlOptions,
    check_albums_per_genre,
    classes_fed_by,
    crawl_covers,
)
from album_pipeline.data.crawl_state import STORED, CrawlState
from album_pipeline.data.results import FailureLog, IngestResult, Log, safe_log
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import GenreClass, classes_in_order
from album_pipeline.progress import Progress
from album_pipeline.sources.http import SourceAuthError, SourceError
from album_pipeline.sources.napster import MAX_PAGE_SIZE, NapsterClient, album_flag, check_page_size
from album_pipeline.sources.napster_genres import NapsterGenreTree, class_of_genre

NAPSTER = "napster"


@dataclass(frozen=True)
class NapsterCrawlOptions(CrawlOptions):
    """What a Napster crawl collects, on top of how every source's covers are fetched and kept."""

    albums_per_genre: int = field(
        default=1000, metadata={"doc": "Distinct top albums to collect per genre class (seed: ~1,000)."}
    )
    preferred_image_side: int = field(
        default=200,
        metadata={
            "doc": "Of the sizes Napster offers an album in, take the smallest with both sides at least this "
            "many pixels, else the largest."
        },
    )
    page_size: int = field(
        default=MAX_PAGE_SIZE,
        metadata={"doc": f"Albums per page of /albums/top (the API allows at most {MAX_PAGE_SIZE})."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_albums_per_genre(self.albums_per_genre)
        if self.preferred_image_side < 1:
            raise ValueError(f"preferred_image_side must be at least 1, got {self.preferred_image_side}")
        check_page_size(self.page_size)


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
    options: NapsterCrawlOptions | None = None,
    log: Log | None = None,
    progress_bar: bool | None = None,
) -> IngestResult:
    """Crawl the top albums of every class's Napster genres and store one validated cover per album.

    Progress (albums listed, covers fetched) goes to ``log`` at a steady cadence and to a bar on a terminal."""
    classes = classes_fed_by(genre_map, "napster_shortcuts", "Napster shortcut")
    options = options or NapsterCrawlOptions()
    say = safe_log(log, client.scrub)
    client.check()  # fail fast on a bad key or an unreachable API, before any paging
    failures = FailureLog(NAPSTER)
    albums, genre_mapping = _napster_albums(client, classes, options, say, progress_bar)
    candidates = _napster_candidates(client, albums, classes, state, options, failures, say)
    result = crawl_covers(
        NAPSTER,
        candidates,
        client.fetch_image,
        store,
        state,
        options,
        failures=failures,
        log=say,
        progress_bar=progress_bar,
    )
    result.stats["albums_per_genre"] = {
        genre.name: sum(1 for album in albums.values() if genre.name in album.classes) for genre in classes
    }
    result.stats["genre_mapping"] = genre_mapping
    for flag in ("explicit", "single"):
        result.stats[f"{flag}_albums"] = sum(album_flag(album.raw, flag) for album in albums.values())
    return result


def _napster_albums(
    client: NapsterClient,
    classes: Sequence[GenreClass],
    options: NapsterCrawlOptions,
    say: Log,
    progress_bar: bool | None,
) -> tuple[dict[str, _Album], list[dict]]:
    """Distinct albums (keyed by lower-cased id: the API mixes alb./Alb.), each with the classes listing it,
    and the genre mapping their own genre ids went through."""
    # Resolve every shortcut first, so a typo in the last class fails before any paging.
    genre_ids = {
        shortcut: str(client.genre(shortcut)["id"])
        for genre in classes
        for shortcut in genre.napster_shortcuts
    }
    tree = client.genre_tree()  # once per crawl: albums mostly name sub-genres of the classes' genres
    albums_per_genre = options.albums_per_genre
    albums: dict[str, _Album] = {}
    # Each class fills its share of the count; one that runs out of top albums early jumps to its end.
    shown = Progress(
        "napster: list top albums",
        len(classes) * albums_per_genre,
        unit="albums",
        log=say,
        progress_bar=progress_bar,
    )
    for number, genre in enumerate(shown.counting(classes, each=albums_per_genre)):
        listed: set[str] = set()
        for shortcut in genre.napster_shortcuts:
            top = client.iter_top_albums(
                genre_ids[shortcut], page_size=options.page_size, max_albums_per_range=albums_per_genre
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
                shown.reach(number * albums_per_genre + len(listed))
        say(f"napster: class {genre.name} ({', '.join(genre.napster_shortcuts)}): {len(listed)} top albums")
    class_by_genre_id = {
        genre_ids[shortcut].lower(): genre.name for genre in classes for shortcut in genre.napster_shortcuts
    }
    mapping = _label_by_own_genres(client, tree, albums.values(), class_by_genre_id, say)
    return albums, mapping


def _label_by_own_genres(
    client: NapsterClient,
    tree: NapsterGenreTree,
    albums: Iterable[_Album],
    class_by_genre_id: dict[str, str],
    say: Log,
) -> list[dict]:
    """Labels from the albums' own genre ids (see ``napster_genres`` for the policy); returns the mapping
    used, one row per genre id: its top-level genre, the class it fed (None for none) and how many albums."""
    albums = list(albums)
    tree.place({i for album in albums for i in _genre_ids(album.raw)}, _lookup_or_nothing(client, say))
    uses: Counter[str] = Counter()
    for album in albums:
        own = [class_of_genre(tree, i, class_by_genre_id) for i in _genre_ids(album.raw)]
        album.own_classes = list(dict.fromkeys(name for name in own if name))
        album.classes.update(album.own_classes)
        uses.update({str(i).lower() for i in _genre_ids(album.raw)})
    return [
        {
            "genre_id": genre_id,
            "top_level": tree.top_level_of(genre_id),
            "class": class_of_genre(tree, genre_id, class_by_genre_id),
            "albums": count,
        }
        for genre_id, count in sorted(uses.items(), key=lambda item: (-item[1], item[0]))
    ]


def _lookup_or_nothing(client: NapsterClient, say: Log):
    """``client.genres_by_id``, where a failed lookup leaves those ids unknown rather than failing the crawl."""

    def lookup(genre_ids: Sequence[str]) -> list[dict]:
        try:
            return client.genres_by_id(genre_ids)
        except SourceError as error:
            if isinstance(error, SourceAuthError):
                raise
            say(f"napster: genre lookup failed for {len(genre_ids)} ids, they feed no class: {error}")
            return []

    return lookup


def _genre_ids(raw: dict) -> list[str]:
    links = raw.get("links") or {}
    return [str(i) for i in ((links.get("genres") or {}).get("ids")) or []]


def _napster_candidates(
    client: NapsterClient,
    albums: Mapping[str, _Album],
    classes: Sequence[GenreClass],
    state: CrawlState,
    options: NapsterCrawlOptions,
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
            chosen = client.choose_image(images[album.album_id], preferred_side=options.preferred_image_side)
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
