"""The MusicBrainz emulator's synthetic catalogue: release groups, their tags and cover art, and the ground truth.

The catalogue's release groups are albums (and some singles and EPs) tagged with each genre's MusicBrainz tags;
an album's *primary genre* is the target genre whose tag has the highest count, and its front cover is drawn in
that genre's style, so ``MusicBrainzCatalog.expected_covers`` is the ground truth a crawler must reproduce.
It looks like the real pages recorded in ``shared/reference/real-responses/``: tags voted 0 times, albums with
secondary types (25 of the 44 recorded groups), groups without a first release date, two-artist credits, and
PDF uploads beside the covers.
``MusicBrainzEmulator`` (``album_pipeline.testing.emulators.musicbrainz``) serves it over HTTP.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.profiles import DEMO_RELEASE_GROUPS_PER_GENRE
from album_pipeline.sources.musicbrainz import DEFAULT_EXCLUDED_SECONDARY_TYPES
from album_pipeline.testing.emulators.musicbrainz_records import (
    BACK_IMAGE_SHARE,
    BAND_WORDS,
    DEFAULT_TAGS_BY_GENRE,
    EXCLUDED_TYPE_WEIGHTS,
    FIRST_NAMES,
    FULL_IMAGE_SIZE,
    GENRE_NAMESPACE,
    LAST_NAMES,
    NO_ART_SHARE,
    NON_ALBUM_SHARE,
    OFFICIAL_STATUS_ID,
    OTHER_GENRES,
    OTHER_TAGS,
    PDF_SHARE,
    PRIMARY_TYPE_IDS,
    REAL_COVERART_URL,
    REMIX_SINGLE_SHARE,
    SECOND_GENRE_SHARE,
    SECONDARY_TYPE_IDS,
    SECONDARY_TYPE_SHARE,
    SOUNDTRACK_SHARE,
    THUMBNAIL_ALIASES,
    THUMBNAIL_SIZES,
    TITLE_WORDS_A,
    TITLE_WORDS_B,
    TWO_SECONDARY_TYPES_SHARE,
    ZERO_VOTE_GENRE_TAG_SHARE,
    ZERO_VOTE_OTHER_TAG_SHARE,
    Artist,
    CoverImage,
    ReleaseGroupRecord,
    new_mbid,
    normalize_tag,
)
from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image

PDF_BYTES = b"%PDF-1.4\n% an emulated booklet\n%%EOF\n"
_ARCHIVE_NAME = re.compile(r"(?P<image>\d+)(?:_thumb(?P<size>250|500|1200))?\.(?P<ext>jpg|pdf)")


def _default_tags_by_genre() -> dict[str, tuple[str, ...]]:
    return dict(DEFAULT_TAGS_BY_GENRE)


@dataclass
class MusicBrainzCatalog:
    """A deterministic synthetic MusicBrainz catalogue with Cover Art Archive images.

    ``release_groups_per_genre`` albums per genre that a default crawl keeps (5% of them Soundtracks), plus
    albums with excluded secondary types at the recorded share (25 of 44: Compilation, Live, Remix,
    Mixtape/Street, DJ-mix) and about 15% singles and EPs, all carrying the genre's tags (for rap-hip-hop
    sometimes "hip hop", sometimes "rap", sometimes both) at the highest count among target-genre tags,
    sometimes a second target genre's tag at a lower count, a few other tags, and now and then tags voted 0
    times (another target genre's among them, which must not label). About 10% have no cover art.

    Ground truth for tests: ``release_groups``, ``kept_release_groups``, ``tagged``, ``primary_genre``,
    ``genres_of``, ``has_art``, ``front_image_bytes``, ``expected_covers``, ``expected_missing_art`` and
    ``expected_exclusions``.
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
            for kind in self._kinds(rng):
                record = self._make_record(rng, genre, genres, kind, artists, used)
                records[record.id] = record
        return dict(sorted(records.items()))

    def _kinds(self, rng: random.Random) -> list[tuple[str, tuple[str, ...]]]:
        """One genre's (primary type, secondary types): kept albums, excluded albums, singles and EPs."""
        kept = self.release_groups_per_genre
        kinds = [("Album", ("Soundtrack",) if rng.random() < SOUNDTRACK_SHARE else ()) for _ in range(kept)]
        names, weights = list(EXCLUDED_TYPE_WEIGHTS), list(EXCLUDED_TYPE_WEIGHTS.values())
        for _ in range(round(kept * SECONDARY_TYPE_SHARE / (1 - SECONDARY_TYPE_SHARE))):
            first = rng.choices(names, weights)[0]
            second = rng.choice([name for name in names if name != first])
            kinds.append(("Album", (first, second) if rng.random() < TWO_SECONDARY_TYPES_SHARE else (first,)))
        for _ in range(round(kept * NON_ALBUM_SHARE)):
            remix = ("Remix",) if rng.random() < REMIX_SINGLE_SHARE else ()
            kinds.append((rng.choice(("Single", "EP")), remix))
        return kinds

    @staticmethod
    def _make_artist(rng: random.Random) -> Artist:
        mbid = new_mbid(rng)
        kind = rng.random()
        if kind < 0.5:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            return Artist(mbid, f"{first} {last}", f"{last}, {first}")
        if kind < 0.8:
            name = f"{rng.choice(TITLE_WORDS_A)} {rng.choice(BAND_WORDS)}"
            return Artist(mbid, f"The {name}", f"{name}, The")
        name = f"{rng.choice(LAST_NAMES)} {rng.choice(BAND_WORDS)}"
        return Artist(mbid, name, name)

    def _make_record(
        self,
        rng: random.Random,
        genre: str,
        genres: list[str],
        kind: tuple[str, tuple[str, ...]],
        artists: list[Artist],
        used: set[str],
    ) -> ReleaseGroupRecord:
        def unique_mbid() -> str:
            mbid = new_mbid(rng)
            while mbid in used:
                mbid = new_mbid(rng)
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
        carried = {name for name, _ in tags}
        other_genre_tags = {tag for tag, owner in self.genre_by_tag.items() if owner not in genres_carried}
        for share, choices in (
            (ZERO_VOTE_GENRE_TAG_SHARE, other_genre_tags),
            (ZERO_VOTE_OTHER_TAG_SHARE, pool),
        ):
            unused = sorted(set(choices) - carried)
            if unused and rng.random() < share:
                tags.append((rng.choice(unused), 0))  # voted up and down again: it says nothing
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
            if rng.random() < PDF_SHARE:
                pdf = CoverImage(rng.randrange(10**9, 4 * 10**10), False, rng.randrange(10**7, 10**8), "pdf")
                images = (*images, pdf)
        title = f"{rng.choice(TITLE_WORDS_A)} {rng.choice(TITLE_WORDS_B)}"
        primary_type, secondary_types = kind
        if primary_type == "EP":
            title += " EP"
        return ReleaseGroupRecord(
            id=mbid,
            title=title,
            primary_type=primary_type,
            secondary_types=secondary_types,
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

    def kept_release_groups(
        self, genre: str | None = None, excluded: tuple[str, ...] = DEFAULT_EXCLUDED_SECONDARY_TYPES
    ) -> list[str]:
        """Album MBIDs, sorted, that a crawl excluding the ``excluded`` secondary types keeps."""
        return [
            mbid for mbid in self.release_groups(genre) if not self.records[mbid].excluded_types(excluded)
        ]

    def expected_exclusions(
        self, excluded: tuple[str, ...] = DEFAULT_EXCLUDED_SECONDARY_TYPES
    ) -> dict[str, int]:
        """Excluded secondary type (lower-cased) -> album release groups a full crawl skips for it."""
        counts: dict[str, int] = {}
        for mbid in self.release_groups():
            for kind in self.records[mbid].excluded_types(excluded):
                counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items()))

    def expected_missing_art(self, excluded: tuple[str, ...] = DEFAULT_EXCLUDED_SECONDARY_TYPES) -> set[str]:
        """Kept album MBIDs without a front cover: a full crawl records each as ``no_cover_art``."""
        return {mbid for mbid in self.kept_release_groups(excluded=excluded) if not self.has_art(mbid)}

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

    def expected_covers(
        self, size: int = 250, excluded: tuple[str, ...] = DEFAULT_EXCLUDED_SECONDARY_TYPES
    ) -> dict[str, dict[str, Any]]:
        """For every kept album release group with art: ``{"image_id": sha256 hex of the front JPEG at size,
        "genre": primary genre, "genres": every target genre voted above 0, primary first}``."""
        return {
            mbid: {
                "image_id": hashlib.sha256(self.front_image_bytes(mbid, size)).hexdigest(),
                "genre": self.primary_genre(mbid),
                "genres": self.genres_of(mbid),
            }
            for mbid in self.kept_release_groups(excluded=excluded)
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
        return str(uuid.uuid5(GENRE_NAMESPACE, name))

    # --- JSON ---------------------------------------------------------------------------------------------
    def release_group_json(self, mbid: str, score: int = 100) -> dict:
        """A release group as the search lists it: as on the real pages, ``first-release-date``,
        ``secondary-types`` and a last credit's ``joinphrase`` are left out rather than empty."""
        record = self.record(mbid)
        primary_id = PRIMARY_TYPE_IDS[record.primary_type]
        secondary_ids = [SECONDARY_TYPE_IDS[kind] for kind in record.secondary_types]
        # The real "type-id" names the first secondary type, except Mixtape/Street, which keeps the primary's.
        first = record.secondary_types[0] if record.secondary_types else "Mixtape/Street"
        body = {
            "id": record.id,
            "type-id": primary_id if first == "Mixtape/Street" else SECONDARY_TYPE_IDS[first],
            "score": score,
            "primary-type-id": primary_id,
            "count": len(record.release_ids),
            "title": record.title,
            "first-release-date": record.first_release_date,
            "primary-type": record.primary_type,
            "secondary-types": list(record.secondary_types),
            "secondary-type-ids": secondary_ids,
            "artist-credit": [
                {
                    "name": artist.name,
                    **({"joinphrase": joinphrase} if joinphrase else {}),
                    "artist": artist.json(),
                }
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
        return {key: value for key, value in body.items() if value not in ("", [])}

    @staticmethod
    def archive_name(release_id: str, image: CoverImage, size: int | None) -> str:
        """The archive.org file name of an upload (``size`` None: the upload itself, else a thumbnail)."""
        if size is None or size == FULL_IMAGE_SIZE:
            return f"mbid-{release_id}-{image.id}.{image.extension}"
        return f"mbid-{release_id}-{image.id}_thumb{size}.jpg"

    def archive_file(self, release_id: str, name: str, coverart_url: str) -> tuple[bytes, str] | None:
        """The bytes and media type of ``name`` in the archive.org item of a release, or None when absent.

        ``index.json`` is the release's Cover Art Archive document, its URLs under ``coverart_url``."""
        record = self.record_for_release(release_id)
        if record is None:
            return None
        if name == "index.json":
            return json.dumps(self.cover_art_json(record.id, coverart_url)).encode(), "application/json"
        match = _ARCHIVE_NAME.fullmatch(name.removeprefix(f"mbid-{record.release_id}-"))
        image = match and next((i for i in record.images if str(i.id) == match["image"]), None)
        if not match or image is None or match["ext"] not in ("jpg", image.extension):
            return None
        if match["ext"] == "pdf":
            return PDF_BYTES, "application/pdf"
        size = int(match["size"]) if match["size"] else FULL_IMAGE_SIZE
        return self.image_bytes(record.id, image.id, size), "image/jpeg"

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
                    "back": image.types == ["Back"],
                    "comment": "",
                    "edit": image.edit,
                    "front": image.front,
                    "id": image.id,
                    "image": f"{release}/{image.id}.{image.extension}",
                    "thumbnails": thumbnails,
                    "types": image.types,
                }
            )
        return {"images": images, "release": release}
