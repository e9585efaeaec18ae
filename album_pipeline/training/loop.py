"""The GAN training loop: pretraining on unlabelled covers and finetuning on genre-labelled ones.

One function, ``train_gan``, read top to bottom: check the inputs, pick device and precision, build or
restore the networks, then alternate a discriminator step and a generator step on streamed batches, logging
averaged losses, updating the generator's moving average (``training.ema``) and checkpointing atomically as
it goes. Its parts live beside it: the settings in ``training.config``, the losses in ``training.losses``,
the networks by architecture name in ``model.architectures`` and each architecture's loss in
``training.objectives``, device and precision in ``training.compute``, the checkpoint payload, run key and resume in
``training.checkpointing``. A resumed run restores every random state (``training.rng``) and the position in the
data order, so it draws the noise and batches an uninterrupted run would.

Fake genres are drawn uniformly over all genres (the seed never generated the last one), and losses are
accumulated detached, so no graph outlives its step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from album_pipeline.data.device_batches import training_batches
from album_pipeline.data.shards import ShardSet
from album_pipeline.layout import FINAL_CHECKPOINT, LATEST_CHECKPOINT
from album_pipeline.model.architectures import build_discriminator, build_generator
from album_pipeline.model.checkpoint import save_checkpoint
from album_pipeline.model.networks import GanArchitecture, sample_inputs
from album_pipeline.progress import Progress
from album_pipeline.training import checkpointing, rng
from album_pipeline.training.augment import AdaSettings, DiffAugment, parse_policy
from album_pipeline.training.checkpointing import GanModules
from album_pipeline.training.compute import select_compute
from album_pipeline.training.config import PRECISIONS, TrainingConfig
from album_pipeline.training.distributed import SINGLE_PROCESS, ProcessGroupInfo
from album_pipeline.training.ema import GeneratorEma
from album_pipeline.training.losses import paired_fake_genres
from album_pipeline.training.objectives import build_loss
from album_pipeline.training.observer import TrainingObserver

__all__ = ["PRECISIONS", "TrainingConfig", "TrainingSummary", "sample_fake_genres", "train_gan"]


@dataclass
class TrainingSummary:
    checkpoint_path: Path  # final.pt
    steps: int  # total steps the checkpoint has been trained for
    steps_this_run: int  # 0 when a finished checkpoint was found
    resumed_from_step: int
    batch_size: int
    images_per_second: float
    device: str
    precision: str
    final_losses: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    batch_source: str = "streamed"  # "resident" when the whole training set was kept on the device

    def metadata(self) -> dict[str, Any]:
        """What the training assets show of the run, as plain values (each shell wraps the checkpoint path)."""
        return {
            "checkpoint": str(self.checkpoint_path),
            "steps": self.steps,
            "images_per_second": round(self.images_per_second, 1),
            "device": self.device,
            "precision": self.precision,
            "batch_source": self.batch_source,
            **{f"final_{name}": round(float(value), 4) for name, value in self.final_losses.items()},
        }


def format_log_entry(entry: dict) -> str:
    """One log entry as ``name=value`` pairs, floats to 4 significant digits."""
    return " ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in entry.items()
    )


def train_gan(
    data: ShardSet,
    arch: GanArchitecture,
    config: TrainingConfig,
    checkpoint_dir: Path,
    *,
    use_labels: bool,
    init_checkpoint: Path | None = None,
    log: Callable[[dict], None] | None = None,
    warn: Callable[[str], None] | None = None,
    process_group: ProcessGroupInfo = SINGLE_PROCESS,
    observer: TrainingObserver | None = None,
    progress_log: Callable[[str], None] | None = None,
    progress_bar: bool | None = None,
) -> TrainingSummary:
    """Train the GAN on ``data`` and return where its final checkpoint is.

    ``use_labels=False`` pretrains (labels ignored); ``use_labels=True`` finetunes on the labelled rows of
    ``data`` (pass the train split). ``init_checkpoint`` starts from a pretrained run's weights with fresh
    optimizers. A ``latest.pt`` in ``checkpoint_dir`` from an interrupted run of the same configuration on
    the same data is resumed; one from a different run is replaced, and one that does not load is set aside
    (``album_pipeline.recovery``) with a warning through ``warn`` (default: a logger). ``log`` receives each
    averaged log entry; ``observer`` samples the generator at the steps it asks for, outside the timed region.
    Under torchrun, ``process_group`` says which rank this is (``training.distributed``): each rank trains on
    its share of every batch, and rank 0 alone logs, samples and writes checkpoints. Progress (steps,
    images/s, time left) goes to ``progress_log`` at a steady time cadence, whatever ``log_every`` is, and to
    a bar on a terminal.
    """
    # -- inputs ------------------------------------------------------------------------------------------
    data = _training_rows(data, arch, use_labels)
    batch_size = min(config.batch_size, len(data))
    if batch_size < 2:
        raise ValueError(f"the dataset has {len(data)} image(s); batch norm needs at least 2 to train")
    process_group.local_batch_size(batch_size)  # refuses a batch that does not split over the processes
    compute = select_compute(config)
    device = compute.device
    checkpoint_dir = Path(checkpoint_dir)
    latest = checkpoint_dir / LATEST_CHECKPOINT
    run_key = checkpointing.run_key(data, arch, config, use_labels, init_checkpoint)

    # -- networks, optimizers, and where to start from ---------------------------------------------------
    modules = _build_modules(arch, config, compute.device, compute.memory_format)
    with process_group.main_first():
        start = checkpointing.restore(modules, latest, run_key, init_checkpoint, arch, device, warn)
    history = start.history
    augment = modules.augment  # its state (ADA's probability) is checkpointed with the networks
    # The losses run the wrapped (DDP) and compiled networks; checkpoints and the EMA keep the plain modules.
    loss = build_loss(
        arch,
        compute.compiled(process_group.wrap(modules.generator, device)),
        compute.compiled(process_group.wrap(modules.discriminator, device)),
        config,
        use_labels=use_labels,
        autocast=compute.autocast,
        augment=augment,
    )

    def payload(step: int, speed: float) -> dict:
        return checkpointing.checkpoint_payload(
            modules,
            run_key=run_key,
            step=step,
            arch=arch,
            config=config,
            genres=data.genres,
            use_labels=use_labels,
            history=history,
            images_per_second=speed,
            device=device,
            precision=compute.precision,
        )

    # -- the loop ----------------------------------------------------------------------------------------
    if start.rng is None:
        rng.seed_all(config.seed)
    else:
        rng.restore_rng_states(start.rng, device)
    batches, batch_source = training_batches(
        data,
        batch_size,
        device=device,
        seed=config.seed,
        budget_gb=config.device_data_budget_gb,
        channels_last=compute.channels_last,
        labels=use_labels,
        start_batch=start.step,
    )
    modules.generator.train()
    modules.discriminator.train()
    # The mode-seeking term compares adjacent fakes of one genre; under torchrun each rank's share is even
    # when the global batch splits into even shares, and an odd share only leaves its last fake unpaired.
    draw_genres = paired_fake_genres if config.mode_seeking_weight > 0 else sample_fake_genres
    window = _LogWindow(batch_size)
    shown = Progress(
        "finetune" if use_labels else "pretrain",
        config.steps,
        unit="steps",
        log=progress_log if process_group.is_main else None,
        progress_bar=progress_bar if process_group.is_main else False,
        initial=start.step,
        rate_of=("images", batch_size),
    )
    with closing(batches), shown:  # closing: stops the loader's reader thread, also when a step raises
        for step in shown.counting(range(start.step, config.steps)):
            batch = next(batches)
            real, labels = batch if use_labels else (batch, None)
            noise_std = config.instance_noise * max(0.0, 1.0 - step / config.steps)
            fake_genres = draw_genres(batch_size, arch.num_genres, device)
            latent, noise = sample_inputs(arch, fake_genres)
            real, labels, fake_genres, latent, noise = process_group.local_share(
                real, labels, fake_genres, latent, noise
            )

            # Discriminator phase.
            modules.discriminator.requires_grad_(True)
            regularise = step % config.r1_interval == 0
            d_terms = loss.discriminator_loss(real, labels, fake_genres, latent, noise, noise_std, regularise)
            modules.optimizer_discriminator.zero_grad(set_to_none=True)
            d_terms.total.backward()
            modules.optimizer_discriminator.step()
            if augment is not None and augment.adaptive:
                _adapt_augmentation(augment, d_terms.real_logit, process_group, batch_size)

            # Generator phase. The discriminator's weights need no gradients here, which saves a third of its
            # backward pass.
            modules.discriminator.requires_grad_(False)
            g_terms = loss.generator_loss(d_terms.fake, fake_genres, latent, noise_std, noise)
            modules.optimizer_generator.zero_grad(set_to_none=True)
            g_terms.total.backward()
            modules.optimizer_generator.step()
            if modules.generator_ema is not None:
                modules.generator_ema.update(
                    modules.generator, batch_size=batch_size, images_seen=step * batch_size
                )

            # -- observation: averaged losses, checkpoints -----------------------------------------------
            window.add(loss.observed(d_terms, g_terms, fake_genres, labels))
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                window.sums = process_group.average(window.sums)
                entry = window.close(done, noise_std, augment)
                history.append(entry)
                if log is not None and process_group.is_main:
                    log(dict(entry))
            if done % config.checkpoint_every == 0 and done != config.steps and process_group.is_main:
                with window.paused():  # saving is not training time
                    checkpointing.save_latest(latest, payload(done, window.speed(done - start.step)))
            if observer is not None and observer.samples_due(done, config.steps):
                with window.paused():
                    ema = modules.generator_ema
                    observer.on_samples(done, modules.generator if ema is None else ema.module)

    # -- the end -----------------------------------------------------------------------------------------
    steps_this_run = max(0, config.steps - start.step)
    speed = window.speed(steps_this_run) if steps_this_run else start.images_per_second
    final_path = checkpoint_dir / FINAL_CHECKPOINT
    if process_group.is_main:
        final = payload(config.steps, speed)
        checkpointing.save_latest(latest, final)
        save_checkpoint(final_path, final)
    final_losses = {name: value for name, value in history[-1].items() if name != "step"} if history else {}
    return TrainingSummary(
        checkpoint_path=final_path,
        steps=config.steps,
        steps_this_run=steps_this_run,
        resumed_from_step=start.step,
        batch_size=batch_size,
        images_per_second=speed,
        device=str(device),
        precision=compute.precision,
        final_losses=final_losses,
        history=history,
        batch_source=batch_source.kind,
    )


def sample_fake_genres(count: int, num_genres: int, device: torch.device | str) -> torch.Tensor:
    """Genres to generate, uniform over all ``num_genres`` classes (the seed never drew the last)."""
    return torch.randint(0, num_genres, (count,), device=device)


def _training_rows(data: ShardSet, arch: GanArchitecture, use_labels: bool) -> ShardSet:
    """The rows to train on (the labelled ones when finetuning), checked against the architecture."""
    if use_labels:
        if len(data) and not (data.labels >= 0).any():
            raise ValueError(
                "use_labels=True but the dataset has no labelled images; finetune on the labelled manifest's "
                "train split, or pretrain with use_labels=False"
            )
        data = data.labelled()
    if len(data) == 0:
        raise ValueError(
            "the training dataset is empty; build its training shards (and check the split) before training"
        )
    if arch.num_genres != len(data.genres):
        raise ValueError(
            f"architecture has num_genres={arch.num_genres} but the data has {len(data.genres)} genres "
            f"{list(data.genres)}; build GanArchitecture(num_genres={len(data.genres)}, ...)"
        )
    if data.resolution != arch.resolution:
        raise ValueError(f"data is {data.resolution}px but the architecture makes {arch.resolution}px images")
    return data


def _build_augment(config: TrainingConfig, device: torch.device) -> DiffAugment | None:
    if not parse_policy(config.augment):
        return None
    ada = None
    if config.ada_target is not None:
        ada = AdaSettings(target=config.ada_target, kimg=config.ada_kimg, interval=config.ada_interval)
    return DiffAugment(config.augment, config.augment_probability, device, ada)


def _adapt_augmentation(
    augment: DiffAugment, real_logit: torch.Tensor, process_group: ProcessGroupInfo, batch_size: int
) -> None:
    """ADA's overfitting measure over the global batch, so that every process keeps the same probability."""
    mean_sign = process_group.average({"real_sign": torch.sign(real_logit.detach().float()).mean()})
    augment.observe_real_sign(mean_sign["real_sign"], batch_size)


def _build_modules(
    arch: GanArchitecture, config: TrainingConfig, device: torch.device, memory_format: torch.memory_format
) -> GanModules:
    torch.manual_seed(
        config.seed
    )  # initial weights follow the config, not whatever ran earlier in the process
    generator = build_generator(arch).to(device=device, memory_format=memory_format)
    discriminator = build_discriminator(arch).to(device=device, memory_format=memory_format)
    return GanModules(
        generator,
        discriminator,
        torch.optim.Adam(generator.parameters(), lr=config.lr_generator, betas=config.betas),
        torch.optim.Adam(discriminator.parameters(), lr=config.lr_discriminator, betas=config.betas),
        GeneratorEma(generator, config.ema_kimg, config.ema_rampup) if config.ema_kimg > 0 else None,
        _build_augment(config, device),
    )


class _LogWindow:
    """Running sums of the observed metrics between two log entries, and the training time so far.

    The sums stay detached tensors on the device: no graph is kept, and a GPU is not synchronised every step.
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.train_seconds = 0.0
        self.started = time.perf_counter()

    def add(self, observed: dict[str, torch.Tensor]) -> None:
        for name, value in observed.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.detach()
        self.steps += 1

    def close(self, done: int, noise_std: float, augment: DiffAugment | None) -> dict[str, float]:
        """The log entry of the window ending at step ``done``; the next window starts now."""
        entry: dict[str, float] = {"step": done}
        entry.update({name: float(total) / self.steps for name, total in self.sums.items()})
        elapsed = time.perf_counter() - self.started
        self.train_seconds += elapsed
        entry["images_per_second"] = self.steps * self.batch_size / elapsed
        entry["instance_noise"] = noise_std
        if augment is not None:
            entry["augment_probability"] = float(augment.probability)
        if not all(math.isfinite(value) for value in entry.values()):
            raise FloatingPointError(
                f"training diverged at step {done}: {entry}; lower the learning rates or use fp32"
            )
        self.sums, self.steps = {}, 0
        self.started = time.perf_counter()
        return entry

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The block's time is not training time; the window keeps the time of its steps before it."""
        paused_at = time.perf_counter()
        try:
            yield
        finally:
            self.started += time.perf_counter() - paused_at

    def speed(self, steps: int) -> float:
        """Images per second over ``steps`` steps of the training time logged so far."""
        seconds = self.train_seconds
        return steps * self.batch_size / seconds if seconds > 0 else 0.0
