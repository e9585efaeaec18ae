"""Shared HTTP plumbing for every source: a retrying session, timeouts, and the project's error types.

Retries, backoff and ``Retry-After`` are urllib3's ``Retry`` mounted on a requests ``HTTPAdapter``, so no
source client hand-writes a retry loop. Every request a client makes passes ``timeout=`` explicitly
(requests has no session-wide default timeout and would otherwise wait forever on a stalled server).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from album_pipeline import __version__

DEFAULT_USER_AGENT = f"album_pipeline/{__version__} (+https://github.com/album-pipeline/album_pipeline)"

# Seconds to wait for a connection and then for each read; clients take their own ``timeout`` argument.
DEFAULT_TIMEOUT = 30.0

RETRY_STATUSES = (429, 500, 502, 503, 504)

# Query parameters that may carry credentials and must never be shown in a message.
_SECRET_QUERY_NAMES = {"apikey", "api_key", "key", "token", "access_token", "secret", "password"}


class SourceError(Exception):
    """Base of every error a data source raises; the message always says what to do next."""


class SourceUnavailableError(SourceError):
    """The service cannot be reached, or keeps failing after the retries are spent."""


class SourceAuthError(SourceError):
    """The service refused the credentials (HTTP 401/403)."""


class UntrustedURLError(SourceError):
    """A URL taken from a response points at a scheme or host the configuration does not allow."""


class SourceResponseError(SourceError):
    """The service answered, but not with something the client can use (bad status, malformed body)."""


def make_session(
    user_agent: str = DEFAULT_USER_AGENT,
    *,
    total_retries: int = 5,
    backoff_factor: float = 0.5,
    pool_size: int = 16,
) -> requests.Session:
    """A session that retries connection errors, read errors and 429/5xx answers on GET and HEAD.

    ``Retry-After`` is honoured. Once the retries are spent the last response is returned (not an exception),
    so that the caller can report the final status code with a useful message.
    """
    retry_options: dict = {
        "total": total_retries,
        "connect": total_retries,
        "read": total_retries,
        "status": total_retries,
        "backoff_factor": backoff_factor,
        "status_forcelist": RETRY_STATUSES,
        "allowed_methods": frozenset({"GET", "HEAD"}),
        "respect_retry_after_header": True,
        "raise_on_status": False,
    }
    # Jitter spreads retries of parallel download workers apart; older urllib3 releases lack the option.
    if "backoff_jitter" in inspect.signature(Retry.__init__).parameters:
        retry_options["backoff_jitter"] = backoff_factor / 2
    adapter = HTTPAdapter(
        max_retries=Retry(**retry_options), pool_connections=pool_size, pool_maxsize=pool_size
    )
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


def redact_url(url: str) -> str:
    """The URL with user-info passwords and credential-like query parameters replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_NAMES else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every non-empty secret replaced by ``***`` (defence in depth for error messages)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def translate_request_error(
    error: requests.RequestException,
    *,
    service: str,
    url: str,
    url_env_var: str,
    secrets: Iterable[str | None] = (),
) -> SourceError:
    """Turn a requests exception into a SourceError whose message names the URL (redacted) and the setting."""
    shown_url = redact_url(url)
    if isinstance(error, requests.Timeout):
        what = "timed out"
    elif isinstance(error, requests.exceptions.RetryError):
        what = "kept failing after retries"
    elif isinstance(error, requests.ConnectionError):
        what = "could not be reached"
    else:
        what = "failed"
    detail = scrub(f"{type(error).__name__}: {error}", secrets)
    message = (
        f"{service} at {shown_url} {what} ({detail}). Check that the service is up and that {url_env_var} "
        "points at it."
    )
    return SourceUnavailableError(message)


def error_for_status(
    response: requests.Response,
    *,
    service: str,
    url_env_var: str,
    key_env_var: str | None = None,
    secrets: Iterable[str | None] = (),
) -> SourceError | None:
    """A SourceError describing a failed response, or None when the status is a success (2xx)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    shown_url = redact_url(response.url or "")
    body = scrub(_short_body(response), secrets)
    if status in (401, 403):
        hint = f"set {key_env_var} to a valid key" if key_env_var else "check the credentials"
        return SourceAuthError(f"{service} refused the request to {shown_url} (HTTP {status}{body}); {hint}.")
    if status in RETRY_STATUSES:
        return SourceUnavailableError(
            f"{service} at {shown_url} kept answering HTTP {status}{body} after retries; wait and run again, "
            f"or check that {url_env_var} points at a working server."
        )
    if 300 <= status < 400:
        return SourceResponseError(
            f"{service} redirected {shown_url} (HTTP {status}) to {response.headers.get('Location')!r}; "
            f"set {url_env_var} to the final address instead."
        )
    return SourceResponseError(
        f"{service} answered HTTP {status}{body} for {shown_url}; check that {url_env_var} points at the "
        "right server and API version."
    )


def _short_body(response: requests.Response, limit: int = 200) -> str:
    try:
        text = response.text.strip()
    except Exception:  # a body that cannot even be decoded adds nothing to the message
        return ""
    if not text:
        return ""
    return ": " + (text if len(text) <= limit else text[:limit] + "...")


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
