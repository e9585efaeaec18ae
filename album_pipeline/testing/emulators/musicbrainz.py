"""An emulator of the MusicBrainz web service search and the Cover Art Archive, over a synthetic catalogue.

Shapes follow /work/shared/reference/data-sources.md (section MusicBrainz + Cover Art Archive). One loopback
server answers both services' paths, so a test points ``MUSICBRAINZ_URL`` and ``COVERART_URL`` at the same base:

- ``GET /ws/2/release-group?query=tag:"hip hop" AND primarytype:album&fmt=json&limit=&offset=``: Lucene-style
  search restricted to ``tag:`` and ``primarytype:`` clauses joined by ``AND``; anything else is a 400.
- ``GET /ws/2/genre/all?fmt=json&limit=&offset=``: the genre list.
- MusicBrainz's rules on ``/ws/2/`` only: ``fmt=json`` (or ``Accept: application/json``) is required, a missing
  or library-default ``User-Agent`` gets a 403, and more than ``rate_limit_per_second`` requests in a window
  (across all clients) get a 503 with ``Retry-After``.
- The Cover Art Archive as recorded: ``GET /release-group/{mbid}`` and ``/release/{mbid}`` answer 307 to the
  release's ``index.json`` on archive.org; ``.../front``, ``.../front-250``, ``-500``, ``-1200`` and the image
  URLs listed in the JSON answer 307 to ``/download/mbid-{release}/mbid-{release}-{image}_thumb250.jpg``
  there.
  archive.org answers 302 to a data node (``/0/items/mbid-{release}/...``) that serves the file: two hops
  across hosts in plain http, each "host" a loopback server of its own (on its own port). No art is an HTML
  404 and a malformed MBID an HTML 400, as werkzeug sends them; some groups list a PDF upload (``types: []``).

The catalogue and its ground truth are ``MusicBrainzCatalog``
(``album_pipeline.testing.emulators.musicbrainz_catalog``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from album_pipeline.settings import COVERART_URL_VAR, MUSICBRAINZ_URL_VAR
from album_pipeline.testing.emulators.base import (
    LOOPBACK_HOST,
    Handler,
    Request,
    RequestRecord,
    Response,
    ServerRateLimit,
)
from album_pipeline.testing.emulators.faults import FaultPlan
from album_pipeline.testing.emulators.loopback import LoopbackServer
from album_pipeline.testing.emulators.musicbrainz_catalog import MusicBrainzCatalog
from album_pipeline.testing.emulators.musicbrainz_records import (
    THUMBNAIL_ALIASES,
    ReleaseGroupRecord,
    normalize_tag,
)

DEFAULT_SEARCH_LIMIT = 25
MAX_SEARCH_LIMIT = 100

# User-Agents MusicBrainz blocks: library defaults that say nothing about the application.
BLOCKED_USER_AGENT_PREFIXES: tuple[str, ...] = (
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "curl/",
    "wget",
)
RATE_LIMIT_MESSAGE = (
    "Your requests are exceeding the allowable rate limit. Please see "
    "https://musicbrainz.org/doc/MusicBrainz_API/Rate_Limiting for more information."
)
_MBID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
NOT_FOUND_TEXT = (
    "The requested URL was not found on the server. If you entered the URL manually please check your "
    "spelling and try again."
)
# (release MBID, file name) -> (bytes, media type) of a file in the release's archive.org item, or None.
ArchiveFiles = Callable[[str, str], "tuple[bytes, str] | None"]


class _QueryError(ValueError):
    pass


_CLAUSE = re.compile(r'\s*(?P<field>[A-Za-z]+)\s*:\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"()\[\]{}]+))\s*')
_AND = re.compile(r"AND\b", re.IGNORECASE)
_LUCENE_SPECIAL = re.compile(r'[*?~^\\:+!"]')
SEARCH_FIELDS = ("tag", "primarytype")


def parse_release_group_query(query: str) -> list[tuple[str, str]]:
    """``tag:"hip hop" AND primarytype:album`` -> ``[("tag", "hip hop"), ("primarytype", "album")]``.

    Only ``field:value`` clauses over ``SEARCH_FIELDS`` joined by ``AND`` are understood; values may be quoted.
    Field names and values are lower-cased. Anything else raises ValueError.
    """
    clauses: list[tuple[str, str]] = []
    position = 0
    if not query.strip():
        raise _QueryError('the query is empty; search like query=tag:"jazz" AND primarytype:album')
    while True:
        match = _CLAUSE.match(query, position)
        if match is None:
            raise _QueryError(
                f'unsupported query syntax at {query[position:]!r}: use field:value or field:"a value" '
                f"clauses joined by AND"
            )
        name = match["field"].lower()
        value = match["quoted"] if match["quoted"] is not None else match["bare"]
        if name not in SEARCH_FIELDS:
            raise _QueryError(
                f"unsupported search field {match['field']!r}; this emulator knows {SEARCH_FIELDS}"
            )
        if match["bare"] is not None and _LUCENE_SPECIAL.search(value):
            raise _QueryError(
                f"unsupported query syntax in {value!r}: wildcards and operators are not supported"
            )
        clauses.append((name, normalize_tag(value)))
        position = match.end()
        if position == len(query):
            return clauses
        joined = _AND.match(query, position)
        if joined is None:
            raise _QueryError(
                f"unsupported query syntax at {query[position:]!r}: only AND may join clauses "
                f"(no OR, NOT, grouping or default-field terms)"
            )
        position = joined.end()


def _mb_error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response.json(
        {"error": message, "help": "For usage, please see: https://musicbrainz.org/development/mmd"},
        status,
        headers,
    )


# Constructed like NapsterEmulator (catalogue, host, port, faults, latency): one signature for every service.
class MusicBrainzEmulator(LoopbackServer):
    """MusicBrainz's ``/ws/2/`` search and genre list plus the Cover Art Archive on one loopback server, with
    archive.org and its data node on two more; ``requests`` and the fault counts cover all three."""

    name = "musicbrainz"

    def __init__(
        self,
        catalog: MusicBrainzCatalog | None = None,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        *,
        rate_limit_per_second: float | None = 1.0,
        faults: FaultPlan | None = None,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(host, port, faults=faults, latency_s=latency_s)
        self.catalog = catalog if catalog is not None else MusicBrainzCatalog()
        self._rate_limiter = ServerRateLimit(rate_limit_per_second) if rate_limit_per_second else None

        def archive_files(release_id: str, name: str) -> tuple[bytes, str] | None:
            return self.catalog.archive_file(release_id, name, self.url)

        self._data_node = _ArchiveHost(archive_files, host, faults=faults, latency_s=latency_s)
        self._archive_org = _ArchiveHost(
            archive_files, host, self._data_node, faults=faults, latency_s=latency_s
        )
        methods = ("GET", "HEAD")
        self.add_route(methods, r"/ws/2/release-group/?", self._ws(self._search_release_groups))
        self.add_route(methods, r"/ws/2/genre/all/?", self._ws(self._all_genres))
        # Unknown /ws/2/ paths still pass the gateway's User-Agent and rate checks before their 404.
        self.add_route(("GET", "HEAD", "POST"), r"/ws/2/.*", self._ws(self._ws_not_found, json_only=False))
        entity = r"/(?P<entity>release-group|release)/(?P<mbid>[^/]+)"
        self.add_route(methods, rf"{entity}/?", self._cover_art)
        self.add_route(methods, rf"{entity}/front(?:-(?P<size>250|500|1200))?", self._front)
        self.add_route(
            methods,
            r"/release/(?P<mbid>[^/]+)/(?P<image>\d+)(?:-(?P<size>250|500|1200|small|large))?"
            r"\.(?P<ext>jpg|pdf)",
            self._image_by_id,
        )

    # --- the three servers as one --------------------------------------------------------------------------
    def start(self) -> MusicBrainzEmulator:
        self._data_node.start()
        self._archive_org.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        self._archive_org.stop()
        self._data_node.stop()

    @property
    def archive_org_url(self) -> str:
        return self._archive_org.url

    @property
    def data_node_url(self) -> str:
        return self._data_node.url

    def _servers(self) -> tuple[LoopbackServer, ...]:
        return (self._archive_org, self._data_node)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request served by the three servers so far, oldest first."""
        merged = super().requests + [record for server in self._servers() for record in server.requests]
        return sorted(merged, key=lambda record: record.timestamp)

    def clear_requests(self) -> None:
        super().clear_requests()
        for server in self._servers():
            server.clear_requests()

    @property
    def injected_faults(self) -> Counter[str]:
        total = super().injected_faults
        for server in self._servers():
            total.update(server.injected_faults)
        return total

    def reset_faults(self) -> None:
        super().reset_faults()
        for server in self._servers():
            server.reset_faults()

    @property
    def musicbrainz_url(self) -> str:
        return self.url

    @property
    def coverart_url(self) -> str:
        return self.url

    def environment(self) -> dict[str, str]:
        """The environment variables pointing a client at this server for both services."""
        return {MUSICBRAINZ_URL_VAR: self.url, COVERART_URL_VAR: self.url}

    def not_found(self, path: str) -> Response:
        if path.startswith("/ws/2/"):
            return _mb_error("Not Found", 404)
        return html_error(404, "Not Found", NOT_FOUND_TEXT)

    def fault_error(self, status: int) -> Response:
        """Injected failures in MusicBrainz's error shape (the server adds ``Retry-After`` to 429 and 503)."""
        messages = {
            429: "Your requests are exceeding the allowable rate limit.",
            500: "Internal server error; please try again.",
            502: "Bad gateway; please try again.",
            503: RATE_LIMIT_MESSAGE,
        }
        return _mb_error(messages[status], status)

    # --- MusicBrainz ----------------------------------------------------------------------------------
    def _ws(self, handler: Handler, json_only: bool = True) -> Handler:
        """MusicBrainz's gateway rules: a meaningful User-Agent, the rate limit, then JSON only."""

        def guarded(request: Request) -> Response:
            agent = (request.header("user-agent") or "").strip()
            if not agent or agent.lower().startswith(BLOCKED_USER_AGENT_PREFIXES):
                return _mb_error(
                    "Requests with a missing, anonymous or library-default User-Agent are blocked. Send a "
                    "meaningful User-Agent identifying your application: application/version ( contact ), "
                    "e.g. 'AlbumPipeline/1.0 ( maintainer@example.org )'. See "
                    "https://musicbrainz.org/doc/MusicBrainz_API/Rate_Limiting",
                    403,
                )
            if self._rate_limiter is not None and not self._rate_limiter.allow():
                return _mb_error(
                    RATE_LIMIT_MESSAGE,
                    503,
                    {"Retry-After": str(math.ceil(self._rate_limiter.window_s))},
                )
            wants_json = request.query.get("fmt", "").lower() == "json" or "application/json" in (
                request.header("accept") or ""
            )
            if json_only and not wants_json:
                return _mb_error("This emulator answers JSON only: add fmt=json to the query", 400)
            return handler(request)

        return guarded

    def _ws_not_found(self, request: Request) -> Response:
        return self.not_found(request.path)

    @staticmethod
    def _paging(request: Request) -> tuple[int, int]:
        try:
            limit = int(request.query.get("limit", DEFAULT_SEARCH_LIMIT))
            offset = int(request.query.get("offset", 0))
        except ValueError:
            raise _QueryError("limit and offset must be integers") from None
        if limit < 1 or offset < 0:
            raise _QueryError(f"limit must be positive and offset not negative, got {limit} and {offset}")
        return min(limit, MAX_SEARCH_LIMIT), offset

    def _search_release_groups(self, request: Request) -> Response:
        try:
            clauses = parse_release_group_query(request.query.get("query", ""))
            limit, offset = self._paging(request)
        except _QueryError as error:
            return _mb_error(str(error), 400)
        tags = [value for name, value in clauses if name == "tag"]
        types = {value for name, value in clauses if name == "primarytype"}
        if len(types) > 1:
            return Response.json(self._search_body([], offset))
        hits: list[tuple[int, str]] = []
        for record in self.catalog.records.values():
            if types and record.primary_type.lower() not in types:
                continue
            counts = dict(record.tags)
            if any(tag not in counts for tag in tags):
                continue
            hits.append((sum(counts[tag] for tag in tags), record.id))
        best = max((weight for weight, _ in hits), default=0)
        scored = sorted(
            ((100 if best == 0 else max(1, round(100 * weight / best)), mbid) for weight, mbid in hits),
            key=lambda hit: (-hit[0], hit[1]),
        )
        page = [
            self.catalog.release_group_json(mbid, score) for score, mbid in scored[offset : offset + limit]
        ]
        return Response.json(self._search_body(page, offset, len(scored)))

    @staticmethod
    def _search_body(page: list[dict], offset: int, count: int = 0) -> dict:
        now = datetime.now(UTC)
        created = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return {"created": created, "count": count, "offset": offset, "release-groups": page}

    def _all_genres(self, request: Request) -> Response:
        try:
            limit, offset = self._paging(request)
        except _QueryError as error:
            return _mb_error(str(error), 400)
        names = self.catalog.genre_names()
        return Response.json(
            {
                "genre-count": len(names),
                "genre-offset": offset,
                "genres": [
                    {"id": self.catalog.genre_id(name), "name": name, "disambiguation": ""}
                    for name in names[offset : offset + limit]
                ],
            }
        )

    # --- Cover Art Archive ------------------------------------------------------------------------------
    def _lookup(self, request: Request) -> tuple[ReleaseGroupRecord | None, Response | None]:
        """The release group behind ``/release-group/{mbid}`` or ``/release/{mbid}``, or the error reply."""
        mbid = request.match["mbid"]
        if not _MBID.fullmatch(mbid):
            return None, html_error(400, "Bad Request", f"{mbid} is not a valid MBID.")
        if request.match["entity"] == "release":
            record = self.catalog.record_for_release(mbid)
        else:
            record = self.catalog.records.get(mbid.lower())
        if record is None or not record.images:
            return None, html_error(404, "Not Found", NOT_FOUND_TEXT)
        return record, None

    def _redirect(self, release_id: str, name: str) -> Response:
        """The archive's 307 to the file on archive.org, which redirects on to its data node."""
        location = f"{self._archive_org.url}/download/mbid-{release_id}/{name}"
        return Response(
            307,
            f"See: {location}\n".encode(),
            {"Location": location, "Content-Type": "text/plain; charset=utf-8"},
        )

    def _cover_art(self, request: Request) -> Response:
        record, error = self._lookup(request)
        if record is None:
            assert error is not None
            return error
        return self._redirect(record.release_id, "index.json")

    def _front(self, request: Request) -> Response:
        record, error = self._lookup(request)
        if record is None:
            assert error is not None
            return error
        front = record.front_image
        if front is None:
            return html_error(404, "Not Found", NOT_FOUND_TEXT)
        size = int(request.match["size"]) if request.match["size"] else None
        return self._redirect(record.release_id, self.catalog.archive_name(record.release_id, front, size))

    def _image_by_id(self, request: Request) -> Response:
        release_id = request.match["mbid"]
        if not _MBID.fullmatch(release_id):
            return html_error(400, "Bad Request", f"{release_id} is not a valid MBID.")
        release_id = release_id.lower()
        record = self.catalog.record_for_image(release_id, int(request.match["image"]))
        image = record and next(i for i in record.images if i.id == int(request.match["image"]))
        size_name = request.match["size"]
        extension = request.match["ext"]
        if (
            image is None
            or (size_name is None and extension != image.extension)
            or (size_name and extension != "jpg")
        ):
            return html_error(404, "Not Found", NOT_FOUND_TEXT)
        size = None if size_name is None else THUMBNAIL_ALIASES.get(size_name) or int(size_name)
        return self._redirect(release_id, self.catalog.archive_name(release_id, image, size))


def html_error(status: int, title: str, text: str) -> Response:
    """An error page as the Cover Art Archive (werkzeug) and archive.org send them: HTML, not JSON."""
    body = (
        f"<!doctype html>\n<html lang=en>\n<title>{status} {title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n"
    )
    return Response(status, body.encode(), {"Content-Type": "text/html; charset=utf-8"})


class _ArchiveHost(LoopbackServer):
    """archive.org's two hosts for the items' files, one server each.

    With ``data_node``, archive.org itself: ``/download/{item}/{file}`` answers 302 to that node, as
    recorded (the redirect says ``Content-Type: image/jpeg`` for an image). Without, a data node
    (``dnNNN.ca.archive.org``): ``/0/items/{item}/{file}`` serves the file.
    """

    def __init__(
        self, files: ArchiveFiles, host: str, data_node: LoopbackServer | None = None, **options
    ) -> None:
        super().__init__(host, **options)
        self.name = "musicbrainz-archive-org" if data_node is not None else "musicbrainz-data-node"
        self._files, self._data_node = files, data_node
        prefix = "/download" if data_node is not None else "/0/items"
        item = r"mbid-(?P<release>[0-9a-f-]{36})/(?P<name>[^/]+)"
        self.add_route(("GET", "HEAD"), f"{prefix}/{item}", self._item_file)

    def not_found(self, path: str) -> Response:
        return html_error(404, "Not Found", f"{path} is not on this server.")

    def _item_file(self, request: Request) -> Response:
        found = self._files(request.match["release"], request.match["name"])
        if found is None:
            return self.not_found(request.path)
        if self._data_node is None:
            return Response.binary(*found)
        location = f"{self._data_node.url}/0/items/mbid-{request.match['release']}/{request.match['name']}"
        return Response(302, b"", {"Location": location, "Content-Type": found[1]})
