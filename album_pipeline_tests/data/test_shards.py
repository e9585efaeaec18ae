from __future__ import annotations

import fcntl
import os
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps, JpegImagePlugin

from album_pipeline.data.shards import (
    SHARD_SET_FORMAT,
    ShardBuildOptions,
    ShardSet,
    build_shards,
    decode_image,
    load_shards,
    manifest_mismatches,
)
from album_pipeline.data.shards import decode as shard_decode
from album_pipeline.settings import PROGRESS_SECONDS_VAR
from album_pipeline.testing.shards import write_shard_set_from_arrays

GENRES = ("rock", "jazz", "pop")
COLUMNS = ["image_id", "path", "genre", "split"]


def _save(home: Path, name: str, image: Image.Image, format: str) -> str:
    path = home / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=format)
    return f"images/{name}"


def _noise_image(seed: int, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (size[1], size[0], channels) if channels else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def _covers(home: Path, names: str, genre: str | None = "rock", split: str = "train") -> pd.DataFrame:
    """One small PNG per letter of ``names``, image_id the letter; their manifest rows."""
    rows = [
        (name, _save(home, f"{name}.png", _noise_image(ord(name), (12, 10)), "PNG"), genre, split)
        for name in names
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _fitted(home: Path, relative: str, resolution: int) -> np.ndarray:
    with Image.open(home / relative) as source:
        return np.asarray(ImageOps.fit(source.convert("RGB"), (resolution, resolution)))


def _by_id(data: ShardSet) -> dict[str, np.ndarray]:
    return dict(zip(data.image_ids(), data.read_all(), strict=True))


def _listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.iterdir()}


@pytest.fixture
def home_with_images(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """Six images of different formats, modes and aspect ratios, labelled, unlabelled and off-list."""
    home = tmp_path / "home"
    rows = [
        ("a", _save(home, "a.png", _noise_image(1, (30, 20)), "PNG"), "jazz", "test"),
        ("b", _save(home, "b.png", _noise_image(2, (16, 16), "L"), "PNG"), None, "train"),
        ("c", _save(home, "c.gif", _noise_image(3, (24, 24)).convert("P"), "GIF"), "rock", "train"),
        ("d", _save(home, "d.png", _noise_image(4, (12, 40), "RGBA"), "PNG"), "reggae", "val"),
        ("e", _save(home, "e.png", _noise_image(5, (20, 20)), "PNG"), float("nan"), "train"),
        ("f", _save(home, "f.png", _noise_image(6, (9, 9)), "PNG"), "pop", "train"),
    ]
    return home, pd.DataFrame(rows, columns=COLUMNS)


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """The file names decode_image is called on (in-process builds)."""
    seen: list[str] = []
    original = shard_decode.decode_image

    def counting(path, resolution):
        seen.append(Path(path).name)
        return original(path, resolution)

    monkeypatch.setattr(shard_decode, "decode_image", counting)
    return seen


def test_round_trip_keeps_pixels_labels_ids_and_splits(home_with_images, tmp_path):
    home, manifest = home_with_images
    out_dir = tmp_path / "shards"
    build = build_shards(manifest, home, out_dir, GENRES, resolution=8, shard_size=4)
    assert (build.decoded, build.reused, build.copied, build.dropped_shards) == (6, 0, 0, 0)

    data = load_shards(out_dir)
    assert len(data) == 6 and data.resolution == 8 and data.genres == GENRES
    # Rows come ordered by split, labelled rows first within a split; the manifest order is kept otherwise.
    assert list(data.image_ids()) == ["c", "f", "b", "e", "d", "a"]
    assert list(data.splits()) == ["train", "train", "train", "train", "val", "test"]
    # rock, pop, unlabelled (None), unlabelled (NaN), reggae is not a training genre, jazz.
    assert data.labels.dtype == np.int64 and list(data.labels) == [0, 2, -1, -1, -1, 1]
    pixels = data.read_all()
    assert pixels.shape == (6, 8, 8, 3) and pixels.dtype == np.uint8
    paths = dict(zip(manifest["image_id"], manifest["path"], strict=True))
    for image_id, image in zip(data.image_ids(), pixels, strict=True):
        np.testing.assert_array_equal(image, _fitted(home, paths[image_id], 8))
    np.testing.assert_array_equal(build.shard_set.read_all(), pixels)

    # The documented layout: an index with its metadata, shards with their own record of their rows.
    index = pq.read_table(out_dir / "index.parquet")
    assert index.column_names == ["image_id", "split", "genre", "label", "shard", "row"]
    assert index.schema.field("label").type == pa.int64() and index.schema.field("shard").type == pa.int32()
    meta = index.schema.metadata
    assert meta[b"format"] == SHARD_SET_FORMAT.encode() and meta[b"resolution"] == b"8"
    assert meta[b"genres"] == b'["rock", "jazz", "pop"]'
    shard_dir = out_dir / "shards" / "r8"
    assert _listing(shard_dir) == [
        "shard-000000.ids.parquet",
        "shard-000000.npy",
        "shard-000001.ids.parquet",
        "shard-000001.npy",
    ]
    first = np.load(shard_dir / "shard-000000.npy")
    assert first.shape == (4, 8, 8, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, pixels[:4])
    assert pq.read_table(shard_dir / "shard-000000.ids.parquet")["image_id"].to_pylist() == [
        "c",
        "f",
        "b",
        "e",
    ]


def test_fit_crops_the_centre_of_wide_images(tmp_path):
    wide = Image.new("RGB", (60, 20))
    for index, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        wide.paste(color, (index * 20, 0, index * 20 + 20, 20))
    manifest = pd.DataFrame([("w", _save(tmp_path, "w.png", wide, "PNG"), "rock", "train")], columns=COLUMNS)
    data = build_shards(manifest, tmp_path, tmp_path / "shards", GENRES, resolution=8).shard_set
    # Only the green middle third survives the centre crop.
    np.testing.assert_array_equal(data.read_all()[0, 1:-1, 1:-1], np.full((6, 6, 3), (0, 255, 0), np.uint8))


def test_large_jpeg_takes_the_draft_path_and_stays_close_to_a_full_decode(tmp_path, monkeypatch):
    gradient = np.linspace(0, 255, 400, dtype=np.float32)
    pixels = np.stack(list(np.meshgrid(gradient, gradient[::-1])) + [np.full((400, 400), 128.0)], axis=-1)
    _save(tmp_path, "big.jpg", Image.fromarray(pixels.astype(np.uint8)), "JPEG")
    drafts: list[tuple] = []
    original = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(
        JpegImagePlugin.JpegImageFile,
        "draft",
        lambda image, mode, size: drafts.append((mode, size)) or original(image, mode, size),
    )
    decoded = decode_image(tmp_path / "images" / "big.jpg", 16)
    with Image.open(tmp_path / "images" / "big.jpg") as full:
        reference = np.asarray(ImageOps.fit(full.convert("RGB"), (16, 16)), dtype=np.float32)
    assert drafts == [("RGB", (16, 16))]
    assert decoded.shape == (16, 16, 3)
    assert np.abs(decoded.astype(np.float32) - reference).mean() < 3.0


def test_parallel_decode_matches_serial(home_with_images, tmp_path, decoded):
    home, manifest = home_with_images
    serial = build_shards(manifest, home, tmp_path / "serial", GENRES, resolution=8, workers=1)
    assert len(decoded) == 6
    # Three shards of two: three decode tasks, so both processes get work.
    parallel = build_shards(
        manifest, home, tmp_path / "parallel", GENRES, resolution=8, workers=2, shard_size=2
    )
    assert parallel.decoded == 6 and len(decoded) == 6  # the pool's processes decoded, not this one
    np.testing.assert_array_equal(serial.shard_set.read_all(), parallel.shard_set.read_all())
    np.testing.assert_array_equal(serial.shard_set.labels, parallel.shard_set.labels)
    assert list(serial.shard_set.image_ids()) == list(parallel.shard_set.image_ids())


def test_a_rebuild_decodes_only_new_images_and_leaves_existing_shards_untouched(tmp_path, decoded):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    first = _covers(home, "abcd")
    before = _by_id(build_shards(first, home, out_dir, GENRES, resolution=8, shard_size=2).shard_set)
    shard_dir = out_dir / "shards" / "r8"
    untouched = _stats(shard_dir)
    for relative in first["path"]:  # built images need their files no more
        (home / relative).unlink()
    decoded.clear()

    grown = pd.concat([first, _covers(home, "ef", genre="pop")], ignore_index=True)
    build = build_shards(grown, home, out_dir, GENRES, resolution=8, shard_size=2)
    assert decoded == ["e.png", "f.png"]
    assert (build.decoded, build.reused, build.dropped_shards) == (2, 4, 0)
    assert {name: _stats(shard_dir)[name] for name in untouched} == untouched
    assert sorted(set(_listing(shard_dir)) - set(untouched)) == [
        "shard-000002.ids.parquet",
        "shard-000002.npy",
    ]
    data = build.shard_set
    assert list(data.image_ids()) == list("abcdef") and list(data.labels) == [0, 0, 0, 0, 2, 2]
    after = _by_id(data)
    for image_id, pixels in before.items():
        np.testing.assert_array_equal(after[image_id], pixels)
    np.testing.assert_array_equal(after["e"], _fitted(home, grown["path"][4], 8))

    again = build_shards(grown, home, out_dir, GENRES, resolution=8, shard_size=2)
    assert (again.decoded, again.reused) == (0, 6) and decoded == ["e.png", "f.png"]


def test_a_build_reports_the_images_it_decodes_and_a_rebuild_with_nothing_new_stays_quiet(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(PROGRESS_SECONDS_VAR, "1e-9")  # a progress line at every update
    home, out_dir = tmp_path / "home", tmp_path / "unlabeled"
    covers = _covers(home, "abcdef")
    lines: list[str] = []
    build_shards(covers, home, out_dir, GENRES, resolution=8, shard_size=2, log=lines.append)
    assert lines[0] == "training shards unlabeled: decode: 0 of 6 images (0%)"
    assert [int(line.split(" of ")[0].rsplit(" ", 1)[1]) for line in lines] == [0, 2, 4, 6, 6]  # per chunk
    assert "images/s" in lines[1] and "left" in lines[1]
    assert lines[-1].startswith("training shards unlabeled: decode: done, 6 of 6 images (100%) in ")
    lines.clear()
    build_shards(covers, home, out_dir, GENRES, resolution=8, shard_size=2, log=lines.append)
    assert lines == []


def test_relabelling_and_resplitting_rewrite_only_the_index(tmp_path, decoded):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "abcd")
    before = _by_id(build_shards(manifest, home, out_dir, GENRES, resolution=8).shard_set)
    decoded.clear()

    changed = manifest.copy()
    changed.loc[0, "genre"] = "jazz"
    changed.loc[1, "genre"] = None
    changed.loc[2, "split"] = "val"
    build = build_shards(changed, home, out_dir, GENRES, resolution=8)
    assert decoded == [] and build.decoded == 0
    data = build.shard_set
    assert list(data.image_ids()) == ["a", "d", "b", "c"]
    assert list(data.labels) == [1, 0, -1, 0] and list(data.splits()) == ["train", "train", "train", "val"]
    assert {image_id: pixels.tobytes() for image_id, pixels in _by_id(data).items()} == {
        image_id: pixels.tobytes() for image_id, pixels in before.items()
    }
    # A new class order maps the labels anew, still without decoding.
    reordered = build_shards(changed, home, out_dir, ("pop", "jazz", "rock"), resolution=8).shard_set
    assert decoded == [] and list(reordered.labels) == [1, 2, -1, 2]


def test_removed_images_leave_the_index_and_dead_or_sparse_shards_go(tmp_path, decoded):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "abcdef")
    before = _by_id(build_shards(manifest, home, out_dir, GENRES, resolution=8, shard_size=3).shard_set)
    shard_dir = out_dir / "shards" / "r8"
    decoded.clear()

    # a, b, c filled shard 0: it goes whole.
    build = build_shards(manifest.iloc[3:], home, out_dir, GENRES, resolution=8, shard_size=3)
    assert (build.decoded, build.copied, build.dropped_shards) == (0, 0, 1)
    assert list(build.shard_set.image_ids()) == ["d", "e", "f"]
    assert _listing(shard_dir) == ["shard-000001.ids.parquet", "shard-000001.npy"]

    # One live row of three: shard 1 is compacted, its survivor copied (not decoded) into a new shard.
    build = build_shards(manifest.iloc[5:], home, out_dir, GENRES, resolution=8, shard_size=3)
    assert (build.decoded, build.reused, build.copied, build.dropped_shards) == (0, 1, 1, 1)
    assert decoded == []
    assert _listing(shard_dir) == ["shard-000002.ids.parquet", "shard-000002.npy"]
    np.testing.assert_array_equal(build.shard_set.read_all()[0], before["f"])


def test_a_build_that_dies_midway_keeps_the_previous_index_and_the_next_build_finishes(tmp_path, monkeypatch):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    first = _covers(home, "ab")
    before = build_shards(first, home, out_dir, GENRES, resolution=8, shard_size=2).shard_set.read_all()
    grown = pd.concat([first, _covers(home, "cde")], ignore_index=True)
    calls: list[str] = []
    original = shard_decode.decode_image

    def dies_on_the_third_image(path, resolution):
        calls.append(Path(path).name)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return original(path, resolution)

    monkeypatch.setattr(shard_decode, "decode_image", dies_on_the_third_image)
    with pytest.raises(RuntimeError, match="killed"):
        build_shards(grown, home, out_dir, GENRES, resolution=8, shard_size=2)
    previous = load_shards(out_dir)
    assert list(previous.image_ids()) == ["a", "b"]
    np.testing.assert_array_equal(previous.read_all(), before)
    shard_dir = out_dir / "shards" / "r8"
    # c and d made it into a complete shard, which the index does not name yet; e's shard was abandoned.
    assert "shard-000001.ids.parquet" in _listing(shard_dir)
    assert not [name for name in _listing(shard_dir) if name.endswith(".tmp")]

    # What a killed process leaves: a half-written temp, a shard without ids, ids without a shard.
    (shard_dir / ".shard-000007.npy.tmp").write_bytes(b"half")
    (shard_dir / "shard-000008.npy").write_bytes(b"orphan")
    pq.write_table(pa.table({"image_id": ["zz"]}), shard_dir / "shard-000009.ids.parquet")
    monkeypatch.setattr(shard_decode, "decode_image", original)
    build = build_shards(grown, home, out_dir, GENRES, resolution=8, shard_size=2)
    assert (build.decoded, build.reused) == (1, 4)  # only e; c and d come from the dead build's shard
    assert list(build.shard_set.image_ids()) == list("abcde")
    np.testing.assert_array_equal(build.shard_set.read_all()[:2], before)
    assert _listing(shard_dir) == [
        f"shard-0000{n:02d}.{kind}" for n in (0, 1, 10) for kind in ("ids.parquet", "npy")
    ]


def test_a_broken_image_fails_the_build_by_name_and_keeps_the_previous_shards(home_with_images, tmp_path):
    home, manifest = home_with_images
    out_dir = tmp_path / "shards"
    before = build_shards(manifest.iloc[:4], home, out_dir, GENRES, resolution=8).shard_set.read_all()
    (home / "images" / "e.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot decode image .*e.png"):
        build_shards(manifest, home, out_dir, GENRES, resolution=8)
    np.testing.assert_array_equal(load_shards(out_dir).read_all(), before)
    assert not [path for path in out_dir.rglob("*") if path.name.endswith(".tmp")]


def test_a_new_resolution_gets_its_own_shards_and_the_old_ones_go(home_with_images, tmp_path):
    home, manifest = home_with_images
    out_dir = tmp_path / "shards"
    build_shards(manifest, home, out_dir, GENRES, resolution=8)
    build = build_shards(manifest, home, out_dir, GENRES, resolution=4)
    assert (build.decoded, build.reused, build.dropped_shards) == (6, 0, 1)
    assert _listing(out_dir / "shards") == ["r4"]
    data = load_shards(out_dir)
    assert data.resolution == 4 and data.read_all().shape == (6, 4, 4, 3)
    np.testing.assert_array_equal(data.read_all()[-1], _fitted(home, manifest["path"][0], 4))


def test_bad_inputs_get_clear_errors(home_with_images, tmp_path):
    home, manifest = home_with_images
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="manifest is empty"):
        build_shards(manifest.iloc[:0], home, out_dir, GENRES)
    with pytest.raises(ValueError, match="lacks columns"):
        build_shards(manifest.drop(columns="split"), home, out_dir, GENRES)
    with pytest.raises(ValueError, match=r"unknown split values \['training'\]"):
        build_shards(manifest.assign(split="training"), home, out_dir, GENRES)
    with pytest.raises(ValueError, match="repeats 1 image_id"):
        build_shards(pd.concat([manifest, manifest.iloc[:1]]), home, out_dir, GENRES)
    with pytest.raises(ValueError, match="resolution must be positive"):
        build_shards(manifest, home, out_dir, GENRES, resolution=0)
    with pytest.raises(ValueError, match="shard_size must be at least 1"):
        build_shards(manifest, home, out_dir, GENRES, shard_size=0)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        build_shards(manifest, home, out_dir, GENRES, ShardBuildOptions(workers=0))
    (home / "images" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 6 manifest images to decode are missing"):
        build_shards(manifest, home, out_dir, GENRES)
    with pytest.raises(FileNotFoundError, match="no training shards"):
        load_shards(tmp_path / "nothing")
    assert not out_dir.exists()


def test_loading_refuses_missing_shards_and_the_old_packed_layout(home_with_images, tmp_path):
    home, manifest = home_with_images
    out_dir = tmp_path / "shards"
    build_shards(manifest, home, out_dir, GENRES, resolution=8, shard_size=4)
    (out_dir / "shards" / "r8" / "shard-000001.npy").unlink()
    with pytest.raises(FileNotFoundError, match="shard-000001.npy referenced by .* rematerialize"):
        load_shards(out_dir)

    # The single packed file this replaces: refused on load, cleared away by the next build.
    packed = tmp_path / "packed"
    packed.mkdir()
    np.save(packed / "images.npy", np.zeros((6, 8, 8, 3), np.uint8))
    (packed / "meta.json").write_text("{}")
    pq.write_table(pa.table({"image_id": list("abcdef")}), packed / "index.parquet")
    with pytest.raises(ValueError, match="older packed layout.*rematerialize the training-data asset"):
        load_shards(packed)
    build_shards(manifest, home, packed, GENRES, resolution=8)
    assert _listing(packed) == [".build.lock", "index.parquet", "shards"]
    assert len(load_shards(packed)) == 6


def test_one_build_at_a_time(home_with_images, tmp_path):
    home, manifest = home_with_images
    out_dir = tmp_path / "shards"
    out_dir.mkdir()
    with open(out_dir / ".build.lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another build is writing"):
            build_shards(manifest, home, out_dir, GENRES, resolution=8)


def test_subsets_select_rows_and_read_their_own_pixels(home_with_images, tmp_path):
    home, manifest = home_with_images
    data = build_shards(manifest, home, tmp_path / "shards", GENRES, resolution=8, shard_size=4).shard_set
    everything = _by_id(data)
    train = data.subset("train")
    assert list(train.image_ids()) == ["c", "f", "b", "e"]
    labelled_train = train.labelled()
    assert list(labelled_train.image_ids()) == ["c", "f"] and list(labelled_train.labels) == [0, 2]
    several = data.subset(["val", "test"])
    assert list(several.splits()) == ["val", "test"] and list(several.image_ids()) == ["d", "a"]
    assert list(data.labelled().image_ids()) == ["c", "f", "a"]
    for subset in (train, labelled_train, several, data.labelled()):
        for image_id, pixels in _by_id(subset).items():
            np.testing.assert_array_equal(pixels, everything[image_id])
    assert len(data.subset("val").labelled()) == 0 and data.subset("val").labelled().read_all().shape == (
        0,
        8,
        8,
        3,
    )
    with pytest.raises(ValueError, match="unknown split"):
        data.subset("training")


def _numbered(tmp_path: Path, count: int, shard_size: int) -> ShardSet:
    """Images whose pixels all equal their row number."""
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, 2, 2, 3))
    return write_shard_set_from_arrays(
        tmp_path / "numbered", images, np.zeros(count), GENRES, shard_size=shard_size
    )


def test_reads_come_in_the_order_asked_with_one_read_per_run(tmp_path, monkeypatch):
    data = _numbered(tmp_path, 10, shard_size=4)
    reads: list[int] = []
    original = os.preadv
    monkeypatch.setattr(
        os, "preadv", lambda fd, buffers, offset: reads.append(offset) or original(fd, buffers, offset)
    )

    def rows(asked):
        reads.clear()
        return data.read(np.array(asked))[:, 0, 0, 0].tolist()

    assert rows([0, 1, 2, 3]) == [0, 1, 2, 3] and len(reads) == 1
    assert rows([3, 2, 1, 0]) == [3, 2, 1, 0] and len(reads) == 1
    assert rows([2, 3, 4, 5, 9]) == [2, 3, 4, 5, 9] and len(reads) == 3  # shards 0, 1, 2
    assert rows([5, 0, 5]) == [5, 0, 5]
    assert data.read(np.array([], dtype=np.int64)).shape == (0, 2, 2, 3)


def test_a_loaded_set_is_a_snapshot_that_a_rebuild_does_not_disturb(tmp_path):
    home, out_dir = tmp_path / "home", tmp_path / "shards"
    manifest = _covers(home, "abcd")
    loaded = build_shards(manifest, home, out_dir, GENRES, resolution=8, shard_size=2).shard_set
    before = loaded.read_all()
    build = build_shards(manifest.iloc[2:], home, out_dir, GENRES, resolution=8, shard_size=2)
    assert build.dropped_shards == 1 and not (out_dir / "shards" / "r8" / "shard-000000.npy").exists()
    np.testing.assert_array_equal(loaded.read_all(), before)  # its files stay open, deleted or replaced
    assert list(loaded.image_ids()) == list("abcd")


def test_a_shard_set_holds_only_small_per_image_arrays(tmp_path):
    data = _numbered(tmp_path, 100, shard_size=30)
    arrays = [
        getattr(data, item.name) for item in fields(data) if isinstance(getattr(data, item.name), np.ndarray)
    ]
    assert all(array.dtype != object and len(array) == 100 for array in arrays)
    assert sum(array.itemsize for array in arrays) <= 25  # bytes per image, pixels and ids stay on disk
    assert not [
        value for value in vars(data).values() if isinstance(value, list | tuple) and len(value) == 100
    ]


def test_arrays_write_a_shard_set_and_fingerprints_follow_ids_labels_and_resolution(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9, 4, 4, 3), dtype=np.uint8)
    labels = [0, -1, 1, 2, 0, -1, 1, 2, 0]
    splits = ["test", "train", "train", "val", "train", "train", "test", "val", "train"]
    whole = write_shard_set_from_arrays(tmp_path / "a", images, labels, GENRES, splits=splits, shard_size=4)
    # Index order: split, labelled first; ids default to the input row.
    assert list(whole.image_ids()) == [f"image00000000{row}" for row in (2, 4, 8, 1, 5, 3, 7, 0, 6)]
    np.testing.assert_array_equal(whole.read_all(), images[[2, 4, 8, 1, 5, 3, 7, 0, 6]])
    assert list(whole.labels) == [1, 0, 0, -1, -1, 2, 2, 0, 1]

    chunked = write_shard_set_from_arrays(
        tmp_path / "b",
        iter([images[:2], images[2:7], images[7:]]),
        labels,
        GENRES,
        splits=splits,
        shard_size=3,
    )
    np.testing.assert_array_equal(chunked.read_all(), whole.read_all())
    assert chunked.fingerprint() == whole.fingerprint()  # content, not folder or shard layout
    relabelled = write_shard_set_from_arrays(tmp_path / "c", images, [1, *labels[1:]], GENRES, splits=splits)
    smaller = write_shard_set_from_arrays(tmp_path / "d", images[:, :2, :2], labels, GENRES, splits=splits)
    fingerprints = {whole.fingerprint(), relabelled.fingerprint(), smaller.fingerprint()}
    fingerprints |= {whole.subset("train").fingerprint(), whole.labelled().fingerprint()}
    assert len(fingerprints) == 5
    with pytest.raises(ValueError, match="labels describe"):
        write_shard_set_from_arrays(tmp_path / "e", images, labels[:5], GENRES)
    with pytest.raises(ValueError, match="uint8"):
        write_shard_set_from_arrays(tmp_path / "e", images.astype(np.float32), labels, GENRES)


def test_manifest_mismatches_name_what_differs(home_with_images, tmp_path):
    home, manifest = home_with_images
    data = build_shards(manifest, home, tmp_path / "shards", GENRES, resolution=8).shard_set
    assert manifest_mismatches(data, manifest["image_id"]) == []
    problems = manifest_mismatches(data, [*manifest["image_id"][1:], "x"])
    assert problems == [
        "1 manifest images missing from the index, e.g. ['x']",
        "1 index rows not in the manifest, e.g. ['a']",
    ]
    assert manifest_mismatches(data, manifest["image_id"][1:])[0] == "the index has 6 rows, the manifest 5"
