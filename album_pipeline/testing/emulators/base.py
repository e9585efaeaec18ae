"""What every emulator module shares: requests and replies, the request log's records, secret redaction.

The bottom of the emulators' import order: the fault plan, the loopback server and the services build on it,
and it imports none of them.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

LOOPBACK_HOST = "127.0.0.1"

# Query parameters whose values must never reach the request log.
SECRET_QUERY_PARAMETERS = frozenset({"apikey", "api_key", "access_token", "key"})


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, str]  # last value wins for repeated parameters, as most web frameworks do
    headers: dict[str, str]  # names lower-cased
    match: re.Match[str]

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Needed when ``body`` is an iterable of chunks, so the client can tell a complete reply from a cut one.
    content_length: int | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status, body, {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def binary(cls, body: bytes, content_type: str, status: int = 200) -> Response:
        return cls(status, body, {"Content-Type": content_type})

    def chunks_and_length(self) -> tuple[Iterator[bytes], int]:
        """The body as an iterator of chunks, and the length the reply announces."""
        if isinstance(self.body, bytes | bytearray):
            return iter([bytes(self.body)]), len(self.body)
        if self.content_length is None:
            raise ValueError("a streamed response needs content_length")
        return iter(self.body), self.content_length


@dataclass(frozen=True)
class RequestRecord:
    """One served request, as tests of a client see it. Secrets in the query are already removed."""

    timestamp: float
    method: str
    path: str  # path plus the query without secret parameters
    status: int  # 0 when the connection was reset without a reply
    range: str | None  # the Range header, if the client sent one
    fault: str | None = None  # the fault injected into this request (a kind of FaultPlan), if any


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler


def redact_query(path_with_query: str) -> str:
    """The path with secret query parameters dropped, safe to log."""
    parts = urlsplit(path_with_query)
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in SECRET_QUERY_PARAMETERS
    ]
    return parts.path + (f"?{urlencode(kept)}" if kept else "")


class ServerRateLimit:
    """A server-side limit: at most ``per_second`` requests per sliding window, shared by every client.

    Below one request a second the window grows so that one request is allowed every ``1 / per_second`` s.
    """

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError(f"rate limit must be positive requests per second, got {per_second}")
        self.per_second = per_second
        self.window_s = max(1.0, 1.0 / per_second)
        self.capacity = max(1, math.floor(per_second * self.window_s + 1e-9))
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._stamps and now - self._stamps[0] >= self.window_s:
                self._stamps.popleft()
            if len(self._stamps) >= self.capacity:
                return False
            self._stamps.append(now)
            return True


def close_chunks(chunks: Iterator[bytes]) -> None:
    """Close a body's source (an open file, say), whether or not it was read to the end."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
