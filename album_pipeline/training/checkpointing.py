"""A training run's checkpoints: what they hold, which run they belong to, and starting from one.

Checkpoint payload keys: format, run_key, step, steps, generator, generator_ema (the averaged generator; absent
when ``ema_kimg`` is 0), discriminator, optimizer_generator, optimizer_discriminator, augment (the augmentation's
``state_dict()``, such as an adaptive probability; absent when the run has no stateful augmentation), rng (every
random state after ``step`` steps: python, numpy, torch and, on CUDA, cuda; see ``training.rng``), arch
(GanArchitecture as a dict), config (TrainingConfig as a dict), genres, use_labels, history, images_per_second,
device, precision. The data position is ``step`` itself: the loader restarts its seeded order at that batch.

A run resumes ``latest.pt`` only when its run key matches: the key hashes what the run computes (settings,
architecture, data, the checkpoint it started from), not how often it is observed. Each new ``latest.pt`` first
moves the one before it to ``previous.pt``, so when ``latest.pt`` is missing or does not load (set aside, as
every unreadable resume file is) the run resumes ``previous.pt`` instead, with a warning naming its step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from album_pipeline.data.shards import ShardSet
from album_pipeline.layout import PREVIOUS_CHECKPOINT
from album_pipeline.model.checkpoint import (
    CHECKPOINT_FORMAT,
    GENERATOR_EMA,
    UnreadableCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.recovery import set_aside
from album_pipeline.training.config import TrainingConfig
from album_pipeline.training.ema import GeneratorEma
from album_pipeline.training.rng import capture_rng_states

logger = logging.getLogger(__name__)

# Fields that change how often we look at training, not what it computes; a run that differs only in them
# may resume another's checkpoint.
OBSERVATION_FIELDS = (
    "checkpoint_every",
    "log_every",
    "device",
    "threads",
    # where the batches come from and whether the networks are compiled: the same batches and the same
    # networks either way
    "device_data_budget_gb",
    "compile",
    "compile_mode",
)
# What a resumed run reads from its latest.pt besides run_key.
RESUME_KEYS = (
    "step",
    "history",
    "generator",
    "discriminator",
    "optimizer_generator",
    "optimizer_discriminator",
    "rng",
)
# The init checkpoint is an input (the pretrained final.pt): unreadable, it is an error, never set aside.
REPRETRAIN = (
    "pretrain again (materialize the pretrained_generator asset), or pass a checkpoint written by train_gan"
)


AUGMENT = "augment"


class Stateful(Protocol):
    """What torch modules and optimizers are: a state to checkpoint (plain data and tensors) and to load back."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class GanModules:
    """The networks, optimizers, generator average and augmentation state a checkpoint saves and restores.

    ``generator_ema`` and ``augment`` are None when off. ``augment`` is anything with ``state_dict()`` and
    ``load_state_dict()`` (an adaptive augmentation's probability and counters, say) whose state is tensors and
    plain data, so that the checkpoint still loads with ``weights_only=True``.
    """

    generator: nn.Module
    discriminator: nn.Module
    optimizer_generator: torch.optim.Optimizer
    optimizer_discriminator: torch.optim.Optimizer
    generator_ema: GeneratorEma | None = None
    augment: Stateful | None = None

    def state_dicts(self) -> dict[str, Any]:
        states = {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_generator": self.optimizer_generator.state_dict(),
            "optimizer_discriminator": self.optimizer_discriminator.state_dict(),
        }
        if self.generator_ema is not None:
            states[GENERATOR_EMA] = self.generator_ema.state_dict()
        if self.augment is not None:
            states[AUGMENT] = self.augment.state_dict()
        return states

    def load_state_dicts(self, payload: dict[str, Any]) -> None:
        self.generator.load_state_dict(payload["generator"])
        self.discriminator.load_state_dict(payload["discriminator"])
        self.optimizer_generator.load_state_dict(payload["optimizer_generator"])
        self.optimizer_discriminator.load_state_dict(payload["optimizer_discriminator"])
        if self.generator_ema is not None:
            self.generator_ema.load_state_dict(payload[GENERATOR_EMA])
        if self.augment is not None:
            self.augment.load_state_dict(payload[AUGMENT])

    def resume_keys(self) -> tuple[str, ...]:
        optional = {GENERATOR_EMA: self.generator_ema, AUGMENT: self.augment}
        return RESUME_KEYS + tuple(key for key, kept in optional.items() if kept is not None)


@dataclass
class StartingPoint:
    """Where a run starts: step 0, or the step, history, speed and random states of the run it resumes."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    images_per_second: float = 0.0
    rng: dict[str, Any] | None = None  # training.rng.capture_rng_states()'s dict


def restore(
    modules: GanModules,
    latest: Path,
    run_key: str,
    init_checkpoint: Path | None,
    arch: GanArchitecture,
    device: torch.device,
    warn: Callable[[str], None] | None = None,
) -> StartingPoint:
    """Resume ``latest`` (else ``previous.pt`` beside it) if it is this run's; else start from
    ``init_checkpoint``'s weights, if given.

    ``latest`` and ``previous.pt`` are only resume files: one that does not load is set aside (with a warning
    through ``warn``), and when neither is this run's the run starts afresh, so a torn or foreign file never
    blocks training.
    """
    resumable = _resume_payload(latest, run_key, modules.resume_keys(), device, warn)
    if resumable is not None:
        modules.load_state_dicts(resumable)
        return StartingPoint(
            int(resumable["step"]),
            list(resumable["history"]),
            float(resumable.get("images_per_second", 0.0)),
            dict(resumable["rng"]),
        )
    if init_checkpoint is not None:
        load_pretrained_weights(init_checkpoint, arch, modules, device)
    return StartingPoint()


def _resume_payload(
    latest: Path,
    run_key: str,
    required: tuple[str, ...],
    device: torch.device,
    warn: Callable[[str], None] | None,
) -> dict[str, Any] | None:
    """This run's newest checkpoint that loads: ``latest``'s payload, else ``previous.pt``'s, else None.

    Another run's checkpoint is passed over and left to be overwritten; one that does not load, or lacks
    what a resume needs, is set aside.
    """
    for path in (latest, previous_checkpoint(latest)):
        payload = _load_resume_file(path, device, warn)
        if payload is None:
            continue
        if payload.get("run_key") != run_key:
            logger.info(
                "%s is another run's checkpoint (other settings, architecture or data); not resuming it", path
            )
            continue
        missing = [key for key in required if key not in payload]
        if missing:
            set_aside(path, f"it lacks {missing}", warn)
            continue
        if path != latest:
            (warn or logger.warning)(
                f"{latest} is missing or unusable, so this run resumes {path.name}, the checkpoint before it, "
                f"at step {payload['step']} of {payload['steps']}; the steps after it are trained again"
            )
        return payload
    return None


def _load_resume_file(
    path: Path, device: torch.device, warn: Callable[[str], None] | None
) -> dict[str, Any] | None:
    """``path``'s payload; None when there is none or it does not load (then it is set aside)."""
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path, map_location=device)
    except UnreadableCheckpoint as error:
        set_aside(path, error.reason, warn)
        return None


def checkpoint_payload(
    modules: GanModules,
    *,
    run_key: str,
    step: int,
    arch: GanArchitecture,
    config: TrainingConfig,
    genres: tuple[str, ...],
    use_labels: bool,
    history: list[dict[str, float]],
    images_per_second: float,
    device: torch.device,
    precision: str,
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "run_key": run_key,
        "step": step,
        "steps": config.steps,
        **modules.state_dicts(),
        "rng": capture_rng_states(),
        "arch": arch.to_dict(),
        "config": config.to_dict(),
        "genres": list(genres),
        "use_labels": use_labels,
        "history": history,
        "images_per_second": images_per_second,
        "device": str(device),
        "precision": precision,
    }


def previous_checkpoint(latest: Path) -> Path:
    """Where the checkpoint before ``latest`` is kept."""
    return Path(latest).with_name(PREVIOUS_CHECKPOINT)


def save_latest(latest: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as ``latest`` after moving the one there to ``previous.pt``: if the new file is ever
    damaged, the one before it is still there to resume. A kill between the two leaves ``previous.pt`` alone,
    which ``restore`` resumes just as well."""
    latest = Path(latest)
    if latest.is_file():
        os.replace(latest, previous_checkpoint(latest))
    return save_checkpoint(latest, payload)


def load_pretrained_weights(
    path: Path, arch: GanArchitecture, modules: GanModules, device: torch.device
) -> None:
    """The pretrained networks into ``modules``; its average starts as the pretrained one, else as its G."""
    pretrained = load_checkpoint(path, map_location=device, remedy=REPRETRAIN)
    if "generator" not in pretrained or "discriminator" not in pretrained:
        raise ValueError(
            f"{path} lacks generator/discriminator weights; pass a checkpoint written by train_gan"
        )
    if recorded_architecture(pretrained) != arch:
        raise ValueError(
            f"{path} was trained with architecture {pretrained.get('arch')}, not {arch.to_dict()}; "
            "finetune with the pretrained run's architecture"
        )
    modules.generator.load_state_dict(pretrained["generator"])
    modules.discriminator.load_state_dict(pretrained["discriminator"])
    if modules.generator_ema is not None:
        modules.generator_ema.load_state_dict(pretrained.get(GENERATOR_EMA, pretrained["generator"]))


def recorded_architecture(payload: dict[str, Any]) -> GanArchitecture | None:
    """The GanArchitecture a checkpoint records (None where it records none that this code accepts), with the
    defaults of fields added since filled in, so that an older checkpoint of the same networks compares equal."""
    try:
        return GanArchitecture(**payload["arch"])
    except (KeyError, TypeError, ValueError):
        return None


def run_key(
    data: ShardSet,
    arch: GanArchitecture,
    config: TrainingConfig,
    use_labels: bool,
    init_checkpoint: Path | None,
) -> str:
    """Identifies what a run computes, so that only a checkpoint of the very same run is resumed."""
    settings = {name: value for name, value in config.to_dict().items() if name not in OBSERVATION_FIELDS}
    digest = hashlib.sha256()
    digest.update(
        json.dumps([settings, arch.to_dict(), use_labels, list(data.genres)], sort_keys=True).encode()
    )
    digest.update(data.fingerprint().encode())  # image ids, labels, resolution
    if init_checkpoint is not None:
        digest.update(checkpoint_identity(Path(init_checkpoint)).encode())
    return digest.hexdigest()


def checkpoint_identity(path: Path) -> str:
    """What a checkpoint holds, not its bytes: torch.save writes a random id into every file, so the same
    weights saved twice differ byte for byte (and a finished run re-saves its final checkpoint)."""
    if not path.is_file():
        raise FileNotFoundError(f"init checkpoint {path} does not exist; pretrain first")
    payload = load_checkpoint(path, remedy=REPRETRAIN)
    if "run_key" in payload and "step" in payload:
        return f"{payload['run_key']}@{payload['step']}"
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
