from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from album_pipeline.data import training_data
from album_pipeline.data.training_data import (
    PackedImages,
    iterate_batches,
    load_packed,
    pack_training_data,
)

GENRES = ("rock", "jazz", "pop")


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
    manifest = pd.DataFrame(rows, columns=["image_id", "path", "genre", "split"])
    return home, manifest


def test_pack_round_trip_keeps_pixels_labels_ids_and_splits(home_with_images, tmp_path):
    home, manifest = home_with_images
    packed = pack_training_data(manifest, home, tmp_path / "packed", GENRES, resolution=8)

    loaded = load_packed(tmp_path / "packed")
    assert isinstance(loaded.images, np.memmap)
    assert loaded.images.shape == (6, 8, 8, 3) and loaded.images.dtype == np.uint8
    assert loaded.genres == GENRES
    # Rows come ordered by split, labelled rows first within a split; the manifest order is kept otherwise.
    assert list(loaded.image_ids) == ["c", "f", "b", "e", "d", "a"]
    assert list(loaded.splits) == ["train", "train", "train", "train", "val", "test"]
    assert loaded.labels.dtype == np.int64
    # rock, pop, unlabelled (None), unlabelled (NaN), reggae is not a training genre, jazz.
    assert list(loaded.labels) == [0, 2, -1, -1, -1, 1]
    paths = dict(zip(manifest["image_id"], manifest["path"], strict=True))
    for row, image_id in enumerate(loaded.image_ids):
        with Image.open(home / paths[image_id]) as source:
            expected = np.asarray(ImageOps.fit(source.convert("RGB"), (8, 8)))
        np.testing.assert_array_equal(loaded.images[row], expected)
    np.testing.assert_array_equal(packed.images, loaded.images)
    meta = json.loads((tmp_path / "packed" / "meta.json").read_text())
    assert meta["resolution"] == 8 and meta["genres"] == list(GENRES) and meta["count"] == 6


def test_fit_crops_the_centre_of_wide_images(tmp_path):
    wide = Image.new("RGB", (60, 20))
    for index, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        wide.paste(color, (index * 20, 0, index * 20 + 20, 20))
    manifest = pd.DataFrame(
        [("w", _save(tmp_path, "w.png", wide, "PNG"), "rock", "train")],
        columns=["image_id", "path", "genre", "split"],
    )
    packed = pack_training_data(manifest, tmp_path, tmp_path / "packed", GENRES, resolution=8)
    # Only the green middle third survives the centre crop.
    np.testing.assert_array_equal(packed.images[0, 1:-1, 1:-1], np.full((6, 6, 3), (0, 255, 0), np.uint8))


def test_large_jpeg_takes_the_draft_path_and_stays_close_to_a_full_decode(tmp_path):
    gradient = np.linspace(0, 255, 400, dtype=np.float32)
    pixels = np.stack(list(np.meshgrid(gradient, gradient[::-1])) + [np.full((400, 400), 128.0)], axis=-1)
    _save(tmp_path, "big.jpg", Image.fromarray(pixels.astype(np.uint8)), "JPEG")
    decoded = training_data.decode_image(tmp_path / "images" / "big.jpg", 16)
    with Image.open(tmp_path / "images" / "big.jpg") as full:
        reference = np.asarray(ImageOps.fit(full.convert("RGB"), (16, 16)), dtype=np.float32)
    assert decoded.shape == (16, 16, 3)
    assert np.abs(decoded.astype(np.float32) - reference).mean() < 3.0


def test_parallel_decode_matches_serial(home_with_images, tmp_path, monkeypatch):
    home, manifest = home_with_images
    serial = pack_training_data(manifest, home, tmp_path / "serial", GENRES, resolution=8, workers=1)
    monkeypatch.setattr(training_data, "_CHUNK_SIZE", 2)  # three chunks, so two processes both get work
    parallel = pack_training_data(manifest, home, tmp_path / "parallel", GENRES, resolution=8, workers=2)
    np.testing.assert_array_equal(serial.images, parallel.images)
    np.testing.assert_array_equal(serial.labels, parallel.labels)


def test_a_failed_repack_leaves_the_previous_dataset_intact(home_with_images, tmp_path):
    home, manifest = home_with_images
    out_dir = tmp_path / "datasets" / "packed"
    before = pack_training_data(manifest, home, out_dir, GENRES, resolution=8)
    (home / "images" / "e.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot decode image .*e.png"):
        pack_training_data(manifest, home, out_dir, GENRES, resolution=8)
    after = load_packed(out_dir)
    np.testing.assert_array_equal(before.images, after.images)
    assert [path.name for path in out_dir.parent.iterdir()] == ["packed"]  # no staging left behind


def test_repacking_replaces_the_dataset(home_with_images, tmp_path):
    home, manifest = home_with_images
    out_dir = tmp_path / "datasets" / "packed"
    pack_training_data(manifest, home, out_dir, GENRES, resolution=8)
    smaller = pack_training_data(manifest.iloc[:2], home, out_dir, GENRES, resolution=4)
    assert len(load_packed(out_dir)) == len(smaller) == 2
    assert smaller.resolution == 4
    assert [path.name for path in out_dir.parent.iterdir()] == ["packed"]


def test_bad_inputs_get_clear_errors(home_with_images, tmp_path):
    home, manifest = home_with_images
    with pytest.raises(ValueError, match="manifest is empty"):
        pack_training_data(manifest.iloc[:0], home, tmp_path / "out", GENRES)
    with pytest.raises(ValueError, match="lacks columns"):
        pack_training_data(manifest.drop(columns="split"), home, tmp_path / "out", GENRES)
    (home / "images" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 6 manifest images are missing"):
        pack_training_data(manifest, home, tmp_path / "out", GENRES)
    with pytest.raises(FileNotFoundError, match="no packed training data"):
        load_packed(tmp_path / "nothing")
    assert not (tmp_path / "out").exists()


def _indexed_dataset(count: int, labelled_every: int = 1) -> PackedImages:
    """Images whose pixels all equal their row number, so batches can be traced back to rows."""
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, 4, 4, 3)).copy()
    labels = np.where(np.arange(count) % labelled_every == 0, np.arange(count) % 3, -1).astype(np.int64)
    splits = np.array(["train"] * (count - 4) + ["val"] * 2 + ["test"] * 2, dtype=object)
    ids = np.array([f"id{row}" for row in range(count)], dtype=object)
    return PackedImages(images, labels, ids, splits, GENRES)


def _rows(images: torch.Tensor) -> list[int]:
    return ((images[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()


def test_batches_have_the_training_shapes_ranges_and_labels():
    data = _indexed_dataset(20)
    images, labels = next(iterate_batches(data, 8, device="cpu", seed=0))
    assert images.shape == (8, 3, 4, 4) and images.dtype == torch.float32 and images.is_contiguous()
    assert labels.shape == (8,) and labels.dtype == torch.long
    assert images.min() >= -1 and images.max() <= 1
    assert labels.tolist() == [data.labels[row] for row in _rows(images)]
    # Every pixel of an image carries its row, so all channels and positions agree after conversion.
    assert torch.equal(images, images[:, :1, :1, :1].expand_as(images))


def test_batches_shuffle_every_epoch_deterministically():
    data = _indexed_dataset(20)
    stream = iterate_batches(data, 5, device="cpu", seed=7)
    epochs = [sum((_rows(next(stream)[0]) for _ in range(4)), []) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(20))  # each row once per epoch
    assert epochs[0] != epochs[1] and epochs[0] != list(range(20))
    again = iterate_batches(data, 5, device="cpu", seed=7)
    assert _rows(next(again)[0]) == epochs[0][:5]
    other = iterate_batches(data, 5, device="cpu", seed=8)
    assert sum((_rows(next(other)[0]) for _ in range(4)), []) != epochs[0]


def test_drop_last_and_small_datasets():
    data = _indexed_dataset(10)
    kept = iterate_batches(data, 4, device="cpu", seed=0)
    assert [len(next(kept)[0]) for _ in range(3)] == [4, 4, 4]  # 2 of 10 rows wait for the next epoch
    partial = iterate_batches(data, 4, device="cpu", seed=0, drop_last=False)
    assert [len(next(partial)[0]) for _ in range(3)] == [4, 4, 2]
    with pytest.raises(ValueError, match="fewer than one batch"):
        next(iterate_batches(data, 11, device="cpu", seed=0))


def test_channels_last_batches_are_channels_last_in_memory():
    images, _ = next(iterate_batches(_indexed_dataset(8), 4, device="cpu", seed=0, channels_last=True))
    assert images.is_contiguous(memory_format=torch.channels_last)


class _RecordingImages:
    """Stands in for the memory map and records how many rows each read asks for."""

    def __init__(self, images: np.ndarray):
        self._images = images
        self.shape = images.shape
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, rows):
        self.reads.append(len(np.arange(len(self._images))[rows]))
        return self._images[rows]


def test_batches_read_only_their_own_rows():
    base = _indexed_dataset(64)
    recording = _RecordingImages(base.images)
    data = PackedImages(recording, base.labels, base.image_ids, base.splits, GENRES)
    stream = iterate_batches(data, 8, device="cpu", seed=0)
    for _ in range(12):
        next(stream)
    assert recording.reads == [8] * 12


def test_subsets_stay_memory_mapped(tmp_path, home_with_images):
    home, manifest = home_with_images
    pack_training_data(manifest, home, tmp_path / "packed", GENRES, resolution=8)
    data = load_packed(tmp_path / "packed")
    train = data.subset("train")
    assert list(train.image_ids) == ["c", "f", "b", "e"]
    assert isinstance(train.images, np.memmap)  # a contiguous slice, not a copy
    labelled_train = train.labelled()
    assert list(labelled_train.labels) == [0, 2] and isinstance(labelled_train.images, np.memmap)
    several = data.subset(["val", "test"])
    assert list(several.splits) == ["val", "test"]
    # A non-contiguous selection still works (as a copy).
    assert list(data.labelled().image_ids) == ["c", "f", "a"]
    with pytest.raises(ValueError, match="unknown split"):
        data.subset("training")
