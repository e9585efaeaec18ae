import hashlib
import io
import re
import tarfile
import threading
import time
import zlib
from collections import Counter

import imagehash
import pytest
import requests
from PIL import Image

from album_pipeline.data.images import InvalidImage, validate_image
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.sources.omacir import iter_tar_images
from album_pipeline.testing.emulators import __main__ as emulators_main
from album_pipeline.testing.emulators.archive import ArchiveEmulator, parse_single_range, wrong_md5_for
from album_pipeline.testing.emulators.composition import running_emulators
from album_pipeline.testing.emulators.omacir_item import OmacirItem
from album_pipeline.testing.emulators.omacir_members import (
    BOMB_SIDE,
    EXPECTED_REASON,
    HOSTILE_KINDS,
    MEMBER_KINDS,
    REFUSED_KINDS,
    dead_link_placeholder_jpeg,
)

IMAGES_PER_ARCHIVE = 60
HOSTILE_IMAGES_PER_ARCHIVE = 40
OVERSIZED_BYTES = 300_000
# What the default build for ("a", "b"), 60 images, seed 0 was before hostile members existed: opt-in
# trouble must not change it. (A new Pillow/libjpeg that encodes differently changes these too.)
DEFAULT_BUILD_FOLDER = "audio-covers-3dc04561139a8640"
DEFAULT_BUILD_MD5 = ["a670b8d02d9fdd68aa65ee6270d602fd", "e06fc8cdaf7fc90242549d1d15d4c4d5"]
PLANTED_COUNTS = {
    "traversal": 2,
    "absolute": 1,
    "symlink": 1,
    "hardlink": 2,
    "device": 1,
    "fifo": 1,
    "oversized": 1,
    "bomb": 1,
    "truncated": 3,
    "near_placeholder": 4,
}
TAR_TYPE = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}
TAR_TYPE["fifo"] = tarfile.FIFOTYPE


@pytest.fixture(scope="module")
def item(tmp_path_factory):
    return OmacirItem.build(
        tmp_path_factory.mktemp("omacir"), letters=("a", "b"), images_per_archive=IMAGES_PER_ARCHIVE
    )


@pytest.fixture(scope="module")
def hostile_item(tmp_path_factory):
    return OmacirItem.build(
        tmp_path_factory.mktemp("omacir-hostile"),
        letters=("a", "b"),
        images_per_archive=HOSTILE_IMAGES_PER_ARCHIVE,
        hostile_members=True,
        oversized_member_bytes=OVERSIZED_BYTES,
    )


@pytest.fixture(scope="module")
def emulator(item):
    with ArchiveEmulator(item) as server:
        yield server


def _download(emulator, name, **headers):
    return requests.get(f"{emulator.url}/download/audio-covers/{name}", headers=headers, timeout=10)


def test_metadata_lists_the_tars_with_string_sizes_and_matching_checksums(emulator, item):
    response = requests.get(f"{emulator.url}/metadata/audio-covers", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["metadata"]["identifier"] == "audio-covers"
    tars = [entry for entry in body["files"] if entry["format"] == "Tar"]
    assert [entry["name"] for entry in tars] == ["album_covers_a.tar", "album_covers_b.tar"]
    for entry in tars:
        assert entry["source"] == "original"
        assert isinstance(entry["size"], str) and isinstance(entry["mtime"], str)
        assert {"md5", "sha1", "crc32", "mtime"} <= entry.keys()
        data = _download(emulator, entry["name"]).content
        assert len(data) == int(entry["size"])
        assert hashlib.md5(data).hexdigest() == entry["md5"]
        assert hashlib.sha1(data).hexdigest() == entry["sha1"]
        assert data == item.path(entry["name"]).read_bytes()


def test_metadata_also_lists_archive_orgs_own_files_which_are_not_data(emulator):
    files = requests.get(f"{emulator.url}/metadata/audio-covers", timeout=10).json()["files"]
    derived = {entry["name"]: entry["source"] for entry in files if entry["format"] != "Tar"}
    assert derived == {
        "audio-covers_meta.xml": "metadata",
        "audio-covers_files.xml": "metadata",
        "__ia_thumb.jpg": "derivative",
    }
    meta = _download(emulator, "audio-covers_meta.xml")
    assert meta.status_code == 200 and meta.content.startswith(b"<metadata>")


def test_metadata_has_the_recorded_shape(emulator):
    """As archive.org's recorded /metadata/nasa: the _files.xml entry without a size, the data node named."""
    body = requests.get(f"{emulator.url}/metadata/audio-covers", timeout=10).json()
    files_xml = next(entry for entry in body["files"] if entry["name"] == "audio-covers_files.xml")
    assert files_xml.keys() == {"name", "source", "format", "md5"}
    assert body["d1"] == body["d2"] == body["server"] == emulator.data_node == f"localhost:{emulator.port}"
    assert body["workable_servers"] == [emulator.data_node] and body["dir"] == "/0/items/audio-covers"
    assert body["files_count"] == len(body["files"]) and isinstance(body["uniq"], int)
    assert body["item_size"] == sum(int(entry["size"]) for entry in body["files"] if "size" in entry)


def test_downloads_redirect_to_the_data_node_on_another_host(emulator, item):
    url = f"{emulator.url}/download/audio-covers/album_covers_a.tar"
    redirect = requests.get(url, allow_redirects=False, timeout=10)
    assert redirect.status_code == 302 and redirect.content == b""
    location = f"http://localhost:{emulator.port}/0/items/audio-covers/album_covers_a.tar"
    assert redirect.headers["Location"] == location
    assert redirect.headers["Content-Type"] == "application/x-tar"  # as recorded, on the redirect itself
    assert requests.get(location, timeout=10).content == item.path("album_covers_a.tar").read_bytes()
    # The data node answers only under its own host name: a client must really follow the redirect.
    assert (
        requests.get(f"{emulator.url}/0/items/audio-covers/album_covers_a.tar", timeout=10).status_code == 404
    )
    assert emulator.download_hosts == ("localhost",)
    assert emulator.environment() == {"OMACIR_URL": emulator.url, "OMACIR_DOWNLOAD_HOSTS": "localhost"}
    with pytest.raises(ValueError, match="download_host"):
        ArchiveEmulator(item, download_host="example.org")


def test_full_download_and_head_advertise_ranges_and_length(emulator, item):
    size = item.archive("album_covers_a.tar").size
    full = _download(emulator, "album_covers_a.tar")
    assert full.status_code == 200
    assert full.headers["Accept-Ranges"] == "bytes" and int(full.headers["Content-Length"]) == size
    head = requests.head(
        f"{emulator.url}/download/audio-covers/album_covers_a.tar", allow_redirects=True, timeout=10
    )
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == size and head.content == b""


def test_range_requests_partial_open_ended_suffix_and_unsatisfiable(emulator, item):
    whole = item.path("album_covers_b.tar").read_bytes()
    size = len(whole)
    partial = _download(emulator, "album_covers_b.tar", Range="bytes=100-1123")
    assert partial.status_code == 206
    assert partial.headers["Content-Range"] == f"bytes 100-1123/{size}"
    assert partial.content == whole[100:1124]
    open_ended = _download(emulator, "album_covers_b.tar", Range=f"bytes={size - 700}-")
    assert open_ended.status_code == 206 and open_ended.content == whole[-700:]
    suffix = _download(emulator, "album_covers_b.tar", Range="bytes=-512")
    assert suffix.status_code == 206 and suffix.content == whole[-512:]
    past_end = _download(emulator, "album_covers_b.tar", Range=f"bytes={size}-")
    assert past_end.status_code == 416 and past_end.headers["Content-Range"] == f"bytes */{size}"


def test_concatenated_ranges_equal_the_whole_file_and_are_logged(emulator, item):
    name = "album_covers_a.tar"
    whole = item.path(name).read_bytes()
    emulator.clear_requests()
    step = len(whole) // 3 + 17
    parts = []
    for start in range(0, len(whole), step):
        parts.append(_download(emulator, name, Range=f"bytes={start}-{start + step - 1}").content)
    assert b"".join(parts) == whole
    logged = [record.range for record in emulator.data_requests()]
    assert logged == [f"bytes={start}-{start + step - 1}" for start in range(0, len(whole), step)]
    assert all(record.path == f"/0/items/audio-covers/{name}" for record in emulator.data_requests())
    redirects = [record for record in emulator.requests if record.path.startswith("/download/")]
    assert [(r.status, r.range) for r in redirects] == [(302, r) for r in logged]


def test_unknown_item_is_an_empty_document_and_unknown_files_are_404(emulator):
    unknown = requests.get(f"{emulator.url}/metadata/other-item", timeout=10)
    assert unknown.status_code == 200 and unknown.json() == {}  # archive.org's answer
    assert (
        requests.get(f"{emulator.url}/download/other-item/album_covers_a.tar", timeout=10).status_code == 404
    )
    assert _download(emulator, "album_covers_z.tar").status_code == 404


def test_tar_members_match_the_recorded_ground_truth(item):
    for archive in item.archives:
        truth = {member.name: member for member in archive.members}
        kinds = Counter(member.kind for member in archive.members)
        assert set(kinds) == set(MEMBER_KINDS)
        assert sum(count for kind, count in kinds.items() if kind != "non_image") == IMAGES_PER_ARCHIVE
        assert kinds["cover"] > 0.8 * IMAGES_PER_ARCHIVE and kinds["placeholder"] >= 2 and kinds["tiny"] >= 2
        letter = archive.name.removeprefix("album_covers_").removesuffix(".tar")
        with tarfile.open(item.path(archive.name)) as tar:
            files = [member for member in tar.getmembers() if member.isfile()]
            assert [member.name for member in files] == [member.name for member in archive.members]
            contents = {member.name: tar.extractfile(member).read() for member in files}
        for name, data in contents.items():
            expected = truth[name]
            assert name.startswith(f"album_covers_{letter}/{letter}")
            assert hashlib.md5(data).hexdigest() == expected.md5
            if expected.kind == "non_image":
                with pytest.raises(Image.UnidentifiedImageError):
                    Image.open(io.BytesIO(data))
                continue
            with Image.open(io.BytesIO(data)) as image:
                assert (image.format, image.width, image.height) == (
                    expected.format,
                    expected.width,
                    expected.height,
                )
            if expected.kind in {"cover", "png", "gif"}:
                assert 150 <= expected.width <= 400 and 150 <= expected.height <= 400
                assert expected.style in (*DEFAULT_GENRES, "other")
            if expected.kind == "tiny":
                assert max(expected.width, expected.height) <= 20
        placeholders = {contents[name] for name, member in truth.items() if member.kind == "placeholder"}
        assert len(placeholders) == 1  # one image under several names
        assert any(member.width != member.height for member in archive.members if member.kind == "cover")


def test_tars_extract_safely_with_the_data_filter(item, tmp_path):
    with tarfile.open(item.path("album_covers_a.tar")) as tar:
        tar.extractall(tmp_path, filter="data")
    extracted = sorted(path.name for path in (tmp_path / "album_covers_a").iterdir())
    assert extracted == sorted(
        member.name.split("/")[-1] for member in item.archive("album_covers_a.tar").members
    )


def test_builds_are_deterministic_and_reused(item, tmp_path):
    rebuilt = OmacirItem.build(
        tmp_path / "elsewhere", letters=("a", "b"), images_per_archive=IMAGES_PER_ARCHIVE
    )
    assert [archive.md5 for archive in rebuilt.archives] == [archive.md5 for archive in item.archives]
    assert rebuilt.archives == item.archives
    tar_path = rebuilt.path("album_covers_a.tar")
    written_at = tar_path.stat().st_mtime_ns
    reused = OmacirItem.build(
        tmp_path / "elsewhere", letters=("a", "b"), images_per_archive=IMAGES_PER_ARCHIVE
    )
    assert reused.directory == rebuilt.directory and tar_path.stat().st_mtime_ns == written_at
    other_seed = OmacirItem.build(tmp_path / "elsewhere", letters=("a",), images_per_archive=20, seed=1)
    assert other_seed.directory != rebuilt.directory
    assert other_seed.archive("album_covers_a.tar").md5 != item.archive("album_covers_a.tar").md5


def test_build_refuses_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="one character"):
        OmacirItem.build(tmp_path, letters=("ab",))
    with pytest.raises(ValueError, match="images_per_archive"):
        OmacirItem.build(tmp_path, images_per_archive=3)


def test_a_cut_first_download_can_be_resumed_with_a_range(item):
    whole = item.path("album_covers_a.tar").read_bytes()
    with ArchiveEmulator(item, cut_first_download_after_bytes=5000) as server:
        url = f"{server.url}/download/audio-covers/album_covers_a.tar"
        received = bytearray()
        with pytest.raises(requests.exceptions.RequestException):
            with requests.get(url, stream=True, timeout=10) as response:
                for chunk in response.iter_content(1024):
                    received.extend(chunk)
        assert 0 < len(received) < len(whole)
        rest = requests.get(url, headers={"Range": f"bytes={len(received)}-"}, timeout=10)
        assert rest.status_code == 206
        assert bytes(received) + rest.content == whole


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=100-", "unsatisfiable"),
        ("bytes=-0", "unsatisfiable"),
        ("bytes=0-1,5-6", None),  # several ranges: ignored, the whole file is served
        ("items=0-5", None),
        ("bytes=9-3", None),
    ],
)
def test_parse_single_range(header, expected):
    assert parse_single_range(header, 100) == expected


def test_running_emulators_starts_all_three_for_the_demo(tmp_path):
    with running_emulators(
        tmp_path, albums_per_genre=5, images_per_archive=12, archive_letters=("c",)
    ) as running:
        assert running.environment() == {
            "NAPSTER_API_URL": running.napster_url,
            "NAPSTER_API_KEY": "demo-key",
            "OMACIR_URL": running.omacir_url,
            "OMACIR_DOWNLOAD_HOSTS": "localhost",
            "NAPSTER_IMAGE_HOSTS": "127.0.0.1",
            "MUSICBRAINZ_URL": running.musicbrainz.url,
            "COVERART_URL": running.musicbrainz.url,
            "COVERART_IMAGE_HOSTS": "127.0.0.1",
        }
        genres = requests.get(
            f"{running.napster_url}/v2.2/genres", headers={"apikey": "demo-key"}, timeout=10
        )
        assert genres.status_code == 200
        files = requests.get(f"{running.omacir_url}/metadata/audio-covers", timeout=10).json()["files"]
        assert [entry["name"] for entry in files if entry["format"] == "Tar"] == ["album_covers_c.tar"]
        assert len(running.catalog.albums) == 5 * len(DEFAULT_GENRES)
        assert running.item.archives[0].name == "album_covers_c.tar"


def test_command_line_prints_the_environment_and_serves_until_stopped(tmp_path, capsys):
    stop = threading.Event()
    arguments = [
        "--albums-per-genre",
        "3",
        "--images-per-archive",
        "10",
        "--letters",
        "d",
        "--cache-dir",
        str(tmp_path),
    ]
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(emulators_main.main(arguments, stop)))
    thread.start()
    printed = ""
    try:
        deadline = time.monotonic() + 20
        while "press Ctrl-C" not in printed and time.monotonic() < deadline:
            time.sleep(0.05)
            printed += capsys.readouterr().out
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", printed, flags=re.MULTILINE))
        assert exports.keys() == {
            "NAPSTER_API_URL",
            "NAPSTER_API_KEY",
            "OMACIR_URL",
            "OMACIR_DOWNLOAD_HOSTS",
            "NAPSTER_IMAGE_HOSTS",
            "MUSICBRAINZ_URL",
            "COVERART_URL",
            "COVERART_IMAGE_HOSTS",
        }
        metadata = requests.get(f"{exports['OMACIR_URL']}/metadata/audio-covers", timeout=10)
        assert metadata.status_code == 200
        genres = requests.get(
            f"{exports['NAPSTER_API_URL']}/v2.2/genres",
            headers={"apikey": exports["NAPSTER_API_KEY"]},
            timeout=10,
        )
        assert genres.status_code == 200
    finally:
        stop.set()
        thread.join(timeout=10)
    assert result == [0]


# --- opt-in trouble -----------------------------------------------------------------------------------------
def test_default_builds_are_unchanged_by_the_opt_in_trouble(item):
    assert item.directory.name == DEFAULT_BUILD_FOLDER
    assert [archive.md5 for archive in item.archives] == DEFAULT_BUILD_MD5
    assert all(member.kind in MEMBER_KINDS for member in item.members())


def test_hostile_builds_add_members_to_the_default_ones_under_their_own_key(hostile_item, tmp_path):
    plain = OmacirItem.build(tmp_path, letters=("a", "b"), images_per_archive=HOSTILE_IMAGES_PER_ARCHIVE)
    assert plain.directory.name != hostile_item.directory.name
    for hostile, ordinary in zip(hostile_item.archives, plain.archives, strict=True):
        assert [m for m in hostile.members if m.kind in MEMBER_KINDS] == list(ordinary.members)
        assert Counter(m.kind for m in hostile.members if m.kind in HOSTILE_KINDS) == PLANTED_COUNTS
    again = OmacirItem.build(
        tmp_path,
        letters=("a", "b"),
        images_per_archive=HOSTILE_IMAGES_PER_ARCHIVE,
        hostile_members=True,
        oversized_member_bytes=OVERSIZED_BYTES,
    )
    assert again.archives == hostile_item.archives and again.directory.name == hostile_item.directory.name
    bigger = OmacirItem.build(
        tmp_path, letters=("a",), images_per_archive=10, hostile_members=True, oversized_member_bytes=400_000
    )
    oversized = [m for m in bigger.members() if m.kind == "oversized"]
    assert len(oversized) == 1 and 400_000 < oversized[0].size < 400_000 + 70_000
    with pytest.raises(ValueError, match="oversized_member_bytes"):
        OmacirItem.build(tmp_path, hostile_members=True, oversized_member_bytes=0)


def _stream_members(path):
    """(TarInfo, content or None) for every non-directory member, read in streaming mode."""
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if member.isdir():
                continue
            yield member, (tar.extractfile(member).read() if member.isreg() else None)


def test_hostile_members_have_the_planted_names_types_and_sizes(hostile_item):
    for archive in hostile_item.archives:
        letter = archive.name.removeprefix("album_covers_").removesuffix(".tar")
        folder = f"album_covers_{letter}"
        entries = list(_stream_members(hostile_item.path(archive.name)))
        assert [info.name for info, _ in entries] == [member.name for member in archive.members]
        earlier: dict[str, str] = {}
        for (info, data), truth in zip(entries, archive.members, strict=True):
            assert info.type == TAR_TYPE.get(truth.kind, tarfile.REGTYPE), truth
            assert info.size == truth.size and info.linkname == (truth.linkname or "")
            if data is not None:
                assert hashlib.md5(data).hexdigest() == truth.md5
                assert (truth.size > OVERSIZED_BYTES) == (truth.kind == "oversized")
            else:
                assert truth.size == 0
            if truth.kind == "hardlink" and not truth.linkname.startswith(".."):
                assert earlier.get(truth.linkname) in {"cover", "png", "gif"}  # a real earlier image
            if truth.kind == "device":
                assert (info.devmajor, info.devminor) == (1, 3)
            earlier[truth.name] = truth.kind
        by_kind: dict[str, list[str]] = {}
        for truth in archive.members:
            by_kind.setdefault(truth.kind, []).append(truth.name)
        assert sorted(by_kind["traversal"]) == [
            f"../../escape_{letter}.jpg",
            f"{folder}/../../escape2_{letter}.jpg",
        ]
        assert by_kind["absolute"] == [f"/tmp/omacir_absolute_{letter}.jpg"]
        assert {m.linkname for m in archive.members if m.kind == "symlink"} == {"/etc/passwd"}
        assert f"../outside_{letter}.jpg" in {m.linkname for m in archive.members if m.kind == "hardlink"}
        planted = [m.name for m in archive.members if m.kind in HOSTILE_KINDS]
        assert all(
            n.startswith(f"{folder}/{letter}")
            for k in PLANTED_COUNTS
            for n in by_kind[k]
            if k not in {"traversal", "absolute"}
        )
        # Spread among the ordinary members, not bunched at either end.
        positions = [i for i, m in enumerate(archive.members) if m.kind in HOSTILE_KINDS]
        assert len(positions) == len(planted) == sum(PLANTED_COUNTS.values())
        assert positions[0] < len(archive.members) // 4 and positions[-1] > 3 * len(archive.members) // 4
        assert archive.members[0].kind in MEMBER_KINDS


def _picture_hashes(data):
    """dHash and pHash of the full decode, and dHash of a reduced-scale JPEG decode (as a fast client does)."""
    with Image.open(io.BytesIO(data)) as image:
        full = (str(imagehash.dhash(image)), str(imagehash.phash(image)))
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (64, 64))
        return (*full, str(imagehash.dhash(image.convert("L"))))


def test_hostile_image_members_break_in_the_planted_ways(hostile_item):
    placeholder = dead_link_placeholder_jpeg()
    placeholder_hashes = _picture_hashes(placeholder)
    for archive in hostile_item.archives:
        truth = {member.name: member for member in archive.members}
        contents = {info.name: data for info, data in _stream_members(hostile_item.path(archive.name))}
        near = []
        for name, data in contents.items():
            member = truth[name]
            if member.kind == "bomb":
                assert len(data) < 1000
                assert int.from_bytes(data[16:20], "big") == int.from_bytes(data[20:24], "big") == BOMB_SIDE
                assert zlib.crc32(data[12:29]) == int.from_bytes(data[29:33], "big")  # a well-formed header
                with pytest.raises(Image.DecompressionBombError):
                    Image.open(io.BytesIO(data))
            elif member.kind == "truncated":
                with Image.open(io.BytesIO(data)) as image:
                    assert (image.format, image.size) == ("JPEG", (member.width, member.height))
                    with pytest.raises(OSError, match="truncated"):
                        image.load()
            elif member.kind in {"oversized", "traversal", "absolute"}:
                with Image.open(io.BytesIO(data)) as image:
                    image.load()  # real, complete JPEG covers
                    assert (image.format, image.size) == ("JPEG", (member.width, member.height))
            elif member.kind == "placeholder":
                assert data == placeholder
            elif member.kind == "near_placeholder":
                near.append(data)
                with Image.open(io.BytesIO(data)) as image:
                    assert (image.format, image.size) == ("JPEG", (member.width, member.height))
                assert _picture_hashes(data) == placeholder_hashes
        assert len(set(near)) == len(near) == PLANTED_COUNTS["near_placeholder"] and placeholder not in near
        assert sum(member.kind == "placeholder" for member in archive.members) >= 2


def test_expected_reasons_are_what_a_careful_client_records(hostile_item):
    """The tar reader's refusals, validate_image and a perceptual-hash placeholder check reproduce the truth."""
    assert set(EXPECTED_REASON) == set(MEMBER_KINDS) | set(HOSTILE_KINDS)
    with Image.open(io.BytesIO(dead_link_placeholder_jpeg())) as image:
        placeholder_hash = imagehash.dhash(image)
    for archive in hostile_item.archives:
        kinds = archive.kinds()
        refused: dict[str, str] = {}
        recorded: dict[str, str | None] = {}
        for member in iter_tar_images(
            hostile_item.path(archive.name),
            max_member_bytes=OVERSIZED_BYTES,
            on_refused=refused.__setitem__,
        ):
            try:
                validate_image(member.data)
            except InvalidImage as invalid:
                recorded[member.name] = invalid.reason
                continue
            with Image.open(io.BytesIO(member.data)) as image:
                recorded[member.name] = "placeholder" if imagehash.dhash(image) == placeholder_hash else None
        assert refused == {
            name: EXPECTED_REASON[kind] for name, kind in kinds.items() if kind in REFUSED_KINDS
        }
        assert recorded == {
            name: EXPECTED_REASON[kind] for name, kind in kinds.items() if kind not in REFUSED_KINDS
        }
        kept = {name for name, reason in recorded.items() if reason is None}
        assert kept == hostile_item.expected_kept(archive.name)
        assert {kinds[name] for name in kept} == {"cover", "png", "gif"}
    assert hostile_item.expected_kept() == set().union(
        *(hostile_item.expected_kept(archive.name) for archive in hostile_item.archives)
    )


def test_wrong_md5_is_listed_while_the_true_bytes_are_served(item):
    with ArchiveEmulator(item, wrong_md5=["album_covers_a.tar"]) as server:
        files = requests.get(f"{server.url}/metadata/audio-covers", timeout=10).json()["files"]
        listed = {entry["name"]: entry for entry in files}
        for name in ("album_covers_a.tar", "album_covers_b.tar"):
            data = _download(server, name).content
            assert data == item.path(name).read_bytes()
            assert hashlib.sha1(data).hexdigest() == listed[name]["sha1"]
            assert int(listed[name]["size"]) == len(data)
        true_a = hashlib.md5(item.path("album_covers_a.tar").read_bytes()).hexdigest()
        assert listed["album_covers_a.tar"]["md5"] == wrong_md5_for(true_a) != true_a
        assert re.fullmatch(r"[0-9a-f]{32}", listed["album_covers_a.tar"]["md5"])
        assert listed["album_covers_b.tar"]["md5"] == item.archive("album_covers_b.tar").md5
    with pytest.raises(ValueError, match="album_covers_q.tar"):
        ArchiveEmulator(item, wrong_md5=["album_covers_q.tar"])


def _read_until_cut(url, headers):
    """(status, headers, bytes received, whether the connection was cut before the announced length)."""
    received = bytearray()
    try:
        with requests.get(url, headers=headers, stream=True, timeout=10) as response:
            for chunk in response.iter_content(1024):
                received.extend(chunk)
    except requests.exceptions.RequestException:
        return response.status_code, response.headers, bytes(received), True
    return response.status_code, response.headers, bytes(received), False


def test_drop_every_bytes_cuts_every_download_and_ranges_reassemble_the_file(item):
    name = "album_covers_b.tar"
    whole = item.path(name).read_bytes()
    drop = len(whole) // 4 + 1000
    with ArchiveEmulator(item, drop_every_bytes=drop) as server:
        url = f"{server.url}/download/audio-covers/{name}"
        received = bytearray()
        offsets, cuts = [], []
        while len(received) < len(whole) and len(offsets) < 20:
            offset = len(received)
            offsets.append(offset)
            status, headers, data, cut = _read_until_cut(url, {"Range": f"bytes={offset}-"} if offset else {})
            assert 0 < len(data) <= drop
            if offset:
                assert (
                    status == 206
                    and headers["Content-Range"] == f"bytes {offset}-{len(whole) - 1}/{len(whole)}"
                )
            else:
                assert status == 200 and int(headers["Content-Length"]) == len(whole)
            received.extend(data)
            cuts.append(cut)
        assert bytes(received) == whole
        assert len(offsets) >= 4 and cuts == [True] * (len(offsets) - 1) + [False]
        assert [record.range for record in server.data_requests()] == [None] + [
            f"bytes={o}-" for o in offsets[1:]
        ]
        # Not only the first download of a file: a fresh whole-file GET is cut again, and so is a range.
        assert _read_until_cut(url, {})[3]
        assert _read_until_cut(url, {"Range": "bytes=0-"})[3]
        short = requests.get(url, headers={"Range": f"bytes=0-{drop - 1}"}, timeout=10)
        assert short.status_code == 206 and short.content == whole[:drop]
    with pytest.raises(ValueError, match="drop_every_bytes"):
        ArchiveEmulator(item, drop_every_bytes=0)
