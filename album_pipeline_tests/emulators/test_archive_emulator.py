import hashlib
import io
import re
import tarfile
import threading
import time
from collections import Counter

import pytest
import requests
from PIL import Image

from album_pipeline.emulators import __main__ as emulators_main
from album_pipeline.emulators.archive import (
    MEMBER_KINDS,
    ArchiveEmulator,
    OmacirItem,
    parse_single_range,
)
from album_pipeline.emulators.server import running_emulators
from album_pipeline.genres import DEFAULT_GENRES

IMAGES_PER_ARCHIVE = 60


@pytest.fixture(scope="module")
def item(tmp_path_factory):
    return OmacirItem.build(
        tmp_path_factory.mktemp("omacir"), letters=("a", "b"), images_per_archive=IMAGES_PER_ARCHIVE
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
        assert isinstance(entry["size"], str)
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


def test_full_download_and_head_advertise_ranges_and_length(emulator, item):
    size = item.archive("album_covers_a.tar").size
    full = _download(emulator, "album_covers_a.tar")
    assert full.status_code == 200
    assert full.headers["Accept-Ranges"] == "bytes" and int(full.headers["Content-Length"]) == size
    head = requests.head(f"{emulator.url}/download/audio-covers/album_covers_a.tar", timeout=10)
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
    logged = [record.range for record in emulator.requests]
    assert logged == [f"bytes={start}-{start + step - 1}" for start in range(0, len(whole), step)]
    assert all(record.path == f"/download/audio-covers/{name}" for record in emulator.requests)


def test_unknown_item_or_file_is_404(emulator):
    assert requests.get(f"{emulator.url}/metadata/other-item", timeout=10).status_code == 404
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
