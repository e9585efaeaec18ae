"""OmacirClient against the loopback archive.org emulator, local folders, and hostile tars."""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from album_pipeline.defs.resources import build_resources
from album_pipeline.settings import Settings
from album_pipeline.sources.http import UntrustedURLError, make_session
from album_pipeline.sources.omacir import (
    DEFAULT_DOWNLOAD_HOSTS,
    ArchiveChecksumError,
    ItemNotFoundError,
    OmacirClient,
    file_md5,
    iter_tar_images,
)
from album_pipeline.testing.emulators.archive import ArchiveEmulator
from album_pipeline.testing.emulators.omacir_item import OmacirItem


@pytest.fixture(scope="module")
def item(tmp_path_factory: pytest.TempPathFactory) -> OmacirItem:
    return OmacirItem.build(
        tmp_path_factory.mktemp("omacir"), letters=("a", "b"), images_per_archive=60, seed=5
    )


@pytest.fixture
def archive_server(item: OmacirItem) -> Iterator[ArchiveEmulator]:
    with ArchiveEmulator(item) as server:
        yield server


def _client(server: ArchiveEmulator) -> OmacirClient:
    return OmacirClient(
        server.url,
        session=make_session(backoff_factor=0),
        timeout=10,
        allowed_download_hosts=server.download_hosts,
    )


def _downloads(server: ArchiveEmulator) -> list:
    return server.data_requests()


def test_lists_only_tar_originals_with_int_sizes(archive_server, item) -> None:
    archives = _client(archive_server).list_archives()
    assert [(a.name, a.size, a.md5) for a in archives] == [(a.name, a.size, a.md5) for a in item.archives]
    assert all(isinstance(a.size, int) for a in archives)


def test_download_verifies_and_renames(archive_server, item, tmp_path: Path) -> None:
    client = _client(archive_server)
    archive = client.list_archives()[0]
    path = client.download(archive, tmp_path / "dl")
    assert path == tmp_path / "dl" / archive.name
    assert file_md5(path) == item.archives[0].md5
    assert sorted(p.name for p in path.parent.iterdir()) == [archive.name]  # no .partial left
    # A complete, verified file is not fetched again.
    before = len(_downloads(archive_server))
    assert client.download(archive, tmp_path / "dl") == path
    assert len(_downloads(archive_server)) == before


def test_resume_requests_only_the_missing_bytes(archive_server, item, tmp_path: Path) -> None:
    client = _client(archive_server)
    archive = client.list_archives()[1]
    dest = tmp_path / "dl"
    dest.mkdir()
    already = 100_000
    with open(item.path(archive.name), "rb") as source:
        (dest / f"{archive.name}.partial").write_bytes(source.read(already))
    progress: list[tuple[int, int | None]] = []
    path = client.download(archive, dest, progress=lambda done, total: progress.append((done, total)))
    assert file_md5(path) == archive.md5
    requests = _downloads(archive_server)
    assert [(r.status, r.range) for r in requests] == [(206, f"bytes={already}-")]
    assert progress[-1] == (archive.size, archive.size) and progress[0][0] > already


def test_interrupted_download_resumes_by_itself(item, tmp_path: Path) -> None:
    with ArchiveEmulator(item, cut_first_download_after_bytes=300_000) as server:
        client = _client(server)
        archive = client.list_archives()[0]
        path = client.download(archive, tmp_path / "dl")
        requests = _downloads(server)
    assert file_md5(path) == archive.md5
    assert requests[0].range is None and requests[-1].range is not None
    resumed_from = int(requests[-1].range.split("=")[1].rstrip("-"))
    assert 0 < resumed_from <= 300_000


def test_the_redirect_to_the_data_node_is_refused_unless_its_host_is_allowed(
    archive_server, tmp_path
) -> None:
    client = OmacirClient(archive_server.url, session=make_session(backoff_factor=0), timeout=10)
    archive = client.list_archives()[0]  # the metadata comes from the OMACIR_URL host, always allowed
    with pytest.raises(UntrustedURLError) as caught:
        client.download(archive, tmp_path / "dl")
    assert "'localhost' is not allowed" in str(caught.value) and "OMACIR_DOWNLOAD_HOSTS" in str(caught.value)
    assert _downloads(archive_server) == [] and list((tmp_path / "dl").iterdir()) == []


def test_an_unknown_item_is_reported_as_not_existing(archive_server) -> None:
    client = OmacirClient(archive_server.url, item="no-such-item", session=make_session(backoff_factor=0))
    with pytest.raises(ItemNotFoundError, match="has no item 'no-such-item'.*OMACIR_URL"):
        client.list_archives()


def test_list_files_shows_archive_orgs_own_files_some_without_size(archive_server) -> None:
    files = {entry.name: entry for entry in _client(archive_server).list_files()}
    assert files["audio-covers_files.xml"].size is None and files["audio-covers_files.xml"].md5
    assert files["__ia_thumb.jpg"].source == "derivative" and files["album_covers_a.tar"].source == "original"


def test_download_hosts_come_from_the_environment_into_the_resource(archive_server, tmp_path) -> None:
    assert (
        Settings.from_environ({}).omacir_download_hosts
        == DEFAULT_DOWNLOAD_HOSTS
        == ("archive.org", ".archive.org")
    )
    settings = Settings.from_environ({**archive_server.environment(), "ALBUM_PIPELINE_HOME": str(tmp_path)})
    assert settings.omacir_download_hosts == ("localhost",)
    client = build_resources(settings)["omacir"].client()
    assert client.download(client.list_archives()[0], tmp_path / "dl").is_file()
    with pytest.raises(ValueError, match="OMACIR_DOWNLOAD_HOSTS"):
        OmacirClient(archive_server.url, allowed_download_hosts="localhost")


def test_md5_mismatch_raises_and_leaves_no_file(archive_server, tmp_path: Path) -> None:
    client = _client(archive_server)
    archive = replace(client.list_archives()[0], md5="0" * 32)
    with pytest.raises(ArchiveChecksumError, match="md5") as caught:
        client.download(archive, tmp_path / "dl")
    assert "run again" in str(caught.value)
    assert list((tmp_path / "dl").iterdir()) == []


def test_wrong_complete_file_is_replaced(archive_server, item, tmp_path: Path) -> None:
    client = _client(archive_server)
    archive = client.list_archives()[0]
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / archive.name).write_bytes(b"x" * archive.size)  # right size, wrong content
    path = client.download(archive, dest)
    assert file_md5(path) == archive.md5


@pytest.mark.parametrize("as_uri", [False, True])
def test_local_folder_mode(item, tmp_path: Path, as_uri: bool) -> None:
    folder = tmp_path / "tars"
    folder.mkdir()
    for archive in item.archives:
        shutil.copy(item.path(archive.name), folder / archive.name)
    (folder / "notes.txt").write_text("not an archive")
    client = OmacirClient(folder.as_uri() if as_uri else str(folder))
    archives = client.list_archives()
    assert [(a.name, a.size) for a in archives] == [(a.name, a.size) for a in item.archives]
    path = client.download(archives[0], tmp_path / "unused")
    assert path == folder / archives[0].name
    assert not (tmp_path / "unused").exists()  # used in place, not copied


def test_missing_local_folder_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="OMACIR_URL"):
        OmacirClient(str(tmp_path / "nowhere"))


def test_streams_every_regular_member(item) -> None:
    archive = item.archives[0]
    members = list(iter_tar_images(item.path(archive.name)))
    assert [m.name for m in members] == [m.name for m in archive.members]
    assert [len(m.data) for m in members] == [m.size for m in archive.members]
    assert len(list(iter_tar_images(item.path(archive.name), max_images=7))) == 7


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **fields: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if fields.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def test_unsafe_members_are_refused_and_reported(tmp_path: Path) -> None:
    tar_path = tmp_path / "album_covers_z.tar"
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "ok/first.jpg", b"fine")
        _add(tar, "../escape.jpg", b"evil")
        _add(tar, "ok/../../escape2.jpg", b"evil")
        _add(tar, "/etc/absolute.jpg", b"evil")
        _add(tar, "ok/link.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(tar, "ok/hard.jpg", type=tarfile.LNKTYPE, linkname="ok/first.jpg")
        _add(tar, "ok/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        _add(tar, "ok/fifo", type=tarfile.FIFOTYPE)
        _add(tar, "ok/huge.jpg", b"y" * 5_000)
        _add(tar, "ok/last.jpg", b"also fine")
    refused: list[tuple[str, str]] = []
    members = list(
        iter_tar_images(tar_path, max_member_bytes=1_000, on_refused=lambda n, r: refused.append((n, r)))
    )
    assert [(m.name, m.data) for m in members] == [("ok/first.jpg", b"fine"), ("ok/last.jpg", b"also fine")]
    assert dict(refused) == {
        "../escape.jpg": "parent_reference",
        "ok/../../escape2.jpg": "parent_reference",
        "/etc/absolute.jpg": "absolute_path",
        "ok/link.jpg": "symlink",
        "ok/hard.jpg": "hardlink",
        "ok/dev": "device",
        "ok/fifo": "fifo",
        "ok/huge.jpg": "too_large",
    }
    # Nothing was extracted anywhere.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["album_covers_z.tar", "cwd"]
    assert list((tmp_path / "cwd").iterdir()) == []
