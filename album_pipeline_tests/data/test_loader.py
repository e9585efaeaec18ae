from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from album_pipeline.data.loader import iterate_batches
from album_pipeline.data.shards import ShardSet
from album_pipeline.testing.shards import write_shard_set_from_arrays

GENRES = ("rock", "jazz", "pop")


def _indexed(folder: Path, count: int, side: int = 4, shard_size: int = 7) -> ShardSet:
    """Images whose pixels all equal their row number, so batches can be traced back to rows.

    Every image is labelled and the splits come in index order, so the set keeps the rows as given.
    """
    images = np.broadcast_to(
        (np.arange(count) % 256).astype(np.uint8)[:, None, None, None], (count, side, side, 3)
    )
    splits = ["train"] * (count - 4) + ["val"] * 2 + ["test"] * 2
    labels = np.arange(count) % len(GENRES)
    return write_shard_set_from_arrays(folder, images, labels, GENRES, splits=splits, shard_size=shard_size)


def _rows(images: torch.Tensor) -> list[int]:
    return ((images[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()


def _reader_threads() -> int:
    return sum(thread.name == "shard-batch-reader" for thread in threading.enumerate())


def test_batches_have_the_training_shapes_ranges_and_labels(tmp_path):
    data = _indexed(tmp_path, 20)
    images, labels = next(iterate_batches(data, 8, device="cpu", seed=0))
    assert images.shape == (8, 3, 4, 4) and images.dtype == torch.float32 and images.is_contiguous()
    assert labels.shape == (8,) and labels.dtype == torch.long
    assert images.min() >= -1 and images.max() <= 1
    assert _rows(images) == sorted(_rows(images))  # rows sorted within a batch, for sequential reads
    assert labels.tolist() == [data.labels[row] for row in _rows(images)]
    # Every pixel of an image carries its row, so all channels and positions agree after conversion.
    assert torch.equal(images, images[:, :1, :1, :1].expand_as(images))


def test_batches_shuffle_every_epoch_deterministically(tmp_path):
    data = _indexed(tmp_path, 20)
    stream = iterate_batches(data, 5, device="cpu", seed=7)
    epochs = [sum((_rows(next(stream)[0]) for _ in range(4)), []) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(20))  # each row once per epoch
    assert epochs[0] != epochs[1] and epochs[0] != list(range(20))
    again = iterate_batches(data, 5, device="cpu", seed=7)
    assert _rows(next(again)[0]) == epochs[0][:5]
    other = iterate_batches(data, 5, device="cpu", seed=8)
    assert sum((_rows(next(other)[0]) for _ in range(4)), []) != epochs[0]


def test_prefetching_does_not_change_the_sequence(tmp_path):
    data = _indexed(tmp_path, 23)
    sequences = []
    for prefetch in (0, 1, 3):
        stream = iterate_batches(data, 6, device="cpu", seed=3, prefetch=prefetch, drop_last=False)
        sequences.append(
            [(_rows(images), labels.tolist()) for images, labels in (next(stream) for _ in range(13))]
        )
        stream.close()
    assert sequences[0] == sequences[1] == sequences[2]


def test_drop_last_and_small_datasets(tmp_path):
    data = _indexed(tmp_path, 10)
    kept = iterate_batches(data, 4, device="cpu", seed=0)
    assert [len(next(kept)[0]) for _ in range(3)] == [4, 4, 4]  # 2 of 10 rows wait for the next epoch
    partial = iterate_batches(data, 4, device="cpu", seed=0, drop_last=False)
    assert [len(next(partial)[0]) for _ in range(3)] == [4, 4, 2]
    with pytest.raises(ValueError, match="fewer than one batch"):
        iterate_batches(data, 11, device="cpu", seed=0)  # refused at once, not at the first batch
    with pytest.raises(ValueError, match="empty dataset"):
        iterate_batches(data.subset("val").labelled().subset("train"), 1, device="cpu", seed=0)


def test_images_alone_and_channels_last(tmp_path):
    data = _indexed(tmp_path, 8)
    images = next(iterate_batches(data, 4, device="cpu", seed=0, labels=False))
    assert isinstance(images, torch.Tensor) and images.shape == (4, 3, 4, 4)
    images, _ = next(iterate_batches(data, 4, device="cpu", seed=0, channels_last=True))
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_batches_read_only_their_own_rows_with_pread_not_a_memory_map(tmp_path, monkeypatch):
    data = _indexed(tmp_path / "shards", 64)
    asked: list[int] = []
    original_read, original_preadv = ShardSet.read, os.preadv
    preads: list[int] = []
    monkeypatch.setattr(
        ShardSet, "read", lambda self, rows: asked.append(len(rows)) or original_read(self, rows)
    )
    monkeypatch.setattr(os, "preadv", lambda *args: preads.append(1) or original_preadv(*args))
    stream = iterate_batches(data, 8, device="cpu", seed=0, prefetch=0)
    for _ in range(12):
        next(stream)
    assert asked == [8] * 12 and preads
    # Pages of a memory map that an epoch touches would count towards resident memory; reads don't.
    assert str(tmp_path / "shards") not in Path("/proc/self/maps").read_text()


def test_memory_stays_at_a_batch_however_large_the_set(tmp_path):
    data = _indexed(tmp_path, 4000, side=16, shard_size=1000)  # 3 MB of pixels
    stream = iterate_batches(data, 50, device="cpu", seed=0, prefetch=0)
    next(stream)
    tracemalloc.start()
    try:
        for _ in range(80):  # one whole epoch
            next(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A permutation of the epoch (32 kB) and a few batches (38 kB each), never the set's pixels.
    assert peak < 300_000


def test_the_reader_thread_stops_when_the_stream_is_closed_or_dropped(tmp_path):
    data = _indexed(tmp_path, 20)
    before = _reader_threads()
    stream = iterate_batches(data, 4, device="cpu", seed=0, prefetch=2)
    assert _reader_threads() == before  # nothing starts before the first batch
    next(stream)
    assert _reader_threads() == before + 1
    stream.close()
    assert _reader_threads() == before
    dropped = iterate_batches(data, 4, device="cpu", seed=0, prefetch=2)
    next(dropped)
    del dropped
    gc.collect()
    deadline = time.monotonic() + 5
    while _reader_threads() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _reader_threads() == before


def test_a_failed_read_reaches_the_consumer(tmp_path, monkeypatch):
    data = _indexed(tmp_path, 20)
    original = ShardSet.read
    calls: list[int] = []

    def fails_on_the_third(self, rows):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk gone")
        return original(self, rows)

    monkeypatch.setattr(ShardSet, "read", fails_on_the_third)
    before = _reader_threads()
    stream = iterate_batches(data, 4, device="cpu", seed=0, prefetch=2)
    next(stream), next(stream)
    with pytest.raises(OSError, match="disk gone"):
        next(stream)
    assert _reader_threads() == before
