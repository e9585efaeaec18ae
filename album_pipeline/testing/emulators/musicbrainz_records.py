"""The records of the MusicBrainz emulator's catalogue, and the constants that shape it.

The numbers follow the real pages recorded in ``shared/reference/real-responses/musicbrainz/`` where those
show them (secondary types, zero-vote tags); ``musicbrainz_catalog`` builds the catalogue from them.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from album_pipeline.sources.musicbrainz import DEFAULT_EXCLUDED_SECONDARY_TYPES

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
SECONDARY_TYPE_SHARE = 25 / 44  # albums with an excluded secondary type, as on the recorded real pages
SOUNDTRACK_SHARE = 0.05  # kept albums of secondary type Soundtrack, which a default crawl keeps
REMIX_SINGLE_SHARE = 0.1  # singles and EPs of secondary type Remix
TWO_SECONDARY_TYPES_SHARE = 0.15  # excluded albums with two secondary types (Remix + Mixtape/Street, say)
# Excluded albums' secondary types, weighted; ids as MusicBrainz has them.
EXCLUDED_TYPE_WEIGHTS = {"Compilation": 40, "Live": 20, "Remix": 15, "Mixtape/Street": 15, "DJ-mix": 10}
SECONDARY_TYPE_IDS: dict[str, str] = {
    "Compilation": "dd2a21e1-0c00-3729-a7a0-de60b84eb5d1",
    "Live": "6fd474e2-6b58-3102-9d17-d6f7eb7da0a0",
    "Remix": "0c60f497-ff81-3818-befd-abfc84a4858b",
    "Mixtape/Street": "15c1b1f5-d893-3375-a1db-e180c5ae15ed",
    "DJ-mix": "0d47f47a-3fe5-3d69-ac9d-d566c23968bf",
    "Soundtrack": "22a628ad-c082-3c4f-b1b6-d41665107b88",
}
# Real pages hold 14 tags voted 0 times over 44 groups; some are target genres (``pop`` on Discovery).
ZERO_VOTE_GENRE_TAG_SHARE = 0.2
ZERO_VOTE_OTHER_TAG_SHARE = 0.15
PDF_SHARE = 0.05  # groups with art that also hold a PDF upload (a booklet, ``types: []``)

# MusicBrainz's fixed ids of the primary types and of the "Official" release status.
PRIMARY_TYPE_IDS: dict[str, str] = {
    "Album": "f529b476-6e62-324f-b0aa-1f3e33d313fc",
    "Single": "d6038452-8ee0-3f68-affc-2de9a1ede0b9",
    "EP": "6d0c5bf6-7a33-3420-a519-44fc63eedebf",
}
OFFICIAL_STATUS_ID = "4e304316-386d-3409-af2e-78857eec5cfe"
GENRE_NAMESPACE = uuid.UUID("6f0a3bd4-3c1c-4f0e-9a59-4d1b1f7a3b52")  # genre ids are uuid5(name) under it

# Word lists of the same shape as the Napster catalogue's, but other words: data, not shared logic.
TITLE_WORDS_A = (
    "Silver", "Late", "Open", "Hidden", "Second", "Frozen", "Bright", "Lonely", "Final", "Amber",
    "Slow", "Iron", "Sweet", "Empty", "Morning", "Southern", "Little", "Heavy", "Secret", "Paper",
)  # fmt: skip
TITLE_WORDS_B = (
    "Harbour", "Songs", "Weather", "Window", "Circles", "Country", "Parade", "Heat", "Nocturnes", "Rooms",
    "Streets", "Sessions", "Waves", "Stations", "Colours", "Ghosts", "Bridges", "Anthems", "Fields", "Hours",
)  # fmt: skip
FIRST_NAMES = (
    "Ada", "Ben", "Clara", "Dev", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Leon",
    "Maya", "Nico", "Olive", "Pavel", "Rosa", "Sami", "Tessa", "Viktor",
)  # fmt: skip
LAST_NAMES = (
    "Albers", "Brooks", "Castell", "Duarte", "Ekberg", "Fontaine", "Grey", "Hale", "Ishikawa", "Jansen",
    "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quinn", "Rivera", "Sato", "Valen",
)  # fmt: skip
BAND_WORDS = (
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
    extension: str = "jpg"  # "pdf": a booklet, no cover; its thumbnails are JPEGs like any upload's

    @property
    def types(self) -> list[str]:
        if self.extension != "jpg":
            return []
        return ["Front"] if self.front else ["Back"]


@dataclass(frozen=True)
class ReleaseGroupRecord:
    """Everything the emulator knows about one release group; JSON is rendered per request."""

    id: str
    title: str
    primary_type: str  # "Album", "Single" or "EP"
    secondary_types: tuple[str, ...]  # as MusicBrainz spells them ("Compilation", "Mixtape/Street")
    artists: tuple[tuple[Artist, str], ...]  # (artist, joinphrase) in credit order
    first_release_date: str  # YYYY, YYYY-MM, YYYY-MM-DD or ""
    tags: tuple[tuple[str, int], ...]  # (name, count) in the order the service lists them; counts may be 0
    genres: tuple[str, ...]  # target genres whose tags it carries voted above 0, primary (highest) first
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

    def excluded_types(self, excluded: tuple[str, ...] = DEFAULT_EXCLUDED_SECONDARY_TYPES) -> set[str]:
        """Its secondary types (lower-cased) that a crawl excluding ``excluded`` skips it for."""
        return {kind.lower() for kind in self.secondary_types} & {kind.lower() for kind in excluded}


def new_mbid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def normalize_tag(text: str) -> str:
    return " ".join(text.lower().split())
