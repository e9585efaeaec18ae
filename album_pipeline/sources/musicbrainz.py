"""Clients for the MusicBrainz web service (albums by genre tag) and the Cover Art Archive (their covers).

MusicBrainz asks for at most one request per second per IP and a User-Agent naming the application, its
version and a contact; anonymous agents are blocked. Its search pages (see the recordings in
``shared/reference/real-responses/musicbrainz/``) carry tags voted 0 times, ``secondary-types`` such as
Compilation or Mixtape/Street on primary-type albums, groups without ``first-release-date``, and artist
credits whose last part has no ``joinphrase``; the helpers below read them as they come.

The Cover Art Archive answers "no art" with an HTML 404 (a fact the crawl records, not an error) and sends
image requests two hops across hosts in plain http (coverartarchive.org -> archive.org ->
dnNNN.ca.archive.org), so requests follow redirects, each hop checked against the allowed hosts. A release
group's images may include non-image uploads (a PDF booklet with ``types: []``), which are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from album_pipeline import __version__

# Both clients are built from the one HTTP toolkit, so this list is much like napster.py's.
from album_pipeline.sources.http import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_TIMEOUT,
    MAX_JSON_BYTES,
    Fetched,
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
# The Cover Art Archive redirects to archive.org, which redirects on to a data node (dn710907.ca.archive.org).
DEFAULT_COVERART_IMAGE_HOSTS = ("coverartarchive.org", "archive.org", ".archive.org")
DEFAULT_USER_AGENT = f"album_pipeline/{__version__} ( https://github.com/album-pipeline/album_pipeline )"
# MusicBrainz allows 1 request/s per IP; 5% under it, arrival jitter never makes two calls land within one second.
MUSICBRAINZ_REQUESTS_PER_SECOND = 0.95
MAX_SEARCH_LIMIT = 100
THUMBNAIL_SIZES = (250, 500, 1200)
# Secondary types (as MusicBrainz spells them, compared case-insensitively) of albums that are not an artist's
# own studio albums: their covers are often generic series art, and their tags describe the original albums.
DEFAULT_EXCLUDED_SECONDARY_TYPES = ("compilation", "live", "remix", "dj-mix", "mixtape/street")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")

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


def secondary_types(group: Mapping[str, Any]) -> tuple[str, ...]:
    """A release group's secondary types, lower-cased (``()`` for a plain album)."""
    found = group.get("secondary-types") or []
    return tuple(str(kind).strip().lower() for kind in found if str(kind).strip())


def positive_tag_votes(group: Mapping[str, Any]) -> dict[str, float]:
    """Tag name (lower-cased) -> vote count, for tags voted more than 0 times only.

    Real pages list tags whose votes cancelled out (``count`` 0); such a tag says nothing about the album.
    """
    votes: dict[str, float] = {}
    for tag in group.get("tags") or []:
        name = str(tag.get("name", "")).strip().lower() if isinstance(tag, Mapping) else ""
        count = _vote_count(tag) if name else 0.0
        if count > 0:
            votes[name] = max(votes.get(name, 0.0), count)
    return votes


def _vote_count(tag: Mapping[str, Any]) -> float:
    try:
        return float(tag.get("count") or 0)
    except (TypeError, ValueError):
        return 0.0


def artist_credit(credit: Any) -> str | None:
    """The credited artists as MusicBrainz prints them: names joined by their join phrases.

    The last part (and a sole artist) carries no ``joinphrase`` at all on real pages.
    """
    if not isinstance(credit, list) or not credit:
        return None
    text = "".join(
        f"{part.get('name') or ''}{part.get('joinphrase') or ''}" for part in credit if isinstance(part, dict)
    )
    return text.strip() or None


@dataclass(frozen=True)
class CoverArtImage:
    """One image of a Cover Art Archive document: its integer id, front flag and thumbnail URLs by size."""

    id: int
    front: bool
    image_url: str
    thumbnails: Mapping[str, str]

    def thumbnail(self, size: int) -> str:
        check_thumbnail_size(size)
        return self.thumbnails.get(str(size)) or self.image_url


def cover_art_images(document: Mapping[str, Any]) -> list[CoverArtImage]:
    """The image entries of a ``/release-group/{mbid}`` document, in its order, non-image uploads left out.

    An upload is an image when its URL ends in an image extension: a PDF booklet (``types: []``) has JPEG
    thumbnails but is no cover.
    """
    images = []
    for entry in document.get("images") or []:
        if not isinstance(entry, Mapping):
            continue
        url = str(entry.get("image") or "")
        if not urlsplit(url).path.lower().endswith(IMAGE_EXTENSIONS):
            continue
        try:
            image_id = int(entry.get("id"))  # an integer on the real service; some mirrors send a string
        except (TypeError, ValueError):
            continue
        types = [str(kind).lower() for kind in entry.get("types") or []]
        front = entry.get("front") is True or "front" in types
        thumbnails = {str(k): str(v) for k, v in (entry.get("thumbnails") or {}).items()}
        images.append(CoverArtImage(image_id, front, url, thumbnails))
    return images


def front_image(document: Mapping[str, Any]) -> CoverArtImage | None:
    """The document's front cover, or None when no image entry is marked front."""
    return next((image for image in cover_art_images(document) if image.front), None)


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

    def document(self, mbid: str) -> dict | None:
        """The group's ``/release-group/{mbid}`` document, or None when the archive has no art (its 404)."""
        if not _MBID.match(mbid):
            raise ValueError(f"{mbid!r} is not a MusicBrainz id (a lower-case UUID)")
        url = f"{self.base_url}/release-group/{mbid}"
        fetched = self._get(url, MAX_JSON_BYTES, expect_json)
        return None if fetched.status == 404 else json_object(fetched, "Cover Art Archive")

    def _get(self, url: str, max_bytes: int, expect) -> Fetched:
        """GET ``url`` across the archive's redirects, every hop checked; a 404 is returned, not raised."""
        self._check_url(url)
        return fetch(
            self._session,
            url,
            service="Cover Art Archive",
            url_env_var=COVERART_URL_ENV,
            timeout=self.timeout,
            headers={"User-Agent": self.user_agent},
            check_redirect=self._check_url,
            max_bytes=max_bytes,
            expect=expect,
            passthrough_statuses=(404,),
        )

    def fetch_image(self, url: str, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
        """The image at a ``front_url``; NoImageError when the archive has no art for it (its HTML 404)."""
        fetched = self._get(url, max_bytes, expect_image)
        if fetched.status == 404:
            raise NoImageError(f"the Cover Art Archive has no front image at {redact_url(url)}")
        if not fetched.body:
            raise SourceResponseError(f"the Cover Art Archive sent an empty body for {redact_url(url)}")
        return fetched.body
