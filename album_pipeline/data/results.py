"""What every ingest returns (manifest rows, failure rows, stats), and helpers the ingests share."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa

from album_pipeline.data.manifest import FAILURES_SCHEMA

Log = Callable[[str], None]
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class IngestResult:
    rows: pd.DataFrame  # columns of CRAWL_SCHEMA, EXTRACTED_SCHEMA or MANIFEST_SCHEMA
    failures: pd.DataFrame  # columns of FAILURES_SCHEMA
    stats: dict[str, Any] = field(default_factory=dict)


class FailureLog:
    """Failure rows of one source: an item id, the URL tried (if any) and a short stable reason code."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.rows: list[dict[str, Any]] = []

    def add(self, source_id: str, reason: str, url: str | None = None) -> None:
        self.rows.append({"source": self.source, "source_id": source_id, "url": url, "reason": reason})

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(row["reason"] for row in self.rows))

    def frame(self) -> pd.DataFrame:
        return frame_of(self.rows, FAILURES_SCHEMA)


def frame_of(rows: list[dict[str, Any]], schema: pa.Schema) -> pd.DataFrame:
    """Rows as a DataFrame with ``schema``'s columns (in order) and its integer and timestamp types."""
    frame = pd.DataFrame(rows, columns=schema.names)
    for name in ("width", "height"):
        if name in frame.columns:
            frame[name] = frame[name].astype("int32")
    if "fetched_at" in frame.columns:
        frame["fetched_at"] = pd.to_datetime(frame["fetched_at"], utc=True)
    return frame


def safe_log(log: Log | None, scrub: Callable[[str], str] | None = None) -> Log:
    """A logger that accepts being None and masks secrets (``scrub``) in every line."""

    def say(message: str) -> None:
        if log is not None:
            log(scrub(message) if scrub else message)

    return say


def ordered_parallel_map(
    function: Callable[[T], R], items: Sequence[T], workers: int, window_per_worker: int = 4
) -> Iterator[tuple[T, R | BaseException]]:
    """``(item, result or exception)`` in input order, with at most ``workers * window`` calls in flight.

    Input order keeps deduplication deterministic; the window bounds memory held by finished downloads.
    """
    window = max(1, workers * window_per_worker)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-download") as pool:
        pending: deque[tuple[T, Future[R]]] = deque()
        iterator = iter(items)
        for item in islice(iterator, window):
            pending.append((item, pool.submit(function, item)))
        while pending:
            item, future = pending.popleft()
            try:
                outcome: R | BaseException = future.result()
            except Exception as error:  # reported per item; one failed download never stops the crawl
                outcome = error
            next_item = next(iterator, None)
            if next_item is not None:
                pending.append((next_item, pool.submit(function, next_item)))
            yield item, outcome
