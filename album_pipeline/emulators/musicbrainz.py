"""An emulator of the MusicBrainz web service search and the Cover Art Archive, over a synthetic catalogue.

Shapes follow /work/shared/reference/data-sources.md (section MusicBrainz + Cover Art Archive). One loopback
server answers both services' paths, so a test points ``MUSICBRAINZ_URL`` and ``COVERART_URL`` at the same base:

- ``GET /ws/2/release-group?query=tag:"hip hop" AND primarytype:album&fmt=json&limit=&offset=``: Lucene-style
  search restricted to ``tag:`` and ``primarytype:`` clauses joined by ``AND``; anything else is a 400.
- ``GET /ws/2/genre/all?fmt=json&limit=&offset=``: the genre list.
- MusicBrainz's rules on ``/ws/2/`` only: ``fmt=json`` (or ``Accept: application/json``) is required, a missing
  or library-default ``User-Agent`` gets a 403, and more than ``rate_limit_per_second`` requests in a window
  (across all clients) get a 503 with ``Retry-After``.
- ``GET /release-group/{mbid}`` and ``/release/{mbid}``: the Cover Art Archive's JSON; 404 without art, 400 for
  a malformed MBID. ``.../front``, ``.../front-250``, ``-500``, ``-1200`` and the image URLs listed in the JSON
  answer 307 to an archive.org-shaped ``/download/mbid-{release}/mbid-{release}-{image}_thumb250.jpg`` path
  that serves the JPEG, as the real archive redirects to archive.org.

The catalogue's release groups are albums (and some singles and EPs) tagged with each genre's MusicBrainz tags;
an album's *primary genre* is the target genre whose tag has the highest count, and its front cover is drawn in
that genre's style, so ``MusicBrainzCatalog.expected_covers`` is the ground truth a crawler must reproduce.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from album_pipeline.emulators.server import (
    LOOPBACK_HOST,
    Handler,
    LoopbackServer,
    Request,
    Response,
    ServerRateLimit,
)
from album_pipeline.emulators.synthetic import draw_cover, encode_image
from album_pipeline.genres import DEFAULT_GENRES

if TYPE_CHECKING:
    from album_pipeline.emulators.faults import FaultPlan

REAL_MUSICBRAINZ_URL = "https://musicbrainz.org"
REAL_COVERART_URL = "https://coverartarchive.org"

DEFAULT_TAGS_BY_GENRE: dict[str, tuple[str, ...]] = {
    "rock": ("rock",),
    "jazz": ("jazz",),
    "pop": ("pop",),
    "rap-hip-hop": ("hip hop", "rap"),
    "classical": ("classical",),
}
# Tags that are not target genres; some are genres of their own in MusicBrainz (listed by /ws/2/genre/all).
OTHER_TAGS: tuple[str, ...] = (
    "british", "american", "live", "female vocalists", "male vocalists", "instrumental", "seen live",
    "1970s", "1980s", "1990s", "2000s", "electronic", "folk", "soul", "blues",
)  # fmt: skip
OTHER_GENRES: tuple[str, ...] = ("blues", "country", "electronic", "folk", "metal", "reggae", "soul")

DEFAULT_SEARCH_LIMIT = 25
MAX_SEARCH_LIMIT = 100
THUMBNAIL_SIZES: tuple[int, ...] = (250, 500, 1200)
THUMBNAIL_ALIASES = {"small": 250, "large": 500}
FULL_IMAGE_SIZE = 1400  # the "original" upload behind the ``image`` URL
NO_ART_SHARE = 0.10  # share of release groups without cover art (the archive answers 404)
BACK_IMAGE_SHARE = 0.25  # share of release groups with art that also have a back cover image
SECOND_GENRE_SHARE = 0.05  # share of albums also tagged (less strongly) with a second target genre
NON_ALBUM_SHARE = 0.15  # singles and EPs per genre, relative to its albums

# MusicBrainz's fixed ids of the primary types and of the "Official" release status.
PRIMARY_TYPE_IDS: dict[str, str] = {
    "Album": "f529b476-6e62-324f-b0aa-1f3e33d313fc",
    "Single": "d6038452-8ee0-3f68-affc-2de9a1ede0b9",
    "EP": "6d0c5bf6-7a33-3420-a519-44fc63eedebf",
}
OFFICIAL_STATUS_ID = "4e304316-386d-3409-af2e-78857eec5cfe"

# User-Agents MusicBrainz blocks: library defaults that say nothing about the application.
BLOCKED_USER_AGENT_PREFIXES: tuple[str, ...] = (
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "curl/",
    "wget",
)
RATE_LIMIT_MESSAGE = (
    "Your requests are exceeding the allowable rate limit. Please see "
    "https://musicbrainz.org/doc/MusicBrainz_API/Rate_Limiting for more information."
)
_GENRE_NAMESPACE = uuid.UUID("6f0a3bd4-3c1c-4f0e-9a59-4d1b1f7a3b52")  # genre ids are uuid5(name) under it
_MBID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)

_TITLE_WORDS_A = (
    "Silver", "Late", "Open", "Hidden", "Second", "Frozen", "Bright", "Lonely", "Final", "Amber",
    "Slow", "Iron", "Sweet", "Empty", "Morning", "Southern", "Little", "Heavy", "Secret", "Paper",
)  # fmt: skip
_TITLE_WORDS_B = (
    "Harbour", "Songs", "Weather", "Window", "Circles", "Country", "Parade", "Heat", "Nocturnes", "Rooms",
    "Streets", "Sessions", "Waves", "Stations", "Colours", "Ghosts", "Bridges", "Anthems", "Fields", "Hours",
)  # fmt: skip
_FIRST_NAMES = (
    "Ada", "Ben", "Clara", "Dev", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Leon",
    "Maya", "Nico", "Olive", "Pavel", "Rosa", "Sami", "Tessa", "Viktor",
)  # fmt: skip
_LAST_NAMES = (
    "Albers", "Brooks", "Castell", "Duarte", "Ekberg", "Fontaine", "Grey", "Hale", "Ishikawa", "Jansen",
    "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quinn", "Rivera", "Sato", "Valen",
)  # fmt: skip
_BAND_WORDS = (
    "Foxes", "Lanterns", "Orchestra", "Collective", "Quartet", "Machines", "Kids", "Brothers", "Club",
    "Ensemble", "Satellites", "Wolves",
)  # fmt: skip


@dataclass(frozen=True)
class Artist:
    id: str
    name: str
    sort_name: str

    def json(self) -> dict:
        return {"id": self.id, "name": self.name, "sort-name": self.sort_name}


@dataclass(frozen=True)
class CoverImage:
    id: int
    front: bool
    edit: int


@dataclass(frozen=True)
class ReleaseGroupRecord:
    """Everything the emulator knows about one release group; JSON is rendered per request."""

    id: str
    title: str
    primary_type: str  # "Album", "Single" or "EP"
    artists: tuple[tuple[Artist, str], ...]  # (artist, joinphrase) in credit order
    first_release_date: str  # YYYY, YYYY-MM, YYYY-MM-DD or ""
    tags: tuple[tuple[str, int], ...]  # (name, count) in the order the service lists them
    genres: tuple[str, ...]  # target genres whose tags it carries, primary (highest count) first
    release_ids: tuple[str, ...]  # the first is the release whose art stands for the group
    images: tuple[CoverImage, ...]  # empty: no cover art

    @property
    def primary_genre(self) -> str:
        return self.genres[0]

    @property
    def release_id(self) -> str:
        return self.release_ids[0]

    @property
    def front_image(self) -> CoverImage | None:
        return next((image for image in self.images if image.front), None)

    @property
    def drawing_seed(self) -> int:
        """The cover's drawing seed: a stable number derived from the MBID."""
        return uuid.UUID(self.id).int % 2**31

    def tag_names(self) -> set[str]:
        return {name for name, _ in self.tags}


def _new_mbid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _normalize_tag(text: str) -> str:
    return " ".join(text.lower().split())


def _default_tags_by_genre() -> dict[str, tuple[str, ...]]:
    return dict(DEFAULT_TAGS_BY_GENRE)


@dataclass
class MusicBrainzCatalog:
    """A deterministic synthetic MusicBrainz catalogue with Cover Art Archive images.

    ``release_groups_per_genre`` albums per genre (plus about 15% singles and EPs carrying the same tags), each
    tagged with its genre's tags (for rap-hip-hop sometimes "hip hop", sometimes "rap", sometimes both) at the
    highest count among target-genre tags, sometimes with a second target genre's tag at a lower count, and a
    few other tags. About 10% of release groups have no cover art.

    Ground truth for tests: ``release_groups``, ``tagged``, ``primary_genre``, ``genres_of``, ``has_art``,
    ``front_image_bytes`` and ``expected_covers``.
    """

    tags_by_genre: Mapping[str, tuple[str, ...]] = field(default_factory=_default_tags_by_genre)
    release_groups_per_genre: int = 200
    seed: int = 0
    records: dict[str, ReleaseGroupRecord] = field(init=False, repr=False)
    genre_by_tag: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tags_by_genre = {
            genre: tuple(_normalize_tag(tag) for tag in tags)
            for genre, tags in dict(self.tags_by_genre).items()
        }
        unknown = [genre for genre in tags_by_genre if genre not in DEFAULT_GENRES]
        if unknown:
            raise ValueError(
                f"the MusicBrainz emulator cannot serve genres {unknown}: it knows the cover styles of "
                f"{', '.join(DEFAULT_GENRES)} only"
            )
        if not tags_by_genre:
            raise ValueError("tags_by_genre must name at least one genre")
        self.genre_by_tag = {}
        for genre, tags in tags_by_genre.items():
            if not tags or any(not tag for tag in tags):
                raise ValueError(f"genre {genre!r} needs at least one non-empty tag, got {tags!r}")
            for tag in tags:
                if tag in self.genre_by_tag and self.genre_by_tag[tag] != genre:
                    raise ValueError(f"tag {tag!r} is given to both {self.genre_by_tag[tag]!r} and {genre!r}")
                self.genre_by_tag[tag] = genre
        self.tags_by_genre = tags_by_genre
        if not isinstance(self.release_groups_per_genre, int) or self.release_groups_per_genre < 1:
            raise ValueError(
                f"release_groups_per_genre must be a positive integer, got {self.release_groups_per_genre!r}"
            )
        layout = ";".join(f"{genre}={','.join(tags)}" for genre, tags in tags_by_genre.items())
        rng = random.Random(f"musicbrainz-catalog/{self.seed}/{self.release_groups_per_genre}/{layout}")
        self.records = self._make_records(rng)
        self._image_index = {
            (record.release_id, image.id): record.id
            for record in self.records.values()
            for image in record.images
        }
        # Only the release whose art stands for its group has art in the archive.
        self._release_index = {record.release_id: record.id for record in self.records.values()}
        self._render = functools.lru_cache(maxsize=4096)(self._draw_image_bytes)

    # --- building -------------------------------------------------------------------------------------
    def _make_records(self, rng: random.Random) -> dict[str, ReleaseGroupRecord]:
        genres = list(self.tags_by_genre)
        total = len(genres) * self.release_groups_per_genre
        artists = [self._make_artist(rng) for _ in range(max(12, total // 3))]
        records: dict[str, ReleaseGroupRecord] = {}
        used: set[str] = set()
        for genre in genres:
            singles = round(self.release_groups_per_genre * NON_ALBUM_SHARE)
            kinds = ["Album"] * self.release_groups_per_genre + [
                rng.choice(("Single", "EP")) for _ in range(singles)
            ]
            for primary_type in kinds:
                record = self._make_record(rng, genre, genres, primary_type, artists, used)
                records[record.id] = record
        return dict(sorted(records.items()))

    @staticmethod
    def _make_artist(rng: random.Random) -> Artist:
        mbid = _new_mbid(rng)
        kind = rng.random()
        if kind < 0.5:
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            return Artist(mbid, f"{first} {last}", f"{last}, {first}")
        if kind < 0.8:
            name = f"{rng.choice(_TITLE_WORDS_A)} {rng.choice(_BAND_WORDS)}"
            return Artist(mbid, f"The {name}", f"{name}, The")
        name = f"{rng.choice(_LAST_NAMES)} {rng.choice(_BAND_WORDS)}"
        return Artist(mbid, name, name)

    def _make_record(
        self,
        rng: random.Random,
        genre: str,
        genres: list[str],
        primary_type: str,
        artists: list[Artist],
        used: set[str],
    ) -> ReleaseGroupRecord:
        def unique_mbid() -> str:
            mbid = _new_mbid(rng)
            while mbid in used:
                mbid = _new_mbid(rng)
            used.add(mbid)
            return mbid

        mbid = unique_mbid()
        top = rng.randint(3, 14)
        own_tags = self.tags_by_genre[genre]
        if len(own_tags) == 1:
            chosen = list(own_tags)
        else:
            # A genre with several tags (hip hop / rap): one of them, or all.
            chosen = [rng.choice(own_tags)] if rng.random() < 2 / 3 else list(own_tags)
        tags: list[tuple[str, int]] = [(chosen[0], top)] + [(tag, rng.randint(1, top)) for tag in chosen[1:]]
        genres_carried = [genre]
        others = [other for other in genres if other != genre]
        if others and rng.random() < SECOND_GENRE_SHARE:
            second = rng.choice(others)
            tags.append((rng.choice(self.tags_by_genre[second]), rng.randint(1, top - 1)))
            genres_carried.append(second)
        pool = [tag for tag in OTHER_TAGS if tag not in self.genre_by_tag]
        for tag in rng.sample(pool, rng.randint(0, min(3, len(pool)))):
            tags.append((tag, rng.randint(1, top - 1)))
        rng.shuffle(tags)  # the service lists tags in no particular order

        credit_count = 2 if rng.random() < 0.15 else 1
        credited = rng.sample(artists, credit_count)
        joinphrases = [rng.choice((" & ", " feat. "))] if credit_count == 2 else []
        credits = tuple(zip(credited, [*joinphrases, ""], strict=True))

        year = rng.randint(1955, 2024)
        shape = rng.random()
        if shape < 0.05:
            date = ""
        elif shape < 0.2:
            date = f"{year}"
        elif shape < 0.35:
            date = f"{year}-{rng.randint(1, 12):02d}"
        else:
            date = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"

        release_ids = tuple(unique_mbid() for _ in range(rng.choice((1, 1, 1, 2, 2, 3))))
        images: tuple[CoverImage, ...] = ()
        if rng.random() >= NO_ART_SHARE:
            front = CoverImage(rng.randrange(10**9, 4 * 10**10), True, rng.randrange(10**7, 10**8))
            images = (front,)
            if rng.random() < BACK_IMAGE_SHARE:
                back = CoverImage(rng.randrange(10**9, 4 * 10**10), False, rng.randrange(10**7, 10**8))
                # Editors order images freely: the front is not always first.
                images = (front, back) if rng.random() < 0.5 else (back, front)
        title = f"{rng.choice(_TITLE_WORDS_A)} {rng.choice(_TITLE_WORDS_B)}"
        if primary_type == "EP":
            title += " EP"
        return ReleaseGroupRecord(
            id=mbid,
            title=title,
            primary_type=primary_type,
            artists=credits,
            first_release_date=date,
            tags=tuple(tags),
            genres=tuple(genres_carried),
            release_ids=release_ids,
            images=images,
        )

    # --- ground truth for tests ------------------------------------------------------------------------
    def record(self, mbid: str) -> ReleaseGroupRecord:
        try:
            return self.records[mbid.lower()]
        except KeyError:
            raise KeyError(f"release group {mbid!r} is not in the emulated catalogue") from None

    def release_groups(self, genre: str | None = None, primary_type: str | None = "Album") -> list[str]:
        """MBIDs, sorted, of release groups of ``primary_type`` (``None``: every type; default albums only).

        With ``genre``, only those carrying one of its tags (``genre in genres_of(mbid)``, primary or not).
        """
        if genre is not None and genre not in self.tags_by_genre:
            raise KeyError(f"unknown genre {genre!r}; the catalogue has {', '.join(self.tags_by_genre)}")
        return [
            record.id
            for record in self.records.values()
            if (primary_type is None or record.primary_type == primary_type)
            and (genre is None or genre in record.genres)
        ]

    def tagged(self, tag: str, primary_type: str | None = "Album") -> list[str]:
        """MBIDs, sorted, of release groups of ``primary_type`` carrying ``tag``: what a tag search must find."""
        wanted = _normalize_tag(tag)
        return [
            record.id
            for record in self.records.values()
            if (primary_type is None or record.primary_type == primary_type) and wanted in record.tag_names()
        ]

    def primary_genre(self, mbid: str) -> str:
        """The target genre whose tag has the highest count; its cover is drawn in that genre's style."""
        return self.record(mbid).primary_genre

    def genres_of(self, mbid: str) -> list[str]:
        """Every target genre whose tag the release group carries, primary first."""
        return list(self.record(mbid).genres)

    def has_art(self, mbid: str) -> bool:
        record = self.records.get(mbid.lower())
        return record is not None and record.front_image is not None

    def front_image_bytes(self, mbid: str, size: int = 250) -> bytes:
        """The front cover JPEG at a thumbnail size (250, 500, 1200) or ``FULL_IMAGE_SIZE`` (cached)."""
        record = self.record(mbid)
        front = record.front_image
        if front is None:
            raise KeyError(f"release group {mbid!r} has no cover art")
        return self.image_bytes(record.id, front.id, size)

    def expected_covers(self, size: int = 250) -> dict[str, dict[str, Any]]:
        """For every album release group with art: ``{"image_id": sha256 hex of the front JPEG at size,
        "genre": primary genre, "genres": every target genre, primary first}``."""
        return {
            mbid: {
                "image_id": hashlib.sha256(self.front_image_bytes(mbid, size)).hexdigest(),
                "genre": self.primary_genre(mbid),
                "genres": self.genres_of(mbid),
            }
            for mbid in self.release_groups()
            if self.has_art(mbid)
        }

    def image_bytes(self, mbid: str, image_id: int, size: int) -> bytes:
        """One cover image of a release group as JPEG bytes; the front is ``draw_cover(primary, seed, size)``."""
        if size not in (*THUMBNAIL_SIZES, FULL_IMAGE_SIZE):
            raise ValueError(f"no image size {size}; use one of {THUMBNAIL_SIZES} or {FULL_IMAGE_SIZE}")
        record = self.record(mbid)
        if all(image.id != image_id for image in record.images):
            raise KeyError(f"release group {mbid!r} has no image {image_id}")
        return self._render(record.id, image_id, size)

    def _draw_image_bytes(self, mbid: str, image_id: int, size: int) -> bytes:
        record = self.records[mbid]
        front = record.front_image
        seed = record.drawing_seed if front is not None and front.id == image_id else image_id % 2**31
        return encode_image(draw_cover(record.primary_genre, seed, size))

    # --- lookups for the emulator ------------------------------------------------------------------------
    def record_for_release(self, release_id: str) -> ReleaseGroupRecord | None:
        mbid = self._release_index.get(release_id.lower())
        return None if mbid is None else self.records[mbid]

    def record_for_image(self, release_id: str, image_id: int) -> ReleaseGroupRecord | None:
        mbid = self._image_index.get((release_id.lower(), image_id))
        return None if mbid is None else self.records[mbid]

    def genre_names(self) -> list[str]:
        """Every name ``/ws/2/genre/all`` lists: the genre tags plus a few other MusicBrainz genres, sorted."""
        return sorted(set(self.genre_by_tag) | set(OTHER_GENRES))

    @staticmethod
    def genre_id(name: str) -> str:
        return str(uuid.uuid5(_GENRE_NAMESPACE, name))

    # --- JSON ---------------------------------------------------------------------------------------------
    def release_group_json(self, mbid: str, score: int = 100) -> dict:
        """A release group as the search lists it."""
        record = self.record(mbid)
        type_id = PRIMARY_TYPE_IDS[record.primary_type]
        return {
            "id": record.id,
            "type-id": type_id,
            "score": score,
            "primary-type-id": type_id,
            "count": len(record.release_ids),
            "title": record.title,
            "first-release-date": record.first_release_date,
            "primary-type": record.primary_type,
            "artist-credit": [
                {"name": artist.name, "joinphrase": joinphrase, "artist": artist.json()}
                for artist, joinphrase in record.artists
            ],
            "releases": [
                {
                    "id": release_id,
                    "status-id": OFFICIAL_STATUS_ID,
                    "title": record.title,
                    "status": "Official",
                }
                for release_id in record.release_ids
            ],
            "tags": [{"count": count, "name": name} for name, count in record.tags],
        }

    def archive_path(self, release_id: str, image_id: int, size: int | None) -> str:
        """The archive.org-shaped path of an image (``size`` None: the full upload)."""
        suffix = "" if size is None or size == FULL_IMAGE_SIZE else f"_thumb{size}"
        return f"/download/mbid-{release_id}/mbid-{release_id}-{image_id}{suffix}.jpg"

    def cover_art_json(self, mbid: str, base_url: str = REAL_COVERART_URL) -> dict:
        """The Cover Art Archive's JSON for a release group with art, its image URLs under ``base_url``."""
        record = self.record(mbid)
        if not record.images:
            raise KeyError(f"release group {mbid!r} has no cover art")
        release = f"{base_url}/release/{record.release_id}"
        images = []
        for image in record.images:
            thumbnails = {str(size): f"{release}/{image.id}-{size}.jpg" for size in THUMBNAIL_SIZES}
            thumbnails.update({alias: thumbnails[str(size)] for alias, size in THUMBNAIL_ALIASES.items()})
            images.append(
                {
                    "approved": True,
                    "back": not image.front,
                    "comment": "",
                    "edit": image.edit,
                    "front": image.front,
                    "id": image.id,
                    "image": f"{release}/{image.id}.jpg",
                    "thumbnails": thumbnails,
                    "types": ["Front"] if image.front else ["Back"],
                }
            )
        return {"images": images, "release": release}


class _QueryError(ValueError):
    pass


_CLAUSE = re.compile(r'\s*(?P<field>[A-Za-z]+)\s*:\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"()\[\]{}]+))\s*')
_AND = re.compile(r"AND\b", re.IGNORECASE)
_LUCENE_SPECIAL = re.compile(r'[*?~^\\:+!"]')
SEARCH_FIELDS = ("tag", "primarytype")


def parse_release_group_query(query: str) -> list[tuple[str, str]]:
    """``tag:"hip hop" AND primarytype:album`` -> ``[("tag", "hip hop"), ("primarytype", "album")]``.

    Only ``field:value`` clauses over ``SEARCH_FIELDS`` joined by ``AND`` are understood; values may be quoted.
    Field names and values are lower-cased. Anything else raises ValueError.
    """
    clauses: list[tuple[str, str]] = []
    position = 0
    if not query.strip():
        raise _QueryError('the query is empty; search like query=tag:"jazz" AND primarytype:album')
    while True:
        match = _CLAUSE.match(query, position)
        if match is None:
            raise _QueryError(
                f'unsupported query syntax at {query[position:]!r}: use field:value or field:"a value" '
                f"clauses joined by AND"
            )
        name = match["field"].lower()
        value = match["quoted"] if match["quoted"] is not None else match["bare"]
        if name not in SEARCH_FIELDS:
            raise _QueryError(
                f"unsupported search field {match['field']!r}; this emulator knows {SEARCH_FIELDS}"
            )
        if match["bare"] is not None and _LUCENE_SPECIAL.search(value):
            raise _QueryError(
                f"unsupported query syntax in {value!r}: wildcards and operators are not supported"
            )
        clauses.append((name, _normalize_tag(value)))
        position = match.end()
        if position == len(query):
            return clauses
        joined = _AND.match(query, position)
        if joined is None:
            raise _QueryError(
                f"unsupported query syntax at {query[position:]!r}: only AND may join clauses "
                f"(no OR, NOT, grouping or default-field terms)"
            )
        position = joined.end()


def _mb_error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response.json(
        {"error": message, "help": "For usage, please see: https://musicbrainz.org/development/mmd"},
        status,
        headers,
    )


class MusicBrainzEmulator(LoopbackServer):
    """MusicBrainz's ``/ws/2/`` search and genre list plus the Cover Art Archive, on one loopback server."""

    name = "musicbrainz"

    def __init__(
        self,
        catalog: MusicBrainzCatalog | None = None,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        *,
        rate_limit_per_second: float | None = 1.0,
        faults: FaultPlan | None = None,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(host, port, faults=faults, latency_s=latency_s)
        self.catalog = catalog if catalog is not None else MusicBrainzCatalog()
        self._rate_limiter = ServerRateLimit(rate_limit_per_second) if rate_limit_per_second else None
        methods = ("GET", "HEAD")
        self.add_route(methods, r"/ws/2/release-group/?", self._ws(self._search_release_groups))
        self.add_route(methods, r"/ws/2/genre/all/?", self._ws(self._all_genres))
        # Unknown /ws/2/ paths still pass the gateway's User-Agent and rate checks before their 404.
        self.add_route(("GET", "HEAD", "POST"), r"/ws/2/.*", self._ws(self._ws_not_found, json_only=False))
        entity = r"/(?P<entity>release-group|release)/(?P<mbid>[^/]+)"
        self.add_route(methods, rf"{entity}/?", self._cover_art)
        self.add_route(methods, rf"{entity}/front(?:-(?P<size>250|500|1200))?", self._front)
        self.add_route(
            methods,
            r"/release/(?P<mbid>[^/]+)/(?P<image>\d+)(?:-(?P<size>250|500|1200|small|large))?\.jpg",
            self._image_by_id,
        )
        self.add_route(
            methods,
            r"/download/mbid-(?P<release>[0-9a-fA-F-]{36})/mbid-(?P=release)-(?P<image>\d+)"
            r"(?:_thumb(?P<size>250|500|1200))?\.jpg",
            self._archive_image,
        )

    @property
    def musicbrainz_url(self) -> str:
        return self.url

    @property
    def coverart_url(self) -> str:
        return self.url

    def environment(self) -> dict[str, str]:
        """The environment variables pointing a client at this server for both services."""
        return {"MUSICBRAINZ_URL": self.url, "COVERART_URL": self.url}

    def not_found(self, path: str) -> Response:
        if path.startswith("/ws/2/"):
            return _mb_error("Not Found", 404)
        return Response(404, f"Not Found: {path}\n".encode(), {"Content-Type": "text/plain; charset=utf-8"})

    def fault_error(self, status: int) -> Response:
        """Injected failures in MusicBrainz's error shape (the server adds ``Retry-After`` to 429 and 503)."""
        messages = {
            429: "Your requests are exceeding the allowable rate limit.",
            500: "Internal server error; please try again.",
            502: "Bad gateway; please try again.",
            503: RATE_LIMIT_MESSAGE,
        }
        return _mb_error(messages[status], status)

    # --- MusicBrainz ----------------------------------------------------------------------------------
    def _ws(self, handler: Handler, json_only: bool = True) -> Handler:
        """MusicBrainz's gateway rules: a meaningful User-Agent, the rate limit, then JSON only."""

        def guarded(request: Request) -> Response:
            agent = (request.header("user-agent") or "").strip()
            if not agent or agent.lower().startswith(BLOCKED_USER_AGENT_PREFIXES):
                return _mb_error(
                    "Requests with a missing, anonymous or library-default User-Agent are blocked. Send a "
                    "meaningful User-Agent identifying your application: application/version ( contact ), "
                    "e.g. 'AlbumPipeline/1.0 ( maintainer@example.org )'. See "
                    "https://musicbrainz.org/doc/MusicBrainz_API/Rate_Limiting",
                    403,
                )
            if self._rate_limiter is not None and not self._rate_limiter.allow():
                return _mb_error(
                    RATE_LIMIT_MESSAGE,
                    503,
                    {"Retry-After": str(math.ceil(self._rate_limiter.window_s))},
                )
            wants_json = request.query.get("fmt", "").lower() == "json" or "application/json" in (
                request.header("accept") or ""
            )
            if json_only and not wants_json:
                return _mb_error("This emulator answers JSON only: add fmt=json to the query", 400)
            return handler(request)

        return guarded

    def _ws_not_found(self, request: Request) -> Response:
        return self.not_found(request.path)

    @staticmethod
    def _paging(request: Request) -> tuple[int, int]:
        try:
            limit = int(request.query.get("limit", DEFAULT_SEARCH_LIMIT))
            offset = int(request.query.get("offset", 0))
        except ValueError:
            raise _QueryError("limit and offset must be integers") from None
        if limit < 1 or offset < 0:
            raise _QueryError(f"limit must be positive and offset not negative, got {limit} and {offset}")
        return min(limit, MAX_SEARCH_LIMIT), offset

    def _search_release_groups(self, request: Request) -> Response:
        try:
            clauses = parse_release_group_query(request.query.get("query", ""))
            limit, offset = self._paging(request)
        except _QueryError as error:
            return _mb_error(str(error), 400)
        tags = [value for name, value in clauses if name == "tag"]
        types = {value for name, value in clauses if name == "primarytype"}
        if len(types) > 1:
            return Response.json(self._search_body([], offset))
        hits: list[tuple[int, str]] = []
        for record in self.catalog.records.values():
            if types and record.primary_type.lower() not in types:
                continue
            counts = dict(record.tags)
            if any(tag not in counts for tag in tags):
                continue
            hits.append((sum(counts[tag] for tag in tags), record.id))
        best = max((weight for weight, _ in hits), default=0)
        scored = sorted(
            ((100 if best == 0 else max(1, round(100 * weight / best)), mbid) for weight, mbid in hits),
            key=lambda hit: (-hit[0], hit[1]),
        )
        page = [
            self.catalog.release_group_json(mbid, score) for score, mbid in scored[offset : offset + limit]
        ]
        return Response.json(self._search_body(page, offset, len(scored)))

    @staticmethod
    def _search_body(page: list[dict], offset: int, count: int = 0) -> dict:
        now = datetime.now(UTC)
        created = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return {"created": created, "count": count, "offset": offset, "release-groups": page}

    def _all_genres(self, request: Request) -> Response:
        try:
            limit, offset = self._paging(request)
        except _QueryError as error:
            return _mb_error(str(error), 400)
        names = self.catalog.genre_names()
        return Response.json(
            {
                "genre-count": len(names),
                "genre-offset": offset,
                "genres": [
                    {"id": self.catalog.genre_id(name), "name": name, "disambiguation": ""}
                    for name in names[offset : offset + limit]
                ],
            }
        )

    # --- Cover Art Archive ------------------------------------------------------------------------------
    def _caa_not_found(self, what: str) -> Response:
        return Response(
            404, f"No cover art found for {what}\n".encode(), {"Content-Type": "text/plain; charset=utf-8"}
        )

    def _lookup(self, request: Request) -> tuple[ReleaseGroupRecord | None, Response | None]:
        """The release group behind ``/release-group/{mbid}`` or ``/release/{mbid}``, or the error reply."""
        mbid = request.match["mbid"]
        if not _MBID.fullmatch(mbid):
            return None, Response(
                400, f"{mbid} is not a valid MBID\n".encode(), {"Content-Type": "text/plain; charset=utf-8"}
            )
        if request.match["entity"] == "release":
            record = self.catalog.record_for_release(mbid)
        else:
            record = self.catalog.records.get(mbid.lower())
        if record is None or not record.images:
            return None, self._caa_not_found(f"{request.match['entity']} {mbid}")
        return record, None

    def _cover_art(self, request: Request) -> Response:
        record, error = self._lookup(request)
        if record is None:
            assert error is not None
            return error
        return Response.json(self.catalog.cover_art_json(record.id, self.url))

    def _redirect(self, path: str) -> Response:
        location = self.url + path
        return Response(
            307, f"See: {location}\n".encode(), {"Location": location, "Content-Type": "text/plain"}
        )

    def _front(self, request: Request) -> Response:
        record, error = self._lookup(request)
        if record is None:
            assert error is not None
            return error
        front = record.front_image
        if front is None:
            return self._caa_not_found(f"{request.match['entity']} {request.match['mbid']}: no front image")
        size = int(request.match["size"]) if request.match["size"] else None
        return self._redirect(self.catalog.archive_path(record.release_id, front.id, size))

    def _image_by_id(self, request: Request) -> Response:
        release_id = request.match["mbid"]
        if not _MBID.fullmatch(release_id):
            return Response(
                400, f"{release_id} is not a valid MBID\n".encode(), {"Content-Type": "text/plain"}
            )
        image_id = int(request.match["image"])
        if self.catalog.record_for_image(release_id, image_id) is None:
            return self._caa_not_found(f"release {release_id}, image {image_id}")
        size_name = request.match["size"]
        size = None if size_name is None else THUMBNAIL_ALIASES.get(size_name) or int(size_name)
        return self._redirect(self.catalog.archive_path(release_id.lower(), image_id, size))

    def _archive_image(self, request: Request) -> Response:
        release_id, image_id = request.match["release"].lower(), int(request.match["image"])
        record = self.catalog.record_for_image(release_id, image_id)
        if record is None:
            return self.not_found(request.path)
        size = int(request.match["size"]) if request.match["size"] else FULL_IMAGE_SIZE
        return Response.binary(self.catalog.image_bytes(record.id, image_id, size), "image/jpeg")
