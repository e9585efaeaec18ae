"""The MusicBrainz emulator's synthetic catalogue: release groups, their tags and cover art, and the ground truth.

The catalogue's release groups are albums (and some singles and EPs) tagged with each genre's MusicBrainz tags;
an album's *primary genre* is the target genre whose tag has the highest count, and its front cover is drawn in
that genre's style, so ``MusicBrainzCatalog.expected_covers`` is the ground truth a crawler must reproduce.
``MusicBrainzEmulator`` (``album_pipeline.testing.emulators.musicbrainz``) serves it over HTTP.
"""

from __future__ import annotations

import functools
import hashlib
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.profiles import DEMO_RELEASE_GROUPS_PER_GENRE
from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image

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
_GENRE_NAMESPACE = uuid.UUID("6f0a3bd4-3c1c-4f0e-9a59-4d1b1f7a3b52")  # genre ids are uuid5(name) under it

# Word lists of the same shape as the Napster catalogue's, but other words: data, not shared logic.
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


def normalize_tag(text: str) -> str:
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
    release_groups_per_genre: int = DEMO_RELEASE_GROUPS_PER_GENRE
    seed: int = 0
    records: dict[str, ReleaseGroupRecord] = field(init=False, repr=False)
    genre_by_tag: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tags_by_genre = {
            genre: tuple(normalize_tag(tag) for tag in tags)
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
        wanted = normalize_tag(tag)
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
