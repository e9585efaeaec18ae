"""The AC-GAN training loop: pretraining on unlabelled covers and finetuning on genre-labelled ones.

One function, ``train_gan``, read top to bottom: pick device and precision, build or restore the networks,
then alternate a discriminator step and a generator step on streamed batches, logging averaged losses and
checkpointing atomically as it goes.

Losses (the seed project's, with its defects fixed):
- Discriminator: real/fake BCE (real targets smoothed to ``real_label``) on real and fake images; its genre
  head learns the genre each fake was generated for (like an InfoGAN categorical code) and, when finetuning
  with labels, also the genre of each real image (AC-GAN); its latent head regresses the fakes' codes (MSE).
- Generator: fool the real/fake head, and make its genre and latent codes recoverable by the other heads.
- Instance noise (std ``instance_noise``, decaying linearly to 0) on everything the discriminator sees.
- Fake genres are drawn uniformly over all genres (the seed never generated the last one), and losses are
  accumulated detached, so no graph outlives its step.

Checkpoint payload keys: format, run_key, step, steps, generator, discriminator, optimizer_generator,
optimizer_discriminator, arch (GanArchitecture as a dict), config, genres, use_labels, history,
images_per_second, device, precision.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from album_pipeline.data.loader import iterate_batches
from album_pipeline.data.shards import ShardSet
from album_pipeline.model.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from album_pipeline.model.networks import Discriminator, GanArchitecture, Generator, sample_inputs

LATEST_CHECKPOINT = "latest.pt"
FINAL_CHECKPOINT = "final.pt"
PRECISIONS = ("auto", "bf16", "fp32")

# Fields that change how often we look at training, not what it computes; a run that differs only in them
# may resume another's checkpoint.
_OBSERVATION_FIELDS = ("checkpoint_every", "log_every", "device", "threads")


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = 5000
    batch_size: int = 128
    lr_generator: float = 2e-4
    lr_discriminator: float = 1e-5
    betas: tuple[float, float] = (0.5, 0.999)
    real_label: float = 0.9  # one-sided label smoothing
    genre_loss_weight: float = 10.0
    latent_loss_weight: float = 1.0
    # With labels, how much D's genre head still learns the genres of fakes (1: the seed's AC-GAN). At 0 it
    # learns real covers' genres only, so G must match real genres instead of keeping the arbitrary codes
    # that pretraining gave each genre.
    fake_genre_weight_labelled: float = 1.0
    instance_noise: float = 0.1  # initial std of noise on the discriminator's inputs, decays linearly to 0
    precision: str = "auto"  # auto: bf16 autocast where the device computes bf16 natively, else fp32
    device: str = "auto"  # auto: cuda when available, else cpu
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    channels_last: bool | None = None  # None: on for CUDA, where it helps convolutions; off on CPU
    threads: int | None = None  # CPU threads for torch; None: every core this process may use

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be at least 2 (batch norm needs 2 images), got {self.batch_size}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be at least 1")
        if not 0.0 < self.real_label <= 1.0:
            raise ValueError(f"real_label must be in (0, 1], got {self.real_label}")
        if self.instance_noise < 0:
            raise ValueError(f"instance_noise must be non-negative, got {self.instance_noise}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["betas"] = list(self.betas)
        return values


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


def train_gan(
    data: ShardSet,
    arch: GanArchitecture,
    config: TrainingConfig,
    checkpoint_dir: Path,
    *,
    use_labels: bool,
    init_checkpoint: Path | None = None,
    log: Callable[[dict], None] | None = None,
) -> TrainingSummary:
    """Train the GAN on ``data`` and return where its final checkpoint is.

    ``use_labels=False`` pretrains (labels ignored); ``use_labels=True`` finetunes on the labelled rows of
    ``data`` (pass the train split). ``init_checkpoint`` starts from a pretrained run's weights with fresh
    optimizers. A ``latest.pt`` in ``checkpoint_dir`` from an interrupted run of the same configuration on
    the same data is resumed; one from a different run is replaced.
    """
    # -- inputs ------------------------------------------------------------------------------------------
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
    batch_size = min(config.batch_size, len(data))
    if batch_size < 2:
        raise ValueError(f"the dataset has {len(data)} image(s); batch norm needs at least 2 to train")

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last
    _configure_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    checkpoint_dir = Path(checkpoint_dir)
    run_key = _run_key(data, arch, config, use_labels, init_checkpoint)

    # -- networks, optimizers, and where to start from ---------------------------------------------------
    torch.manual_seed(
        config.seed
    )  # initial weights follow the config, not whatever ran earlier in the process
    generator = Generator(arch).to(device=device, memory_format=memory_format)
    discriminator = Discriminator(arch).to(device=device, memory_format=memory_format)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=config.lr_generator, betas=config.betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_discriminator, betas=config.betas)
    start_step, history, previous_speed = 0, [], 0.0
    latest = checkpoint_dir / LATEST_CHECKPOINT
    resumable = load_checkpoint(latest, map_location=device) if latest.is_file() else None
    if resumable is not None and resumable.get("run_key") == run_key:
        generator.load_state_dict(resumable["generator"])
        discriminator.load_state_dict(resumable["discriminator"])
        optimizer_g.load_state_dict(resumable["optimizer_generator"])
        optimizer_d.load_state_dict(resumable["optimizer_discriminator"])
        start_step, history = int(resumable["step"]), list(resumable["history"])
        previous_speed = float(resumable.get("images_per_second", 0.0))
    elif init_checkpoint is not None:
        _load_pretrained_weights(init_checkpoint, arch, generator, discriminator, device)
    del resumable

    def payload(step: int, speed: float) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "run_key": run_key,
            "step": step,
            "steps": config.steps,
            "generator": generator.state_dict(),
            "discriminator": discriminator.state_dict(),
            "optimizer_generator": optimizer_g.state_dict(),
            "optimizer_discriminator": optimizer_d.state_dict(),
            "arch": arch.to_dict(),
            "config": config.to_dict(),
            "genres": list(data.genres),
            "use_labels": use_labels,
            "history": history,
            "images_per_second": speed,
            "device": str(device),
            "precision": precision,
        }

    # -- the loop ----------------------------------------------------------------------------------------
    torch.manual_seed(config.seed + start_step)  # a resumed run draws fresh noise, not a replay
    batches = iterate_batches(
        data,
        batch_size,
        device=device,
        seed=config.seed + start_step,
        channels_last=channels_last,
        labels=use_labels,
    )
    generator.train()
    discriminator.train()
    sums: dict[str, torch.Tensor] = {}
    window_steps, window_start = 0, time.perf_counter()
    train_seconds = 0.0
    with closing(batches):  # stops the loader's reader thread, also when a step raises
        for step in range(start_step, config.steps):
            batch = next(batches)
            real, labels = batch if use_labels else (batch, None)
            noise_std = config.instance_noise * max(0.0, 1.0 - step / config.steps)
            fake_genres = sample_fake_genres(batch_size, arch.num_genres, device)
            latent, noise = sample_inputs(arch, fake_genres)

            # Discriminator: tell real from fake, recover the fakes' genres and codes (and real genres).
            discriminator.requires_grad_(True)
            with autocast:
                fake = generator(fake_genres, latent, noise)
                real_logit, real_genre_logits, _ = discriminator(_with_noise(real, noise_std))
                fake_logit, fake_genre_logits, fake_latent = discriminator(
                    _with_noise(fake.detach(), noise_std)
                )
            d_adversarial = _adversarial_loss(real_logit, config.real_label) + _adversarial_loss(
                fake_logit, 0.0
            )
            d_genre_fake = F.cross_entropy(fake_genre_logits.float(), fake_genres)
            d_latent = F.mse_loss(fake_latent.float(), latent)
            d_genre = d_genre_fake
            if use_labels:
                d_genre_real = F.cross_entropy(real_genre_logits.float(), labels)
                d_genre = config.fake_genre_weight_labelled * d_genre_fake + d_genre_real
            loss_d = d_adversarial + config.genre_loss_weight * d_genre + config.latent_loss_weight * d_latent
            optimizer_d.zero_grad(set_to_none=True)
            loss_d.backward()
            optimizer_d.step()

            # Generator: fool the real/fake head while keeping genre and codes recoverable. The discriminator's
            # weights need no gradients here, which saves a third of its backward pass.
            discriminator.requires_grad_(False)
            with autocast:
                judged_logit, judged_genre_logits, judged_latent = discriminator(_with_noise(fake, noise_std))
            g_adversarial = _adversarial_loss(judged_logit, 1.0)
            g_genre = F.cross_entropy(judged_genre_logits.float(), fake_genres)
            g_latent = F.mse_loss(judged_latent.float(), latent)
            loss_g = g_adversarial + config.genre_loss_weight * g_genre + config.latent_loss_weight * g_latent
            optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optimizer_g.step()

            # Detached running sums on the device: no graph is kept, and a GPU is not synchronised every step.
            observed = {
                "loss_d": loss_d,
                "loss_g": loss_g,
                "d_adversarial": d_adversarial,
                "d_genre_fake": d_genre_fake,
                "d_latent": d_latent,
                "g_adversarial": g_adversarial,
                "g_genre": g_genre,
                "g_latent": g_latent,
                "d_genre_accuracy_fake": (fake_genre_logits.argmax(1) == fake_genres).float().mean(),
                "d_real_probability": torch.sigmoid(real_logit.float()).mean(),
                "d_fake_probability": torch.sigmoid(fake_logit.float()).mean(),
            }
            if use_labels:
                observed["d_genre_real"] = d_genre_real
                observed["d_genre_accuracy_real"] = (real_genre_logits.argmax(1) == labels).float().mean()
            for name, value in observed.items():
                sums[name] = sums.get(name, 0.0) + value.detach()
            window_steps += 1

            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                entry: dict[str, float] = {"step": done}
                entry.update({name: float(total) / window_steps for name, total in sums.items()})
                elapsed = time.perf_counter() - window_start
                train_seconds += elapsed
                entry["images_per_second"] = window_steps * batch_size / elapsed
                entry["instance_noise"] = noise_std
                if not all(math.isfinite(value) for value in entry.values()):
                    raise FloatingPointError(
                        f"training diverged at step {done}: {entry}; lower the learning rates or use fp32"
                    )
                history.append(entry)
                if log is not None:
                    log(dict(entry))
                sums, window_steps = {}, 0
                window_start = time.perf_counter()
            if done % config.checkpoint_every == 0 and done != config.steps:
                save_checkpoint(latest, payload(done, _speed(done - start_step, batch_size, train_seconds)))
                window_start = time.perf_counter()  # saving is not training time

    # -- the end -----------------------------------------------------------------------------------------
    steps_this_run = max(0, config.steps - start_step)
    speed = _speed(steps_this_run, batch_size, train_seconds) if steps_this_run else previous_speed
    final = payload(config.steps, speed)
    save_checkpoint(latest, final)
    final_path = save_checkpoint(checkpoint_dir / FINAL_CHECKPOINT, final)
    final_losses = {name: value for name, value in history[-1].items() if name != "step"} if history else {}
    return TrainingSummary(
        checkpoint_path=final_path,
        steps=config.steps,
        steps_this_run=steps_this_run,
        resumed_from_step=start_step,
        batch_size=batch_size,
        images_per_second=speed,
        device=str(device),
        precision=precision,
        final_losses=final_losses,
        history=history,
    )


def sample_fake_genres(count: int, num_genres: int, device: torch.device | str) -> torch.Tensor:
    """Genres to generate, uniform over all ``num_genres`` classes (the seed never drew the last)."""
    return torch.randint(0, num_genres, (count,), device=device)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """``bf16`` or ``fp32``: auto picks bf16 where the hardware computes it natively (else it is slower)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them oneDNN emulates bf16 and autocast slows training down."""
    # These probes are private to torch.cpu; a torch without them simply gets fp32.
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    return False


def _configure_threads(threads: int | None) -> None:
    # torch counts the machine's cores, not the ones a container or affinity mask grants us.
    available = len(os.sched_getaffinity(0))
    wanted = threads if threads is not None else min(torch.get_num_threads(), available)
    if wanted < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)


def _with_noise(images: torch.Tensor, std: float) -> torch.Tensor:
    return images + std * torch.randn_like(images) if std > 0 else images


def _adversarial_loss(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _speed(steps: int, batch_size: int, seconds: float) -> float:
    return steps * batch_size / seconds if seconds > 0 else 0.0


def _load_pretrained_weights(
    path: Path,
    arch: GanArchitecture,
    generator: Generator,
    discriminator: Discriminator,
    device: torch.device,
) -> None:
    pretrained = load_checkpoint(path, map_location=device)
    if "generator" not in pretrained or "discriminator" not in pretrained:
        raise ValueError(
            f"{path} lacks generator/discriminator weights; pass a checkpoint written by train_gan"
        )
    if pretrained.get("arch") != arch.to_dict():
        raise ValueError(
            f"{path} was trained with architecture {pretrained.get('architecture')}, not {arch.to_dict()}; "
            "finetune with the pretrained run's architecture"
        )
    generator.load_state_dict(pretrained["generator"])
    discriminator.load_state_dict(pretrained["discriminator"])


def _run_key(
    data: ShardSet,
    arch: GanArchitecture,
    config: TrainingConfig,
    use_labels: bool,
    init_checkpoint: Path | None,
) -> str:
    """Identifies what a run computes, so that only a checkpoint of the very same run is resumed."""
    settings = {name: value for name, value in config.to_dict().items() if name not in _OBSERVATION_FIELDS}
    digest = hashlib.sha256()
    digest.update(
        json.dumps([settings, arch.to_dict(), use_labels, list(data.genres)], sort_keys=True).encode()
    )
    digest.update(data.fingerprint().encode())  # image ids, labels, resolution
    if init_checkpoint is not None:
        digest.update(_checkpoint_identity(Path(init_checkpoint)).encode())
    return digest.hexdigest()


def _checkpoint_identity(path: Path) -> str:
    """What a checkpoint holds, not its bytes: torch.save writes a random id into every file, so the same
    weights saved twice differ byte for byte (and a finished run re-saves its final checkpoint)."""
    if not path.is_file():
        raise FileNotFoundError(f"init checkpoint {path} does not exist; pretrain first")
    payload = load_checkpoint(path)
    if "run_key" in payload and "step" in payload:
        return f"{payload['run_key']}@{payload['step']}"
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
