"""The OMACIR ingest (choose, download, extract, merge) against the archive.org emulator."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from album_pipeline.data.manifest import MANIFEST_SCHEMA, read_manifest, read_manifest_table
from album_pipeline.data.storage import ImageStore
from album_pipeline.layout import HomeLayout
from album_pipeline.settings import PROGRESS_SECONDS_VAR
from album_pipeline.sources.http import make_session
from album_pipeline.sources.omacir import OmacirClient
from album_pipeline.testing.emulators.archive import ArchiveEmulator
from album_pipeline.testing.emulators.omacir_item import OmacirItem
from album_pipeline_tests.data.near_duplicate_truth import archive_picture_hashes, checked_look_alikes
from album_pipeline_tests.data.omacir_ingest import ingest_omacir


@pytest.fixture(scope="module")
def item(tmp_path_factory: pytest.TempPathFactory) -> OmacirItem:
    return OmacirItem.build(
        tmp_path_factory.mktemp("omacir"), letters=("a", "b"), images_per_archive=60, seed=7
    )


@pytest.fixture(scope="module")
def archive_server(item: OmacirItem) -> Iterator[ArchiveEmulator]:
    with ArchiveEmulator(item) as server:
        yield server


def _omacir(server: ArchiveEmulator) -> OmacirClient:
    return OmacirClient(
        server.url,
        session=make_session(backoff_factor=0),
        timeout=10,
        allowed_download_hosts=server.download_hosts,
    )


def test_omacir_rows_are_the_valid_unique_images(archive_server, item, tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    messages: list[str] = []
    result = ingest_omacir(_omacir(archive_server), tmp_path, log=messages.append)
    truth = {f"{a.name}/{m.name}": m for a in item.archives for m in a.members}
    kept_kinds = {"cover", "png", "gif"}
    assert list(result.rows.columns) == MANIFEST_SCHEMA.names
    valid = {k for k, m in truth.items() if m.kind in kept_kinds}
    look_alikes = checked_look_alikes(result.rows, result.failures, archive_picture_hashes(item, valid))
    assert sorted(result.rows["source_id"]) == sorted(valid - look_alikes) and len(look_alikes) <= 2
    failures = dict(zip(result.failures["source_id"], result.failures["reason"], strict=True))
    for row in result.rows.itertuples():
        member = truth[row.source_id]
        assert (row.width, row.height, row.format) == (member.width, member.height, member.format)
        assert row.archive == row.source_id.split("/")[0] and row.member == member.name
        assert store.absolute(row.path).stat().st_size == member.size
        # No genre: null (NaN in pandas' string dtype, as the pipeline reads the extractions back from disk).
        assert pd.isna(row.genre) and row.source == "omacir" and row.split in ("train", "val", "test")
    expected_reasons = {"placeholder": "placeholder", "tiny": "too_small", "non_image": "not_an_image"}
    assert {k: r for k, r in failures.items() if k not in look_alikes} == {
        k: expected_reasons[m.kind] for k, m in truth.items() if m.kind in expected_reasons
    }
    assert result.stats["placeholder_pictures"] == 1
    assert result.stats["bytes_downloaded"] == item.total_size()
    assert result.stats["rows_per_archive"] == {
        a.name: sum(f"{a.name}/{m.name}" in valid - look_alikes for m in a.members) for a in item.archives
    }
    layout = HomeLayout(tmp_path)  # the manifest and its failures are written, and read back as they were
    assert list(read_manifest_table(layout.unlabeled_manifest)["image_id"].to_pylist()) == list(
        result.rows["image_id"]
    )
    assert len(read_manifest(layout.unlabeled_failures)) == len(result.failures)
    assert any("MB/s" in message and "valid" in message for message in messages)  # per-archive progress
    for archive in item.archives:  # each download and extraction starts and ends a progress report
        for step in ("download", "extract"):
            reports = [line for line in messages if line.startswith(f"omacir: {step} {archive.name}: ")]
            assert reports[0].startswith(f"omacir: {step} {archive.name}: 0B of ")
            assert reports[-1].startswith(f"omacir: {step} {archive.name}: done, ")
    # A rerun finds the archives complete and downloads nothing.
    before = len(archive_server.requests)
    again = ingest_omacir(_omacir(archive_server), tmp_path)
    assert again.stats["bytes_downloaded"] == 0
    assert [r.path for r in archive_server.requests[before:]] == ["/metadata/audio-covers"]
    assert list(again.rows["image_id"]) == list(result.rows["image_id"])


def test_omacir_keeps_the_first_max_images_of_the_archives_named(archive_server, item, tmp_path) -> None:
    whole = ingest_omacir(_omacir(archive_server), tmp_path, archives=["b"])
    capped = ingest_omacir(_omacir(archive_server), tmp_path, archives=["b"], max_images=10)
    assert list(capped.rows["source_id"]) == list(whole.rows["source_id"])[:10]
    assert set(capped.rows["archive"]) == {"album_covers_b.tar"}
    assert capped.stats["left_out_by_max_images"] == len(whole.rows) - 10
    assert not (HomeLayout(tmp_path).omacir_downloads_dir / "album_covers_a.tar").exists()
    with pytest.raises(ValueError, match="album_covers_a.tar"):
        ingest_omacir(_omacir(archive_server), tmp_path, archives=["q"])


def test_omacir_local_folder_and_unsafe_members(item, tmp_path: Path) -> None:
    folder = tmp_path / "tars"
    folder.mkdir()
    shutil.copy(item.path("album_covers_a.tar"), folder / "album_covers_a.tar")
    whole_b = item.path("album_covers_b.tar").read_bytes()
    (folder / "album_covers_b.tar").write_bytes(whole_b[: len(whole_b) // 2])  # a damaged archive
    with tarfile.open(folder / "album_covers_z.tar", "w") as tar:
        link = tarfile.TarInfo("album_covers_z/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    result = ingest_omacir(OmacirClient(str(folder)), tmp_path)
    failures = dict(zip(result.failures["source_id"], result.failures["reason"], strict=True))
    assert failures["album_covers_z.tar/album_covers_z/link.jpg"] == "unsafe_member:symlink"
    # The damaged archive keeps the images read before the damage and is reported; the run goes on.
    assert failures["album_covers_b.tar"] == "archive_unreadable"
    per_archive = result.stats["rows_per_archive"]
    assert (
        per_archive["album_covers_a.tar"] > 0
        and 0 < per_archive["album_covers_b.tar"] < per_archive["album_covers_a.tar"]
    )
    # Two placeholder copies in one archive stay under the default threshold of three: one row, one duplicate.
    placeholders = [m.name for m in item.archive("album_covers_a.tar").members if m.kind == "placeholder"]
    assert len(placeholders) == 2
    assert sorted(failures.get(f"album_covers_a.tar/{n}", "kept") for n in placeholders) == [
        "duplicate",
        "kept",
    ]
    assert result.stats["bytes_downloaded"] == 0


def test_free_disk_check_gives_the_numbers(tmp_path: Path, monkeypatch) -> None:
    import shutil as shutil_module

    from album_pipeline.data.unlabeled import InsufficientDiskSpace, ensure_free_space

    ensure_free_space(tmp_path, 1, "a tiny thing")
    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(
        "album_pipeline.data.unlabeled.archives.shutil.disk_usage",
        lambda _: usage._replace(free=3_000_000_000),
    )
    with pytest.raises(InsufficientDiskSpace, match=r"needs 12\.00 GB but only 3\.00 GB is free"):
        ensure_free_space(tmp_path / "not" / "yet", 12_000_000_000, "album_covers_s.tar")


def test_gif_and_png_are_kept_or_converted_to_jpeg_as_configured(item, tmp_path: Path) -> None:
    from PIL import Image

    from album_pipeline.data.unlabeled import ExtractOptions, extract_archive

    tar = item.path("album_covers_a.tar")
    kept = extract_archive(tar, "album_covers_a.tar", ImageStore(tmp_path / "kept"))
    converted = extract_archive(
        tar, "album_covers_a.tar", ImageStore(tmp_path / "jpeg"), ExtractOptions(convert_to_jpeg=True)
    )
    assert {"PNG", "GIF"} <= set(kept.rows["format"])
    assert set(converted.rows["format"]) == {"JPEG"}
    assert list(converted.rows["source_id"]) == list(kept.rows["source_id"])
    for row in converted.rows.itertuples():
        with Image.open(ImageStore(tmp_path / "jpeg").absolute(row.path)) as image:
            assert image.format == "JPEG" and image.size == (row.width, row.height)


def test_progress_bar_shows_on_request(item, tmp_path: Path, capsys, monkeypatch) -> None:
    from album_pipeline.data.unlabeled import extract_archive

    monkeypatch.setenv(PROGRESS_SECONDS_VAR, "1e-9")  # a progress line at every update
    lines: list[str] = []
    extract_archive(
        item.path("album_covers_b.tar"),
        "album_covers_b.tar",
        ImageStore(tmp_path),
        progress_bar=True,
        log=lines.append,
    )
    assert "extract album_covers_b.tar" in capsys.readouterr().err
    reports = [line for line in lines if line.startswith("omacir: extract album_covers_b.tar: ")]
    assert len(reports) > 3 and all("members read" in line and "valid" in line for line in reports)
    assert "MB/s" in reports[2] and "left" in reports[2]
    extract_archive(
        item.path("album_covers_b.tar"), "album_covers_b.tar", ImageStore(tmp_path), progress_bar=False
    )
    assert capsys.readouterr().err == ""


def _damage(path: Path) -> bytes:
    damaged = path.read_bytes()[:40]
    path.write_bytes(damaged)
    return damaged


@pytest.mark.parametrize("record", ["summary", "images", "failures"])
def test_a_damaged_extraction_record_is_set_aside_and_the_archive_extracted_again(
    archive_server, tmp_path, record
) -> None:
    from album_pipeline.data.unlabeled.extraction import OMACIR
    from album_pipeline.recovery import unreadable_copies

    layout, name = HomeLayout(tmp_path), "album_covers_a.tar"
    first = ingest_omacir(_omacir(archive_server), tmp_path, archives=["a"])
    path = {
        "summary": layout.extracted_summary(OMACIR, name),
        "images": layout.extracted_images(OMACIR, name),
        "failures": layout.extracted_failures(OMACIR, name),
    }[record]
    damaged = _damage(path)
    messages: list[str] = []
    warnings: list[str] = []
    again = ingest_omacir(
        _omacir(archive_server), tmp_path, archives=["a"], log=messages.append, warn=warnings.append
    )
    assert list(again.rows["image_id"]) == list(first.rows["image_id"])
    assert [copy.read_bytes() for copy in unreadable_copies(path)] == [damaged]
    # A set-aside record is a warning (Dagster shows it as one), not one more progress line.
    assert any("could not be read" in message for message in warnings)
    assert not any("could not be read" in message for message in messages)
    assert not any("reusing it" in message for message in messages)


def test_a_garbage_archive_listing_is_set_aside_and_asks_for_omacir_archives(
    archive_server, tmp_path
) -> None:
    from album_pipeline.data.unlabeled import ingest_archives
    from album_pipeline.recovery import unreadable_copies

    layout = HomeLayout(tmp_path)
    ingest_omacir(_omacir(archive_server), tmp_path, archives=["a"])
    layout.omacir_listing.write_text("{not json")
    with pytest.raises(FileNotFoundError, match="materialize omacir_archives"):
        ingest_archives(_omacir(archive_server), layout)
    assert unreadable_copies(layout.omacir_listing) and not layout.omacir_listing.exists()


def test_an_unreadable_input_of_the_merge_names_the_file_and_the_asset(archive_server, tmp_path) -> None:
    from album_pipeline.data.manifest import UnreadableTableError
    from album_pipeline.data.unlabeled import build_unlabeled_manifest

    layout = HomeLayout(tmp_path)
    ingest_omacir(_omacir(archive_server), tmp_path, archives=["a"])
    _damage(layout.labeled_manifest.parent / "unlabeled.parquet")  # the merge's output: rewritten, not read
    layout.labeled_manifest.write_bytes(b"PAR1 truncated")
    with pytest.raises(UnreadableTableError, match=r"labeled\.parquet.*--select labeled_manifest"):
        build_unlabeled_manifest(layout)
    layout.labeled_manifest.unlink()
    build_unlabeled_manifest(layout)  # rewrites the damaged unlabelled manifest
    table = layout.extracted_images("omacir", "album_covers_a.tar")
    _damage(table)
    with pytest.raises(UnreadableTableError, match=r"album_covers_a\.tar\.parquet.*omacir_archive_images"):
        build_unlabeled_manifest(layout)
