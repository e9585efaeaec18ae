"""What a crawl has already fetched, kept in SQLite so that a crawl killed at any moment resumes where it was.

One row per source item (a Napster album, a MusicBrainz release group): the URL tried and its outcome, which
is ``stored`` (with the stored image's id and facts), ``rejected`` (the bytes arrived but are not a usable
image) or ``missing`` (the source says there is no cover). Transient failures are not recorded, so the next
run tries them again. Each outcome is committed as soon as it is known and after the image file is in place,
so a kill loses at most the downloads in flight, and no stored image is ever downloaded twice.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

STORED, REJECTED, MISSING = "stored", "rejected", "missing"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fetches (
    source_id  TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('stored', 'rejected', 'missing')),
    reason     TEXT,
    image_id   TEXT,
    path       TEXT,
    width      INTEGER,
    height     INTEGER,
    format     TEXT,
    fetched_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Fetch:
    source_id: str
    url: str
    outcome: str
    reason: str | None = None
    image_id: str | None = None
    path: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    fetched_at: datetime | None = None


class CrawlState:
    """The fetch journal of one source, in ``path`` (a SQLite file created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process; only a power cut can lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise RuntimeError(
                f"crawl state {self.path} is not a readable SQLite file ({error}); move it away to start the "
                "crawl afresh (images already stored are kept and reused by content)"
            ) from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CrawlState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(self, source_id: str) -> Fetch | None:
        with self._lock:
            row = self._db.execute(
                "SELECT source_id, url, outcome, reason, image_id, path, width, height, format, fetched_at "
                "FROM fetches WHERE source_id = ?",
                (source_id,),
            ).fetchone()
        return None if row is None else _fetch_of(row)

    def all(self) -> dict[str, Fetch]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source_id, url, outcome, reason, image_id, path, width, height, format, fetched_at "
                "FROM fetches"
            ).fetchall()
        return {row[0]: _fetch_of(row) for row in rows}

    def record(self, fetch: Fetch) -> None:
        fetched_at = (fetch.fetched_at or datetime.now(UTC)).isoformat()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO fetches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fetch.source_id, fetch.url, fetch.outcome, fetch.reason, fetch.image_id, fetch.path,
                    fetch.width, fetch.height, fetch.format, fetched_at,
                ),
            )  # fmt: skip

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM fetches").fetchone()[0])


def _fetch_of(row: tuple) -> Fetch:
    return Fetch(*row[:9], fetched_at=datetime.fromisoformat(row[9]))
