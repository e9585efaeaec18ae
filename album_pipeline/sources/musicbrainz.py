"""Clients for the MusicBrainz web service (albums by genre tag) and the Cover Art Archive (their covers).

MusicBrainz asks for at most one request per second per IP and a User-Agent naming the application, its
version and a contact; anonymous agents are blocked. The Cover Art Archive answers 404 when a release group
has no art (a fact the crawl records, not an error) and redirects image requests to archive.org, so image
requests follow redirects, each hop checked against the allowed hosts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

import requests

from album_pipeline import __version__

# Both clients are built from the one HTTP toolkit, so this list is much like napster.py's.
from album_pipeline.sources.http import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_TIMEOUT,
    MAX_JSON_BYTES,
    NoImageError,
    SourceResponseError,
    check_header_setting,
    expect_image,
    expect_json,
    fetch,
    host_checker,
    json_object,
    make_session,
    redact_url,
)
from album_pipeline.sources.rate_limit import RateLimiter, rate_limit_prefix

DEFAULT_MUSICBRAINZ_URL = "https://musicbrainz.org"
DEFAULT_COVERART_URL = "https://coverartarchive.org"
MUSICBRAINZ_URL_ENV = "MUSICBRAINZ_URL"
COVERART_URL_ENV = "COVERART_URL"
USER_AGENT_ENV = "MUSICBRAINZ_USER_AGENT"
COVERART_IMAGE_HOSTS_ENV = "COVERART_IMAGE_HOSTS"
# The Cover Art Archive redirects to archive.org, which redirects on to one of its ia*.us.archive.org hosts.
DEFAULT_COVERART_IMAGE_HOSTS = ("coverartarchive.org", "archive.org", ".archive.org")
DEFAULT_USER_AGENT = f"album_pipeline/{__version__} ( https://github.com/album-pipeline/album_pipeline )"
# MusicBrainz allows 1 request/s per IP; 5% under it, arrival jitter never makes two calls land within one second.
MUSICBRAINZ_REQUESTS_PER_SECOND = 0.95
MAX_SEARCH_LIMIT = 100
THUMBNAIL_SIZES = (250, 500, 1200)

_LIBRARY_AGENTS = ("python-requests", "python-urllib", "curl/", "wget", "java/", "go-http-client")
_MBID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_user_agent(user_agent: str | None) -> str:
    """The User-Agent, refused unless it names an application, a version and a contact, as MusicBrainz asks."""
    agent = (user_agent or "").strip()
    if agent:
        check_header_setting(agent, USER_AGENT_ENV)  # before the message below, which shows the agent
    if (
        not agent
        or agent.lower().startswith(_LIBRARY_AGENTS)
        or not re.match(r"^\S+/\S+", agent)
        or "(" not in agent
    ):
        raise ValueError(
            f"User-Agent {agent!r} would be blocked by MusicBrainz: set {USER_AGENT_ENV} to "
            "'Application/version ( contact-email-or-url )', e.g. 'my_covers/1.0 ( me@example.org )'"
        )
    return agent


def check_thumbnail_size(size: int) -> None:
    if size not in THUMBNAIL_SIZES:
        raise ValueError(f"thumbnail size {size} is not offered; choose one of {list(THUMBNAIL_SIZES)}")


def _base_url(url: str, env_var: str) -> str:
    if not url or not url.startswith(("http://", "https://")):
        raise ValueError(f"{env_var}={redact_url(url or '')!r} must be an http:// or https:// URL")
    return url.rstrip("/")


class MusicBrainzClient:
    """Release groups of primary type Album found by tag, through ``/ws/2/release-group`` searches."""

    def __init__(
        self,
        base_url: str = DEFAULT_MUSICBRAINZ_URL,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        requests_per_second: float | None = MUSICBRAINZ_REQUESTS_PER_SECOND,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = _base_url(base_url, MUSICBRAINZ_URL_ENV)
        self.user_agent = check_user_agent(user_agent)
        self.timeout = timeout
        self._session = session or make_session(self.user_agent)
        self._rate = RateLimiter(requests_per_second)
        rate_limit_prefix(self._session, f"{self.base_url}/ws/2/", self._rate)

    def __repr__(self) -> str:
        return f"MusicBrainzClient(base_url={self.base_url!r})"

    def _get_json(self, path: str, params: dict) -> dict:
        fetched = fetch(
            self._session,
            f"{self.base_url}/ws/2/{path}",
            service="MusicBrainz",
            url_env_var=MUSICBRAINZ_URL_ENV,
            timeout=self.timeout,
            params={**params, "fmt": "json"},
            headers={"User-Agent": self.user_agent, "Accept": "application/json"},
            limiter=self._rate,
            max_redirects=0,
            max_bytes=MAX_JSON_BYTES,
            expect=expect_json,
        )
        return json_object(fetched, "MusicBrainz")

    def check(self) -> None:
        """One cheap call, raising SourceUnavailableError (or SourceAuthError for a blocked agent) early."""
        self._get_json("genre/all", {"limit": 1})

    def iter_release_groups(
        self, tag: str, *, max_results: int | None = None, page_size: int = MAX_SEARCH_LIMIT
    ) -> Iterator[dict]:
        """Album release groups tagged ``tag``, page by page, until a short page, ``count`` or ``max_results``.

        Pages are fetched lazily: stopping the iteration early sends no further request.
        """
        if not 1 <= page_size <= MAX_SEARCH_LIMIT:
            raise ValueError(f"page_size must be between 1 and {MAX_SEARCH_LIMIT}, got {page_size}")
        if not tag.strip():
            raise ValueError("an empty MusicBrainz tag matches nothing; give a tag such as 'jazz'")
        escaped = tag.strip().replace("\\", "\\\\").replace('"', '\\"')
        query = f'tag:"{escaped}" AND primarytype:album'
        offset, returned, seen = 0, 0, set()
        while max_results is None or returned < max_results:
            payload = self._get_json("release-group", {"query": query, "limit": page_size, "offset": offset})
            page = payload.get("release-groups") or []
            for group in page:
                mbid = str(group.get("id") or "")
                # The query asks for albums only; a mirror that ignores the clause must not leak singles in.
                if not mbid or mbid in seen or str(group.get("primary-type", "")).lower() != "album":
                    continue
                seen.add(mbid)
                yield group
                returned += 1
                if max_results is not None and returned >= max_results:
                    return
            offset += len(page)
            count = payload.get("count")
            if len(page) < page_size or (isinstance(count, int) and offset >= count):
                return


class CoverArtClient:
    """Front covers of release groups from the Cover Art Archive, as thumbnails of a chosen size."""

    def __init__(
        self,
        base_url: str = DEFAULT_COVERART_URL,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        allowed_image_hosts: Iterable[str] = DEFAULT_COVERART_IMAGE_HOSTS,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        connections: int = 16,
    ) -> None:
        self.base_url = _base_url(base_url, COVERART_URL_ENV)
        self.user_agent = check_user_agent(user_agent)
        self.timeout = timeout
        # One pooled connection per download worker, so parallel downloads reuse their connections.
        self._session = session or make_session(self.user_agent, pool_size=connections)
        own_host = urlsplit(self.base_url).hostname or ""
        self._check_url = host_checker(
            [own_host, *allowed_image_hosts], what="cover art", setting=COVERART_IMAGE_HOSTS_ENV
        )

    def __repr__(self) -> str:
        return f"CoverArtClient(base_url={self.base_url!r})"

    def front_url(self, mbid: str, size: int) -> str:
        if not _MBID.match(mbid):
            raise ValueError(f"{mbid!r} is not a MusicBrainz id (a lower-case UUID)")
        check_thumbnail_size(size)
        return f"{self.base_url}/release-group/{mbid}/front-{size}"

    def fetch_image(self, url: str, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
        """The image at a ``front_url``; NoImageError when the archive has no art for it (404)."""
        self._check_url(url)
        fetched = fetch(
            self._session,
            url,
            service="Cover Art Archive",
            url_env_var=COVERART_URL_ENV,
            timeout=self.timeout,
            headers={"User-Agent": self.user_agent},
            check_redirect=self._check_url,
            max_bytes=max_bytes,
            expect=expect_image,
            passthrough_statuses=(404,),
        )
        if fetched.status == 404:
            raise NoImageError(f"the Cover Art Archive has no front image at {redact_url(url)}")
        if not fetched.body:
            raise SourceResponseError(f"the Cover Art Archive sent an empty body for {redact_url(url)}")
        return fetched.body
