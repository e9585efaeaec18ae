"""The batch stream the GAN trains on: shuffled epochs read from training shards, made float on the device.

Each batch reads only its own rows (``ShardSet.read``), so memory stays constant however large the dataset:
one batch of uint8 pixels per prefetched batch, plus the shard set's small per-image arrays. A background
thread reads ahead while the training step runs (file reads release the GIL); the uint8 -> float conversion
runs on the training device, so only a quarter of the bytes cross to a GPU.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from album_pipeline.data.shards import ShardSet
from album_pipeline.model.pixels import to_unit_range

Batch = tuple[torch.Tensor, torch.Tensor]


def iterate_batches(
    data: ShardSet,
    batch_size: int,
    *,
    device: torch.device | str,
    seed: int,
    drop_last: bool = True,
    channels_last: bool = False,
    labels: bool = True,
    prefetch: int = 2,
    start_batch: int = 0,
) -> Generator[Batch | torch.Tensor, None, None]:
    """Endless shuffled epochs of float32 images in [-1, 1], (B, 3, R, R), on ``device``.

    Yields ``(images, labels)`` (labels int64, (B,)) or, with ``labels=False``, just the images. Every epoch
    is a fresh permutation drawn from ``seed``, so the sequence depends on ``seed`` only, not on ``prefetch``
    (how many batches a background thread reads ahead; 0 reads in the caller's thread). ``start_batch``
    starts that sequence at its batch of that index without reading the ones before, so a resumed training
    run sees the batches an uninterrupted one would. Close the generator (or drop it) to stop the reader thread.
    """
    count = len(data)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if prefetch < 0 or start_batch < 0:
        raise ValueError(f"prefetch and start_batch must be 0 or more, got {prefetch} and {start_batch}")
    if count == 0:
        raise ValueError("cannot iterate batches over an empty dataset")
    if drop_last and count < batch_size:
        raise ValueError(
            f"dataset has {count} images, fewer than one batch of {batch_size}; lower the batch size "
            "or pass drop_last=False"
        )
    rows = _shuffled_rows(count, batch_size, seed, drop_last, start_batch)
    return _batches(data, rows, torch.device(device), channels_last, labels, prefetch)


def _batches(
    data: ShardSet,
    rows: Iterator[np.ndarray],
    device: torch.device,
    channels_last: bool,
    labels: bool,
    prefetch: int,
) -> Generator[Batch | torch.Tensor, None, None]:
    pin = device.type == "cuda"  # pinned host memory lets the copy to the GPU run asynchronously
    if prefetch:
        host_batches = _read_ahead(data, rows, prefetch, pin)
    else:
        host_batches = (_read_batch(data, batch_rows, pin) for batch_rows in rows)
    try:
        for pixels, batch_labels in host_batches:
            pixels = pixels.to(device, non_blocking=pin)
            # NHWC permuted to NCHW is already channels-last in memory.
            images = to_unit_range(pixels.permute(0, 3, 1, 2))
            if not channels_last:
                images = images.contiguous()
            if labels:
                yield images, batch_labels.to(device, non_blocking=pin)
            else:
                yield images
    finally:
        host_batches.close()


def _shuffled_rows(
    count: int, batch_size: int, seed: int, drop_last: bool, start_batch: int = 0
) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    stop = count - count % batch_size if drop_last else count
    per_epoch = -(-stop // batch_size)
    for _ in range(start_batch // per_epoch):  # skipped epochs cost one permutation each, no reads
        rng.permutation(count)
    first = start_batch % per_epoch * batch_size
    while True:
        order = rng.permutation(count)
        for start in range(first, stop, batch_size):
            # Sorted rows read the shards front to back; order inside a batch does not matter.
            yield np.sort(order[start : start + batch_size])
        first = 0


def _read_batch(data: ShardSet, rows: np.ndarray, pin: bool) -> Batch:
    pixels = torch.from_numpy(data.read(rows))
    labels = torch.from_numpy(data.labels[rows])
    if pin:
        pixels, labels = pixels.pin_memory(), labels.pin_memory()
    return pixels, labels


@dataclass(frozen=True)
class _ReaderFailed:
    error: BaseException


def _read_ahead(
    data: ShardSet, rows: Iterator[np.ndarray], depth: int, pin: bool
) -> Generator[Batch, None, None]:
    """The batches of ``rows`` read by a background thread, at most ``depth`` of them waiting."""
    ready: queue.Queue[Batch | _ReaderFailed] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Batch | _ReaderFailed) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)  # wakes up now and then to notice a stop
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            for batch_rows in rows:
                if stop.is_set():
                    return
                offer(_read_batch(data, batch_rows, pin))
        except BaseException as error:  # handed to the consumer, which raises it
            offer(_ReaderFailed(error))

    # The thread holds the data and the queue, never this generator, so dropping the generator closes it.
    reader = threading.Thread(target=read, name="shard-batch-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, _ReaderFailed):
                raise item.error
            yield item
    finally:
        stop.set()
        reader.join()
