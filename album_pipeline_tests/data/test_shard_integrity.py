"""Shards that cannot be silently wrong (issue 11): checksums verified on reuse, manifest paths kept in the home."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from album_pipeline.data.shards import build_shards, load_shards
from album_pipeline.data.shards.format import CHECKSUM_KEY
from album_pipeline.testing.shards import write_shard_set_from_arrays

GENRES = ("rock", "jazz")
COLUMNS = ["image_id", "path", "genre", "split"]


def _covers(home: Path, names: str) -> pd.DataFrame:
    """One small noise PNG per letter of ``names`` (image_id the letter), and their manifest rows."""
    rows = []
    for name in names:
        path = home / "images" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(ord(name)).integers(0, 256, (10, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        rows.append((name, f"images/{name}.png", "rock", "train"))
    return pd.DataFrame(rows, columns=COLUMNS)


def _pixels(data) -> dict[str, np.ndarray]:
    return dict(zip(data.image_ids(), data.read_all(), strict=True))


def _zero_middle(path: Path, count: int) -> None:
    """Zero ``count`` bytes in the middle of a file, in place, as a failing disk or a stray dd would."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(bytes(count))


def test_a_shard_records_the_checksum_of_its_file(tmp_path):
    data = write_shard_set_from_arrays(
        tmp_path / "set", np.full((3, 4, 4, 3), 7, np.uint8), [0, 1, 0], GENRES, shard_size=2
    )
    shard_dir = data.folder / "shards" / "r4"
    for number in (0, 1):
        metadata = pq.read_schema(shard_dir / f"shard-{number:06d}.ids.parquet").metadata
        assert len(metadata[CHECKSUM_KEY]) == 64  # hex sha256


def test_a_damaged_shard_is_decoded_again_not_reused(tmp_path):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "abcd")
    before = _pixels(build_shards(manifest, home, out_dir, GENRES, resolution=16, shard_size=2).shard_set)
    damaged = out_dir / "shards" / "r16" / "shard-000001.npy"
    _zero_middle(damaged, 200)
    warnings: list[str] = []

    build = build_shards(manifest, home, out_dir, GENRES, resolution=16, shard_size=2, warn=warnings.append)

    assert (build.decoded, build.reused, build.damaged_shards) == (2, 2, 1)
    assert len(warnings) == 1 and "shard-000001.npy" in warnings[0] and "checksum" in warnings[0]
    assert not damaged.exists()  # replaced by a fresh shard, then dropped with the commit
    after = _pixels(build.shard_set)
    for image_id, pixels in before.items():
        np.testing.assert_array_equal(after[image_id], pixels)
    again = build_shards(manifest, home, out_dir, GENRES, resolution=16, shard_size=2, warn=warnings.append)
    assert (again.decoded, again.reused, len(warnings)) == (0, 4, 1)


def test_a_damaged_shard_whose_images_are_gone_fails_the_build_and_keeps_the_index(tmp_path):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "ab")
    build_shards(manifest, home, out_dir, GENRES, resolution=16)
    index = (out_dir / "index.parquet").read_bytes()
    _zero_middle(out_dir / "shards" / "r16" / "shard-000000.npy", 10)
    for relative in manifest["path"]:
        (home / relative).unlink()
    with pytest.raises(FileNotFoundError, match="2 of 2 manifest images to decode are missing"):
        build_shards(manifest, home, out_dir, GENRES, resolution=16, warn=lambda message: None)
    assert (out_dir / "index.parquet").read_bytes() == index


def test_a_truncated_shard_is_decoded_again_with_a_warning(tmp_path):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "abc")
    build_shards(manifest, home, out_dir, GENRES, resolution=8, shard_size=2)
    shard = out_dir / "shards" / "r8" / "shard-000001.npy"
    os.truncate(shard, shard.stat().st_size - 10)
    warnings: list[str] = []
    build = build_shards(manifest, home, out_dir, GENRES, resolution=8, shard_size=2, warn=warnings.append)
    assert (build.decoded, build.reused, build.damaged_shards) == (1, 2, 1)
    assert len(warnings) == 1 and "shard-000001.npy is truncated" in warnings[0]


def test_shards_written_before_checksums_still_open_and_are_decoded_again_once(tmp_path):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "abc")
    build_shards(manifest, home, out_dir, GENRES, resolution=8)
    sidecar = out_dir / "shards" / "r8" / "shard-000000.ids.parquet"
    pq.write_table(
        pq.read_table(sidecar).replace_schema_metadata(None), sidecar
    )  # as an older build wrote it
    assert len(load_shards(out_dir)) == 3
    warnings: list[str] = []

    build = build_shards(manifest, home, out_dir, GENRES, resolution=8, warn=warnings.append)

    assert (build.decoded, build.reused, build.damaged_shards) == (3, 0, 1)
    assert "before shards carried checksums" in warnings[0]
    again = build_shards(manifest, home, out_dir, GENRES, resolution=8, warn=warnings.append)
    assert (again.decoded, again.reused, len(warnings)) == (0, 3, 1)


@pytest.mark.parametrize("change", ["truncate", "extend"])
def test_opening_refuses_a_shard_whose_size_does_not_match_its_header(tmp_path, change):
    data = write_shard_set_from_arrays(tmp_path / "set", np.zeros((2, 4, 4, 3), np.uint8), [0, 1], GENRES)
    shard = data.folder / "shards" / "r4" / "shard-000000.npy"
    size = shard.stat().st_size
    os.truncate(shard, size - 1 if change == "truncate" else size + 5)
    shown = "is truncated" if change == "truncate" else "has 5 bytes after its last row"
    with pytest.raises(ValueError, match=f"{shown}; rematerialize the training-data asset"):
        load_shards(data.folder)


@pytest.mark.parametrize("escape", ["../outside.png", "absolute", "symlink", "symlinked folder"])
def test_a_manifest_path_outside_the_home_is_refused_by_row(tmp_path, escape):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "ab")
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8), "white").save(outside)
    if escape == "absolute":
        path = str(outside)
    elif escape == "symlink":
        (home / "images" / "link.png").symlink_to(outside)
        path = "images/link.png"
    elif escape == "symlinked folder":
        (home / "images" / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
        path = "images/elsewhere/outside.png"
    else:
        path = escape
    manifest.loc[1, "path"] = path

    with pytest.raises(ValueError) as refused:
        build_shards(manifest, home, out_dir, GENRES, resolution=8)

    message = str(refused.value)
    assert "image_id b" in message and repr(path) in message and "rebuild the manifest" in message
    assert "outside the pipeline home" in message
    assert not out_dir.exists()  # nothing read, nothing written


@pytest.mark.parametrize("path", ["../../etc/hostname", "/etc/hostname"])
def test_an_escaping_path_is_refused_even_when_its_shard_would_be_reused(tmp_path, path):
    """Issue 11 probe, rerun on a finished home: the row's image is already in a shard, so nothing would be
    read from outside, but a manifest naming such a path was not written by this pipeline."""
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "ab")
    build_shards(manifest, home, out_dir, GENRES, resolution=8)
    manifest.loc[1, "path"] = path

    with pytest.raises(ValueError, match="outside the pipeline home.*rebuild the manifest") as refused:
        build_shards(manifest, home, out_dir, GENRES, resolution=8)
    assert repr(path) in str(refused.value)


def test_a_symlink_that_stays_in_the_home_is_followed(tmp_path):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "ab")
    (home / "images" / "alias.png").symlink_to(home / "images" / "a.png")
    manifest.loc[1, "path"] = "images/alias.png"
    data = build_shards(manifest, home, out_dir, GENRES, resolution=8).shard_set
    pixels = _pixels(data)
    np.testing.assert_array_equal(pixels["a"], pixels["b"])
