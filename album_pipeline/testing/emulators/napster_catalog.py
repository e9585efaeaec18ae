"""The Napster emulator's synthetic catalogue: albums, top lists, their JSON, their images, and the ground truth.

The catalogue can damage some albums' images on purpose (``broken_image_share``, ``truncated_image_share``,
``placeholder_image_share``), and says which and what a correct crawl keeps: ``image_fault``, ``chosen_size``,
``expected_covers`` and ``invalid_covers`` are the ground truth for tests. ``NapsterEmulator``
(``album_pipeline.testing.emulators.napster``) serves it over HTTP.
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.profiles import DEMO_ALBUMS_PER_GENRE
from album_pipeline.testing.emulators.napster_shapes import (
    GENRE_ID_BY_SHORTCUT,
    GENRE_PARENT,
    GENRE_SHORTCUT_BY_ID,
    IMAGE_SIZES,
    KNOWN_GENRES,
    ROOT_GENRE_ID,
    SUB_GENRES,
    UNLISTED_GENRE_BY_TOP_LEVEL,
    children_of,
    image_list,
    own_genre_id,
)
from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image

__all__ = ["GENRE_ID_BY_SHORTCUT", "GENRE_SHORTCUT_BY_ID", "IMAGE_SIZES", "KNOWN_GENRES", "RANGES"]
UNLISTED_GENRE_IDS = frozenset(UNLISTED_GENRE_BY_TOP_LEVEL.values())
FLAG_FIELD_STYLES = ("2016", "v2.2")  # explicit/single as the recorded 2016 API names them, or isExplicit/...

REAL_API_URL = "https://api.napster.com"
RANGES: tuple[str, ...] = ("day", "week", "month", "year", "life")
SECOND_GENRE_SHARE = 0.04  # share of albums that carry a second genre id
RANGE_MEMBERSHIP = 0.75  # chance an album is in a given range's top list (ranges overlap heavily)
MISSING_RELEASE_DATE_SHARE = 0.03
IMAGE_FAULTS: tuple[str, ...] = ("broken", "truncated", "placeholder")  # data faults of a whole album's image
TRUNCATED_IMAGE_KEEP = 0.6  # share of a JPEG's bytes a "truncated" image keeps
# Leading bytes of the "broken" images: no image format starts this way, so nothing sniffs them as one.
BROKEN_IMAGE_PREFIX = b"\x7f\x7fnot-an-image\x00"

# Word lists of the same shape as the MusicBrainz catalogue's, but other words: data, not shared logic.
_ADJECTIVES = (
    "Midnight", "Golden", "Electric", "Silent", "Broken", "Velvet", "Neon", "Distant", "Crimson", "Hollow",
    "Endless", "Paper", "Northern", "Wild", "Blue", "Restless", "Quiet", "Burning", "Glass", "Lucky",
)  # fmt: skip
_NOUNS = (
    "Rivers", "Hearts", "Skyline", "Echoes", "Summer", "Machines", "Avenue", "Dreams", "Fires", "Tides",
    "Letters", "Mirrors", "Highway", "Garden", "Signals", "Horizon", "Stories", "Lights", "Shadows", "Season",
)  # fmt: skip
_ARTIST_FIRST = (
    "The", "Lil", "DJ", "Miss", "Big", "Young", "Sister", "Uncle", "Saint", "Captain",
)  # fmt: skip
_LABELS = (
    "Blue Door Records", "Northside Music", "Harbor Sound", "Eastbound Recordings", "Copper Label",
    "Lantern Music Group", "Parallel Records", "Quarry Sound",
)  # fmt: skip


def _slug(text: str) -> str:
    return "-".join("".join(ch for ch in word.lower() if ch.isalnum()) for word in text.split())


@dataclass(frozen=True)
class AlbumRecord:
    """Everything the emulator knows about one album; JSON is rendered per request with the server's URL."""

    id: str
    number: int  # the digits of the id, also the cover's drawing seed
    name: str
    artist_name: str
    artist_id: str
    genre_ids: tuple[str, ...]  # as served, primary first: mostly sub-genre ids
    top_genre_ids: tuple[str, ...]  # the top-level genre of each, as the catalogue knows it
    upc: str
    released: str
    originally_released: str
    label: str
    disc_count: int
    track_count: int
    is_explicit: bool
    is_streamable: bool
    image_version: int
    image_sizes: tuple[int, ...]  # in the order the API lists them
    image_extension: str = "jpg"

    @property
    def primary_genre(self) -> str:
        return GENRE_SHORTCUT_BY_ID[self.top_genre_ids[0]]


@dataclass
class NapsterCatalog:
    """A deterministic synthetic catalogue: ``albums_per_genre`` albums per genre and top lists per range."""

    genres: tuple[str, ...] = DEFAULT_GENRES
    albums_per_genre: int = DEMO_ALBUMS_PER_GENRE
    seed: int = 0
    # Shares of albums whose image is damaged at every size (decided per album from the seed and its id):
    # "broken" serves non-image bytes as image/jpeg, "truncated" a JPEG cut to 60% of its bytes with a
    # matching Content-Length, "placeholder" one shared "no cover available" JPEG.
    broken_image_share: float = field(default=0.0, kw_only=True)
    truncated_image_share: float = field(default=0.0, kw_only=True)
    placeholder_image_share: float = field(default=0.0, kw_only=True)
    flag_field_style: str = field(default="2016", kw_only=True)
    albums: dict[str, AlbumRecord] = field(init=False, repr=False)
    top_lists: dict[tuple[str, str], list[str]] = field(init=False, repr=False)  # (genre id, range) -> ids

    def __post_init__(self) -> None:
        self.genres = tuple(self.genres)
        unknown = [
            genre for genre in self.genres if genre not in GENRE_ID_BY_SHORTCUT or genre not in DEFAULT_GENRES
        ]
        if unknown:
            raise ValueError(
                f"the Napster emulator cannot serve genres {unknown}: it knows the cover styles of "
                f"{', '.join(DEFAULT_GENRES)} only"
            )
        if len(set(self.genres)) != len(self.genres):
            raise ValueError(f"genre list has duplicates: {list(self.genres)}")
        if not isinstance(self.albums_per_genre, int) or self.albums_per_genre < 1:
            raise ValueError(f"albums_per_genre must be a positive integer, got {self.albums_per_genre!r}")
        if self.flag_field_style not in FLAG_FIELD_STYLES:
            raise ValueError(
                f"flag_field_style must be one of {FLAG_FIELD_STYLES}, got {self.flag_field_style!r}"
            )
        shares = {
            "broken_image_share": self.broken_image_share,
            "truncated_image_share": self.truncated_image_share,
            "placeholder_image_share": self.placeholder_image_share,
        }
        for name, share in shares.items():
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be a number between 0 and 1, got {share!r}")
        if sum(shares.values()) > 1.0 + 1e-9:
            raise ValueError(f"the image fault shares add up to more than 1: {shares}")
        rng = random.Random(f"napster-catalog/{self.seed}/{self.albums_per_genre}/{','.join(self.genres)}")
        self.albums = self._make_albums(rng)
        self.top_lists = self._make_top_lists(rng)
        # Served bytes, bounded (~70 MB at 600px); the ground truth keeps only digests, so any catalogue fits.
        self._render_image = functools.lru_cache(maxsize=2048)(self._draw_image_bytes)
        self._image_digests: dict[tuple[str, int], str] = {}

    # --- building -------------------------------------------------------------------------------------
    def _make_albums(self, rng: random.Random) -> dict[str, AlbumRecord]:
        albums: dict[str, AlbumRecord] = {}
        used_numbers: set[int] = set()
        genre_ids = [GENRE_ID_BY_SHORTCUT[genre] for genre in self.genres]
        for genre_id in genre_ids:
            for _ in range(self.albums_per_genre):
                number = rng.randrange(10**8, 10**9)
                while number in used_numbers:
                    number = rng.randrange(10**8, 10**9)
                used_numbers.add(number)
                album = self._make_album(rng, number, genre_id, genre_ids)
                albums[album.id] = album
        return albums

    @staticmethod
    def _make_album(rng: random.Random, number: int, genre_id: str, all_genre_ids: list[str]) -> AlbumRecord:
        top_ids = [genre_id]
        others = [other for other in all_genre_ids if other != genre_id]
        if others and rng.random() < SECOND_GENRE_SHARE:
            top_ids.append(rng.choice(others))
        ids = [own_genre_id(rng, top) for top in top_ids]
        year = rng.randint(1962, 2023)
        released = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T07:00:00.000Z"
        original_year = year - (rng.randint(1, 20) if rng.random() < 0.2 else 0)
        originally_released = f"{max(1950, original_year)}{released[4:]}"
        if rng.random() < MISSING_RELEASE_DATE_SHARE:
            released = ""
        track_count = rng.choice([1, 2, 3]) if rng.random() < 0.12 else rng.randint(6, 22)
        artist = (
            f"{rng.choice(_ARTIST_FIRST)} {rng.choice(_NOUNS)}"
            if rng.random() < 0.5
            else f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        )
        images = image_list(rng.random())
        return AlbumRecord(
            id=f"alb.{number}",
            number=number,
            name=f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}",
            artist_name=artist,
            artist_id=f"art.{rng.randrange(10**6, 10**9)}",
            genre_ids=tuple(ids),
            top_genre_ids=tuple(top_ids),
            upc=str(rng.randrange(10**11, 10**12)),
            released=released,
            originally_released=originally_released,
            label=rng.choice(_LABELS),
            disc_count=2 if rng.random() < 0.05 else 1,
            track_count=track_count,
            is_explicit=rng.random() < 0.2,
            is_streamable=rng.random() < 0.97,
            image_version=rng.randint(1, 3),
            image_sizes=images.sizes,
            image_extension=images.extension,
        )

    def _make_top_lists(self, rng: random.Random) -> dict[tuple[str, str], list[str]]:
        top_lists: dict[tuple[str, str], list[str]] = {}
        for genre in self.genres:
            genre_id = GENRE_ID_BY_SHORTCUT[genre]
            members = [album.id for album in self.albums.values() if genre_id in album.top_genre_ids]
            popularity = {album_id: rng.random() for album_id in members}
            in_range: dict[str, list[str]] = {range_name: [] for range_name in RANGES}
            for album_id in members:
                chosen = [range_name for range_name in RANGES if rng.random() < RANGE_MEMBERSHIP]
                for range_name in chosen or [rng.choice(RANGES)]:
                    in_range[range_name].append(album_id)
            for range_name in RANGES:
                # Each range ranks by a shared popularity plus its own noise: similar, not identical, orders.
                score = {
                    album_id: popularity[album_id] + rng.gauss(0, 0.15) for album_id in in_range[range_name]
                }
                top_lists[(genre_id, range_name)] = sorted(in_range[range_name], key=lambda a: (-score[a], a))
        return top_lists

    # --- ground truth for tests ------------------------------------------------------------------------
    def genre_id(self, genre: str) -> str:
        """The Napster id of a genre given by shortcut or id (``rock`` or ``g.5``)."""
        if genre in GENRE_SHORTCUT_BY_ID:
            return genre
        if genre in GENRE_ID_BY_SHORTCUT:
            return GENRE_ID_BY_SHORTCUT[genre]
        raise KeyError(f"unknown genre {genre!r}; known shortcuts: {', '.join(GENRE_ID_BY_SHORTCUT)}")

    def top_album_ids(self, genre: str, range_name: str | None = None) -> set[str]:
        """Album ids in a genre's top lists: one range, or the union over ranges (all the genre's albums)."""
        genre_id = self.genre_id(genre)
        names = RANGES if range_name is None else (range_name,)
        return {album_id for name in names for album_id in self.top_lists.get((genre_id, name), [])}

    def top_list(self, genre: str, range_name: str) -> list[str]:
        """The ordered top list of one genre and range."""
        if range_name not in RANGES:
            raise ValueError(f"unknown range {range_name!r}; use one of {', '.join(RANGES)}")
        return list(self.top_lists.get((self.genre_id(genre), range_name), []))

    def album_genres(self, album_id: str) -> list[str]:
        """The top-level genre shortcuts an album belongs to, primary first."""
        return [GENRE_SHORTCUT_BY_ID[genre_id] for genre_id in self._record(album_id).top_genre_ids]

    def training_genre(self, album_id: str) -> str:
        """The genre a correct crawl trains the album under: the top-level genre of its first own genre id
        that the genre tree places (unlisted ids feed nothing), else the first of its genres in the default
        class order (the top lists it was found in)."""
        record = self._record(album_id)
        for served, top in zip(record.genre_ids, record.top_genre_ids, strict=True):
            if served not in UNLISTED_GENRE_IDS:
                return GENRE_SHORTCUT_BY_ID[top]
        return next(genre for genre in DEFAULT_GENRES if genre in self.album_genres(album_id))

    def _record(self, album_id: str) -> AlbumRecord:
        try:
            return self.albums[album_id]
        except KeyError:
            raise KeyError(f"album {album_id!r} is not in the emulated catalogue") from None

    def album(self, album_id: str, base_url: str = REAL_API_URL) -> dict:
        """An album's JSON as the API returns it, with links under ``base_url``."""
        record = self._record(album_id)
        api = f"{base_url}/v2.2"
        explicit, single = (
            ("explicit", "single") if self.flag_field_style == "2016" else ("isExplicit", "isSingle")
        )
        return {
            "type": "album",
            "id": record.id,
            "upc": record.upc,
            "shortcut": f"{_slug(record.artist_name)}/{_slug(record.name)}",
            "href": f"{api}/albums/{record.id}",
            "name": record.name,
            "released": record.released,
            "originallyReleased": record.originally_released,
            "label": record.label,
            "copyright": f"(P) {record.originally_released[:4]} {record.label}",
            "tags": ["Explicit"] if record.is_explicit else [],
            "discCount": record.disc_count,
            "trackCount": record.track_count,
            explicit: record.is_explicit,
            single: record.track_count <= 3,
            "accountPartner": "Napster",
            "artistName": record.artist_name,
            "contributingArtists": {"primaryArtist": record.artist_id},
            "discographies": {"main": [record.id]},
            "links": {
                "images": {"href": f"{api}/albums/{record.id}/images"},
                "tracks": {"href": f"{api}/albums/{record.id}/tracks"},
                "posts": {"href": f"{api}/albums/{record.id}/posts"},
                "artists": {"ids": [record.artist_id], "href": f"{api}/artists/{record.artist_id}"},
                "genres": {
                    "ids": list(record.genre_ids),
                    "href": f"{api}/genres/{','.join(record.genre_ids)}",
                },
            },
            "isStreamable": record.is_streamable,
        }

    def image_path(self, album_id: str, width: int, height: int) -> str:
        """The path of an album image on the static image host, without the host."""
        record = self._record(album_id)
        # The static host shards by the last digits of the image number.
        shards = "/".join(reversed(str(record.number)[-4:]))
        return f"/img/{width}x{height}/{shards}/{record.number}_{width}x{height}.{record.image_extension}"

    def images(self, album_id: str, image_base_url: str) -> list[dict]:
        """An album's image JSON objects, in the API's order (170 first for most, see ``napster_shapes``)."""
        record = self._record(album_id)
        return [
            {
                "type": "image",
                "id": f"img.{record.number}",
                "url": image_base_url + self.image_path(album_id, size, size),
                "contentId": record.id,
                "width": size,
                "height": size,
                "isDefault": True,
                "version": record.image_version,
                "imageType": "Album",
            }
            for size in record.image_sizes
        ]

    def has_image(self, album_id: str, width: int, height: int, extension: str | None = None) -> bool:
        """Whether the image host serves this size (and, when given, file extension) of an album's image."""
        record = self.albums.get(album_id)
        return (
            record is not None
            and width == height
            and width in record.image_sizes
            and extension in (None, record.image_extension)
        )

    def image_bytes(self, album_id: str, width: int, height: int) -> bytes:
        """The bytes the image host serves (cached): the album's primary-genre cover, seeded by its id, as a
        JPEG, or what its image fault makes of it (see ``image_fault``)."""
        if not self.has_image(album_id, width, height):
            raise KeyError(f"album {album_id!r} has no {width}x{height} image")
        return self._render_image(album_id, width)

    def _draw_image_bytes(self, album_id: str, size: int) -> bytes:
        record = self.albums[album_id]
        fault = self.image_fault(album_id)
        if fault == "placeholder":
            return no_cover_available_jpeg(size)
        if fault == "broken":
            return self._broken_image_bytes(album_id, size)
        cover = encode_image(draw_cover(record.primary_genre, record.number, size))
        if fault == "truncated":
            return cover[: int(len(cover) * TRUNCATED_IMAGE_KEEP)]
        return cover

    def _broken_image_bytes(self, album_id: str, size: int) -> bytes:
        rng = random.Random(f"napster-broken-image/{self.seed}/{album_id}/{size}")
        noise = rng.randbytes(rng.randint(size * 4, size * 16))
        return BROKEN_IMAGE_PREFIX + noise

    # --- image faults and the ground truth of a crawl -----------------------------------------------------
    def image_fault(self, album_id: str) -> str | None:
        """What is wrong with an album's image at every size: "broken", "truncated", "placeholder" or None.

        Decided from the catalogue seed and the album id alone, so the same albums are damaged in every run.
        """
        self._record(album_id)
        digest = hashlib.sha256(f"napster-image-fault/{self.seed}/{album_id}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2.0**64
        for fault, share in (
            ("broken", self.broken_image_share),
            ("truncated", self.truncated_image_share),
            ("placeholder", self.placeholder_image_share),
        ):
            if draw < share:
                return fault
            draw -= share
        return None

    def chosen_size(self, album_id: str, min_side: int = 200) -> int:
        """The size a client picks with the policy "smallest square size >= ``min_side``, else the largest"."""
        if isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 1:
            raise ValueError(f"min_side must be a positive integer, got {min_side!r}")
        sizes = sorted(self._record(album_id).image_sizes)
        return next((size for size in sizes if size >= min_side), sizes[-1])

    def image_digest(self, album_id: str, size: int) -> str:
        """The sha256 hex digest of the bytes served for an album's ``size`` x ``size`` image (memoised)."""
        key = (album_id, size)
        digest = self._image_digests.get(key)
        if digest is None:
            digest = hashlib.sha256(self.image_bytes(album_id, size, size)).hexdigest()
            self._image_digests[key] = digest
        return digest

    def _album_ids_in(self, genres: Iterable[str] | None) -> list[str]:
        if genres is None:
            return list(self.albums)
        if isinstance(genres, str):
            genres = (genres,)
        wanted = set().union(*(self.top_album_ids(genre) for genre in genres))
        return [album_id for album_id in self.albums if album_id in wanted]

    def expected_covers(self, min_side: int = 200, genres: Iterable[str] | None = None) -> dict[str, dict]:
        """What a correct crawl stores: every album with a valid image (no ``image_fault``), optionally only
        those in the top lists of ``genres`` (shortcuts or ids), mapped to
        ``{"image_id": sha256 hex of the bytes served at chosen_size(album, min_side), "genre": its
        ``training_genre``, "genres": every genre shortcut of the album, primary first}``.

        Only digests are kept, and images are rendered through the bounded cache, so a catalogue of
        thousands of albums costs little memory (about 0.3 ms per 200px cover the first time).
        """
        return {
            album_id: {
                "image_id": self.image_digest(album_id, self.chosen_size(album_id, min_side)),
                "genre": self.training_genre(album_id),
                "genres": self.album_genres(album_id),
            }
            for album_id in self._album_ids_in(genres)
            if self.image_fault(album_id) is None
        }

    def invalid_covers(self, min_side: int = 200, genres: Iterable[str] | None = None) -> dict[str, str]:
        """The albums a correct crawl must reject, mapped to their image fault: the complement of
        ``expected_covers`` (faults hit every size, so ``min_side`` changes nothing; it is there for symmetry)."""
        self.chosen_size(next(iter(self.albums)), min_side)  # the same validation as expected_covers
        faults = {album_id: self.image_fault(album_id) for album_id in self._album_ids_in(genres)}
        return {album_id: fault for album_id, fault in faults.items() if fault is not None}

    def album_id_for_image_number(self, number: str) -> str:
        return f"alb.{number}"

    def genre_json(self, genre_id: str, base_url: str = REAL_API_URL) -> dict:
        """A genre object as ``/genres`` serves it: a top-level genre names its children, a sub-genre its
        parent (its own children only a lookup of them shows, as on the real service)."""
        if genre_id in GENRE_SHORTCUT_BY_ID:
            shortcut = GENRE_SHORTCUT_BY_ID[genre_id]
            name = next(name for known_id, _, name in KNOWN_GENRES if known_id == genre_id)
        else:
            _, shortcut, name, _ = next(sub for sub in SUB_GENRES if sub[0] == genre_id)
        api = f"{base_url}/v2.2"
        children = children_of(genre_id)
        parents = [GENRE_PARENT.get(genre_id, ROOT_GENRE_ID)]
        return {
            "type": "genre",
            "id": genre_id,
            "name": name,
            "shortcut": shortcut,
            "href": f"{api}/genres/{genre_id}",
            "description": f"{name} albums and artists (emulated catalogue).",
            "links": {
                "childGenres": {"ids": children, "href": f"{api}/genres/{','.join(children)}"},
                "parentGenres": {"ids": parents, "href": f"{api}/genres/{','.join(parents)}"},
            },
        }


@functools.lru_cache(maxsize=16)
def no_cover_available_jpeg(size: int) -> bytes:
    """The "no cover available" JPEG served for every placeholder album at ``size``: grey, a darker square."""
    image = Image.new("RGB", (size, size), (192, 192, 192))
    inset = size // 4
    ImageDraw.Draw(image).rectangle((inset, inset, size - 1 - inset, size - 1 - inset), fill=(128, 128, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
