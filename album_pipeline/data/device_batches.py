"""Where training batches come from: the whole training set resident on the device when it fits, else streamed.

resident: the shard set's uint8 pixels (N, R, R, 3) and labels are copied once to the training device (a GPU's
memory; on a CPU, host memory held once) and each batch is gathered there with ``index_select`` and made float
on the device, so a step never waits for the host: per epoch the host only copies the epoch's row order
(8 bytes an image, asynchronously from pinned memory).
streamed: ``loader.iterate_batches``: a reader thread reads each batch from the shards into pinned memory (on
CUDA) and copies it with ``non_blocking``, a few batches ahead.

Both sources slice the same ``loader.epoch_orders``, so they yield the very same batches in the same order:
which one a run gets depends on free memory, which may differ between a run and its resume, so it must not
change what is trained on. ``start_batch`` starts either at that batch of the sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from album_pipeline.data.loader import Batch, check_batching, device_images, epoch_orders, iterate_batches
from album_pipeline.data.shards import ShardSet

logger = logging.getLogger(__name__)

GB = 10**9
# Of the free GPU memory when training starts (networks and optimisers already placed): the rest is for
# activations, which at the seed's widths and batch 128 take about a gigabyte.
CUDA_FREE_MEMORY_FRACTION = 0.5
# On a CPU the pixels are host memory either way, and streaming them costs a reader thread little next to a
# CPU step; so only a set that is small next to any machine's memory (the demo's) is held whole.
CPU_DEFAULT_BUDGET_BYTES = 1 * GB
# Images copied to the device at a time while loading it, so the host never holds a second copy of the set.
LOAD_CHUNK_IMAGES = 4096


@dataclass(frozen=True)
class BatchSource:
    """Which source a run's batches come from, and why (for logs and the training asset's metadata)."""

    kind: str  # "resident" or "streamed"
    device: str
    data_bytes: int
    budget_bytes: int

    def describe(self) -> str:
        where = "held whole in the device's memory" if self.kind == "resident" else "streamed from the shards"
        return (
            f"training batches {where} ({self.kind} on {self.device}): the set takes "
            f"{self.data_bytes / GB:.2f} GB, the budget is {self.budget_bytes / GB:.2f} GB"
        )


def training_batches(
    data: ShardSet,
    batch_size: int,
    *,
    device: torch.device | str,
    seed: int,
    budget_gb: float | None,
    channels_last: bool = False,
    labels: bool = True,
    start_batch: int = 0,
) -> tuple[Generator[Batch | torch.Tensor, None, None], BatchSource]:
    """The training loop's batches (as ``loader.iterate_batches`` yields them) and the source chosen.

    ``budget_gb`` is the largest set, in GB of uint8 pixels and labels, held whole on the device; None takes
    ``default_budget_bytes``; 0 always streams. Close the generator when done (it may hold a reader thread).
    """
    device = torch.device(device)
    source = choose_batch_source(data, device, budget_gb, labels=labels)
    logger.info(source.describe())
    make_batches = resident_batches if source.kind == "resident" else iterate_batches
    batches = make_batches(
        data,
        batch_size,
        device=device,
        seed=seed,
        channels_last=channels_last,
        labels=labels,
        start_batch=start_batch,
    )
    return batches, source


def choose_batch_source(
    data: ShardSet, device: torch.device, budget_gb: float | None, *, labels: bool = True
) -> BatchSource:
    side = data.resolution
    data_bytes = len(data) * (side * side * 3 + (8 if labels else 0))
    budget = default_budget_bytes(device) if budget_gb is None else int(budget_gb * GB)
    kind = "resident" if 0 < data_bytes <= budget else "streamed"
    return BatchSource(kind, str(device), data_bytes, budget)


def default_budget_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_MEMORY_FRACTION)
    if device.type == "cpu":
        return CPU_DEFAULT_BUDGET_BYTES
    return 0  # other devices: stream, the path that works everywhere


def resident_batches(
    data: ShardSet,
    batch_size: int,
    *,
    device: torch.device | str,
    seed: int,
    drop_last: bool = True,
    channels_last: bool = False,
    labels: bool = True,
    start_batch: int = 0,
) -> Generator[Batch | torch.Tensor, None, None]:
    """``iterate_batches``'s batches, gathered on ``device`` from the whole set, copied there at the first."""
    check_batching(len(data), batch_size, drop_last, start_batch)
    orders = epoch_orders(len(data), batch_size, seed, drop_last, start_batch)
    return _gathered(data, torch.device(device), orders, batch_size, channels_last, labels)


def load_to_device(data: ShardSet, device: torch.device) -> torch.Tensor:
    """uint8 (N, R, R, 3): every image of ``data`` on ``device``, read a chunk at a time."""
    side = data.resolution
    pixels = torch.empty((len(data), side, side, 3), dtype=torch.uint8, device=device)
    for start in range(0, len(data), LOAD_CHUNK_IMAGES):
        rows = np.arange(start, min(start + LOAD_CHUNK_IMAGES, len(data)))
        pixels[start : start + len(rows)].copy_(torch.from_numpy(data.read(rows)))
    return pixels


def _gathered(
    data: ShardSet,
    device: torch.device,
    orders: Iterator[tuple[np.ndarray, int]],
    batch_size: int,
    channels_last: bool,
    with_labels: bool,
) -> Generator[Batch | torch.Tensor, None, None]:
    # Loaded at the first batch, so a run that has nothing left to train copies nothing.
    pixels = load_to_device(data, device)
    labels = torch.tensor(data.labels, dtype=torch.int64, device=device) if with_labels else None
    pin = (
        device.type == "cuda"
    )  # a copy from pinned memory runs asynchronously; from pageable memory it waits
    for order, first in orders:
        rows = torch.from_numpy(order)
        rows = rows.pin_memory().to(device, non_blocking=True) if pin else rows.to(device)
        for start in range(first, len(rows), batch_size):
            batch_rows = rows[start : start + batch_size]
            images = device_images(pixels.index_select(0, batch_rows), channels_last)
            yield images if labels is None else (images, labels.index_select(0, batch_rows))
