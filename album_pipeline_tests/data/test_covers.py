"""The crawl machinery every labelled source shares (exercised end to end through each source's crawl)."""

import sqlite3

import pytest

from album_pipeline.data.covers import earlier_crawl, failure_ratio
from album_pipeline.data.crawl_state import STORED, CrawlState, Fetch
from album_pipeline.data.manifest import CRAWL_SCHEMA, write_table
from album_pipeline.data.results import frame_of
from album_pipeline.recovery import unreadable_copies


def test_failure_ratio_ignores_albums_without_a_cover() -> None:
    assert failure_ratio({"no_cover_art": 5, "no_images": 1, "truncated": 2}, 20) == 0.1
    assert failure_ratio({}, 0) == 0.0


def test_a_crawl_state_that_is_not_sqlite_is_set_aside_and_a_fresh_one_started(tmp_path) -> None:
    path = tmp_path / "napster_state.sqlite"
    path.write_bytes(b"garbage, not SQLite " * 200)
    warnings: list[str] = []
    with CrawlState(path, log=warnings.append) as state:
        assert state.count() == 0
        state.record(Fetch("album-1", "http://x/1.jpg", STORED, image_id="a" * 64, path="images/a.jpg"))
    with CrawlState(path) as state:  # the fresh journal is a real one
        assert set(state.all()) == {"album-1"}
    [aside] = unreadable_copies(path)
    assert aside.read_bytes().startswith(b"garbage")
    assert any(str(path) in warning and aside.name in warning for warning in warnings)


def test_a_truncated_crawl_state_is_set_aside_too(tmp_path) -> None:
    path = tmp_path / "state.sqlite"
    with CrawlState(path) as state:
        for n in range(2000):
            state.record(Fetch(f"album-{n}", f"http://x/{n}.jpg", STORED, image_id="a" * 64, path="p" * 80))
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with CrawlState(path) as state:
        assert state.count() == 0
    assert unreadable_copies(path)


def test_a_skipped_crawl_keeps_the_earlier_table_or_sets_an_unreadable_one_aside(tmp_path) -> None:
    table, failures = tmp_path / "napster.parquet", tmp_path / "napster.failures.parquet"
    assert earlier_crawl("napster", table, failures) is None
    rows = [
        {
            "image_id": "b" * 64, "path": "images/b.jpg", "source": "napster", "source_id": "Alb.1",
            "genre": "jazz", "width": 64, "height": 64, "format": "JPEG", "split": "train",
        }
    ]  # fmt: skip
    write_table(frame_of(rows, CRAWL_SCHEMA), table, CRAWL_SCHEMA)
    kept = earlier_crawl("napster", table, failures)
    assert list(kept.rows["source_id"]) == ["Alb.1"] and kept.failures.empty
    table.write_bytes(table.read_bytes()[:50])
    warnings: list[str] = []
    assert earlier_crawl("napster", table, failures, log=warnings.append) is None
    assert not table.exists() and unreadable_copies(table) and warnings


def test_a_crawl_state_another_process_holds_is_never_set_aside(tmp_path) -> None:
    path = tmp_path / "state.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # busy, not damaged (SQLite waits its default 5 s, then says so)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            CrawlState(path)
    finally:
        holder.close()
    assert not unreadable_copies(path)
