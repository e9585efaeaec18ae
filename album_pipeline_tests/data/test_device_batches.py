"""The device-resident batch source: the streamed batches exactly, from one copy of the set on the device."""

from __future__ import annotations

import itertools
from contextlib import closing
from dataclasses import replace

import numpy as np
import pytest
import torch

from album_pipeline.data import device_batches
from album_pipeline.data.device_batches import choose_batch_source, resident_batches, training_batches
from album_pipeline.data.loader import iterate_batches
from album_pipeline.data.shards import ShardSet
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.testing.shards import write_shard_set_from_arrays
from album_pipeline.training.loop import TrainingConfig, train_gan

CPU = torch.device("cpu")
GENRES = ("rock", "jazz", "pop", "rap-hip-hop", "classical")
COUNT = 23


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> ShardSet:
    """23 random labelled 64x64 covers in shards of 7, so loading crosses shard boundaries."""
    images = np.random.default_rng(0).integers(0, 256, (COUNT, 64, 64, 3), dtype=np.uint8)
    labels = np.arange(COUNT) % len(GENRES)
    folder = tmp_path_factory.mktemp("shards")
    return write_shard_set_from_arrays(folder, images, labels, GENRES, shard_size=7)


def first_batches(stream, count: int) -> list:
    with closing(stream):
        return list(itertools.islice(stream, count))


@pytest.mark.parametrize(
    ("batch", "drop_last", "labels", "channels_last", "start_batch"),
    [(5, True, True, False, 0), (4, False, True, True, 3), (6, True, False, False, 9)],
)
def test_resident_batches_are_the_streamed_batches(
    data, batch, drop_last, labels, channels_last, start_batch
):
    options = dict(
        device=CPU,
        seed=11,
        drop_last=drop_last,
        labels=labels,
        channels_last=channels_last,
        start_batch=start_batch,
    )
    count = 3 * -(-len(data) // batch)  # three epochs: the order must match across epoch boundaries
    streamed = first_batches(iterate_batches(data, batch, **options), count)
    resident = first_batches(resident_batches(data, batch, **options), count)
    for mine, theirs in zip(resident, streamed, strict=True):
        if labels:
            (mine, mine_labels), (theirs, theirs_labels) = mine, theirs
            assert torch.equal(mine_labels, theirs_labels) and mine_labels.dtype == torch.int64
        assert mine.dtype == torch.float32 and mine.shape == theirs.shape and torch.equal(mine, theirs)
        assert mine.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert mine.min() >= -1 and mine.max() <= 1


def test_start_batch_resumes_the_uninterrupted_sequence(data):
    whole = first_batches(resident_batches(data, 4, device=CPU, seed=2, labels=False), 12)
    resumed = first_batches(resident_batches(data, 4, device=CPU, seed=2, labels=False, start_batch=7), 5)
    assert all(torch.equal(a, b) for a, b in zip(whole[7:], resumed, strict=True))
    other_seed = first_batches(resident_batches(data, 4, device=CPU, seed=3, labels=False), 1)
    assert not torch.equal(whole[0], other_seed[0])


def test_the_set_is_read_once_at_the_first_batch_not_per_batch(data, monkeypatch):
    reads: list[int] = []
    original = ShardSet.read

    def counting_read(self, rows):
        reads.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(ShardSet, "read", counting_read)
    stream = resident_batches(data, 4, device=CPU, seed=0)
    assert reads == []  # nothing copied until a batch is wanted (a finished run trains nothing)
    first_batches(stream, 15)  # three epochs
    assert sum(reads) == len(data)


def test_loading_goes_a_chunk_at_a_time(data, monkeypatch):
    monkeypatch.setattr(device_batches, "LOAD_CHUNK_IMAGES", 5)
    assert torch.equal(device_batches.load_to_device(data, CPU), torch.from_numpy(data.read_all()))


def test_the_source_is_resident_when_the_set_fits_the_budget(data):
    image_bytes = 64 * 64 * 3
    fits = choose_batch_source(data, CPU, budget_gb=1.0)
    assert fits.kind == "resident" and fits.data_bytes == COUNT * (image_bytes + 8)
    assert choose_batch_source(data, CPU, budget_gb=0).kind == "streamed"
    tight = COUNT * image_bytes / device_batches.GB
    assert choose_batch_source(data, CPU, budget_gb=tight, labels=False).kind == "resident"
    assert choose_batch_source(data, CPU, budget_gb=tight, labels=True).kind == "streamed"
    default = choose_batch_source(data, CPU, budget_gb=None)
    assert default.kind == "resident" and default.budget_bytes == device_batches.CPU_DEFAULT_BUDGET_BYTES
    assert "resident on cpu" in default.describe() and "budget is 1.00 GB" in default.describe()


def test_training_batches_says_which_source_it_chose(data, caplog):
    with caplog.at_level("INFO", logger=device_batches.__name__):
        stream, source = training_batches(data, 4, device=CPU, seed=0, budget_gb=0)
    with closing(stream):
        images, labels = next(stream)
    assert source.kind == "streamed" and images.shape == (4, 3, 64, 64) and labels.shape == (4,)
    assert "streamed from the shards" in caplog.text


def test_training_is_the_same_from_either_source(tmp_path, data):
    arch = GanArchitecture(num_genres=len(GENRES), noise_dim=8, generator_width=16, discriminator_width=4)
    config = TrainingConfig(steps=7, batch_size=4, log_every=1, precision="fp32", device="cpu")
    runs = {}
    for budget in (None, 0.0):
        summary = train_gan(
            data,
            arch,
            replace(config, device_data_budget_gb=budget),
            tmp_path / str(budget),
            use_labels=True,
        )
        runs[summary.batch_source] = [
            {name: value for name, value in entry.items() if name != "images_per_second"}
            for entry in summary.history
        ]
    assert set(runs) == {"resident", "streamed"}
    assert len(runs["resident"]) == 7 and runs["resident"] == runs["streamed"]  # bit for bit
