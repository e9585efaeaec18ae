"""Client-side rate limits: calls, and urllib3's own retries of them, spaced to what a service allows."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


class RateLimiter:
    """Spaces calls so that at most ``per_second`` start in any second, across threads (no bursts).

    A client-side limit keeps a crawl under a service's published rate instead of relying on its 429s.
    ``None`` means unlimited.
    """

    def __init__(
        self,
        per_second: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second is not None and not per_second > 0:
            raise ValueError(f"a rate limit must be above 0 requests per second, got {per_second}")
        self.per_second = per_second
        self._interval = 0.0 if per_second is None else 1.0 / per_second
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_start = 0.0

    def wait(self) -> None:
        """Block until this call may start."""
        if not self._interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + self._interval
        if start > now:
            self._sleep(start - now)


class LimitedRetry(Retry):
    """urllib3's Retry whose every retry also waits its turn at a RateLimiter.

    urllib3 retries inside the adapter, out of the client's sight; without this a burst of retries (the first
    one has no backoff) would break the client-side rate limit the service asked for.
    """

    def __init__(self, *args: Any, rate_limiter: RateLimiter | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rate_limiter = rate_limiter

    def new(self, **kw: Any) -> LimitedRetry:
        renewed = super().new(**kw)
        renewed.rate_limiter = self.rate_limiter
        return renewed

    def sleep(self, response: Any = None) -> None:
        super().sleep(response)
        if self.rate_limiter is not None:
            self.rate_limiter.wait()


def rate_limit_prefix(session: requests.Session, prefix: str, limiter: RateLimiter) -> None:
    """Make retries of requests under ``prefix`` wait for ``limiter`` (callers wait before the first try).

    The session's own adapter for that prefix is cloned with the same retry policy and pool size, so a session
    built with ``make_session`` keeps its settings.
    """
    if limiter.per_second is None:
        return
    existing = session.get_adapter(prefix)
    retry = existing.max_retries if isinstance(existing, HTTPAdapter) else Retry(0)
    limited = LimitedRetry(**{**_retry_params(retry), "rate_limiter": limiter})
    pool_size = getattr(existing, "_pool_maxsize", 16)
    session.mount(
        prefix, HTTPAdapter(max_retries=limited, pool_connections=pool_size, pool_maxsize=pool_size)
    )


def _retry_params(retry: Retry) -> dict[str, Any]:
    names = inspect.signature(Retry.__init__).parameters
    return {name: getattr(retry, name) for name in names if name != "self" and hasattr(retry, name)}
