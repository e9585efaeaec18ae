"""A client for the Napster API v2.2 catalogue: genres, top albums per genre, album images.

The API key travels only in the ``apikey`` header of calls to the API host. It is never put in a URL, never
sent to the image host, and never shown by ``repr`` or in an error message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import requests

# Both clients are built from the one HTTP toolkit, so this list is much like musicbrainz.py's.
from album_pipeline.sources.http import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_TIMEOUT,
    MAX_JSON_BYTES,
    SourceError,
    check_header_setting,
    expect_image,
    expect_json,
    fetch,
    host_checker,
    json_object,
    make_session,
    redact_url,
    scrub,
)
from album_pipeline.sources.napster_genres import NapsterGenreTree
from album_pipeline.sources.rate_limit import RateLimiter, rate_limit_prefix

DEFAULT_NAPSTER_URL = "https://api.napster.com"
# Where the real API's image URLs point: the static image host and the documented image server.
DEFAULT_IMAGE_HOSTS = ("static.rhap.com", "api.napster.com")
IMAGE_HOSTS_ENV = "NAPSTER_IMAGE_HOSTS"
NAPSTER_URL_ENV = "NAPSTER_API_URL"
NAPSTER_KEY_ENV = "NAPSTER_API_KEY"
TOP_RANGES = ("day", "week", "month", "year", "life")
MAX_PAGE_SIZE = 200  # the API's documented maximum ``limit``
GENRE_LOOKUP_BATCH = 50  # genre ids per /genres/{ids} call, keeping the URL short
# The documented rate limit of a default API key.
NAPSTER_REQUESTS_PER_SECOND = 5.0

_SERVICE = "Napster API"


class UnknownGenreError(SourceError, ValueError):
    """The genre shortcut does not exist in the catalogue."""


_SIDES_IN_URL = re.compile(r"/(\d+)x(\d+)/")


def image_sides(image: dict) -> tuple[int, int] | None:
    """(width, height) of an image object: its fields when they are whole numbers, else the URL's
    ``/{W}x{H}/`` part as on the static image host; None when neither says."""
    width, height = image.get("width"), image.get("height")
    if isinstance(width, int) and isinstance(height, int) and not isinstance(width, bool):
        return (width, height) if width > 0 and height > 0 else None
    if isinstance(width, str) and isinstance(height, str) and width.isdigit() and height.isdigit():
        return int(width), int(height)
    found = _SIDES_IN_URL.search(str(image.get("url") or ""))
    return (int(found[1]), int(found[2])) if found else None


def album_flag(album: dict, name: str) -> bool:
    """An album's ``explicit`` or ``single`` flag: v2.2 names it ``isExplicit``/``isSingle``, the 2016 API
    (recorded ``albums/top``) ``explicit``/``single``; absent is False."""
    value = album.get("is" + name[:1].upper() + name[1:], album.get(name))
    return value is True


def check_page_size(page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")


class _Secret:
    """Holds a credential so that it cannot leak through ``repr``, ``str`` or a debugger's variable view."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class NapsterClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        requests_per_second: float | None = None,
        allowed_image_hosts: Iterable[str] = DEFAULT_IMAGE_HOSTS,
        connections: int = 16,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"Napster base URL {redact_url(base_url or '')!r} must start with http:// or https://; "
                f"set {NAPSTER_URL_ENV} (default {DEFAULT_NAPSTER_URL})"
            )
        if not api_key or not api_key.strip():
            raise SourceError(f"no Napster API key given; set {NAPSTER_KEY_ENV}")
        self.base_url = base_url.rstrip("/")
        # Checked here, before any request: requests would refuse it with the key itself in its message.
        self._api_key = _Secret(check_header_setting(api_key.strip(), NAPSTER_KEY_ENV))
        # One pooled connection per download worker, so parallel downloads reuse their connections.
        self._session = session or make_session(pool_size=connections)
        self.timeout = timeout
        # API calls count against the key's rate limit; image bytes come from a static host and do not.
        self._api_rate = RateLimiter(requests_per_second)
        rate_limit_prefix(self._session, f"{self.base_url}/v2.2/", self._api_rate)
        # Image URLs come from responses: fetch them only from hosts the configuration trusts.
        self.allowed_image_hosts = frozenset(
            host.strip().lower() for host in allowed_image_hosts if host.strip()
        )
        self._check_image_url = host_checker(self.allowed_image_hosts, what="image", setting=IMAGE_HOSTS_ENV)

    def __repr__(self) -> str:
        return f"NapsterClient(base_url={redact_url(self.base_url)!r}, api_key=***)"

    # -- plumbing -------------------------------------------------------------------------------------------

    def _get_json(self, path: str, params: dict[str, Any] | None = None) -> dict:
        secret = self._api_key.reveal()
        # No redirects are followed for API calls: the ``apikey`` header must reach the API host only.
        fetched = fetch(
            self._session,
            f"{self.base_url}{path}",
            service=_SERVICE,
            url_env_var=NAPSTER_URL_ENV,
            key_env_var=NAPSTER_KEY_ENV,
            timeout=self.timeout,
            params=params,
            headers={"apikey": secret, "Accept": "application/json"},
            limiter=self._api_rate,
            max_redirects=0,
            max_bytes=MAX_JSON_BYTES,
            expect=expect_json,
            secrets=[secret],
        )
        return json_object(fetched, _SERVICE)

    # -- catalogue ------------------------------------------------------------------------------------------

    def check(self) -> None:
        """One cheap authenticated call, raising SourceAuthError / SourceUnavailableError before real work."""
        self._get_json("/v2.2/genres", {"limit": 1})

    def genres(self) -> list[dict]:
        return list(self._get_json("/v2.2/genres").get("genres") or [])

    def genre_tree(self) -> NapsterGenreTree:
        """The top-level genres and their children, from one ``/genres`` call: a crawl reads it once."""
        return NapsterGenreTree(self.genres())

    def genres_by_id(self, genre_ids: Sequence[str], batch_size: int = GENRE_LOOKUP_BATCH) -> list[dict]:
        """The genre objects of these ids (sub-genres too), a batch per call; unknown ids are left out."""
        found: list[dict] = []
        for start in range(0, len(genre_ids), batch_size):
            joined = ",".join(quote(str(i), safe=".") for i in genre_ids[start : start + batch_size])
            found.extend(self._get_json(f"/v2.2/genres/{joined}").get("genres") or [])
        return found

    def genre(self, shortcut: str) -> dict:
        """The genre object for a shortcut such as ``rock`` (an unknown one is an UnknownGenreError)."""
        if not shortcut or "/" in shortcut:
            raise UnknownGenreError(f"{shortcut!r} is not a Napster genre shortcut (for example 'rock')")
        found = self._get_json(f"/v2.2/genres/{quote(shortcut, safe='')}").get("genres") or []
        # The API answers an unknown id or shortcut with 200 and an empty list rather than 404.
        for candidate in found:
            if shortcut.lower() in (
                str(candidate.get("shortcut", "")).lower(),
                str(candidate.get("id")).lower(),
            ):
                return candidate
        try:
            known = sorted(str(g.get("shortcut")) for g in self.genres() if g.get("shortcut"))
        except SourceError:
            known = []
        hint = f"; known shortcuts: {', '.join(known)}" if known else ""
        raise UnknownGenreError(f"Napster has no genre with shortcut {shortcut!r}{hint}")

    def iter_top_albums(
        self,
        genre_id: str,
        ranges: Sequence[str] = TOP_RANGES,
        page_size: int = MAX_PAGE_SIZE,
        max_albums_per_range: int | None = 1000,
    ) -> Iterator[dict]:
        """Distinct top albums of a genre, range after range, paging with limit/offset.

        A range ends on a short or empty page (``totalCount`` may be null), once ``totalCount`` is reached, or
        at ``max_albums_per_range``. An album already yielded for an earlier range is not yielded again.
        """
        check_page_size(page_size)
        unknown = [name for name in ranges if name not in TOP_RANGES]
        if unknown:
            raise ValueError(f"unknown top-album ranges {unknown}; use some of {list(TOP_RANGES)}")
        seen: set[str] = set()
        for range_name in ranges:
            for album in self._iter_range(genre_id, range_name, page_size, max_albums_per_range):
                album_id = str(album.get("id", ""))
                if album_id and album_id.lower() not in seen:
                    seen.add(album_id.lower())
                    yield album

    def _iter_range(self, genre_id: str, range_name: str, page_size: int, cap: int | None) -> Iterator[dict]:
        path = f"/v2.2/genres/{quote(genre_id, safe='')}/albums/top"
        offset = 0
        range_ids: set[str] = set()
        while cap is None or offset < cap:
            limit = page_size if cap is None else min(page_size, cap - offset)
            payload = self._get_json(path, {"limit": limit, "offset": offset, "range": range_name})
            page = payload.get("albums") or []
            new_ids = {str(a.get("id", "")).lower() for a in page} - range_ids
            yield from page
            total = (payload.get("meta") or {}).get("totalCount")
            offset += len(page)
            # A page with nothing new means the server ignores ``offset``: stop rather than loop forever.
            if len(page) < limit or not new_ids or (isinstance(total, int) and offset >= total):
                return
            range_ids |= new_ids

    def album_images(self, album_ids: Iterable[str], batch_size: int = 20) -> dict[str, list[dict]]:
        """Images of each album (every size offered), keyed by the album id as given; no images -> []."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        ids = list(dict.fromkeys(str(i) for i in album_ids))
        result: dict[str, list[dict]] = {album_id: [] for album_id in ids}
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            by_lower = {album_id.lower(): album_id for album_id in batch}
            joined = ",".join(quote(album_id, safe=".") for album_id in batch)
            for image in self._get_json(f"/v2.2/albums/{joined}/images").get("images") or []:
                # Images name their album in ``contentId``; ids come back in varying case (alb./Alb.).
                owner = by_lower.get(str(image.get("contentId", "")).lower())
                if owner is None and len(batch) == 1:
                    owner = batch[0]
                if owner is not None:
                    result[owner].append(image)
        return result

    @staticmethod
    def choose_image(images: Sequence[dict], *, preferred_side: int) -> dict | None:
        """The smallest image with both sides >= ``preferred_side``; failing that, the largest; None if none.

        Sides come from ``width``/``height``, else from the URL's ``/img/{W}x{H}/`` part: no real images body
        was recorded, so whether the API always sends the sides (and as numbers) is unproven."""
        sized = [(image, sides) for image in images if image.get("url") and (sides := image_sides(image))]
        if not sized:
            return None

        def area(entry: tuple[dict, tuple[int, int]]) -> int:
            return entry[1][0] * entry[1][1]

        big_enough = [e for e in sized if min(e[1]) >= preferred_side]
        if big_enough:
            return min(big_enough, key=lambda e: (area(e), not e[0].get("isDefault", False)))[0]
        return max(sized, key=lambda e: (area(e), e[0].get("isDefault", False)))[0]

    def fetch_image(self, url: str, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
        """The bytes at an image URL from an allowed host (no API key is sent: images live on a static host).

        Raises UntrustedURLError before sending anything to a host that is not allowed, BodyError when every
        retry still gave an error page or a cut transfer, and TooLargeError past ``max_bytes``.
        """
        self._check_image_url(url)
        fetched = fetch(
            self._session,
            url,
            service="Napster image host",
            url_env_var=NAPSTER_URL_ENV,
            timeout=self.timeout,
            check_redirect=self._check_image_url,
            max_bytes=max_bytes,
            expect=expect_image,
            secrets=[self._api_key.reveal()],
        )
        return fetched.body

    def scrub(self, text: str) -> str:
        """``text`` with the API key masked: for callers that format their own messages."""
        return scrub(text, [self._api_key.reveal()])
