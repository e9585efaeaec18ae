"""All the emulators at once: ``running_emulators`` starts them and says how to point the pipeline at them.

Its defaults are the demo's scale (``album_pipeline.profiles``), so the standalone ``album-pipeline emulators``
serves what ``album-pipeline demo`` crawls; tests pass smaller values.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.profiles import (
    DEMO_ALBUMS_PER_GENRE,
    DEMO_ARCHIVE_LETTERS,
    DEMO_IMAGES_PER_ARCHIVE,
    DEMO_RELEASE_GROUPS_PER_GENRE,
)
from album_pipeline.settings import (
    COVERART_IMAGE_HOSTS_VAR,
    NAPSTER_IMAGE_HOSTS_VAR,
    NAPSTER_KEY_VAR,
    NAPSTER_URL_VAR,
    OMACIR_URL_VAR,
)
from album_pipeline.testing.emulators.archive import ArchiveEmulator
from album_pipeline.testing.emulators.base import LOOPBACK_HOST
from album_pipeline.testing.emulators.faults import FaultPlan
from album_pipeline.testing.emulators.musicbrainz import MusicBrainzEmulator
from album_pipeline.testing.emulators.musicbrainz_catalog import MusicBrainzCatalog
from album_pipeline.testing.emulators.napster import DEFAULT_API_KEY, NapsterEmulator
from album_pipeline.testing.emulators.napster_catalog import NapsterCatalog
from album_pipeline.testing.emulators.omacir_item import OmacirItem


@dataclass
class RunningEmulators:
    """What a demo or an integration test needs to point the clients at the emulators."""

    napster_url: str
    napster_api_key: str
    omacir_url: str
    catalog: NapsterCatalog
    item: OmacirItem
    napster: NapsterEmulator
    archive: ArchiveEmulator
    musicbrainz: MusicBrainzEmulator

    @property
    def musicbrainz_catalog(self) -> MusicBrainzCatalog:
        return self.musicbrainz.catalog

    def environment(self) -> dict[str, str]:
        """The environment variables the pipeline reads to find its sources."""
        return {
            NAPSTER_URL_VAR: self.napster_url,
            NAPSTER_KEY_VAR: self.napster_api_key,
            OMACIR_URL_VAR: self.omacir_url,
            # The emulators serve their images themselves, on loopback.
            NAPSTER_IMAGE_HOSTS_VAR: LOOPBACK_HOST,
            **self.archive.environment(),
            **self.musicbrainz.environment(),
            COVERART_IMAGE_HOSTS_VAR: LOOPBACK_HOST,
        }


@contextmanager
def running_emulators(
    cache_dir: Path | None = None,
    *,
    albums_per_genre: int = DEMO_ALBUMS_PER_GENRE,
    genres: tuple[str, ...] | None = None,
    archive_letters: tuple[str, ...] = DEMO_ARCHIVE_LETTERS,
    images_per_archive: int = DEMO_IMAGES_PER_ARCHIVE,
    release_groups_per_genre: int = DEMO_RELEASE_GROUPS_PER_GENRE,
    musicbrainz_rate_limit: float | None = 1.0,
    seed: int = 0,
    api_key: str = DEFAULT_API_KEY,
    napster_port: int = 0,
    archive_port: int = 0,
    musicbrainz_port: int = 0,
    faults: FaultPlan | None = None,
    latency_s: float = 0.0,
) -> Iterator[RunningEmulators]:
    """Start the Napster, archive.org and MusicBrainz/Cover Art Archive emulators (at the demo's scale unless
    told otherwise).

    The OMACIR tars are built under ``cache_dir`` (without one, in a temporary folder removed on exit).
    ``faults`` and ``latency_s`` apply to the labelled sources' emulators, whose clients retry.
    """
    with tempfile.TemporaryDirectory(prefix="omacir-emulator-") as scratch:
        item = OmacirItem.build(
            Path(cache_dir) if cache_dir is not None else Path(scratch),
            letters=archive_letters,
            images_per_archive=images_per_archive,
            seed=seed,
        )
        catalog = NapsterCatalog(
            genres=genres or DEFAULT_GENRES, albums_per_genre=albums_per_genre, seed=seed
        )
        mb_catalog = MusicBrainzCatalog(release_groups_per_genre=release_groups_per_genre, seed=seed)
        with (
            NapsterEmulator(
                catalog, api_key=api_key, port=napster_port, faults=faults, latency_s=latency_s
            ) as napster,
            ArchiveEmulator(item, port=archive_port) as archive,
            MusicBrainzEmulator(
                mb_catalog,
                port=musicbrainz_port,
                rate_limit_per_second=musicbrainz_rate_limit,
                faults=faults,
                latency_s=latency_s,
            ) as musicbrainz,
        ):
            # One keyword per field, alike in shape to other record constructions, not shared logic.
            yield RunningEmulators(
                napster_url=napster.url,
                napster_api_key=api_key,
                omacir_url=archive.url,
                catalog=catalog,
                item=item,
                napster=napster,
                archive=archive,
                musicbrainz=musicbrainz,
            )
