"""The settings of one GAN training run: a frozen dataclass that owns every default and its validation.

The Dagster Configs (``album_pipeline.defs.training``) take their defaults and descriptions from here. The
whole dict (``to_dict``) is stored in each checkpoint, feeds the run key (``checkpointing.run_key``) and
becomes the run's MLflow params, so a field's name is part of the checkpoint format.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from album_pipeline.training.augment import parse_policy

PRECISIONS = ("auto", "bf16", "fp32")
ADVERSARIAL_LOSSES = ("bce", "hinge")
# Each architecture's own loss where adversarial_loss is left unset: the seed's BCE; the projection
# discriminator's hinge (Miyato and Koyama 2018, BigGAN).
DEFAULT_ADVERSARIAL_LOSS = {"seed": "bce", "projection": "hinge"}
# torch.compile's modes; reduce-overhead records CUDA graphs, so it needs a CUDA device (training.compute).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _doc(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class TrainingConfig:
    # The pretraining length at the seed's scale; finetuning overrides it (FinetuneConfig.stage_overrides).
    steps: int = _doc(20_000, "Optimiser steps (each one D step and one G step).")
    batch_size: int = 128
    lr_generator: float = 2e-4
    lr_discriminator: float = 1e-5
    betas: tuple[float, float] = _doc((0.5, 0.999), "Adam's (beta1, beta2), shared by G and D.")
    real_label: float = _doc(0.9, "One-sided label smoothing: the target of real images.")
    genre_loss_weight: float = _doc(10.0, "Weight of the genre losses (seed: 10).")
    latent_loss_weight: float = 1.0
    # At 0 D's genre head learns real covers' genres only, so G must match real genres instead of keeping the
    # arbitrary codes that pretraining gave each genre.
    fake_genre_weight_labelled: float = _doc(
        1.0,
        "Weight of fakes in D's genre loss when real labels exist (seed: 1). At 0, D's genre head learns only "
        "from real covers, so G must match the real genre rather than any style D memorised.",
    )
    instance_noise: float = _doc(0.1, "Initial std of noise on D's inputs, decaying linearly to 0.")
    # stylegan2-ada's training-loop default, in images so that it does not change with the batch size. Here
    # 10k images are about two passes over the full scale's labelled covers (~5,000): long enough to smooth
    # G's step-to-step oscillation, short next to finetuning's 640k images, so the average is of the
    # finished generator, not of the one before genres were bound.
    ema_kimg: float = _doc(
        10.0,
        "Half-life of the generator's exponential moving average, in thousands of images (stylegan2-ada's "
        "ema_kimg). Evaluation, generate and the registry use the average. 0 turns it off.",
    )
    # stylegan2-ada's train.py default. The demo's stages see 13k and 83k images, so the ramp-up, not the
    # half-life, sets their averaging: a half-life of 5% of the images seen (4k at the end of finetuning).
    ema_rampup: float | None = _doc(
        0.05,
        "EMA ramp-up (stylegan2-ada): the half-life is at most this fraction of the images seen so far, so "
        "early on the average follows the generator instead of holding on to its untrained start. None: the "
        "full half-life from the first step.",
    )
    precision: str = _doc("auto", "auto | bf16 | fp32 (auto: bf16 autocast where computed natively).")
    device: str = _doc("auto", "auto | cpu | cuda | cuda:N (auto: cuda when available).")
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    channels_last: bool | None = _doc(
        None, "Channels-last memory format; default: on for CUDA, where it speeds up convolutions."
    )
    threads: int | None = _doc(None, "CPU threads for torch; default: every core this process may use.")
    # The techniques below are off at their defaults, so that a default run is the seed's loop.
    adversarial_loss: str | None = _doc(
        None,
        "bce (with label smoothing) or hinge (SNGAN's; real_label does not apply); default: the "
        "architecture's own (seed bce, projection hinge). The TTUR rule (Heusel et al. 2017) is "
        "lr_discriminator above lr_generator, e.g. 4e-4 and 1e-4.",
    )
    augment: str = _doc(
        "",
        "DiffAugment policies on everything D sees, in both steps: a comma-separated subset of "
        "color,translation,cutout ('' for none; DiffAugment's own is all three).",
    )
    augment_probability: float = _doc(
        1.0, "Chance that each image undergoes each policy (DiffAugment: 1); with ada_target, the start."
    )
    ada_target: float | None = _doc(
        None,
        "Adapt augment_probability as stylegan2-ada does: raise it while the mean sign of D's logits on "
        "real covers exceeds this (ADA: 0.6), lower it otherwise. None keeps it fixed.",
    )
    ada_kimg: float = _doc(
        100.0, "Thousands of images over which ADA may move the probability from 0 to 1 (ADA: 500)."
    )
    ada_interval: int = _doc(4, "Steps between two adjustments of ADA's probability (ADA: 4).")
    r1_gamma: float = _doc(
        0.0,
        "Weight of the R1 penalty on D's gradient at real covers (Mescheder et al. 2018); 0 turns it off.",
    )
    r1_interval: int = _doc(
        16, "Lazy regularisation: R1 every this many steps, scaled up to match (stylegan2's 16)."
    )
    mode_seeking_weight: float = _doc(
        0.0,
        "Weight of the mode-seeking term (MSGAN, Mao et al. 2019; their 1): fakes are drawn in pairs of one "
        "genre, and G is penalised when two inputs far apart give covers close together, the within-genre "
        "collapse of a conditional GAN. 0 turns it off.",
    )
    device_data_budget_gb: float | None = _doc(
        None,
        "Largest training set (GB of uint8 pixels) kept whole in the device's memory, batches drawn there; a "
        "larger one streams from the shards. Either way the batches are the same. Default: half the free GPU "
        "memory on CUDA, 1 GB on CPU. 0 always streams.",
    )
    compile: bool = _doc(False, "torch.compile the generator and discriminator (the first steps compile).")
    compile_mode: str = _doc(
        "default",
        "torch.compile mode with compile: default | reduce-overhead (CUDA graphs; CUDA only) | max-autotune | "
        "max-autotune-no-cudagraphs.",
    )

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be at least 2 (batch norm needs 2 images), got {self.batch_size}"
            )
        if len(self.betas) != 2:
            raise ValueError(f"betas must be Adam's two values (beta1, beta2), got {list(self.betas)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be at least 1")
        if not 0.0 < self.real_label <= 1.0:
            raise ValueError(f"real_label must be in (0, 1], got {self.real_label}")
        if self.instance_noise < 0:
            raise ValueError(f"instance_noise must be non-negative, got {self.instance_noise}")
        if self.adversarial_loss is not None and self.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(
                f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {self.adversarial_loss!r}"
            )
        parse_policy(self.augment)
        if not 0.0 <= self.augment_probability <= 1.0:
            raise ValueError(f"augment_probability must be in [0, 1], got {self.augment_probability}")
        if self.ada_target is not None and not -1.0 < self.ada_target < 1.0:
            raise ValueError(f"ada_target must be in (-1, 1) (ADA uses 0.6), got {self.ada_target}")
        if self.ada_kimg <= 0 or self.ada_interval < 1:
            raise ValueError("ada_kimg must be positive and ada_interval at least 1")
        if self.r1_gamma < 0 or self.r1_interval < 1:
            raise ValueError("r1_gamma must be non-negative and r1_interval at least 1")
        if not 0 <= self.mode_seeking_weight < float("inf"):
            raise ValueError(
                f"mode_seeking_weight must be 0 (off) or positive, got {self.mode_seeking_weight}"
            )
        if not 0 <= self.ema_kimg < float("inf"):
            raise ValueError(f"ema_kimg must be 0 (no EMA) or a positive number of kimg, got {self.ema_kimg}")
        if self.ema_rampup is not None and not 0 < self.ema_rampup < float("inf"):
            raise ValueError(f"ema_rampup must be None or a positive ratio, got {self.ema_rampup}")
        if self.device_data_budget_gb is not None and not 0 <= self.device_data_budget_gb < float("inf"):
            raise ValueError(
                f"device_data_budget_gb must be None (automatic), 0 (always stream) or a number of GB, "
                f"got {self.device_data_budget_gb}"
            )
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(
                f"compile_mode {self.compile_mode!r} needs compile=True; set it, or drop the mode"
            )

    def adversarial_loss_for(self, architecture: str) -> str:
        """The adversarial loss a run of ``architecture`` trains with."""
        return self.adversarial_loss or DEFAULT_ADVERSARIAL_LOSS[architecture]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["betas"] = list(self.betas)
        return values
