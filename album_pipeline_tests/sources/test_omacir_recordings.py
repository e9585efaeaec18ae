"""Contract tests: archive.org's recorded responses replayed on loopback against the real OmacirClient.

The recordings (``../shared/reference/real-responses/``, see its PROVENANCE.md) are read in place, never
copied: ``archive/metadata_nasa.json`` is served as an item's metadata, and the recorded download redirect
(``coverartarchive/archive_org_download_redirect.headers``, a 302 from archive.org to a
``dnNNN.ca.archive.org`` data node) is replayed header for header, with a loopback host name standing in for
the data node in its ``Location``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from album_pipeline.sources.http import SourceResponseError, UntrustedURLError, make_session
from album_pipeline.sources.omacir import (
    DEFAULT_DOWNLOAD_HOSTS,
    ArchiveFile,
    ItemNotFoundError,
    OmacirClient,
    download_host_check,
)
from album_pipeline_tests.sources.recordings import read_recording

METADATA = "archive/metadata_nasa.json"
DOWNLOAD_REDIRECT = "coverartarchive/archive_org_download_redirect.headers"
DATA_NODE_STAND_IN = "localhost"  # the loopback name standing in for dn710907.ca.archive.org
TAR_NAME = "album_covers_t.tar"
# The bytes the data node serves; what they are does not matter to the transfer.
TAR_BYTES = bytes(range(256)) * 400


# --- a loopback server replaying recorded replies ---------------------------------------------------------
# A reply is written as raw bytes: a status line, header lines, a blank line and the framed body.
Reply = bytes
Route = Callable[[BaseHTTPRequestHandler], Reply]


class ReplayServer:
    """Serves ``routes`` (path -> reply) on 127.0.0.1; logs (path, host name, Range) of every request."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.log: list[tuple[str, str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
                owner.log.append((self.path, host, self.headers.get("Range")))
                route = owner.routes.get(self.path)
                self.wfile.write(route(self) if route else _reply("404 Not Found", [], b"not recorded"))

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def hosts_asked(self, path: str) -> list[str]:
        return [host for logged, host, _ in self.log if logged == path]


def _reply(status: str, headers: list[tuple[str, str]], body: bytes) -> Reply:
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _json_reply(body: bytes) -> Route:
    return lambda _request: _reply("200 OK", [("Content-Type", "application/json")], body)


def _recorded_headers() -> tuple[str, list[tuple[str, str]]]:
    """The status line and the headers, in order, of the recorded archive.org download redirect."""
    lines = [line.strip() for line in read_recording(DOWNLOAD_REDIRECT).decode("latin-1").splitlines()]
    headers = [line.split(":", 1) for line in lines[1:] if line]
    return lines[0], [(name.strip(), value.strip()) for name, value in headers]


def _recorded_redirect(target: str) -> tuple[Route, str]:
    """The recorded 302, verbatim but for its Location's host (replaced by ``target``, a ``host:port``), and
    the path of that Location."""
    status_line, headers = _recorded_headers()
    assert status_line == "HTTP/1.1 302 Found"
    location = dict(headers)["Location"]
    assert urlsplit(location).hostname.endswith(".ca.archive.org") and location.startswith("http://")
    path = urlsplit(location).path
    replayed = [(name, f"http://{target}{path}" if name == "Location" else value) for name, value in headers]
    raw = "\r\n".join([status_line, *(f"{name}: {value}" for name, value in replayed)]) + "\r\n\r\n"
    # The recording declares a chunked body and shows none: an empty chunked body is its framing.
    assert dict(headers)["Transfer-Encoding"] == "chunked"
    return (lambda _request: raw.encode("latin-1") + b"0\r\n\r\n"), path


def _data_node(request: BaseHTTPRequestHandler) -> Reply:
    """A data node: the bytes, or the rest of them from a ``bytes=N-`` Range."""
    wanted = request.headers.get("Range")
    if not wanted:
        return _reply(
            "200 OK", [("Content-Type", "application/x-tar"), ("Accept-Ranges", "bytes")], TAR_BYTES
        )
    start = int(wanted.removeprefix("bytes=").rstrip("-"))
    content_range = f"bytes {start}-{len(TAR_BYTES) - 1}/{len(TAR_BYTES)}"
    headers = [("Content-Type", "application/x-tar"), ("Content-Range", content_range)]
    return _reply("206 Partial Content", headers, TAR_BYTES[start:])


def _client(server: ReplayServer, **options: object) -> OmacirClient:
    return OmacirClient(server.url, session=make_session(backoff_factor=0), timeout=10, **options)


# --- metadata -----------------------------------------------------------------------------------------------
@pytest.fixture
def metadata_server() -> Iterator[ReplayServer]:
    recorded = read_recording(METADATA)
    renamed = json.loads(recorded)
    # The recorded document with its first two entries renamed to OMACIR tars, the second marked derivative.
    renamed["files"][0]["name"] = "album_covers_a.tar"
    renamed["files"][1].update(name="album_covers_b.tar", source="derivative")
    routes = {
        "/metadata/audio-covers": _json_reply(recorded),
        "/metadata/renamed": _json_reply(json.dumps(renamed).encode()),
        "/metadata/no-such-item": _json_reply(b"{}"),  # archive.org's answer for an unknown identifier
    }
    with ReplayServer(routes) as server:
        yield server


def test_the_recorded_metadata_lists_every_file_with_int_sizes_and_its_source(metadata_server) -> None:
    files = _client(metadata_server).list_files()
    assert [(f.name, f.source, f.size) for f in files] == [
        ("NASAarchiveLogo.jpg", "original", 38366),
        ("globe_west_540.jpg", "original", 66065),
        ("nasa_reviews.xml", "metadata", 168),
        ("nasa_meta.xml", "metadata", 7852),
        ("nasa_archive.torrent", "metadata", 1579),
        ("nasa_files.xml", "metadata", None),  # recorded without a size
    ]
    assert files[0].md5 == "64dcc1092df36142eb4aab7cc255a4a6" and files[-1].format == "Metadata"
    assert all(isinstance(f.size, int) for f in files[:-1])


def test_an_item_without_tars_is_said_to_list_none_not_to_be_missing(metadata_server) -> None:
    with pytest.raises(SourceResponseError, match="lists 6 files but no album_covers_") as caught:
        _client(metadata_server).list_archives()
    assert not isinstance(caught.value, ItemNotFoundError)
    assert "audio-covers" in str(caught.value) and "OMACIR_URL" in str(caught.value)


def test_only_original_tars_are_listed_from_the_recorded_shape(metadata_server) -> None:
    archives = _client(metadata_server, item="renamed").list_archives()
    assert archives == [ArchiveFile("album_covers_a.tar", 38366, "64dcc1092df36142eb4aab7cc255a4a6")]


def test_an_unknown_item_is_reported_as_not_existing(metadata_server) -> None:
    client = _client(metadata_server, item="no-such-item")
    with pytest.raises(ItemNotFoundError) as caught:
        client.list_archives()
    message = str(caught.value)
    assert "has no item 'no-such-item'" in message and "'audio-covers'" in message and "OMACIR_URL" in message
    assert "lists" not in message


# --- the download redirect ----------------------------------------------------------------------------------
@pytest.fixture
def redirect_server() -> Iterator[ReplayServer]:
    with ReplayServer({}) as server:
        redirect, data_path = _recorded_redirect(f"{DATA_NODE_STAND_IN}:{server.port}")
        server.routes[f"/download/audio-covers/{TAR_NAME}"] = redirect
        server.routes[data_path] = _data_node
        server.data_path = data_path  # type: ignore[attr-defined]
        yield server


def _tar() -> ArchiveFile:
    return ArchiveFile(TAR_NAME, len(TAR_BYTES), hashlib.md5(TAR_BYTES).hexdigest())


def test_the_recorded_redirect_is_followed_to_an_allowed_data_node(redirect_server, tmp_path) -> None:
    client = _client(redirect_server, allowed_download_hosts=(*DEFAULT_DOWNLOAD_HOSTS, DATA_NODE_STAND_IN))
    path = client.download(_tar(), tmp_path)
    assert path.read_bytes() == TAR_BYTES
    assert redirect_server.hosts_asked(redirect_server.data_path) == [DATA_NODE_STAND_IN]


def test_a_resume_carries_its_range_across_the_redirect(redirect_server, tmp_path) -> None:
    (tmp_path / f"{TAR_NAME}.partial").write_bytes(TAR_BYTES[:1000])
    client = _client(redirect_server, allowed_download_hosts=(DATA_NODE_STAND_IN,))
    assert client.download(_tar(), tmp_path).read_bytes() == TAR_BYTES
    assert [(host, wanted) for path, host, wanted in redirect_server.log] == [
        ("127.0.0.1", "bytes=1000-"),
        (DATA_NODE_STAND_IN, "bytes=1000-"),
    ]


def test_the_recorded_redirect_to_a_host_not_allowed_is_refused(redirect_server, tmp_path) -> None:
    with pytest.raises(UntrustedURLError) as caught:
        _client(redirect_server).download(_tar(), tmp_path / "dl")  # the default list: archive.org only
    message = str(caught.value)
    assert f"'{DATA_NODE_STAND_IN}'" in message and "OMACIR_DOWNLOAD_HOSTS" in message
    assert redirect_server.hosts_asked(redirect_server.data_path) == []  # nothing was sent to it
    assert list((tmp_path / "dl").iterdir()) == []  # not even a .partial


def test_every_hop_is_checked_and_the_recorded_data_node_is_allowed_by_default(tmp_path) -> None:
    recorded_location = dict(_recorded_headers()[1])["Location"]
    download_host_check("https://archive.org", DEFAULT_DOWNLOAD_HOSTS)(recorded_location)
    with ReplayServer({}) as server:
        # First hop to the allowed stand-in, which answers with the recorded redirect to the real data node.
        first, first_path = _recorded_redirect(f"{DATA_NODE_STAND_IN}:{server.port}")
        second, _ = _recorded_redirect(urlsplit(recorded_location).netloc)
        server.routes.update({f"/download/audio-covers/{TAR_NAME}": first, first_path: second})
        client = _client(server, allowed_download_hosts=(DATA_NODE_STAND_IN,))
        with pytest.raises(UntrustedURLError, match="'dn710907.ca.archive.org' is not allowed"):
            client.download(_tar(), tmp_path)
        assert [host for _, host, _ in server.log] == ["127.0.0.1", DATA_NODE_STAND_IN]
