"""The Napster crawl against the loopback emulator: ground truth, failures, resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from album_pipeline.data.crawl_state import CrawlState
from album_pipeline.data.manifest import CRAWL_SCHEMA, FAILURES_SCHEMA, assign_split, write_table
from album_pipeline.data.napster_covers import NapsterCrawlOptions, crawl_napster
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import DEFAULT_GENRE_MAP, GenreClass, default_classes
from album_pipeline.sources.http import SourceError, SourceUnavailableError, make_session
from album_pipeline.sources.napster import NapsterClient
from album_pipeline.testing.emulators.napster import NapsterEmulator
from album_pipeline.testing.emulators.napster_catalog import RANGES, UNLISTED_GENRE_IDS, NapsterCatalog
from album_pipeline.testing.emulators.napster_shapes import GENRE_PARENT, GENRE_SHORTCUT_BY_ID, children_of

KNOWN_IDS = tuple(GENRE_SHORTCUT_BY_ID)

KEY = "crawl-key-9f8e7d6c5b"
LOOPBACK = ("127.0.0.1",)  # the emulator serves its own images


@pytest.fixture(scope="module")
def catalog() -> NapsterCatalog:
    return NapsterCatalog(albums_per_genre=30, seed=11)


@pytest.fixture(scope="module")
def napster(catalog: NapsterCatalog) -> Iterator[NapsterEmulator]:
    with NapsterEmulator(catalog, api_key=KEY) as server:
        yield server


def _client(server: NapsterEmulator, cls: type[NapsterClient] = NapsterClient) -> NapsterClient:
    return cls(
        server.url, KEY, session=make_session(backoff_factor=0), timeout=10, allowed_image_hosts=LOOPBACK
    )


def _crawl(client: NapsterClient, home: Path, classes=DEFAULT_GENRE_MAP, albums: int = 1000, **options):
    with CrawlState(home / "state.sqlite") as state:
        return crawl_napster(
            client,
            ImageStore(home),
            state,
            classes,
            options=NapsterCrawlOptions(albums_per_genre=albums, **options),
        )


def test_crawl_matches_the_catalogue_ground_truth(napster, catalog, tmp_path: Path) -> None:
    messages: list[str] = []
    store = ImageStore(tmp_path)
    with CrawlState(tmp_path / "state.sqlite") as state:
        result = crawl_napster(
            _client(napster),
            store,
            state,
            DEFAULT_GENRE_MAP,
            options=NapsterCrawlOptions(albums_per_genre=1000, download_workers=4),
            log=messages.append,
        )
    rows = result.rows
    assert list(rows.columns) == CRAWL_SCHEMA.names
    assert sorted(rows["source_id"]) == sorted(catalog.albums)
    assert result.failures.empty
    for row in rows.itertuples():
        own = catalog.album_genres(row.source_id)
        # The documented policy: every class kept in class order, training class = the album's own primary.
        assert row.genres == [genre.name for genre in DEFAULT_GENRE_MAP if genre.name in own]
        assert row.genre == catalog.training_genre(row.source_id)
        side = catalog.chosen_size(row.source_id, 200)
        assert (row.width, row.height, row.format) == (side, side, "JPEG")
        assert store.absolute(row.path).read_bytes() == catalog.image_bytes(row.source_id, side, side)
        assert row.split == assign_split(row.image_id)
        assert row.source == "napster"
    assert rows["image_id"].is_unique
    assert result.stats["rows"] == len(rows)
    assert result.stats["bytes_downloaded"] == sum(store.absolute(p).stat().st_size for p in rows["path"])
    # Some albums carry two classes, and those keep both labels.
    assert (rows["genres"].map(len) == 2).any()
    # The frames fit the manifest writer as they are.
    write_table(rows, tmp_path / "labeled.parquet", CRAWL_SCHEMA)
    write_table(result.failures, tmp_path / "failures.parquet", FAILURES_SCHEMA)
    assert pq.read_table(tmp_path / "labeled.parquet").num_rows == len(rows)
    assert KEY not in rows.to_csv() and not any(KEY in message for message in messages)


def _crawl_order(catalog: NapsterCatalog, genre: str) -> list[str]:
    """A genre's distinct albums in the order the crawler meets them: range by range, rank by rank."""
    order: list[str] = []
    for range_name in RANGES:
        order += [a for a in catalog.top_list(genre, range_name) if a not in order]
    return order


def test_albums_per_genre_takes_the_first_distinct_albums_over_ranges(napster, catalog, tmp_path) -> None:
    result = _crawl(_client(napster), tmp_path, default_classes("jazz"), albums=12)
    assert sorted(result.rows["source_id"]) == sorted(_crawl_order(catalog, "jazz")[:12])


def test_a_class_fed_by_two_napster_genres_collects_both(napster, catalog, tmp_path) -> None:
    mixed = (GenreClass("mixed", ("jazz", "classical")),)
    result = _crawl(_client(napster), tmp_path, mixed)
    expected = catalog.top_album_ids("jazz") | catalog.top_album_ids("classical")
    assert set(result.rows["source_id"]) == expected
    assert set(result.rows["genre"]) == {"mixed"}


class _FlakyClient(NapsterClient):
    """Breaks chosen albums' downloads: unreachable, truncated, not an image, or serving another's bytes."""

    broken: dict[str, str] = {}

    def fetch_image(self, url: str, **options: object) -> bytes:
        number = url.rsplit("/", 1)[1].split("_")[0]
        mode = self.broken.get(f"alb.{number}")
        if mode == "unreachable":
            raise SourceUnavailableError(f"image host at {url} could not be reached")
        data = super().fetch_image(url)
        if mode == "truncated":
            return data[: len(data) // 2]
        if mode == "junk":
            return b"not an image at all"
        if mode and mode.startswith("copy:"):
            return super().fetch_image(url.replace(number, mode[5:]))
        return data


def test_bad_albums_become_failure_rows_and_repeated_bytes_placeholders(napster, catalog, tmp_path) -> None:
    # Copies swap the album number in a URL: albums whose chosen image has the usual size and file name.
    rock_only = sorted(
        a
        for a in catalog.top_album_ids("rock")
        if catalog.album_genres(a) == ["rock"]
        and catalog.chosen_size(a) == 300
        and catalog.albums[a].image_extension == "jpg"
    )
    unreachable, truncated, junk, first, second, p1, p2, p3 = rock_only[:8]
    _FlakyClient.broken = {
        unreachable: "unreachable",
        truncated: "truncated",
        junk: "junk",
        second: f"copy:{first[4:]}",
        # Three albums with one picture: a "no cover" placeholder, none of them keeps it.
        p2: f"copy:{p1[4:]}",
        p3: f"copy:{p1[4:]}",
    }
    result = _crawl(_client(napster, _FlakyClient), tmp_path, default_classes("rock"))
    reasons = dict(zip(result.failures["source_id"], result.failures["reason"], strict=True))
    assert reasons == {
        unreachable: "download_unavailable",
        truncated: "truncated",
        junk: "not_an_image",
        # Same bytes twice in one class: the first album by id keeps the image.
        second: "duplicate_in_genre",
        p1: "placeholder",
        p2: "placeholder",
        p3: "placeholder",
    }
    assert set(result.rows["source_id"]) == catalog.top_album_ids("rock") - set(reasons) | {first}
    assert result.stats["failure_ratio"] == pytest.approx(7 / len(catalog.top_album_ids("rock")), abs=1e-4)
    assert KEY not in result.failures.to_csv()


def test_rerun_fetches_nothing_already_known(napster, catalog, tmp_path: Path) -> None:
    _FlakyClient.broken = {_crawl_order(catalog, "pop")[0]: "junk"}
    first = _crawl(_client(napster, _FlakyClient), tmp_path, default_classes("pop"), albums=10)
    store = ImageStore(tmp_path)
    stamps = {p: store.absolute(p).stat().st_mtime_ns for p in first.rows["path"]}
    napster.clear_requests()
    second = _crawl(_client(napster, _FlakyClient), tmp_path, default_classes("pop"), albums=10)
    assert second.rows.drop(columns="fetched_at").equals(first.rows.drop(columns="fetched_at"))
    assert list(second.failures["reason"]) == list(first.failures["reason"])  # the rejection is remembered
    assert not [r.path for r in napster.requests if r.path.startswith("/img/") or r.path.endswith("/images")]
    assert {p: store.absolute(p).stat().st_mtime_ns for p in second.rows["path"]} == stamps
    assert second.stats["reused"] == len(first.rows) and second.stats["fetched"] == 0
    # Asked to recheck, it fetches the rejected album again, and only that one.
    napster.clear_requests()
    _crawl(_client(napster, _FlakyClient), tmp_path, default_classes("pop"), albums=10, recheck_missing=True)
    assert len([r for r in napster.requests if r.path.startswith("/img/")]) == 1


def test_a_deleted_image_file_is_fetched_again(napster, tmp_path: Path) -> None:
    first = _crawl(_client(napster), tmp_path, default_classes("jazz"), albums=5)
    victim = ImageStore(tmp_path).absolute(first.rows["path"][0])
    victim.unlink()
    second = _crawl(_client(napster), tmp_path, default_classes("jazz"), albums=5)
    assert victim.exists() and second.stats["fetched"] == 1


def test_unknown_genre_stops_before_any_paging(napster, tmp_path: Path) -> None:
    napster.clear_requests()
    classes = (*default_classes("rock"), GenreClass("odd", ("no-such-genre",)))
    with pytest.raises(ValueError, match="no-such-genre"):
        _crawl(_client(napster), tmp_path, classes, albums=5)
    assert not any("/albums/" in r.path for r in napster.requests)


def test_bad_key_stops_before_any_work(napster, tmp_path: Path) -> None:
    client = NapsterClient(
        napster.url, "not-the-key", session=make_session(backoff_factor=0), allowed_image_hosts=LOOPBACK
    )
    with pytest.raises(SourceError, match="NAPSTER_API_KEY"):
        _crawl(client, tmp_path, default_classes("rock"), albums=5)
    assert not (tmp_path / "images").exists()


class _DeadImageHostClient(NapsterClient):
    def fetch_image(self, url: str, **options: object) -> bytes:
        raise SourceUnavailableError("image host could not be reached")


def test_a_host_that_keeps_failing_stops_the_crawl_clearly(napster, tmp_path: Path) -> None:
    client = _client(napster, _DeadImageHostClient)
    with pytest.raises(SourceError, match="stopping.*run again"):
        _crawl(client, tmp_path, default_classes("classical"), max_consecutive_unavailable=5)
    with pytest.raises(SourceError, match="download_unavailable"):
        _crawl(client, tmp_path, default_classes("classical"), albums=4)


def test_options_refuse_settings_that_would_crawl_nothing_or_break_the_api() -> None:
    with pytest.raises(ValueError, match="albums_per_genre"):
        NapsterCrawlOptions(albums_per_genre=0)
    with pytest.raises(ValueError, match="page_size must be between 1 and 200"):
        NapsterCrawlOptions(page_size=201)
    with pytest.raises(ValueError, match="download_workers"):
        NapsterCrawlOptions(download_workers=0)


def test_sub_genre_ids_label_through_the_genre_tree_read_once(napster, catalog, tmp_path) -> None:
    napster.clear_requests()
    result = _crawl(_client(napster), tmp_path, default_classes("rap-hip-hop", "jazz"))
    crawled = [a for a in catalog.albums.values() if {"g.146", "g.299"} & set(a.top_genre_ids)]
    listed = {"g.146", "g.299", *children_of("g.146"), *children_of("g.299")}
    not_in_the_list = sorted({i for album in crawled for i in album.genre_ids} - listed - set(KNOWN_IDS))
    assert any(i in UNLISTED_GENRE_IDS for i in not_in_the_list) and any(
        i in GENRE_PARENT for i in not_in_the_list
    )
    genre_calls = [
        r.path.split("?")[0]
        for r in napster.requests
        if r.path.startswith("/v2.2/genres") and "/albums" not in r.path
    ]
    # check(), one shortcut each, the list once, and one batched lookup of the ids the list does not name.
    assert genre_calls == [
        "/v2.2/genres",
        "/v2.2/genres/rap-hip-hop",
        "/v2.2/genres/jazz",
        "/v2.2/genres",
        f"/v2.2/genres/{','.join(not_in_the_list)}",
    ]
    mapping = {row["genre_id"]: row for row in result.stats["genre_mapping"]}
    assert mapping["g.173"] == {
        "genre_id": "g.173",
        "top_level": "g.146",
        "class": "rap-hip-hop",
        "albums": sum("g.173" in album.genre_ids for album in crawled),
    }
    for genre_id in not_in_the_list:
        expected = None if genre_id in UNLISTED_GENRE_IDS else GENRE_PARENT[GENRE_PARENT[genre_id]]
        assert mapping[genre_id]["top_level"] == expected  # a grandchild placed, an unlisted id unknown
    # Albums carry sub-genres mostly, and every album trains under the class a crawl can tell.
    top_level_uses = sum(row["albums"] for row in mapping.values() if row["genre_id"] in ("g.146", "g.299"))
    assert top_level_uses < 0.3 * len(crawled)
    for row in result.rows.itertuples():
        assert row.genre == catalog.training_genre(row.source_id)
    assert result.stats["explicit_albums"] == sum(album.is_explicit for album in crawled)


def test_a_failed_genre_lookup_leaves_those_ids_unknown(napster, catalog, tmp_path) -> None:
    class NoLookups(NapsterClient):
        def genres_by_id(self, genre_ids, batch_size=50):
            raise SourceUnavailableError("genre lookup unreachable")

    messages: list[str] = []
    with CrawlState(tmp_path / "state.sqlite") as state:
        result = crawl_napster(
            _client(napster, NoLookups),
            ImageStore(tmp_path),
            state,
            default_classes("jazz"),
            options=NapsterCrawlOptions(albums_per_genre=1000),
            log=messages.append,
        )
    mapping = {row["genre_id"]: row for row in result.stats["genre_mapping"]}
    assert mapping["g.1304"]["class"] is None and mapping["g.1301"]["class"] == "jazz"
    assert any("genre lookup failed" in message for message in messages)
    assert set(result.rows["genre"]) == {"jazz"} and result.failures.empty
