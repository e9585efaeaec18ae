"""An emulator of archive.org serving a synthetic version of the OMACIR item ``audio-covers``.

``ArchiveEmulator`` answers as the recorded archive.org does (``../shared/reference/real-responses/archive``
and ``coverartarchive/archive_org_download_redirect.headers``):

- ``GET /metadata/{item}``: the item document, sizes and mtimes as strings, each file marked ``source``
  original, derivative or metadata, the ``_files.xml`` entry without a size, and ``d1``/``d2``/``dir``/
  ``server``/``workable_servers`` naming the data node; an unknown item answers ``{}``;
- ``GET``/``HEAD /download/{item}/{file}``: a 302 to the data node, plain http on another loopback host name
  (``download_host``, standing in for ``dnNNN.ca.archive.org``), which serves ``/0/items/{item}/{file}`` with
  single byte ranges. Clients must allow that host (``environment()`` says how).

Opt-in faults: ``cut_first_download_after_bytes`` (the first GET of each file is cut), ``drop_every_bytes``
(every GET is cut, so a download needs several Range resumes) and ``wrong_md5`` (the metadata lists a wrong
md5).
"""

from __future__ import annotations

import hashlib
import re
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from album_pipeline.settings import OMACIR_DOWNLOAD_HOSTS_VAR, OMACIR_URL_VAR
from album_pipeline.testing.emulators.base import LOOPBACK_HOST, Request, RequestRecord, Response
from album_pipeline.testing.emulators.loopback import LoopbackServer
from album_pipeline.testing.emulators.omacir_item import OmacirItem
from album_pipeline.testing.emulators.omacir_members import dead_link_placeholder_jpeg

# archive.org's modification time of the item's files.
FILE_MTIME = 1_466_496_032
STREAM_CHUNK_BYTES = 256 * 1024
# Where a data node serves an item's files, as in the recorded redirect (http://dn710907.ca.archive.org/0/items/).
DATA_NODE_PATH = "/0/items"
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class _ServedFile:
    """A file the download endpoint serves: a tar on disk or one of archive.org's small derived files."""

    name: str
    source: str
    format: str
    content_type: str
    size: int
    md5: str
    sha1: str
    crc32: str
    path: Path | None = None
    data: bytes | None = None
    listed_md5: str | None = None  # a wrong md5 to publish in the metadata instead of the true one
    # archive.org lists the item's own ``_files.xml`` by name, source, format and md5 only: no size, no mtime.
    listed_briefly: bool = False

    def metadata_entry(self) -> dict[str, str]:
        md5 = self.listed_md5 or self.md5
        if self.listed_briefly:
            return {"name": self.name, "source": self.source, "format": self.format, "md5": md5}
        return {
            "name": self.name,
            "source": self.source,
            "size": str(self.size),  # archive.org publishes sizes and mtimes as strings
            "format": self.format,
            "mtime": str(FILE_MTIME),
            "md5": md5,
            "crc32": self.crc32,
            "sha1": self.sha1,
        }

    def read(self, start: int, length: int) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data[start : start + length]
            return
        assert self.path is not None
        with self.path.open("rb") as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(STREAM_CHUNK_BYTES, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk


def _in_memory_file(name: str, source: str, format: str, content_type: str, data: bytes) -> _ServedFile:
    return _ServedFile(
        name=name,
        source=source,
        format=format,
        content_type=content_type,
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        crc32=f"{zlib.crc32(data):08x}",
        data=data,
    )


def _item_metadata(identifier: str) -> dict[str, object]:
    return {
        "identifier": identifier,
        "mediatype": "data",
        "collection": ["opensource_media"],
        "title": "One Million Audio Cover Images for Research (OMACIR), synthetic emulation",
        "description": "Album cover images split into tar archives by the first character of the file name.",
        "creator": "album_pipeline emulator",
        "publicdate": "2016-06-21 08:00:32",
        "addeddate": "2016-06-21 08:00:32",
    }


def wrong_md5_for(true_md5: str) -> str:
    """The md5 the metadata lists for a file named in ``ArchiveEmulator(wrong_md5=...)``: valid hex, not true."""
    return hashlib.md5(f"not {true_md5}".encode()).hexdigest()


def _served_files(item: OmacirItem) -> dict[str, _ServedFile]:
    tars = [
        _ServedFile(
            name=archive.name,
            source="original",
            format="Tar",
            content_type="application/x-tar",
            size=archive.size,
            md5=archive.md5,
            sha1=archive.sha1,
            crc32=archive.crc32,
            path=item.directory / archive.name,
        )
        for archive in item.archives
    ]
    meta_xml = (
        "<metadata>"
        + "".join(f"<{k}>{v}</{k}>" for k, v in _item_metadata(item.identifier).items())
        + "</metadata>"
    )
    files_xml = "<files>" + "".join(f'<file name="{t.name}" source="original"/>' for t in tars) + "</files>"
    derived = [
        _in_memory_file(
            "__ia_thumb.jpg", "derivative", "Item Tile", "image/jpeg", dead_link_placeholder_jpeg()
        ),
        _in_memory_file(f"{item.identifier}_meta.xml", "metadata", "Metadata", "text/xml", meta_xml.encode()),
        replace(
            _in_memory_file(
                f"{item.identifier}_files.xml", "metadata", "Metadata", "text/xml", files_xml.encode()
            ),
            listed_briefly=True,
        ),
    ]
    # Derived files first and last, so a client that takes the list at face value meets them.
    ordered = derived[:1] + tars + derived[1:]
    return {served.name: served for served in ordered}


def parse_single_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """``(first, last)`` for one satisfiable byte range, None for the whole file, "unsatisfiable" for 416.

    As RFC 9110 allows, a header that is malformed or asks for several ranges is ignored (200, whole file).
    """
    if header is None:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None or (match[1] == "" and match[2] == ""):
        return None
    if match[1] == "":  # suffix range: the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    first = int(match[1])
    if match[2] and int(match[2]) < first:  # syntactically invalid, so ignored rather than refused
        return None
    if first >= size:
        return "unsatisfiable"
    last = int(match[2]) if match[2] else size - 1
    return first, min(last, size - 1)


class ArchiveEmulator(LoopbackServer):
    """archive.org's metadata and download endpoints for one item, and its data node, on loopback."""

    name = "archive"

    def __init__(
        self,
        item: OmacirItem,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        *,
        download_host: str | None = None,
        cut_first_download_after_bytes: int | None = None,
        wrong_md5: Iterable[str] = (),
        drop_every_bytes: int | None = None,
        latency_s: float = 0.0,
    ) -> None:
        """``download_host``: the host name downloads redirect to, served by this same server; by default the
        other loopback name than ``host`` (``localhost`` for 127.0.0.1), so the redirect crosses hosts.

        Opt-in faults, for tests of a client's resume and verification:

        - ``cut_first_download_after_bytes`` drops the connection part-way through the first GET of each
          file (later GETs are whole);
        - ``drop_every_bytes`` drops the connection after that many body bytes of EVERY GET of a download
          (200 or 206), so a file larger than that needs several Range requests; the data node's request
          log (``data_requests()``, field ``range``) shows each Range header. With both, the smaller cut wins;
        - ``wrong_md5`` names files (e.g. ``album_covers_a.tar``) whose metadata entry lists a wrong md5
          (``wrong_md5_for`` of the true one); the bytes served, the ETag, sha1 and crc32 stay true;
        - ``latency_s`` delays every response, as on a slow link.
        """
        super().__init__(host, port, latency_s=latency_s)
        if download_host is None:
            download_host = LOOPBACK_NAMES[1] if host == LOOPBACK_NAMES[0] else LOOPBACK_NAMES[0]
        if download_host not in LOOPBACK_NAMES:
            raise ValueError(
                f"download_host must be one of {LOOPBACK_NAMES} (loopback), got {download_host!r}"
            )
        self.download_host = download_host
        for name, value, least in (
            ("cut_first_download_after_bytes", cut_first_download_after_bytes, 0),
            ("drop_every_bytes", drop_every_bytes, 1),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"{name} must be an integer >= {least} or None, got {value!r}")
        self.item = item
        self._files = _served_files(item)
        wrong = [wrong_md5] if isinstance(wrong_md5, str) else list(wrong_md5)
        unknown = sorted(set(wrong) - self._files.keys())
        if unknown:
            raise ValueError(
                f"wrong_md5 names files the item does not have: {unknown}; it has {list(self._files)}"
            )
        for name in wrong:
            served = self._files[name]
            self._files[name] = replace(served, listed_md5=wrong_md5_for(served.md5))
        self._drop_every = drop_every_bytes
        self._cut_after = cut_first_download_after_bytes
        self._already_cut: set[str] = set()
        self._cut_lock = threading.Lock()
        self.add_route("GET", r"/metadata/(?P<identifier>[^/]+)/?", self._metadata)
        file_pattern = r"/(?P<identifier>[^/]+)/(?P<file>[^/]+)"
        self.add_route(("GET", "HEAD"), "/download" + file_pattern, self._redirect_to_data_node)
        self.add_route(("GET", "HEAD"), re.escape(DATA_NODE_PATH) + file_pattern, self._download)

    # --- what a client must be told ----------------------------------------------------------------------
    @property
    def download_hosts(self) -> tuple[str, ...]:
        """The hosts a client must allow for downloads (``OMACIR_DOWNLOAD_HOSTS``)."""
        return (self.download_host,)

    @property
    def data_node(self) -> str:
        """``host:port`` of the data node, as the metadata's ``d1``/``server`` name it."""
        return f"{self.download_host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The environment variables pointing the pipeline at this server and allowing its data node."""
        return {OMACIR_URL_VAR: self.url, OMACIR_DOWNLOAD_HOSTS_VAR: ",".join(self.download_hosts)}

    def data_requests(self) -> list[RequestRecord]:
        """The requests the data node served (the bytes of downloads), oldest first."""
        return [record for record in self.requests if record.path.startswith(DATA_NODE_PATH + "/")]

    def not_found(self, path: str) -> Response:
        return Response(
            404, f"404 Not Found: {path}\n".encode(), {"Content-Type": "text/plain; charset=utf-8"}
        )

    def _metadata(self, request: Request) -> Response:
        if request.match["identifier"] != self.item.identifier:
            return Response.json({})  # archive.org's answer for an identifier it does not hold
        files = list(self._files.values())
        return Response.json(
            {
                "created": FILE_MTIME + 1000,
                "d1": self.data_node,
                "d2": self.data_node,
                "dir": f"{DATA_NODE_PATH}/{self.item.identifier}",
                "files": [served.metadata_entry() for served in files],
                "files_count": len(files),
                "item_last_updated": FILE_MTIME,
                "item_size": sum(served.size for served in files if not served.listed_briefly),
                "metadata": _item_metadata(self.item.identifier),
                "server": self.data_node,
                "uniq": zlib.crc32(self.item.identifier.encode()),
                "updated": FILE_MTIME + 1004,
                "workable_servers": [self.data_node],
            }
        )

    def _served_file(self, request: Request) -> _ServedFile | None:
        if request.match["identifier"] != self.item.identifier:
            return None
        return self._files.get(request.match["file"])

    def _redirect_to_data_node(self, request: Request) -> Response:
        served = self._served_file(request)
        if served is None:
            return self.not_found(request.path)
        location = (
            f"http://{self.data_node}{DATA_NODE_PATH}/{quote(self.item.identifier)}/{quote(served.name)}"
        )
        # As recorded: the redirect itself carries the file's Content-Type and Accept-Ranges.
        headers = {"Location": location, "Content-Type": served.content_type, "Accept-Ranges": "bytes"}
        return Response(302, b"", headers)

    def _download(self, request: Request) -> Response:
        served = self._served_file(request)
        # Only the data node's host name serves bytes, so a client that skipped the redirect is noticed.
        if served is None or _host_name(request.header("host")) != self.download_host:
            return self.not_found(request.path)
        headers = {
            "Content-Type": served.content_type,
            "Accept-Ranges": "bytes",
            "ETag": f'"{served.md5}"',
        }
        byte_range = parse_single_range(request.header("range"), served.size)
        if byte_range == "unsatisfiable":
            headers["Content-Range"] = f"bytes */{served.size}"
            return Response(416, b"", headers)
        if byte_range is None:
            status, first, last = 200, 0, served.size - 1
        else:
            status, (first, last) = 206, byte_range  # type: ignore[misc]
            headers["Content-Range"] = f"bytes {first}-{last}/{served.size}"
        length = last - first + 1
        streamed_length = length
        if request.method == "GET":
            if self._drop_every is not None:
                streamed_length = min(streamed_length, self._drop_every)
            if self._should_cut(served.name):
                streamed_length = min(streamed_length, self._cut_after or 0)
        return Response(status, served.read(first, streamed_length), headers, content_length=length)

    def _should_cut(self, name: str) -> bool:
        if self._cut_after is None:
            return False
        with self._cut_lock:
            if name in self._already_cut:
                return False
            self._already_cut.add(name)
            return True


def _host_name(host_header: str | None) -> str:
    return (host_header or "").rsplit(":", 1)[0].lower()
