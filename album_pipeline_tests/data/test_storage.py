"""Content-addressed, atomic image storage."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from album_pipeline.data.storage import ImageStore
from album_pipeline.layout import HomeLayout


def test_put_names_files_by_sha256_under_images(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    data = b"\xff\xd8\xff fake jpeg bytes"
    stored = store.put(data, "jpg")
    expected_id = hashlib.sha256(data).hexdigest()
    assert stored.image_id == expected_id
    assert stored.path == f"images/{expected_id[:2]}/{expected_id}.jpg"
    assert stored.written
    assert (tmp_path / stored.path).read_bytes() == data
    assert store.absolute(stored.path) == (tmp_path / stored.path).resolve()
    assert (tmp_path / stored.path).parent.parent == HomeLayout(tmp_path).images_dir


def test_same_bytes_are_stored_once_and_not_rewritten(tmp_path: Path) -> None:
    store = ImageStore(HomeLayout(tmp_path))
    first = store.put(b"picture", ".PNG")
    target = tmp_path / first.path
    before = target.stat().st_mtime_ns
    os.utime(target, ns=(before - 10**9, before - 10**9))
    second = store.put(b"picture", "png")
    assert second == type(second)(image_id=first.image_id, path=first.path, written=False)
    assert target.stat().st_mtime_ns == before - 10**9  # untouched
    assert len(list(store.images_dir.rglob("*"))) == 2  # one folder, one file


def test_contains_and_find(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    stored = store.put(b"abc", "gif")
    assert store.contains(stored.image_id)
    assert store.find(stored.image_id) == stored.path
    other = hashlib.sha256(b"other").hexdigest()
    assert not store.contains(other)
    with pytest.raises(ValueError, match="SHA-256"):
        store.contains("../../etc")


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ImageStore(tmp_path)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"never lands", "jpg")
    assert [p for p in store.images_dir.rglob("*") if p.is_file()] == []


def test_refuses_bad_extensions_empty_data_and_escaping_paths(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(ValueError, match="extension"):
        store.put(b"x", "j/pg")
    with pytest.raises(ValueError, match="empty"):
        store.put(b"", "jpg")
    with pytest.raises(ValueError, match="outside"):
        store.absolute("../elsewhere.jpg")


def test_manifest_paths_may_not_leave_the_home_by_absolute_path_dots_or_symlink(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = ImageStore(home)
    (home / "images" / "ab").mkdir(parents=True)
    (home / "images" / "ab" / "inside.jpg").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"x")
    (home / "images" / "ab" / "link.jpg").symlink_to(tmp_path / "secret")
    (home / "images" / "out").symlink_to(tmp_path, target_is_directory=True)
    (home / "images" / "alias.jpg").symlink_to(home / "images" / "ab" / "inside.jpg")
    escaping = [
        "/etc/hostname",
        "../secret",
        "images/../../secret",
        "images/ab/link.jpg",
        "images/out/secret",
    ]
    staying = ["images/ab/inside.jpg", "images/alias.jpg", "images/ab/../ab/inside.jpg", "images/new.jpg"]
    for path in escaping:
        with pytest.raises(ValueError, match="outside the pipeline home.*rebuild the manifest"):
            store.absolute(path)
    paths, outside = store.confined_paths([*escaping, *staying, None])
    assert outside == list(range(len(escaping)))
    assert paths[len(escaping) :] == [*(str(store.absolute(path)) for path in staying), ""]
