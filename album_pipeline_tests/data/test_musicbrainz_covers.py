"""The MusicBrainz + Cover Art Archive crawl against the loopback emulator: ground truth and recrawl."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from album_pipeline.data.crawl_state import CrawlState
from album_pipeline.data.musicbrainz_covers import MusicBrainzCrawlOptions, crawl_musicbrainz
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import DEFAULT_GENRE_MAP, DEFAULT_GENRES
from album_pipeline.settings import PROGRESS_SECONDS_VAR
from album_pipeline.sources.http import make_session
from album_pipeline.sources.musicbrainz import CoverArtClient, MusicBrainzClient
from album_pipeline.testing.emulators.musicbrainz import MusicBrainzEmulator
from album_pipeline.testing.emulators.musicbrainz_catalog import MusicBrainzCatalog
from album_pipeline.testing.emulators.musicbrainz_records import DEFAULT_TAGS_BY_GENRE

LOOPBACK = ("127.0.0.1",)  # the emulator serves its own images


@pytest.fixture(scope="module")
def musicbrainz() -> Iterator[MusicBrainzEmulator]:
    with MusicBrainzEmulator(
        MusicBrainzCatalog(release_groups_per_genre=25, seed=3), rate_limit_per_second=None
    ) as server:
        yield server


def _crawl_musicbrainz(server: MusicBrainzEmulator, home: Path, albums: int = 1000, log=None, **options):
    session = make_session(backoff_factor=0)
    with CrawlState(home / "mb_state.sqlite") as state:
        return crawl_musicbrainz(
            MusicBrainzClient(server.url, session=session, requests_per_second=None),
            CoverArtClient(server.url, allowed_image_hosts=LOOPBACK, session=session),
            ImageStore(home),
            state,
            DEFAULT_GENRE_MAP,
            options=MusicBrainzCrawlOptions(albums_per_genre=albums, **options),
            log=log,
        )


def test_musicbrainz_crawl_matches_the_ground_truth(musicbrainz, tmp_path: Path) -> None:
    catalog = musicbrainz.catalog
    result = _crawl_musicbrainz(musicbrainz, tmp_path)
    expected = catalog.expected_covers(250)
    rows = result.rows.set_index("source_id")
    assert sorted(rows.index) == sorted(expected)
    for mbid, truth in expected.items():
        assert rows.loc[mbid, "image_id"] == truth["image_id"]
        assert rows.loc[mbid, "genre"] == truth["genre"]
        # Every class kept, in class order (the emulator lists the primary first).
        assert list(rows.loc[mbid, "genres"]) == [g for g in DEFAULT_GENRES if g in truth["genres"]]
        assert rows.loc[mbid, "source"] == "musicbrainz" and rows.loc[mbid, "album_name"]
    assert set(result.failures["source_id"]) == catalog.expected_missing_art()
    assert set(result.failures["reason"]) == {"no_cover_art"}
    assert result.stats["failure_ratio"] == 0.0  # no art is a fact about the album, not a failure
    # Compilations, live, remix, DJ-mix and mixtape albums are skipped and counted, once per group and type.
    assert result.stats["excluded_secondary_types"] == catalog.expected_exclusions()
    excluded = set(catalog.release_groups()) - set(catalog.kept_release_groups())
    assert result.stats["excluded_release_groups"] == len(excluded) > 0
    assert not excluded & set(rows.index) and not excluded & set(result.failures["source_id"])
    # A tag voted 0 times lists a group in a search but never labels it.
    unvoted_genres = {
        (mbid, genre)
        for mbid in rows.index
        for genre, tags in DEFAULT_TAGS_BY_GENRE.items()
        if any(dict(catalog.record(mbid).tags).get(tag) == 0 for tag in tags)
    }
    assert unvoted_genres and not any(genre in rows.loc[mbid, "genres"] for mbid, genre in unvoted_genres)
    # A recrawl asks MusicBrainz again (to find new albums) but the archive for nothing it already knows.
    musicbrainz.clear_requests()
    again = _crawl_musicbrainz(musicbrainz, tmp_path)
    assert again.rows.drop(columns="fetched_at").equals(result.rows.drop(columns="fetched_at"))
    assert not [r for r in musicbrainz.requests if not r.path.startswith("/ws/2/")]


def test_excluded_secondary_types_are_configurable(musicbrainz, tmp_path: Path) -> None:
    catalog = musicbrainz.catalog
    keep_all = _crawl_musicbrainz(musicbrainz, tmp_path / "all", excluded_secondary_types=())
    assert set(keep_all.rows["source_id"]) == set(catalog.expected_covers(excluded=()))
    assert keep_all.stats["excluded_secondary_types"] == {} and keep_all.stats["excluded_release_groups"] == 0
    # Names as MusicBrainz spells them, in any case: only compilations skipped here.
    only = _crawl_musicbrainz(musicbrainz, tmp_path / "some", excluded_secondary_types=("Compilation",))
    assert set(only.rows["source_id"]) == set(catalog.expected_covers(excluded=("compilation",)))
    assert only.stats["excluded_secondary_types"] == catalog.expected_exclusions(("compilation",))


def test_excluded_groups_do_not_count_toward_albums_per_genre(musicbrainz, tmp_path: Path) -> None:
    # The yield per class holds up: the crawl pages on past excluded groups until each class has its albums.
    result = _crawl_musicbrainz(musicbrainz, tmp_path, albums=20)
    assert result.stats["albums_per_genre"] == dict.fromkeys(DEFAULT_GENRES, 20)
    assert result.stats["excluded_release_groups"] > 0


def test_the_crawl_reports_albums_listed_and_covers_fetched(musicbrainz, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(PROGRESS_SECONDS_VAR, "1e-9")  # a progress line at every update
    messages: list[str] = []
    result = _crawl_musicbrainz(musicbrainz, tmp_path, albums=5, log=messages.append)
    listed = [line for line in messages if line.startswith("musicbrainz: list albums: ")]
    wanted = 5 * len(DEFAULT_GENRES)
    assert listed[0] == f"musicbrainz: list albums: 0 of {wanted} albums (0%)"
    counts = [int(re.search(r"(\d+) of", line)[1]) for line in listed]
    assert counts == sorted(counts) and {5, 10} <= set(counts)  # each class fills its share in turn
    assert listed[-1].startswith(f"musicbrainz: list albums: done, {wanted} of {wanted} albums (100%) in ")
    fetched = [line for line in messages if line.startswith("musicbrainz: fetch covers: ")]
    total = result.stats["fetched"]
    assert len(fetched) == 1 + total + 1 and "failures" in fetched[1] and "left" in fetched[1]
    assert fetched[-1].startswith(f"musicbrainz: fetch covers: done, {total} of {total} covers (100%)")


def test_options_refuse_a_thumbnail_size_the_archive_does_not_offer() -> None:
    with pytest.raises(ValueError, match="250, 500, 1200"):
        MusicBrainzCrawlOptions(thumbnail_size=300)
    with pytest.raises(ValueError, match="albums_per_genre"):
        MusicBrainzCrawlOptions(albums_per_genre=0)
    for bad in ("compilation", ("live", "")):
        with pytest.raises(ValueError, match="excluded_secondary_types"):
            MusicBrainzCrawlOptions(excluded_secondary_types=bad)
    options = MusicBrainzCrawlOptions(excluded_secondary_types=(" Mixtape/Street ", "DJ-mix"))
    assert options.excluded_secondary_types == ("mixtape/street", "dj-mix")
