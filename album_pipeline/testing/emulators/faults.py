"""A deterministic plan of transient HTTP failures for the loopback emulators, and what each does to a reply.

A ``FaultPlan`` picks, from a seed, which request *targets* misbehave and how. A target is the request path
plus its query string with secret parameters removed (``redact_query``), so the same logical request is the
same target whatever key it carries. A chosen target fails ``failures_per_target`` times, then is served
normally: every fault is transient, and a client that retries eventually gets the real response.

What each kind does when ``LoopbackServer`` applies it:

- ``"429"``: status 429, ``{"code": "TooManyRequestsError", ...}`` and ``Retry-After``.
- ``"500"``, ``"502"``, ``"503"``: that status with a JSON error body; 503 also sends ``Retry-After``.
- ``"reset"``: the connection is reset (SO_LINGER 0, then close) without any response.
- ``"slow"``: the reply is delayed by ``slow_seconds``, then sent normally.
- ``"truncated"``: status line and headers with the real Content-Length, half the body, then close.
- ``"invalid_json"``: a JSON reply becomes 200 with the first half of its bytes (and a matching
  Content-Length, so the transfer completes but the JSON does not parse); other replies are truncated.
- ``"html_error"``: 200 with ``Content-Type: text/html`` and a small HTML error page instead of the body.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

from album_pipeline.testing.emulators.base import Response, close_chunks, redact_query

TRANSIENT_FAULTS: tuple[str, ...] = (
    "429",
    "500",
    "502",
    "503",
    "reset",
    "slow",
    "truncated",
    "invalid_json",
    "html_error",
)
# The faults answered with an error status instead of the real reply, and that status.
STATUS_BY_FAULT = {"429": 429, "500": 500, "502": 502, "503": 503}

# What the "html_error" fault serves instead of the real body: a proxy's error page, with status 200.
HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service temporarily unavailable</title></head>\n"
    b"<body><h1>Service temporarily unavailable</h1>\n"
    b"<p>The server is temporarily unable to service your request. Please try again later.</p>\n"
    b"</body></html>\n"
)


@dataclass(frozen=True)
class FaultPlan:
    """Which targets fail, how, and how often; pass it to an emulator as ``faults=``.

    ``rate`` is the share of distinct targets that misbehave; each faulty target gets one kind from ``kinds``
    (repeat a kind to make it more likely). The choice hashes ``seed`` and the target, so it does not depend
    on request order or timing, and the same seed picks the same targets in every run.
    """

    rate: float = 0.0  # share of distinct request targets that misbehave (0..1)
    kinds: tuple[str, ...] = TRANSIENT_FAULTS
    failures_per_target: int = 1  # a chosen target fails this many times, then behaves
    seed: int = 0
    slow_seconds: float = 2.0  # for "slow": longer than the client's timeout in tests
    retry_after_seconds: int = 1  # Retry-After header value sent with 429 and 503

    def __post_init__(self) -> None:
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        object.__setattr__(self, "kinds", kinds)
        _require(_is_number(self.rate), f"fault rate must be a number between 0 and 1, got {self.rate!r}")
        if not 0.0 <= self.rate <= 1.0:  # also refuses NaN
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate}")
        if not kinds:
            raise ValueError(
                f"a fault plan needs at least one kind; choose from {', '.join(TRANSIENT_FAULTS)}"
            )
        unknown = [kind for kind in kinds if kind not in TRANSIENT_FAULTS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; choose from {', '.join(TRANSIENT_FAULTS)}")
        failures, seed = self.failures_per_target, self.seed
        slow, retry_after = self.slow_seconds, self.retry_after_seconds
        _require(
            _is_int(failures) and failures >= 1,
            f"failures_per_target must be a positive integer, got {failures!r}",
        )
        _require(_is_int(seed), f"fault seed must be an integer, got {seed!r}")
        _require(
            _is_number(slow) and math.isfinite(slow) and slow >= 0,
            f"slow_seconds must be a finite number >= 0, got {slow!r}",
        )
        _require(
            _is_int(retry_after) and retry_after >= 0,
            f"retry_after_seconds must be a non-negative integer, got {retry_after!r}",
        )

    @staticmethod
    def target_of(path_with_query: str) -> str:
        """The target a request counts against: its path and query, secret parameters removed."""
        return redact_query(path_with_query)

    def _draw(self, target: str) -> tuple[float, int]:
        digest = hashlib.sha256(f"fault-plan/{self.seed}/{self.target_of(target)}".encode()).digest()
        share = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
        return share, int.from_bytes(digest[8:16], "big")

    def kind_for(self, target: str) -> str | None:
        """The fault a target is planned to get on its first requests, or None for a well-behaved one."""
        if self.rate <= 0.0:
            return None
        share, pick = self._draw(target)
        if share >= self.rate:
            return None
        return self.kinds[pick % len(self.kinds)]

    def fault_for(self, target: str, attempt: int) -> str | None:
        """The fault to inject into request number ``attempt`` (counting from 0) to ``target``, if any."""
        if attempt < 0:
            raise ValueError(f"attempt counts from 0, got {attempt}")
        if attempt >= self.failures_per_target:
            return None
        return self.kind_for(target)


# --- what the faults do to a reply ------------------------------------------------------------------------
def html_error_response() -> Response:
    """The "html_error" fault: a proxy's error page, with status 200, instead of the real reply."""
    return Response(200, HTML_ERROR_PAGE, {"Content-Type": "text/html; charset=utf-8"})


def damage_body(fault: str | None, response: Response) -> Response:
    """What the "truncated" and "invalid_json" faults make of a real reply; other faults leave it as it is."""
    if fault == "invalid_json" and _is_json(response):
        return _cut_json(response)
    if fault in {"truncated", "invalid_json"}:
        return _cut_body(response)
    return response


class _FirstBytes:
    """The first ``count`` bytes of ``chunks``; ``close`` closes the source (an open file, say) even when
    nothing was read, as for a HEAD request."""

    def __init__(self, chunks: Iterator[bytes], count: int) -> None:
        self._chunks = chunks
        self._left = count

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._left <= 0:
            self.close()
            raise StopIteration
        try:
            piece = next(self._chunks)[: self._left]
        except StopIteration:
            self.close()
            raise
        self._left -= len(piece)
        return piece

    def close(self) -> None:
        close_chunks(self._chunks)


def _cut_body(response: Response) -> Response:
    """The "truncated" fault: the real status, headers and Content-Length, but only half the body."""
    chunks, length = response.chunks_and_length()
    return Response(response.status, _FirstBytes(chunks, length // 2), dict(response.headers), length)


def _is_json(response: Response) -> bool:
    content_type = next((v for k, v in response.headers.items() if k.lower() == "content-type"), "")
    return content_type.split(";")[0].strip().lower() == "application/json"


def _cut_json(response: Response) -> Response:
    """The "invalid_json" fault: 200 with the first half of the JSON bytes, sent in full (it won't parse)."""
    chunks, length = response.chunks_and_length()
    body = b"".join(_FirstBytes(chunks, length // 2))
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
    return Response(200, body, {"Content-Type": "application/json", **headers})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to a plan


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
