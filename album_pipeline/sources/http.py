"""Shared HTTP plumbing for every source: a retrying session, timeouts, and the project's error types.

Retries, backoff and ``Retry-After`` are urllib3's ``Retry`` mounted on a requests ``HTTPAdapter``, so no
source client hand-writes a retry loop. Every request a client makes passes ``timeout=`` explicitly
(requests has no session-wide default timeout and would otherwise wait forever on a stalled server).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

from album_pipeline import __version__
from album_pipeline.sources.rate_limit import RateLimiter

DEFAULT_USER_AGENT = f"album_pipeline/{__version__} (+https://github.com/album-pipeline/album_pipeline)"

# Seconds to wait for a connection and then for each read; clients take their own ``timeout`` argument.
DEFAULT_TIMEOUT = 30.0
# Largest bodies a client reads, past which a reply is refused (TooLargeError) rather than held in memory.
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_JSON_BYTES = 20 * 1024 * 1024

RETRY_STATUSES = (429, 500, 502, 503, 504)

# Query parameters that may carry credentials and must never be shown in a message.
_SECRET_QUERY_NAMES = {"apikey", "api_key", "key", "token", "access_token", "secret", "password"}
# A header value requests and http.client send as given: visible ASCII, inner blanks allowed. Anything else (a
# line break, a control or non-ASCII character) makes them raise with the value itself in the message.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")


class SourceError(Exception):
    """Base of every error a data source raises; the message always says what to do next."""


class SettingError(SourceError, ValueError):
    """A setting cannot be used as given (say a key a header cannot carry); the message names the variable."""


class SourceUnavailableError(SourceError):
    """The service cannot be reached, or keeps failing after the retries are spent."""


class SourceAuthError(SourceError):
    """The service refused the credentials (HTTP 401/403)."""


class UntrustedURLError(SourceError):
    """A URL taken from a response points at a scheme or host the configuration does not allow."""


class NoImageError(SourceError):
    """The source says it holds no image for this item (the Cover Art Archive's 404): a fact, not a fault."""


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
        **_jitter_option(backoff_factor),
    }
    adapter = HTTPAdapter(
        max_retries=Retry(**retry_options), pool_connections=pool_size, pool_maxsize=pool_size
    )
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


def check_header_setting(value: str, env_var: str) -> str:
    """``value`` if an HTTP header can carry it, else a SettingError naming ``env_var`` (never the value)."""
    if not _HEADER_VALUE.fullmatch(value):
        raise SettingError(
            f"{env_var} contains a line break or other characters HTTP headers cannot carry; set it again"
        )
    return value


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
    """``text`` with every non-empty secret replaced by ``***`` (defence in depth for error messages).

    The escaped form is masked too: libraries quote a bad value with ``repr`` ('ab\\r\\ncd'), which the
    plain value would not match.
    """
    for secret in secrets:
        if secret:
            for form in (secret, repr(secret)[1:-1], secret.encode("unicode_escape").decode("ascii")):
                text = text.replace(form, "***")
    return text


def translate_request_error(
    error: requests.RequestException,
    *,
    service: str,
    url: str,
    url_env_var: str,
    secrets: Iterable[str | None] = (),
    key_env_var: str | None = None,
) -> SourceError:
    """Turn a requests exception into a SourceError whose message names the URL (redacted) and the setting."""
    shown_url = redact_url(url)
    if isinstance(error, requests.exceptions.InvalidHeader):
        # The request never left: a setting is at fault, not the service (and the value is not shown).
        setting = key_env_var or "the settings sent in request headers"
        return SettingError(
            f"a request header for {service} holds characters HTTP headers cannot carry; set {setting} again"
        )
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


class BodyError(SourceError):
    """A reply arrived but its body is unusable in a way a retry may cure: cut short, an HTML error page,
    JSON that does not parse. ``reason`` is a short code for failure tables."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class TooLargeError(SourceResponseError):
    """The body is larger than the caller allows; not retried."""


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL, after any redirects
    status: int
    content_type: str  # lower-cased media type without parameters; "" when the server sent none
    body: bytes


HostCheck = Callable[[str], None]


def fetch(
    session: requests.Session,
    url: str,
    *,
    service: str,
    url_env_var: str,
    timeout: float,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    limiter: RateLimiter | None = None,
    check_redirect: HostCheck | None = None,
    max_redirects: int = 5,
    max_bytes: int = 50 * 1024 * 1024,
    expect: Callable[[Fetched], None] | None = None,
    passthrough_statuses: Iterable[int] = (),
    body_retries: int = 3,
    backoff_factor: float = 0.5,
    key_env_var: str | None = None,
    secrets: Iterable[str | None] = (),
) -> Fetched:
    """GET ``url`` and read its whole body, retrying what the session's own retries cannot see.

    The session (``make_session``) already retries refused connections, resets, timeouts and 429/5xx answers
    with backoff and ``Retry-After``. Problems that show only while reading or checking the body (a transfer
    cut short, an HTML error page served with 200, JSON that does not parse, as ``expect`` decides by raising
    BodyError) are retried here with urllib3's own backoff and jitter, each attempt waiting for ``limiter``.

    Redirects are followed by hand so that ``check_redirect`` can refuse a host before anything is sent to it,
    and caller ``headers`` (which may carry a key) are never forwarded to another host. Statuses in
    ``passthrough_statuses`` (say 404 for "no cover art") are returned to the caller instead of raised.
    """
    secrets = [secret for secret in secrets if secret]
    passthrough = frozenset(passthrough_statuses)
    retry = Retry(
        total=body_retries,
        connect=0,
        read=body_retries,
        status=0,
        backoff_factor=backoff_factor,
        **_jitter_option(backoff_factor),
    )
    while True:
        try:
            fetched = _fetch_once(
                session, url, params, headers, timeout, limiter, check_redirect, max_redirects, max_bytes,
                service, url_env_var, key_env_var, secrets, passthrough,
            )  # fmt: skip
            if expect is not None and fetched.status not in passthrough:
                expect(fetched)
            return fetched
        except BodyError as problem:
            try:
                retry = retry.increment(method="GET", url=url, error=ProtocolError(problem.reason))
            except MaxRetryError:
                raise BodyError(
                    problem.reason, scrub(f"{problem} (still so after {body_retries} retries)", secrets)
                ) from None
            retry.sleep()


def _fetch_once(
    session: requests.Session,
    url: str,
    params: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    timeout: float,
    limiter: RateLimiter | None,
    check_redirect: HostCheck | None,
    max_redirects: int,
    max_bytes: int,
    service: str,
    url_env_var: str,
    key_env_var: str | None,
    secrets: list[str],
    passthrough: frozenset[int],
) -> Fetched:
    if limiter is not None:
        limiter.wait()
    try:
        response = open_following_redirects(
            session, url, service=service, url_env_var=url_env_var, timeout=timeout, params=params,
            headers=headers, check_redirect=check_redirect, max_redirects=max_redirects,
        )  # fmt: skip
        with response:
            if response.status_code not in passthrough:
                failure = error_for_status(
                    response, service=service, url_env_var=url_env_var, key_env_var=key_env_var,
                    secrets=secrets,
                )  # fmt: skip
                if failure is not None:
                    raise failure
            body = _read_body(response, max_bytes, service)
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return Fetched(response.url, response.status_code, media_type, body)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
        raise BodyError(
            "incomplete_body",
            scrub(f"{service} cut the reply from {redact_url(url)} short: {error}", secrets),
        ) from None
    except requests.RequestException as error:
        raise translate_request_error(
            error, service=service, url=url, url_env_var=url_env_var, secrets=secrets, key_env_var=key_env_var,
        ) from None  # fmt: skip


def open_following_redirects(
    session: requests.Session,
    url: str,
    *,
    service: str,
    url_env_var: str,
    timeout: float,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    check_redirect: HostCheck | None = None,
    max_redirects: int = 5,
    cross_host_headers: bool = False,
) -> requests.Response:
    """The streamed final response for ``url`` (the caller closes it), redirects followed by hand so that
    ``check_redirect`` refuses a host before anything is sent to it.

    ``headers`` go to other hosts only with ``cross_host_headers`` (a Range may; a key must not). Request
    errors propagate as requests exceptions.
    """
    current, current_params, current_headers = url, params, dict(headers or {})
    origin = urlsplit(url).netloc
    for _hop in range(max_redirects + 1):
        response = session.get(
            current,
            params=current_params,
            headers=current_headers,
            timeout=timeout,
            stream=True,
            allow_redirects=False,
        )
        location = response.headers.get("Location")
        if not (response.is_redirect and location):
            return response
        response.close()
        following = urljoin(response.url, location)
        if check_redirect is not None:
            check_redirect(following)
        if not cross_host_headers and urlsplit(following).netloc != origin:
            current_headers = {}  # never forward a key to another host
        current, current_params = following, None
    raise SourceResponseError(
        f"{service} redirected {redact_url(url)} more than {max_redirects} times; check that {url_env_var} "
        "points at the service"
    )


def _read_body(response: requests.Response, max_bytes: int, service: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise TooLargeError(
            f"{service} offered {int(declared)} bytes at {redact_url(response.url)}; the limit is {max_bytes}"
        )
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        received += len(chunk)
        if received > max_bytes:
            raise TooLargeError(
                f"{service} sent more than {max_bytes} bytes at {redact_url(response.url)}; refusing it"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def expect_json(fetched: Fetched) -> None:
    """An ``expect`` for API calls: an HTML page or a body that does not parse is a retryable BodyError."""
    if fetched.content_type == "text/html":
        raise BodyError(
            "html_instead_of_json", f"{redact_url(fetched.url)} answered with an HTML page, not JSON"
        )
    try:
        json.loads(fetched.body)
    except ValueError:
        raise BodyError(
            "invalid_json", f"{redact_url(fetched.url)} answered with a body that is not valid JSON"
        ) from None


def expect_image(fetched: Fetched) -> None:
    """An ``expect`` for image downloads: a text or HTML body is an error page, worth retrying.

    Anything else (image/*, octet-stream, no type) goes on to the magic-byte check and a full decode.
    """
    if fetched.content_type.startswith("text/") or fetched.content_type in (
        "application/json",
        "application/xml",
    ):
        raise BodyError(
            "unexpected_content_type",
            f"{redact_url(fetched.url)} answered with {fetched.content_type}, not an image",
        )


def json_object(fetched: Fetched, service: str) -> dict:
    """The JSON object in a body already accepted by ``expect_json``."""
    payload = json.loads(fetched.body)
    if not isinstance(payload, dict):
        raise SourceResponseError(
            f"{service} answered {redact_url(fetched.url)} with JSON that is not an object"
        )
    return payload


def _jitter_option(backoff_factor: float) -> dict[str, float]:
    # Jitter spreads retries of parallel workers apart; older urllib3 releases lack the option.
    if "backoff_jitter" in inspect.signature(Retry.__init__).parameters:
        return {"backoff_jitter": backoff_factor / 2}
    return {}


def host_checker(allowed_hosts: Iterable[str], *, what: str, setting: str) -> HostCheck:
    """A check that refuses URLs that are not http(s) or whose host is not allowed.

    An entry matches its host exactly; an entry starting with a dot (``.archive.org``) matches any subdomain.
    """
    hosts = frozenset(host.strip().lower() for host in allowed_hosts if host.strip())

    def check(url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise UntrustedURLError(f"{what} URL {redact_url(url)!r} is not http(s); refusing it")
        host = (parts.hostname or "").lower()
        if not any(host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in hosts):
            raise UntrustedURLError(
                f"{what} host {host!r} is not allowed (allowed: {sorted(hosts)}); add it to {setting} if it "
                "is trusted"
            )

    return check
