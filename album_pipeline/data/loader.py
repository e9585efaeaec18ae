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
    if prefetch < 0:
        raise ValueError(f"prefetch must be 0 or more, got {prefetch}")
    check_batching(len(data), batch_size, drop_last, start_batch)
    rows = _shuffled_rows(len(data), batch_size, seed, drop_last, start_batch)
    return _batches(data, rows, torch.device(device), channels_last, labels, prefetch)


def check_batching(count: int, batch_size: int, drop_last: bool, start_batch: int) -> None:
    """Refuse, at once rather than at the first batch, a batching that cannot yield a batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if start_batch < 0:
        raise ValueError(f"start_batch must be 0 or more, got {start_batch}")
    if count == 0:
        raise ValueError("cannot iterate batches over an empty dataset")
    if drop_last and count < batch_size:
        raise ValueError(
            f"dataset has {count} images, fewer than one batch of {batch_size}; lower the batch size "
            "or pass drop_last=False"
        )


def device_images(pixels: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 (B, R, R, 3) pixels, already on the training device, as float32 (B, 3, R, R) in [-1, 1]."""
    # NHWC permuted to NCHW is already channels-last in memory.
    images = to_unit_range(pixels.permute(0, 3, 1, 2))
    return images if channels_last else images.contiguous()


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
            images = device_images(pixels.to(device, non_blocking=pin), channels_last)
            if labels:
                yield images, batch_labels.to(device, non_blocking=pin)
            else:
                yield images
    finally:
        host_batches.close()


def _shuffled_rows(
    count: int, batch_size: int, seed: int, drop_last: bool, start_batch: int = 0
) -> Iterator[np.ndarray]:
    for order, first in epoch_orders(count, batch_size, seed, drop_last, start_batch):
        for start in range(first, len(order), batch_size):
            yield order[start : start + batch_size]


def epoch_orders(
    count: int, batch_size: int, seed: int, drop_last: bool, start_batch: int = 0
) -> Iterator[tuple[np.ndarray, int]]:
    """The data order, one epoch at a time: ``(rows, first)``, the epoch's rows batch after batch (the
    batch ``k`` is ``rows[k * batch_size:][:batch_size]``) and where in ``rows`` to start.

    Every epoch is a fresh permutation drawn from ``seed``; ``start_batch`` starts at that batch of the
    sequence (``first`` is past 0 in the first epoch yielded only). Each source of batches slices these
    rows, so streamed and device-resident training see the very same batches.
    """
    rng = np.random.default_rng(seed)
    stop = count - count % batch_size if drop_last else count
    per_epoch = -(-stop // batch_size)
    for _ in range(start_batch // per_epoch):  # skipped epochs cost one permutation each, no reads
        rng.permutation(count)
    first = start_batch % per_epoch * batch_size
    full = stop - stop % batch_size
    while True:
        order = rng.permutation(count)[:stop]
        # Sorted rows read the shards front to back; order inside a batch does not matter. Sorting the
        # views sorts each batch in place.
        order[:full].reshape(-1, batch_size).sort(axis=1)
        order[full:].sort()
        yield order, first
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
