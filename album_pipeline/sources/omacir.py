"""OMACIR on archive.org: list the item's tar archives, download them resumably and verified, stream members.

archive.org answers a download with a redirect to one of its data nodes (``dnNNN.ca.archive.org``, plain
http); redirects are followed by hand so that every hop's host is checked against ``OMACIR_DOWNLOAD_HOSTS``
before anything is sent to it. An unknown item's metadata is an empty JSON object.

Tar members are read straight from the stream into memory and never extracted to disk, so a hostile archive
cannot write outside its folder; members that are not plain files with plain relative names are refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

import requests

from album_pipeline.sources.http import (
    HostCheck,
    SourceError,
    SourceResponseError,
    error_for_status,
    host_checker,
    make_session,
    open_following_redirects,
    redact_url,
    translate_request_error,
)

DEFAULT_ARCHIVE_URL = "https://archive.org"
OMACIR_URL_ENV = "OMACIR_URL"
DEFAULT_ITEM = "audio-covers"
DOWNLOAD_HOSTS_ENV = "OMACIR_DOWNLOAD_HOSTS"
# archive.org itself and its data nodes (dnNNN.ca.archive.org, iaNNN.us.archive.org) that downloads redirect to.
DEFAULT_DOWNLOAD_HOSTS = ("archive.org", ".archive.org")
MAX_REDIRECTS = 5
ARCHIVE_NAME_PATTERN = re.compile(r"^album_covers_[^/\\]+\.tar$")
DEFAULT_MAX_MEMBER_BYTES = 20 * 1024 * 1024
_CHUNK = 1024 * 1024
# Small network reads: bytes of a read cut short by a dropped connection are lost, so resume loses less.
_DOWNLOAD_CHUNK = 64 * 1024
_SERVICE = "archive.org"

logger = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (bytes on disk so far, expected total)


class ArchiveChecksumError(SourceError):
    """A downloaded archive does not match the size or md5 published in the item's metadata."""


class ItemNotFoundError(SourceResponseError):
    """archive.org has no item of that name: its metadata API answers an empty object."""


@dataclass(frozen=True)
class ArchiveFile:
    name: str
    size: int | None
    md5: str | None


@dataclass(frozen=True)
class ItemFile:
    """One entry of an item's ``files`` list; archive.org leaves ``size`` out of some metadata files."""

    name: str
    source: str  # "original", "derivative" or "metadata"
    format: str | None
    size: int | None
    md5: str | None


@dataclass(frozen=True)
class TarMember:
    name: str
    data: bytes


class OmacirClient:
    """``base_url``: archive.org (or an emulator), or a local folder of tars (``file://`` URL or path).

    ``allowed_download_hosts``: the hosts redirects may lead to (an entry starting with a dot matches its
    subdomains); the host of ``base_url`` is always allowed.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_ARCHIVE_URL,
        *,
        item: str = DEFAULT_ITEM,
        session: requests.Session | None = None,
        timeout: float = 60.0,
        allowed_download_hosts: Iterable[str] = DEFAULT_DOWNLOAD_HOSTS,
    ) -> None:
        if not item or "/" in item:
            raise ValueError(f"archive.org item {item!r} must be a plain identifier such as {DEFAULT_ITEM!r}")
        self.item = item
        self.timeout = timeout
        self.local_dir = _local_folder(base_url)
        if self.local_dir is None:
            self.base_url = base_url.rstrip("/")
            self._session = session or make_session()
            self._check_redirect = download_host_check(self.base_url, allowed_download_hosts)
        else:
            if not self.local_dir.is_dir():
                raise SourceError(
                    f"OMACIR folder {self.local_dir} does not exist; set {OMACIR_URL_ENV} to a folder "
                    "holding album_covers_*.tar files or to an archive.org mirror URL"
                )
            self.base_url = self.local_dir.as_uri()
            self._session = session

    def __repr__(self) -> str:
        return f"OmacirClient(base_url={redact_url(self.base_url)!r}, item={self.item!r})"

    # -- listing --------------------------------------------------------------------------------------------

    def list_archives(self) -> list[ArchiveFile]:
        """The item's ``album_covers_*.tar`` originals, sorted by name (derived files are not data)."""
        if self.local_dir is not None:
            local = [
                ArchiveFile(name=p.name, size=p.stat().st_size, md5=None)
                for p in sorted(self.local_dir.iterdir())
                if p.is_file() and ARCHIVE_NAME_PATTERN.match(p.name)
            ]
            if not local:
                raise SourceError(
                    f"OMACIR folder {self.local_dir} holds no album_covers_*.tar files; put the archives "
                    f"there or set {OMACIR_URL_ENV} to an archive.org mirror URL"
                )
            return local
        url = self._metadata_url()
        files = self.list_files()
        archives = [
            ArchiveFile(name=entry.name, size=entry.size, md5=entry.md5)
            for entry in files
            if ARCHIVE_NAME_PATTERN.match(entry.name) and entry.source == "original"
        ]
        if not archives:
            raise SourceResponseError(
                f"{_SERVICE} item {self.item!r} at {redact_url(url)} lists {len(files)} files but no "
                f"album_covers_*.tar originals; check the item name and {OMACIR_URL_ENV}"
            )
        return sorted(archives, key=lambda a: a.name)

    def list_files(self) -> list[ItemFile]:
        """Every entry of the item's metadata ``files`` list, in the order archive.org gives them."""
        if self.local_dir is not None:
            raise SourceError(
                f"{self.local_dir} is a local folder, which has no archive.org metadata to list; use "
                "list_archives() for its tars"
            )
        url = self._metadata_url()
        try:
            payload = self._get(url).json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise SourceResponseError(
                f"{_SERVICE} metadata at {redact_url(url)} is not the expected JSON object; check that "
                f"{OMACIR_URL_ENV} points at archive.org or a mirror of it"
            )
        if not payload:
            raise ItemNotFoundError(
                f"{_SERVICE} has no item {self.item!r}: its metadata at {redact_url(url)} is empty. Check the "
                f"item name (OMACIR is {DEFAULT_ITEM!r}) and that {OMACIR_URL_ENV} points at archive.org or "
                "a mirror of it"
            )
        return parse_item_files(payload.get("files") or [], where=redact_url(url))

    def _metadata_url(self) -> str:
        return f"{self.base_url}/metadata/{quote(self.item)}"

    # -- download -------------------------------------------------------------------------------------------

    def download(
        self, archive: ArchiveFile, dest_dir: Path, progress: Progress | None = None, *, max_attempts: int = 3
    ) -> Path:
        """The verified archive on disk: resumed from ``{name}.partial`` with a Range request when present.

        A complete file that already verifies is not fetched again. Interruptions are resumed for as long as
        each attempt brings more bytes; ``max_attempts`` attempts in a row without progress give up (with
        exponential backoff between them). A size or md5 mismatch deletes the bad
        file and raises ArchiveChecksumError. In local-folder mode the archive is returned in place.
        """
        if not ARCHIVE_NAME_PATTERN.match(archive.name):
            raise ValueError(f"{archive.name!r} is not an album_covers_*.tar archive name")
        if self.local_dir is not None:
            path = self.local_dir / archive.name
            if not path.is_file():
                raise SourceError(f"archive {path} does not exist; list the folder with list_archives()")
            return path
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        final = dest_dir / archive.name
        if final.exists():
            if _matches(final, archive):
                return final
            logger.warning("%s does not match the published size/md5; downloading it again", final)
            final.unlink()
        partial = partial_download(dest_dir, archive.name)
        url = f"{self.base_url}/download/{quote(self.item)}/{quote(archive.name)}"
        failures_in_a_row = 0
        while True:
            before = partial.stat().st_size if partial.exists() else 0
            try:
                self._fetch_to_partial(url, partial, archive, progress)
                break
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as error:
                # The bytes already on disk are kept and the next attempt resumes after them. A dropped
                # connection that still brought bytes is progress: only attempts that bring nothing count.
                gained = (partial.stat().st_size if partial.exists() else 0) > before
                failures_in_a_row = 0 if gained else failures_in_a_row + 1
                if failures_in_a_row >= max_attempts:
                    raise translate_request_error(
                        error, service=_SERVICE, url=url, url_env_var=OMACIR_URL_ENV
                    ) from None
                logger.warning("download of %s interrupted (%s); resuming", archive.name, error)
                time.sleep(min(30.0, 0.5 * 2**failures_in_a_row) if failures_in_a_row else 0.0)
        _verify_or_delete(partial, archive)
        os.replace(partial, final)
        return final

    def _fetch_to_partial(
        self, url: str, partial: Path, archive: ArchiveFile, progress: Progress | None
    ) -> None:
        offset = partial.stat().st_size if partial.exists() else 0
        if archive.size is not None and offset > archive.size:
            partial.unlink()
            offset = 0
        if archive.size is not None and offset == archive.size:
            return  # complete already; verification decides whether it is good
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._follow_redirects(url, headers) as response:
            if response.status_code == 416 and offset:
                # The server thinks the partial file is already complete (or longer): start again cleanly.
                partial.unlink()
                return self._fetch_to_partial(url, partial, archive, progress)
            failure = error_for_status(response, service=_SERVICE, url_env_var=OMACIR_URL_ENV)
            if failure is not None:
                raise failure
            if offset and response.status_code != 206:
                offset = 0  # the server ignored the Range header and sends the whole file
            elif offset and not _content_range_starts_at(response.headers.get("Content-Range"), offset):
                raise SourceResponseError(
                    f"{_SERVICE} answered the resume of {archive.name} at byte {offset} with Content-Range "
                    f"{response.headers.get('Content-Range')!r}; delete {partial} and run again"
                )
            done = offset
            with open(partial, "ab" if offset else "wb") as handle:
                for chunk in response.iter_content(chunk_size=_DOWNLOAD_CHUNK):
                    handle.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, archive.size)
        return None

    def _follow_redirects(self, url: str, headers: Mapping[str, str] | None = None) -> requests.Response:
        """The streamed final response for ``url``, each redirect's target host checked before it is asked; a
        resume's Range goes along to the data node."""
        return open_following_redirects(
            self._session,
            url,
            service=_SERVICE,
            url_env_var=OMACIR_URL_ENV,
            timeout=self.timeout,
            headers=headers,
            check_redirect=self._check_redirect,
            max_redirects=MAX_REDIRECTS,
            cross_host_headers=True,
        )

    def _get(self, url: str) -> requests.Response:
        try:
            response = self._follow_redirects(url)
        except requests.RequestException as error:
            raise translate_request_error(
                error, service=_SERVICE, url=url, url_env_var=OMACIR_URL_ENV
            ) from None
        failure = error_for_status(response, service=_SERVICE, url_env_var=OMACIR_URL_ENV)
        if failure is not None:
            raise failure
        return response


def download_host_check(base_url: str, allowed_hosts: Iterable[str]) -> HostCheck:
    """The check a redirect target must pass: a host in ``allowed_hosts`` or the host of ``base_url``."""
    if isinstance(allowed_hosts, str):
        raise ValueError(
            f"allowed download hosts must be a list of host names, not the string {allowed_hosts!r}; set "
            f"{DOWNLOAD_HOSTS_ENV} to a comma-separated list such as 'archive.org,.archive.org'"
        )
    own_host = urlsplit(base_url).hostname or ""
    return host_checker(
        [*allowed_hosts, own_host], what=f"{_SERVICE} download redirect", setting=DOWNLOAD_HOSTS_ENV
    )


def parse_item_files(files: object, *, where: str) -> list[ItemFile]:
    """The entries of a metadata document's ``files`` list (sizes arrive as strings; some have none)."""
    if not isinstance(files, list):
        raise SourceResponseError(
            f"{_SERVICE} metadata at {where} has a 'files' value that is not a list; check that "
            f"{OMACIR_URL_ENV} points at archive.org or a mirror of it"
        )
    return [
        ItemFile(
            name=str(entry.get("name", "")),
            # archive.org marks every file; an entry without a mark is taken as uploaded data.
            source=str(entry.get("source", "original")),
            format=entry.get("format"),
            size=_parse_size(entry.get("size")),
            md5=entry.get("md5"),
        )
        for entry in files
        if isinstance(entry, dict)
    ]


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def iter_tar_images(
    tar_path: Path,
    *,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_images: int | None = None,
    on_refused: Callable[[str, str], None] | None = None,
    on_position: Callable[[int], None] | None = None,
) -> Iterator[TarMember]:
    """Regular-file members of a tar, read from the stream into memory (nothing is extracted to disk).

    Members with absolute paths, ``..`` components, links, devices, FIFOs or sizes above ``max_member_bytes``
    are skipped and reported through ``on_refused(name, reason)`` (and the module logger). Directories are
    skipped silently. Stops after ``max_images`` members. ``on_position(bytes read)`` reports progress.
    """
    yielded = 0
    if max_images is not None and max_images <= 0:
        return
    with open(tar_path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
        for member in archive:
            # Stream mode still keeps every TarInfo read in ``members``; dropping them keeps memory flat.
            archive.members.clear()
            if on_position is not None:
                on_position(raw.tell())
            if member.isdir():
                continue
            reason = _refusal_reason(member, max_member_bytes)
            if reason is not None:
                logger.warning("refusing tar member %r of %s: %s", member.name, Path(tar_path).name, reason)
                if on_refused is not None:
                    on_refused(member.name, reason)
                continue
            handle = archive.extractfile(member)
            if handle is None:  # cannot happen for regular files, but extractfile's contract allows it
                continue
            yield TarMember(name=member.name, data=handle.read())
            yielded += 1
            if max_images is not None and yielded >= max_images:
                return


def _refusal_reason(member: tarfile.TarInfo, max_member_bytes: int) -> str | None:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    if not member.isreg():
        return "not_a_regular_file"
    name = member.name
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "absolute_path"
    if ".." in re.split(r"[/\\]", name):
        return "parent_reference"
    if member.size > max_member_bytes:
        return "too_large"
    return None


def _local_folder(base_url: str) -> Path | None:
    if base_url.startswith("file://"):
        return Path(unquote(urlsplit(base_url).path))
    if "://" in base_url:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"OMACIR location {redact_url(base_url)!r} must be an http(s) URL, a file:// URL or a "
                f"folder; set {OMACIR_URL_ENV}"
            )
        return None
    return Path(base_url).expanduser()


def _parse_size(value: object) -> int | None:
    # archive.org publishes sizes as strings.
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _content_range_starts_at(header: str | None, offset: int) -> bool:
    match = re.match(r"^\s*bytes\s+(\d+)-", header or "")
    return bool(match) and int(match.group(1)) == offset


def _matches(path: Path, archive: ArchiveFile) -> bool:
    if archive.size is not None and path.stat().st_size != archive.size:
        return False
    return archive.md5 is None or file_md5(path) == archive.md5.lower()


def _verify_or_delete(path: Path, archive: ArchiveFile) -> None:
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        path.unlink()
        raise ArchiveChecksumError(
            f"{archive.name} downloaded as {size} bytes but archive.org lists {archive.size}; the bad file "
            "was deleted, run again to download it afresh"
        )
    if archive.md5 is not None:
        actual = file_md5(path)
        if actual != archive.md5.lower():
            path.unlink()
            raise ArchiveChecksumError(
                f"{archive.name} has md5 {actual} but archive.org lists {archive.md5}; the corrupt download "
                "was deleted, run again to download it afresh"
            )


def partial_download(dest_dir: Path, archive_name: str) -> Path:
    """Where an archive's interrupted download waits to be resumed; it takes the archive's name once verified."""
    return Path(dest_dir) / f"{archive_name}.partial"
