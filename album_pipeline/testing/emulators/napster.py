"""An emulator of the Napster API v2.2 catalogue calls the crawler uses, over a synthetic catalogue.

Shapes follow /work/shared/reference/data-sources.md (section Napster) and the real recorded responses (see
``napster_shapes``): ``{"genres": [...]}`` (top-level genres naming their children; sub-genres by id),
``{"albums": [...], "meta": {...}}``, ``{"images": [...]}``, 200 with an empty list for unknown ids, 401
without the API key, 404 ``ResourceNotFound`` for a bad path and, when a rate limit is set, 429
``TooManyRequestsError``.
Image URLs point at ``/img/{W}x{H}/...jpg`` (a few ``.jpeg``) on the emulator itself, shaped like Napster's
static image host, listed 170x170 first like the real ones. Albums name their explicit/single flags as the
recorded 2016 API did (``explicit``/``single``) unless the catalogue's ``flag_field_style`` is ``"v2.2"``.
The catalogue and its ground truth are ``NapsterCatalog`` (``album_pipeline.testing.emulators.napster_catalog``);
transient HTTP failures and latency come from ``LoopbackServer`` (``faults=``, ``latency_s=``).
"""

from __future__ import annotations

from collections.abc import Iterable

from album_pipeline.testing.emulators.base import LOOPBACK_HOST, Handler, Request, Response, ServerRateLimit
from album_pipeline.testing.emulators.faults import FaultPlan
from album_pipeline.testing.emulators.loopback import LoopbackServer
from album_pipeline.testing.emulators.napster_catalog import RANGES, AlbumRecord, NapsterCatalog
from album_pipeline.testing.emulators.napster_shapes import (
    GENRE_ID_BY_SHORTCUT,
    GENRE_PARENT,
    GENRE_SHORTCUT_BY_ID,
    KNOWN_GENRES,
    SUB_GENRE_BY_SHORTCUT,
)

DEFAULT_API_KEY = "demo-key"  # what the emulator accepts unless told otherwise
DEFAULT_RANGE = "week"  # what the emulator assumes when a request names none
DEFAULT_PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 200


def _error(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response.json({"code": code, "message": message}, status=status, headers=headers)


class NapsterEmulator(LoopbackServer):
    """The Napster API v2.2 on 127.0.0.1: genres, top albums, albums, album images, and the image host."""

    name = "napster"

    def __init__(
        self,
        catalog: NapsterCatalog | None = None,
        api_key: str = DEFAULT_API_KEY,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        *,
        null_total_count: bool = False,
        rate_limit_per_second: float | None = None,
        faults: FaultPlan | None = None,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(host, port, faults=faults, latency_s=latency_s)
        if not api_key:
            raise ValueError("the Napster emulator needs a non-empty api_key that clients must send")
        self.catalog = catalog if catalog is not None else NapsterCatalog()
        self.api_key = api_key
        self.null_total_count = null_total_count
        self._rate_limiter = ServerRateLimit(rate_limit_per_second) if rate_limit_per_second else None
        api = r"/v2\.2"
        self.add_route("GET", rf"{api}/genres", self._api(self._all_genres))
        self.add_route("GET", rf"{api}/genres/(?P<ids>[^/]+)", self._api(self._genres_by_id))
        self.add_route("GET", rf"{api}/genres/(?P<genre>[^/]+)/albums/top", self._api(self._top_albums))
        self.add_route(
            "GET", rf"{api}/genres/(?P<genre>[^/]+)/albums/new", self._api(self._new_albums_in_genre)
        )
        self.add_route("GET", rf"{api}/albums/new", self._api(self._new_albums))
        self.add_route("GET", rf"{api}/albums/(?P<ids>[^/]+)", self._api(self._albums_by_id))
        self.add_route("GET", rf"{api}/albums/(?P<ids>[^/]+)/images", self._api(self._album_images))
        # The static image host needs no key.
        self.add_route(
            ("GET", "HEAD"),
            r"/img/(?P<width>\d+)x(?P<height>\d+)/(?:\d+/)*(?P<number>\d+)_\d+x\d+\.(?P<extension>jpe?g)",
            self._image,
        )

    def not_found(self, path: str) -> Response:
        return _error("ResourceNotFound", f"Resource {path} was not found", 404)

    # --- plumbing ---------------------------------------------------------------------------------------
    def _api(self, handler: Handler) -> Handler:
        """Wrap an API handler with the key check and the optional rate limit, as the real gateway does."""

        def guarded(request: Request) -> Response:
            key = request.header("apikey") or request.query.get("apikey")
            if key != self.api_key:
                return _error(
                    "UnauthorizedError", "Invalid or missing API key: send it in the 'apikey' header", 401
                )
            if self._rate_limiter is not None and not self._rate_limiter.allow():
                limit = self._rate_limiter.per_second
                return _error(
                    "TooManyRequestsError",
                    f"Rate of {limit:g}/sec has been exceeded for this key",
                    429,
                    {"Retry-After": "1"},
                )
            return handler(request)

        return guarded

    def _split_ids(self, text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    # --- handlers ---------------------------------------------------------------------------------------
    def _all_genres(self, request: Request) -> Response:
        return Response.json(
            {"genres": [self.catalog.genre_json(genre_id, self.url) for genre_id, _, _ in KNOWN_GENRES]}
        )

    def _genres_by_id(self, request: Request) -> Response:
        genres = []
        for requested in self._split_ids(request.match["ids"]):
            genre_id = _genre_id(requested) or SUB_GENRE_BY_SHORTCUT.get(requested)
            if genre_id is None and requested in GENRE_PARENT:
                genre_id = requested
            if genre_id is not None:
                genres.append(self.catalog.genre_json(genre_id, self.url))
        return Response.json({"genres": genres})

    def _top_albums(self, request: Request) -> Response:
        range_name = request.query.get("range", DEFAULT_RANGE)
        if range_name not in RANGES:
            return _error(
                "BadRequestError", f"range must be one of {', '.join(RANGES)}, got {range_name!r}", 400
            )
        genre_id = _genre_id(request.match["genre"])
        ids = self.catalog.top_lists.get((genre_id, range_name), []) if genre_id else []
        return self._album_page(request, ids)

    def _new_albums_in_genre(self, request: Request) -> Response:
        genre_id = _genre_id(request.match["genre"])
        records = [album for album in self.catalog.albums.values() if genre_id in album.top_genre_ids]
        return self._album_page(request, _newest_first(records))

    def _new_albums(self, request: Request) -> Response:
        return self._album_page(request, _newest_first(self.catalog.albums.values()))

    def _album_page(self, request: Request, ids: list[str]) -> Response:
        try:
            limit = int(request.query.get("limit", DEFAULT_PAGE_LIMIT))
            offset = int(request.query.get("offset", 0))
        except ValueError:
            return _error("BadRequestError", "limit and offset must be integers", 400)
        if limit < 0 or offset < 0:
            return _error(
                "BadRequestError", f"limit and offset must not be negative, got {limit} and {offset}", 400
            )
        limit = min(limit, MAX_PAGE_LIMIT)
        page = ids[offset : offset + limit]
        return Response.json(
            {
                "albums": [self.catalog.album(album_id, self.url) for album_id in page],
                "meta": {
                    "totalCount": None if self.null_total_count else len(ids),
                    "returnedCount": len(page),
                    "limit": limit,
                    "offset": offset,
                },
            }
        )

    def _albums_by_id(self, request: Request) -> Response:
        ids = [
            album_id for album_id in self._split_ids(request.match["ids"]) if album_id in self.catalog.albums
        ]
        return Response.json({"albums": [self.catalog.album(album_id, self.url) for album_id in ids]})

    def _album_images(self, request: Request) -> Response:
        ids = [
            album_id for album_id in self._split_ids(request.match["ids"]) if album_id in self.catalog.albums
        ]
        return Response.json(
            {"images": [image for album_id in ids for image in self.catalog.images(album_id, self.url)]}
        )

    def _image(self, request: Request) -> Response:
        album_id = self.catalog.album_id_for_image_number(request.match["number"])
        width, height = int(request.match["width"]), int(request.match["height"])
        if not self.catalog.has_image(album_id, width, height, request.match["extension"]):
            return self.not_found(request.path)
        return Response.binary(self.catalog.image_bytes(album_id, width, height), "image/jpeg")


def _genre_id(requested: str) -> str | None:
    """The top-level genre id a path names by id or shortcut; None for any other."""
    return requested if requested in GENRE_SHORTCUT_BY_ID else GENRE_ID_BY_SHORTCUT.get(requested)


def _newest_first(records: Iterable[AlbumRecord]) -> list[str]:
    return [
        album.id
        for album in sorted(records, key=lambda a: (a.released or a.originally_released, a.id), reverse=True)
    ]
