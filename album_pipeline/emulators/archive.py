"""An emulator of archive.org serving a synthetic version of the OMACIR item ``audio-covers``.

``OmacirItem.build`` writes deterministic tars ``album_covers_{letter}.tar``. Every member sits in a folder
named after its archive, ``album_covers_{letter}/{letter}<15 hex digits>.<ext>`` (the tar also holds that
folder's directory entry), and every file name starts with the archive's letter, as OMACIR splits by first
character.
The contents are deliberately a little messy, like the real corpus; each member's ground truth is recorded:

- ``cover``: a JPEG from ``draw_unlabeled_cover`` at 150..400 px, some non-square;
- ``png`` / ``gif``: such a cover stored as PNG or GIF;
- ``placeholder``: copies of one dead-link placeholder image (identical bytes) under different names;
- ``tiny``: a cover at 16x16 or 20x20;
- ``non_image``: a ``.txt`` note and an HTML error page saved under a ``.jpg`` name.

``ArchiveEmulator`` serves ``GET /metadata/{item}`` and ``GET``/``HEAD /download/{item}/{file}`` with single
byte ranges, as archive.org does (see /work/shared/reference/data-sources.md, section OMACIR).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from album_pipeline.emulators.server import LOOPBACK_HOST, LoopbackServer, Request, Response
from album_pipeline.emulators.synthetic import draw_unlabeled_cover, encode_image, unlabeled_cover_style

ITEM_IDENTIFIER = "audio-covers"
MEMBER_KINDS = ("cover", "png", "gif", "non_image", "placeholder", "tiny")
MIN_IMAGES_PER_ARCHIVE = 10
# Bump when the member mix or encoding changes, so cached builds from older code are not reused.
BUILD_FORMAT_VERSION = 1
GROUND_TRUTH_FILE = "ground_truth.json"
# Fixed timestamps keep the tars byte-identical across builds.
MEMBER_MTIME = 1_466_000_000
FILE_MTIME = 1_466_496_032
STREAM_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ArchiveMember:
    """Ground truth for one tar member."""

    name: str  # path inside the tar, e.g. album_covers_a/a3f0....jpg
    kind: str  # one of MEMBER_KINDS
    format: str | None  # Pillow format name; None for non-images
    width: int | None
    height: int | None
    style: str | None  # the drawn style (a genre or "other") for covers, png, gif and tiny; else None
    size: int  # bytes
    md5: str


@dataclass(frozen=True)
class ArchiveFile:
    """One tar of the item, with the checksums archive.org publishes for it."""

    name: str
    size: int
    md5: str
    sha1: str
    crc32: str
    members: tuple[ArchiveMember, ...]

    def kinds(self) -> dict[str, str]:
        """Member name -> kind, for comparing a cleaner's decisions with the truth."""
        return {member.name: member.kind for member in self.members}


@dataclass(frozen=True)
class OmacirItem:
    """A built synthetic OMACIR item: its tars on disk and their ground truth."""

    directory: Path
    identifier: str
    archives: tuple[ArchiveFile, ...]

    # --- building -------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        cache_dir: Path,
        letters: tuple[str, ...] | list[str] = ("a", "b"),
        images_per_archive: int = 500,
        seed: int = 0,
        identifier: str = ITEM_IDENTIFIER,
    ) -> OmacirItem:
        """Write the tars under ``cache_dir`` (or reuse an earlier build with the same parameters)."""
        letters = tuple(letters)
        _check_parameters(letters, images_per_archive)
        parameters = {
            "identifier": identifier,
            "letters": list(letters),
            "images_per_archive": images_per_archive,
            "seed": seed,
            "version": BUILD_FORMAT_VERSION,
        }
        key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]
        cache_dir = Path(cache_dir)
        final_dir = cache_dir / f"{identifier}-{key}"
        existing = cls._load(final_dir, identifier)
        if existing is not None:
            return existing
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Build beside the final folder and rename: a concurrent or interrupted build is never seen half-done.
        scratch = Path(tempfile.mkdtemp(prefix=f".{identifier}-building-", dir=cache_dir))
        try:
            archives = [
                _write_archive(scratch / f"album_covers_{letter}.tar", letter, images_per_archive, seed)
                for letter in letters
            ]
            truth = {"parameters": parameters, "archives": [asdict(archive) for archive in archives]}
            (scratch / GROUND_TRUTH_FILE).write_text(json.dumps(truth, indent=1))
            try:
                os.rename(scratch, final_dir)
            except OSError:
                if cls._load(final_dir, identifier) is None:
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        loaded = cls._load(final_dir, identifier)
        assert loaded is not None
        return loaded

    @classmethod
    def _load(cls, directory: Path, identifier: str) -> OmacirItem | None:
        truth_path = directory / GROUND_TRUTH_FILE
        if not truth_path.is_file():
            return None
        truth = json.loads(truth_path.read_text())
        archives = tuple(
            ArchiveFile(
                **{key: value for key, value in archive.items() if key != "members"},
                members=tuple(ArchiveMember(**member) for member in archive["members"]),
            )
            for archive in truth["archives"]
        )
        # A tar that was replaced or truncated since the build makes the cache unusable.
        for archive in archives:
            path = directory / archive.name
            if not path.is_file() or path.stat().st_size != archive.size:
                raise RuntimeError(
                    f"cached OMACIR emulator build {directory} is damaged ({archive.name} is missing or has "
                    f"the wrong size); delete that folder and build again"
                )
        return cls(directory=directory, identifier=identifier, archives=archives)

    # --- access ---------------------------------------------------------------------------------------
    def archive(self, name: str) -> ArchiveFile:
        for archive in self.archives:
            if archive.name == name:
                return archive
        raise KeyError(f"no archive {name!r} in the item; it has {[a.name for a in self.archives]}")

    def path(self, name: str) -> Path:
        return self.directory / self.archive(name).name

    def members(self) -> list[ArchiveMember]:
        return [member for archive in self.archives for member in archive.members]

    def total_size(self) -> int:
        return sum(archive.size for archive in self.archives)


def _check_parameters(letters: tuple[str, ...], images_per_archive: int) -> None:
    if not letters:
        raise ValueError("letters must name at least one archive, e.g. ('a', 'b')")
    bad = [letter for letter in letters if not re.fullmatch(r"[0-9a-z]", str(letter))]
    if bad:
        raise ValueError(f"each letter must be one character 0-9 or a-z (OMACIR splits by it), got {bad}")
    if len(set(letters)) != len(letters):
        raise ValueError(f"letters have duplicates: {list(letters)}")
    if not isinstance(images_per_archive, int) or images_per_archive < MIN_IMAGES_PER_ARCHIVE:
        raise ValueError(
            f"images_per_archive must be an integer >= {MIN_IMAGES_PER_ARCHIVE}, got {images_per_archive!r}"
        )


def _member_plan(images_per_archive: int, rng: random.Random) -> list[str]:
    """The kinds of an archive's members in tar order; ``images_per_archive`` counts image members only."""
    counts = {
        "placeholder": max(2, images_per_archive // 40),
        "tiny": 2,
        "png": max(1, images_per_archive * 3 // 100),
        "gif": max(1, images_per_archive * 2 // 100),
    }
    counts["cover"] = images_per_archive - sum(counts.values())
    counts["non_image"] = 2  # the .txt note and the fake .jpg
    plan = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(plan)
    return plan


def placeholder_image_bytes() -> bytes:
    """The dead-link placeholder the image host returned for missing covers: a grey 'no image' picture."""
    image = Image.new("RGB", (300, 300), (214, 214, 214))
    draw = ImageDraw.Draw(image)
    draw.rectangle((90, 100, 210, 200), outline=(150, 150, 150), width=6)
    draw.polygon([(100, 190), (140, 140), (170, 175), (185, 160), (200, 190)], fill=(150, 150, 150))
    draw.ellipse((170, 112, 190, 132), fill=(150, 150, 150))
    return encode_image(image, "JPEG", quality=85)


def _cover_dimensions(rng: random.Random) -> tuple[int, int]:
    side = rng.randint(150, 400)
    if rng.random() < 0.2:  # a scan or a photo that is not square
        return side, max(150, min(400, round(side * rng.uniform(0.7, 1.4))))
    return side, side


def _make_member(
    kind: str, name_stem: str, rng: random.Random, placeholder: bytes
) -> tuple[str, bytes, dict]:
    """(file name, bytes, truth fields) for one member of ``kind``."""
    if kind == "non_image":
        if rng.random() < 0.5:
            return f"{name_stem}.txt", b"cover art downloaded from a dead link; see index\n", {}
        page = b"<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
        return f"{name_stem}.jpg", page, {}
    if kind == "placeholder":
        return f"{name_stem}.jpg", placeholder, {"format": "JPEG", "width": 300, "height": 300}
    seed = rng.randrange(2**31)
    style = unlabeled_cover_style(seed)
    if kind == "tiny":
        side = rng.choice([16, 20])
        width, height = side, side
    else:
        width, height = _cover_dimensions(rng)
    image = draw_unlabeled_cover(seed, max(width, height))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    image_format, extension = {"png": ("PNG", "png"), "gif": ("GIF", "gif")}.get(kind, ("JPEG", "jpg"))
    truth = {"format": image_format, "width": width, "height": height, "style": style}
    return f"{name_stem}.{extension}", encode_image(image, image_format), truth


def _tar_info(name: str, size: int, is_directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if is_directory else size
    info.type = tarfile.DIRTYPE if is_directory else tarfile.REGTYPE
    info.mode = 0o755 if is_directory else 0o644
    info.mtime = MEMBER_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_archive(path: Path, letter: str, images_per_archive: int, seed: int) -> ArchiveFile:
    """Stream one tar to disk member by member, then checksum it as archive.org would."""
    rng = random.Random(f"omacir/{seed}/{letter}/{images_per_archive}")
    placeholder = placeholder_image_bytes()
    folder = path.stem
    used_stems: set[str] = set()
    members: list[ArchiveMember] = []
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_tar_info(folder, 0, is_directory=True))
        for kind in _member_plan(images_per_archive, rng):
            stem = f"{letter}{rng.getrandbits(60):015x}"
            while stem in used_stems:
                stem = f"{letter}{rng.getrandbits(60):015x}"
            used_stems.add(stem)
            file_name, data, truth = _make_member(kind, stem, rng, placeholder)
            member_name = f"{folder}/{file_name}"
            tar.addfile(_tar_info(member_name, len(data)), io.BytesIO(data))
            members.append(
                ArchiveMember(
                    name=member_name,
                    kind=kind,
                    format=truth.get("format"),
                    width=truth.get("width"),
                    height=truth.get("height"),
                    style=truth.get("style"),
                    size=len(data),
                    md5=hashlib.md5(data).hexdigest(),
                )
            )
    md5, sha1, crc32 = _checksums(path)
    return ArchiveFile(path.name, path.stat().st_size, md5, sha1, crc32, tuple(members))


def _checksums(path: Path) -> tuple[str, str, str]:
    md5, sha1, crc = hashlib.md5(), hashlib.sha1(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            md5.update(chunk)
            sha1.update(chunk)
            crc = zlib.crc32(chunk, crc)
    return md5.hexdigest(), sha1.hexdigest(), f"{crc:08x}"


# --- the server ---------------------------------------------------------------------------------------------
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

    def metadata_entry(self) -> dict[str, str]:
        return {
            "name": self.name,
            "source": self.source,
            "format": self.format,
            "size": str(self.size),  # archive.org publishes sizes as strings
            "md5": self.md5,
            "sha1": self.sha1,
            "crc32": self.crc32,
            "mtime": str(FILE_MTIME),
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
        _in_memory_file("__ia_thumb.jpg", "derivative", "Item Tile", "image/jpeg", placeholder_image_bytes()),
        _in_memory_file(f"{item.identifier}_meta.xml", "metadata", "Metadata", "text/xml", meta_xml.encode()),
        _in_memory_file(
            f"{item.identifier}_files.xml", "metadata", "Metadata", "text/xml", files_xml.encode()
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
    """archive.org's metadata and download endpoints for one item, on 127.0.0.1."""

    name = "archive"

    def __init__(
        self,
        item: OmacirItem,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        *,
        cut_first_download_after_bytes: int | None = None,
    ) -> None:
        """``cut_first_download_after_bytes`` drops the connection part-way through the first GET of each
        file, so that tests can exercise a client's resume with Range."""
        super().__init__(host, port)
        self.item = item
        self._files = _served_files(item)
        self._cut_after = cut_first_download_after_bytes
        self._already_cut: set[str] = set()
        self._cut_lock = threading.Lock()
        self.add_route("GET", r"/metadata/(?P<identifier>[^/]+)/?", self._metadata)
        self.add_route(("GET", "HEAD"), r"/download/(?P<identifier>[^/]+)/(?P<file>[^/]+)", self._download)

    def not_found(self, path: str) -> Response:
        return Response(
            404, f"404 Not Found: {path}\n".encode(), {"Content-Type": "text/plain; charset=utf-8"}
        )

    def _metadata(self, request: Request) -> Response:
        if request.match["identifier"] != self.item.identifier:
            return self.not_found(request.path)
        files = list(self._files.values())
        return Response.json(
            {
                "created": FILE_MTIME + 1000,
                "d1": "127.0.0.1",
                "dir": f"/items/{self.item.identifier}",
                "files": [served.metadata_entry() for served in files],
                "files_count": len(files),
                "item_last_updated": FILE_MTIME,
                "item_size": sum(served.size for served in files),
                "metadata": _item_metadata(self.item.identifier),
                "server": f"127.0.0.1:{self.port}",
                "workable_servers": ["127.0.0.1"],
            }
        )

    def _download(self, request: Request) -> Response:
        served = self._files.get(request.match["file"])
        if request.match["identifier"] != self.item.identifier or served is None:
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
        if request.method == "GET" and self._should_cut(served.name):
            streamed_length = min(length, self._cut_after or 0)
        return Response(status, served.read(first, streamed_length), headers, content_length=length)

    def _should_cut(self, name: str) -> bool:
        if self._cut_after is None:
            return False
        with self._cut_lock:
            if name in self._already_cut:
                return False
            self._already_cut.add(name)
            return True
