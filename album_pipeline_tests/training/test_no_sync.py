"""The training step never waits for the device: no value of a device tensor is read on the host per step.

On a GPU every such read (``.item()``, ``float(t)``, ``if t:``, ``.cpu()``, ...) stalls the host until the
device has caught up, so the host cannot queue the next kernels while the current ones run. The loop reads
losses only when it logs. The CPU test counts those reads with a ``TorchFunctionMode`` during whole training
runs of two lengths, each logging once at its end: every read that a step made would show up in the longer run
more often. Where CUDA exists the same comparison runs under ``torch.cuda.set_sync_debug_mode``.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from album_pipeline.model.networks import GanArchitecture
from album_pipeline.training.loop import TrainingConfig, train_gan
from album_pipeline.training.losses import AcGanLoss
from album_pipeline_tests.training.conftest import GENRES

TINY = GanArchitecture(num_genres=len(GENRES), noise_dim=8, generator_width=16, discriminator_width=4)
# The data has 24 images and batches take 4: the longer run crosses an epoch boundary, the shorter does not.
SHORT, LONG = 2, 8
# Tensor methods and functions that hand a device value to the host (or, like nonzero, wait to size a result).
HOST_READS = frozenset(
    {
        "item",
        "cpu",
        "tolist",
        "numpy",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "nonzero",
        "masked_select",
        "unique",
    }
)
# torch.optim's Adam (capturable=False, its default) keeps its step count in a host tensor even on CUDA and
# reads it with .item(): reading host memory, never waiting for the device.
HOST_STATE_READERS = (str(Path(torch.optim.__file__).parent),)


class HostReads(TorchFunctionMode):
    """Counts the host reads of tensors made while active, by name and calling line."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            caller = sys._getframe(1).f_code
            if not caller.co_filename.startswith(HOST_STATE_READERS):
                self.reads[
                    f"{name} in {caller.co_name} ({Path(caller.co_filename).name}:{caller.co_firstlineno})"
                ] += 1
        return func(*args, **(kwargs or {}))


def config_for(steps: int, **changes) -> TrainingConfig:
    # One log entry and no intermediate checkpoint: what a run does besides its steps is the same at any length.
    config = TrainingConfig(
        steps=steps, batch_size=4, log_every=steps, checkpoint_every=steps, precision="fp32", device="cpu"
    )
    return replace(config, **changes)


def host_reads(
    tmp_path: Path, data, steps: int, use_labels: bool, arch: GanArchitecture = TINY, **changes
) -> Counter[str]:
    with HostReads() as counter:
        train_gan(data, arch, config_for(steps, **changes), tmp_path / f"run-{steps}", use_labels=use_labels)
    return counter.reads


@pytest.mark.parametrize(
    ("use_labels", "changes"),
    [
        (True, {}),  # finetuning, the whole set resident (the CPU default for a small set)
        (False, {"device_data_budget_gb": 0.0, "precision": "bf16"}),  # pretraining, streamed, bf16 autocast
    ],
)
def test_the_training_step_reads_nothing_back_from_the_device(tmp_path, dataset, use_labels, changes):
    data = dataset(labelled=use_labels)
    short = host_reads(tmp_path, data, SHORT, use_labels, **changes)
    long = host_reads(tmp_path, data, LONG, use_labels, **changes)
    per_step = long - short
    assert per_step == Counter(), f"host reads inside the training step: {dict(per_step)}"
    assert long == short


@pytest.mark.parametrize("use_labels", [False, True])
def test_the_projection_step_reads_nothing_back_from_the_device(tmp_path, dataset, use_labels):
    arch = GanArchitecture(
        architecture="projection",
        num_genres=len(GENRES),
        noise_dim=8,
        generator_width=32,
        discriminator_width=4,
    )
    data = dataset(labelled=use_labels)
    changes = {"augment": "color,translation,cutout", "mode_seeking_weight": 1.0}
    short = host_reads(tmp_path, data, SHORT, use_labels, arch, **changes)
    long = host_reads(tmp_path, data, LONG, use_labels, arch, **changes)
    assert long - short == Counter(), f"host reads inside the training step: {dict(long - short)}"


def test_the_guard_sees_a_read_hidden_in_the_step(tmp_path, dataset, monkeypatch):
    observed = AcGanLoss.observed

    def syncing_metrics(self, *args):
        metrics = observed(self, *args)
        if metrics["loss_d"] > 100:  # Tensor.__bool__: waits for the loss to be computed
            raise AssertionError("unexpected")
        metrics["loss_g"].item()
        return metrics

    monkeypatch.setattr(AcGanLoss, "observed", syncing_metrics)
    per_step = host_reads(tmp_path, dataset(), LONG, True) - host_reads(tmp_path, dataset(), SHORT, True)
    assert {read.split(" (")[0]: count for read, count in per_step.items()} == {
        "__bool__ in syncing_metrics": LONG - SHORT,
        "item in syncing_metrics": LONG - SHORT,
    }


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's sync debug mode needs CUDA")
def test_on_cuda_the_step_makes_no_synchronising_call(tmp_path, dataset):
    def synchronising_calls(steps: int) -> int:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_gan(
                    dataset(),
                    TINY,
                    config_for(steps, device="cuda"),
                    tmp_path / f"cuda-{steps}",
                    use_labels=True,
                )
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchronizing" in str(warning.message) for warning in caught)

    assert synchronising_calls(LONG) == synchronising_calls(SHORT)
