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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from album_pipeline.recovery import set_aside

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
    """The fetch journal of one source, in ``path`` (a SQLite file created on first use).

    A file there that SQLite cannot read (garbage, truncated) is set aside (``recovery.set_aside``, warning
    through ``log``) and a fresh journal started: the crawl then fetches its albums again, and the images
    already in the store are reused by content, so nothing is lost but the time.
    """

    def __init__(self, path: Path, log: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = _open(self.path)
        except _Unreadable as error:
            # Its WAL and shared-memory files go with it: SQLite would replay a stale WAL into the new file.
            for companion in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm"), self.path):
                set_aside(companion, f"not a readable SQLite crawl state: {error}", log)
            self._db = _open(self.path)
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


class _Unreadable(Exception):
    """The file is not a SQLite database, or a damaged one (not merely busy: a lock is never a reason)."""


# What SQLite says of a file that is not, or no longer, a database; "database is locked" and the like are
# other codes and propagate, so that a state another crawl holds is never set aside.
_DAMAGED = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process; only a power cut can lose the last commits.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        # A truncated journal can open fine and fail on a later read; the check is quick at a crawl's size.
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as error:
        db.close()
        if getattr(error, "sqlite_errorname", None) in _DAMAGED:
            raise _Unreadable(str(error)) from None
        raise
    if verdict != "ok":
        db.close()
        raise _Unreadable(verdict)
    return db


def _fetch_of(row: tuple) -> Fetch:
    return Fetch(*row[:9], fetched_at=datetime.fromisoformat(row[9]))
