"""A training run's checkpoints: what they hold, which run they belong to, and starting from one.

Checkpoint payload keys: format, run_key, step, steps, generator, generator_ema (the averaged generator; absent
when ``ema_kimg`` is 0), discriminator, optimizer_generator, optimizer_discriminator, rng (the torch random
states after ``step`` steps), arch (GanArchitecture as a dict), config (TrainingConfig as a dict), genres,
use_labels, history, images_per_second, device, precision.

A run resumes ``latest.pt`` only when its run key matches: the key hashes what the run computes (settings,
architecture, data, the checkpoint it started from), not how often it is observed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from album_pipeline.data.shards import ShardSet
from album_pipeline.model.checkpoint import (
    CHECKPOINT_FORMAT,
    GENERATOR_EMA,
    UnreadableCheckpoint,
    load_checkpoint,
)
from album_pipeline.model.networks import Discriminator, GanArchitecture, Generator
from album_pipeline.recovery import set_aside
from album_pipeline.training.config import TrainingConfig
from album_pipeline.training.ema import GeneratorEma

# Fields that change how often we look at training, not what it computes; a run that differs only in them
# may resume another's checkpoint.
OBSERVATION_FIELDS = ("checkpoint_every", "log_every", "device", "threads")
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


@dataclass
class GanModules:
    """The networks, optimizers and generator average (None when off) a checkpoint saves and restores."""

    generator: Generator
    discriminator: Discriminator
    optimizer_generator: torch.optim.Optimizer
    optimizer_discriminator: torch.optim.Optimizer
    generator_ema: GeneratorEma | None = None

    def state_dicts(self) -> dict[str, Any]:
        states = {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_generator": self.optimizer_generator.state_dict(),
            "optimizer_discriminator": self.optimizer_discriminator.state_dict(),
        }
        if self.generator_ema is not None:
            states[GENERATOR_EMA] = self.generator_ema.state_dict()
        return states

    def load_state_dicts(self, payload: dict[str, Any]) -> None:
        self.generator.load_state_dict(payload["generator"])
        self.discriminator.load_state_dict(payload["discriminator"])
        self.optimizer_generator.load_state_dict(payload["optimizer_generator"])
        self.optimizer_discriminator.load_state_dict(payload["optimizer_discriminator"])
        if self.generator_ema is not None:
            self.generator_ema.load_state_dict(payload[GENERATOR_EMA])

    def resume_keys(self) -> tuple[str, ...]:
        return RESUME_KEYS + ((GENERATOR_EMA,) if self.generator_ema is not None else ())


@dataclass
class StartingPoint:
    """Where a run starts: step 0, or the step, history, speed and random states of the run it resumes."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    images_per_second: float = 0.0
    rng: dict[str, torch.Tensor] | None = None


def restore(
    modules: GanModules,
    latest: Path,
    run_key: str,
    init_checkpoint: Path | None,
    arch: GanArchitecture,
    device: torch.device,
    warn: Callable[[str], None] | None = None,
) -> StartingPoint:
    """Resume ``latest`` if it is this run's; else start from ``init_checkpoint``'s weights, if given.

    ``latest`` is only a resume file: when it does not load it is set aside (with a warning through
    ``warn``) and the run starts afresh, so a torn or foreign file never blocks training.
    """
    resumable = _resumable(latest, run_key, modules.resume_keys(), device, warn)
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


def _resumable(
    latest: Path,
    run_key: str,
    required: tuple[str, ...],
    device: torch.device,
    warn: Callable[[str], None] | None,
) -> dict[str, Any] | None:
    """``latest``'s payload when it is this run's checkpoint; another run's is left to be overwritten."""
    if not latest.is_file():
        return None
    try:
        payload = load_checkpoint(latest, map_location=device)
    except UnreadableCheckpoint as error:
        set_aside(latest, error.reason, warn)
        return None
    if payload.get("run_key") != run_key:
        return None
    missing = [key for key in required if key not in payload]
    if missing:
        set_aside(latest, f"it lacks {missing}", warn)
        return None
    return payload


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
        "rng": rng_states(device),
        "arch": arch.to_dict(),
        "config": config.to_dict(),
        "genres": list(genres),
        "use_labels": use_labels,
        "history": history,
        "images_per_second": images_per_second,
        "device": str(device),
        "precision": precision,
    }


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The random states a training step draws from (latents, genres, instance noise, dropout)."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    # A checkpoint loads onto the training device, but torch takes its states as CPU byte tensors.
    torch.set_rng_state(states["torch"].cpu())
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


def load_pretrained_weights(
    path: Path, arch: GanArchitecture, modules: GanModules, device: torch.device
) -> None:
    """The pretrained networks into ``modules``; its average starts as the pretrained one, else as its G."""
    pretrained = load_checkpoint(path, map_location=device, remedy=REPRETRAIN)
    if "generator" not in pretrained or "discriminator" not in pretrained:
        raise ValueError(
            f"{path} lacks generator/discriminator weights; pass a checkpoint written by train_gan"
        )
    if pretrained.get("arch") != arch.to_dict():
        raise ValueError(
            f"{path} was trained with architecture {pretrained.get('arch')}, not {arch.to_dict()}; "
            "finetune with the pretrained run's architecture"
        )
    modules.generator.load_state_dict(pretrained["generator"])
    modules.discriminator.load_state_dict(pretrained["discriminator"])
    if modules.generator_ema is not None:
        modules.generator_ema.load_state_dict(pretrained.get(GENERATOR_EMA, pretrained["generator"]))


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
