"""crawl_labeled_covers and ingest_omacir against the loopback emulators."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from album_pipeline.data.ingest import crawl_labeled_covers, ingest_omacir
from album_pipeline.data.manifest import (
    FAILURES_SCHEMA,
    LABELED_SCHEMA,
    UNLABELED_SCHEMA,
    assign_split,
    write_table,
)
from album_pipeline.data.storage import ImageStore
from album_pipeline.emulators.archive import ArchiveEmulator, OmacirItem
from album_pipeline.emulators.napster import RANGES, NapsterCatalog, NapsterEmulator
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.sources.http import SourceError, SourceUnavailableError, make_session
from album_pipeline.sources.napster import NapsterClient
from album_pipeline.sources.omacir import OmacirClient

KEY = "crawl-key-9f8e7d6c5b"

LOOPBACK = ("127.0.0.1",)  # the emulator serves its own images


@pytest.fixture(scope="module")
def catalog() -> NapsterCatalog:
    return NapsterCatalog(genres=DEFAULT_GENRES, albums_per_genre=30, seed=11)


@pytest.fixture(scope="module")
def napster(catalog: NapsterCatalog) -> Iterator[NapsterEmulator]:
    with NapsterEmulator(catalog, api_key=KEY) as server:
        yield server


def _client(server: NapsterEmulator, cls: type[NapsterClient] = NapsterClient) -> NapsterClient:
    return cls(
        server.url, KEY, session=make_session(backoff_factor=0), timeout=10, allowed_image_hosts=LOOPBACK
    )


def _expected_genres(catalog: NapsterCatalog, genres: tuple[str, ...]) -> dict[str, list[str]]:
    """album id -> configured genres whose top lists hold it, in configured order (the documented policy)."""
    expected: dict[str, list[str]] = {}
    for genre in genres:
        for album_id in catalog.top_album_ids(genre):
            expected.setdefault(album_id, []).append(genre)
    return expected


def test_crawl_matches_the_catalogue_ground_truth(napster, catalog, tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    messages: list[str] = []
    result = crawl_labeled_covers(
        _client(napster),
        store,
        DEFAULT_GENRES,
        albums_per_genre=1000,
        download_workers=4,
        log=messages.append,
    )
    rows = result.rows
    expected = _expected_genres(catalog, DEFAULT_GENRES)
    assert list(rows.columns) == LABELED_SCHEMA.names
    assert sorted(rows["source_id"]) == sorted(expected)
    assert result.failures.empty
    for row in rows.itertuples():
        assert row.genres == expected[row.source_id]
        assert row.genre == expected[row.source_id][0]
        assert (row.width, row.height, row.format) == (200, 200, "JPEG")
        assert store.absolute(row.path).read_bytes() == catalog.image_bytes(row.source_id, 200, 200)
        assert row.split == assign_split(row.image_id)
        assert row.source == "napster"
    assert rows["image_id"].is_unique
    assert result.stats["rows"] == len(rows)
    assert result.stats["bytes_downloaded"] == sum(store.absolute(p).stat().st_size for p in rows["path"])
    assert sum(result.stats["rows_per_genre"].values()) == len(rows)
    # The frames fit the lead's writer as they are.
    manifest = tmp_path / "manifests" / "labeled.parquet"
    write_table(rows, manifest, LABELED_SCHEMA)
    write_table(result.failures, tmp_path / "manifests" / "failures.parquet", FAILURES_SCHEMA)
    assert pq.read_table(manifest).num_rows == len(rows)
    # The key appears nowhere: rows, logs, or the server's request log.
    assert KEY not in rows.to_csv() and not any(KEY in message for message in messages)
    assert messages and all(KEY not in r.path for r in napster.requests)


def _crawl_order(catalog: NapsterCatalog, genre: str) -> list[str]:
    """A genre's distinct albums in the order the crawler meets them: range by range, rank by rank."""
    order: list[str] = []
    for range_name in RANGES:
        order += [a for a in catalog.top_list(genre, range_name) if a not in order]
    return order


def test_albums_per_genre_takes_the_first_distinct_albums_over_ranges(napster, catalog, tmp_path) -> None:
    result = crawl_labeled_covers(_client(napster), ImageStore(tmp_path), ("jazz",), albums_per_genre=12)
    assert list(result.rows["source_id"]) == _crawl_order(catalog, "jazz")[:12]


class _FlakyClient(NapsterClient):
    """Breaks chosen albums' downloads: one unreachable, one truncated, two sharing the same bytes."""

    broken: dict[str, str] = {}

    def fetch_image(self, url: str, **options: object) -> bytes:
        number = url.rsplit("/", 1)[1].split("_")[0]
        mode = self.broken.get(f"alb.{number}")
        if mode == "unreachable":
            raise SourceUnavailableError(f"image host at {url} could not be reached")
        data = super().fetch_image(url)
        if mode == "truncated":
            return data[: len(data) // 2]
        if mode == "tiny":
            return b"not an image at all"
        if mode and mode.startswith("copy:"):
            return super().fetch_image(url.replace(number, mode[5:]))
        return data


def test_bad_albums_become_failure_rows(napster, catalog, tmp_path: Path) -> None:
    rock_only = [a for a in _crawl_order(catalog, "rock") if catalog.album_genres(a) == ["rock"]]
    victim_a, victim_b, victim_c, first, second = rock_only[:5]
    _FlakyClient.broken = {
        victim_a: "unreachable",
        victim_b: "truncated",
        victim_c: "tiny",
        second: f"copy:{first[4:]}",
    }
    result = crawl_labeled_covers(
        _client(napster, _FlakyClient), ImageStore(tmp_path), ("rock",), albums_per_genre=1000
    )
    reasons = dict(zip(result.failures["source_id"], result.failures["reason"], strict=True))
    assert reasons[victim_a] == "download_unavailable"
    assert reasons[victim_b] == "truncated"
    assert reasons[victim_c] == "not_an_image"
    # Same bytes twice in one genre: the album met first keeps the image.
    assert reasons[second] == "duplicate_in_genre" and first in set(result.rows["source_id"])
    assert set(result.rows["source_id"]) == catalog.top_album_ids("rock") - {
        victim_a,
        victim_b,
        victim_c,
        second,
    }
    assert result.stats["failures_by_reason"] == {
        "download_unavailable": 1,
        "truncated": 1,
        "not_an_image": 1,
        "duplicate_in_genre": 1,
    }
    assert KEY not in result.failures.to_csv()


def test_rerun_rewrites_nothing(napster, tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    first = crawl_labeled_covers(_client(napster), store, ("pop",), albums_per_genre=10)
    stamps = {p: store.absolute(p).stat().st_mtime_ns for p in first.rows["path"]}
    second = crawl_labeled_covers(_client(napster), store, ("pop",), albums_per_genre=10)
    assert list(second.rows["image_id"]) == list(first.rows["image_id"])
    assert {p: store.absolute(p).stat().st_mtime_ns for p in second.rows["path"]} == stamps


def test_unknown_genre_stops_before_any_paging(napster, tmp_path: Path) -> None:
    napster.clear_requests()
    with pytest.raises(ValueError, match="no-such-genre"):
        crawl_labeled_covers(
            _client(napster), ImageStore(tmp_path), ("rock", "no-such-genre"), albums_per_genre=5
        )
    assert not any("/albums/" in r.path for r in napster.requests)


def test_bad_key_stops_before_any_work(napster, tmp_path: Path) -> None:
    client = NapsterClient(
        napster.url, "not-the-key", session=make_session(backoff_factor=0), allowed_image_hosts=LOOPBACK
    )
    with pytest.raises(Exception, match="NAPSTER_API_KEY"):
        crawl_labeled_covers(client, ImageStore(tmp_path), ("rock",), albums_per_genre=5)
    assert not (tmp_path / "images").exists()


# -- OMACIR ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def item(tmp_path_factory: pytest.TempPathFactory) -> OmacirItem:
    return OmacirItem.build(
        tmp_path_factory.mktemp("omacir"), letters=("a", "b"), images_per_archive=60, seed=7
    )


@pytest.fixture(scope="module")
def archive_server(item: OmacirItem) -> Iterator[ArchiveEmulator]:
    with ArchiveEmulator(item) as server:
        yield server


def _omacir(server: ArchiveEmulator) -> OmacirClient:
    return OmacirClient(server.url, session=make_session(backoff_factor=0), timeout=10)


def test_omacir_rows_are_the_valid_unique_images(archive_server, item, tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    messages: list[str] = []
    result = ingest_omacir(_omacir(archive_server), store, tmp_path / "downloads", log=messages.append)
    truth = {f"{a.name}/{m.name}": m for a in item.archives for m in a.members}
    kept_kinds = {"cover", "png", "gif"}
    assert list(result.rows.columns) == UNLABELED_SCHEMA.names
    assert sorted(result.rows["source_id"]) == sorted(k for k, m in truth.items() if m.kind in kept_kinds)
    for row in result.rows.itertuples():
        member = truth[row.source_id]
        assert (row.width, row.height, row.format) == (member.width, member.height, member.format)
        assert row.archive == row.source_id.split("/")[0] and row.member == member.name
        assert store.absolute(row.path).stat().st_size == member.size
        assert row.genre is None and row.source == "omacir" and row.split == assign_split(row.image_id)
    expected_reasons = {"placeholder": "placeholder", "tiny": "too_small", "non_image": "not_an_image"}
    failures = dict(zip(result.failures["source_id"], result.failures["reason"], strict=True))
    assert failures == {k: expected_reasons[m.kind] for k, m in truth.items() if m.kind in expected_reasons}
    assert result.stats["placeholder_images"] == 1
    assert result.stats["bytes_downloaded"] == item.total_size()
    assert result.stats["rows_per_archive"] == {
        a.name: sum(m.kind in kept_kinds for m in a.members) for a in item.archives
    }
    write_table(result.rows, tmp_path / "manifests" / "unlabeled.parquet", UNLABELED_SCHEMA)
    write_table(result.failures, tmp_path / "manifests" / "unlabeled_failures.parquet", FAILURES_SCHEMA)
    assert any("done" in message for message in messages)
    # A rerun finds the archives complete and downloads nothing.
    before = len(archive_server.requests)
    again = ingest_omacir(_omacir(archive_server), store, tmp_path / "downloads")
    assert again.stats["bytes_downloaded"] == 0
    assert [r.path for r in archive_server.requests[before:]] == ["/metadata/audio-covers"]
    assert list(again.rows["image_id"]) == list(result.rows["image_id"])


def test_omacir_stops_at_max_images_and_selects_archives(archive_server, item, tmp_path: Path) -> None:
    result = ingest_omacir(
        _omacir(archive_server), ImageStore(tmp_path), tmp_path / "dl", archives=["b"], max_images=10
    )
    assert len(result.rows) <= 10
    assert set(result.rows["archive"]) == {"album_covers_b.tar"}
    assert result.stats["members_read"] < len(item.archive("album_covers_b.tar").members)
    assert not (tmp_path / "dl" / "album_covers_a.tar").exists()
    with pytest.raises(ValueError, match="album_covers_a.tar"):
        ingest_omacir(_omacir(archive_server), ImageStore(tmp_path), tmp_path / "dl", archives=["q"])


def test_omacir_local_folder_and_unsafe_members(item, tmp_path: Path) -> None:
    folder = tmp_path / "tars"
    folder.mkdir()
    shutil.copy(item.path("album_covers_a.tar"), folder / "album_covers_a.tar")
    whole_b = item.path("album_covers_b.tar").read_bytes()
    (folder / "album_covers_b.tar").write_bytes(whole_b[: len(whole_b) // 2])  # a damaged archive
    with tarfile.open(folder / "album_covers_z.tar", "w") as tar:
        link = tarfile.TarInfo("album_covers_z/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    result = ingest_omacir(OmacirClient(str(folder)), ImageStore(tmp_path), tmp_path / "unused")
    failures = dict(zip(result.failures["source_id"], result.failures["reason"], strict=True))
    assert failures["album_covers_z.tar/album_covers_z/link.jpg"] == "unsafe_member:symlink"
    # The damaged archive keeps the images read before the damage and is reported; the run goes on.
    assert failures["album_covers_b.tar"] == "archive_unreadable"
    per_archive = result.stats["rows_per_archive"]
    assert (
        per_archive["album_covers_a.tar"] > 0
        and 0 < per_archive["album_covers_b.tar"] < per_archive["album_covers_a.tar"]
    )
    # Two placeholder copies in one archive stay under the default threshold of three: one row, one duplicate.
    placeholders = [m.name for m in item.archive("album_covers_a.tar").members if m.kind == "placeholder"]
    assert len(placeholders) == 2
    assert sorted(failures.get(f"album_covers_a.tar/{n}", "kept") for n in placeholders) == [
        "duplicate",
        "kept",
    ]
    assert result.stats["bytes_downloaded"] == 0


class _DeadImageHostClient(NapsterClient):
    def fetch_image(self, url: str, **options: object) -> bytes:
        raise SourceUnavailableError("image host could not be reached")


def test_crawl_where_every_download_fails_raises(napster, tmp_path: Path) -> None:
    client = _client(napster, _DeadImageHostClient)
    with pytest.raises(SourceError, match="download_unavailable"):
        crawl_labeled_covers(client, ImageStore(tmp_path), ("classical",), albums_per_genre=4)
