"""Data-parallel training over several processes (``torchrun``): the process group and what each rank does.

Every rank builds the same networks from the same seed, draws the same global batch and the same noise in
lockstep (the torch random stream is identical on every rank), and trains on its contiguous share of that
batch: rank ``r`` of ``N`` takes rows ``r * B/N`` to ``(r + 1) * B/N`` of the ``B`` rows a one-process run
would train on. ``DistributedDataParallel`` averages the gradients, so each optimiser step sees the mean
over the whole global batch, as in one process, and the replicas stay identical. Because the streams stay in
lockstep, rank 0's checkpoint (its random states and data position) resumes every rank, with any number of
processes. The draws inside a step (instance noise, dropout) are made on each rank's share and so repeat
from rank to rank at the same position in the share; the global latents and genres do not.

Batch norm: on CUDA the networks' batch norms become ``SyncBatchNorm``, so their statistics are over the
global batch. torch implements SyncBatchNorm for CUDA only, so on CPU (gloo) each rank normalises with the
statistics of its own share: the step then differs from a one-process step by the difference between the
share's and the batch's statistics (measured in ``album_pipeline_tests/training/test_distributed.py``).

Rank 0 alone logs, writes checkpoints and reports; the others train and wait for it only in the collective
operations.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from album_pipeline.training.compute import resolve_device
from album_pipeline.training.config import TrainingConfig

# torchrun's environment for every worker (torch.distributed.run); all of them or none.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class LaunchOptions:
    """How the training assets run a stage: in their own process, or as a torchrun job through Dagster Pipes."""

    processes: int = field(
        default=1,
        metadata={
            "doc": "Training processes on this machine. 1 trains inside the asset's process; more launches "
            "`torchrun --nproc-per-node N -m album_pipeline.training` through Dagster Pipes, one process per "
            "GPU (or CPU share), each on batch_size / N images of every batch."
        },
    )

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, got {self.processes}")


@dataclass(frozen=True)
class ProcessGroupInfo:
    """Which rank of how many this process is; the default is one process, which trains as before."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def local_batch_size(self, batch_size: int) -> int:
        """Each rank's share of a global batch of ``batch_size`` images."""
        if batch_size % self.world_size:
            raise ValueError(
                f"a batch of {batch_size} images does not split evenly over {self.world_size} processes; set "
                f"batch_size to a multiple of {self.world_size} (each process trains batch_size / "
                f"{self.world_size} images per step)"
            )
        share = batch_size // self.world_size
        if share < 2:
            raise ValueError(
                f"each of {self.world_size} processes would train on {share} image(s) per step, and batch "
                f"norm needs at least 2; raise batch_size to at least {2 * self.world_size}"
            )
        return share

    def local_share(self, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """This rank's contiguous share of each global-batch tensor (``None`` stays ``None``)."""
        if not self.distributed:
            return tensors
        return tuple(None if tensor is None else _share(tensor, self) for tensor in tensors)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` for the training step: itself in one process, else in DistributedDataParallel.

        The wrapper shares ``module``'s parameters, so the optimisers, the EMA and the checkpoints keep using
        ``module`` itself and its state dict keeps its names (no ``module.`` prefix). On CUDA its batch norms
        are made synchronous in place (same parameters and buffers, so the state dict is unchanged).
        """
        if not self.distributed:
            return module
        if device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(module)  # children replaced in place; the root is no BN
        # Running statistics are not used in training; rank 0's are the ones saved, so nothing to broadcast.
        return DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )

    def average(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``sums`` averaged over the ranks in one collective (the log window's sums of local means)."""
        if not self.distributed or not sums:
            return sums
        names = list(sums)  # filled in the same order on every rank
        stacked = torch.stack([torch.as_tensor(sums[name]).float() for name in names])
        torch_dist.all_reduce(stacked)
        return dict(zip(names, stacked / self.world_size, strict=True))

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others: it alone may set aside an unreadable checkpoint."""
        if self.distributed and not self.is_main:
            torch_dist.barrier()
        yield
        if self.distributed and self.is_main:
            torch_dist.barrier()


SINGLE_PROCESS = ProcessGroupInfo()


def _share(tensor: torch.Tensor, group: ProcessGroupInfo) -> torch.Tensor:
    size = tensor.shape[0] // group.world_size
    return tensor[group.rank * size : (group.rank + 1) * size]


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def start_process_group(config: TrainingConfig) -> tuple[ProcessGroupInfo, TrainingConfig]:
    """Join torchrun's process group (one process when not launched by torchrun), and this rank's config.

    The backend is NCCL when training on CUDA and gloo on CPU; each rank trains on the GPU of its local rank.
    """
    if not launched_by_torchrun():
        return SINGLE_PROCESS, config
    group = ProcessGroupInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )
    if resolve_device(config.device).type == "cuda":
        if config.device not in ("auto", "cuda"):
            raise ValueError(
                f"device={config.device!r} pins every process to one GPU; under torchrun use device=auto or "
                "cuda, and each process takes the GPU of its local rank"
            )
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
        # device is an observation setting: it does not enter the run key, so checkpoints stay resumable.
        config = replace(config, device=str(device))
        torch_dist.init_process_group("nccl", init_method="env://", device_id=device)
    else:
        torch_dist.init_process_group("gloo", init_method="env://")
    return group, config


def stop_process_group(group: ProcessGroupInfo) -> None:
    if group.distributed and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
