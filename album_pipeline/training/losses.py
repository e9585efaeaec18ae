"""The AC-GAN's losses: one method per training phase, and what the loop observes of them.

Losses (the seed project's, with its defects fixed):
- Discriminator: real/fake BCE (real targets smoothed to ``real_label``) on real and fake images; its genre
  head learns the genre each fake was generated for (like an InfoGAN categorical code) and, when finetuning
  with labels, also the genre of each real image (AC-GAN); its latent head regresses the fakes' codes (MSE).
- Generator: fool the real/fake head, and make its genre and latent codes recoverable by the other heads.
- Instance noise (std ``instance_noise``, decaying linearly to 0) on everything the discriminator sees.

Options (``TrainingConfig``), each off by default: everything D sees passes through ``AcGanLoss.judge``, which
applies DiffAugment (``training.augment``) before the instance noise; ``adversarial_loss="hinge"`` replaces
the real/fake BCE with SNGAN's hinge loss; ``r1_gamma`` adds the R1 penalty on D's gradient at real covers to
the discriminator's total on every ``r1_interval``-th step (lazy regularisation, stylegan2), scaled by that
interval so that its strength does not depend on it. ``mode_seeking_weight`` adds MSGAN's mode-seeking term to
the generator's total (``mode_seeking``): the loop draws fakes in adjacent pairs of one genre
(``paired_fake_genres``), and the term is the reciprocal of how far apart a pair's covers are per unit of
distance between their inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from album_pipeline.training.augment import DiffAugment
from album_pipeline.training.config import TrainingConfig


@dataclass
class DiscriminatorTerms:
    total: torch.Tensor
    adversarial: torch.Tensor
    genre_fake: torch.Tensor
    latent: torch.Tensor
    genre_real: torch.Tensor | None  # only with labels
    r1: torch.Tensor | None  # only on the steps that regularise
    fake: torch.Tensor  # the generated batch (with its graph), judged again by the generator phase
    real_logit: torch.Tensor
    fake_logit: torch.Tensor
    real_genre_logits: torch.Tensor
    fake_genre_logits: torch.Tensor


@dataclass
class GeneratorTerms:
    total: torch.Tensor
    adversarial: torch.Tensor
    genre: torch.Tensor
    latent: torch.Tensor
    mode_seeking: torch.Tensor | None  # only with mode_seeking_weight


class GanLoss:
    """What every architecture's loss holds: one run's (wrapped, compiled) networks, settings, autocast and
    augmentation, and the adversarial loss its architecture trains with (``ARCHITECTURE``'s default unless
    ``adversarial_loss`` is set). The loop calls ``discriminator_loss``, ``generator_loss`` and ``observed``."""

    ARCHITECTURE = "seed"

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        config: TrainingConfig,
        *,
        use_labels: bool,
        autocast: Callable[[], AbstractContextManager],
        augment: DiffAugment | None = None,
    ):
        self.generator = generator
        self.discriminator = discriminator
        self.config = config
        self.use_labels = use_labels
        self.autocast = autocast
        self.augment = augment
        self.adversarial = config.adversarial_loss_for(self.ARCHITECTURE)

    def as_judged(self, images: torch.Tensor, noise_std: float) -> torch.Tensor:
        """``images`` as the discriminator sees them: augmented (DiffAugment), then with instance noise."""
        if self.augment is not None:
            images = self.augment(images)
        return with_instance_noise(images, noise_std)


class AcGanLoss(GanLoss):
    """The seed's AC-GAN loss of each phase for one run's networks and weights."""

    def judge(
        self, images: torch.Tensor, noise_std: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The discriminator's (real/fake logit, genre logits, latent estimate) for ``images``."""
        return self.discriminator(self.as_judged(images, noise_std))

    def discriminator_loss(
        self,
        real: torch.Tensor,
        labels: torch.Tensor | None,
        fake_genres: torch.Tensor,
        latent: torch.Tensor,
        noise: torch.Tensor,
        noise_std: float,
        regularise: bool = False,
    ) -> DiscriminatorTerms:
        """Tell real from fake, recover the fakes' genres and codes (and, with labels, the real genres).

        ``regularise`` adds the (lazy) R1 penalty when ``r1_gamma`` is set.
        """
        config = self.config
        # One autocast region for all three passes: its weight-cast cache is part of the numbers.
        with self.autocast():
            fake = self.generator(fake_genres, latent, noise)
            real_logit, real_genre_logits, _ = self.judge(real, noise_std)
            fake_logit, fake_genre_logits, fake_latent = self.judge(fake.detach(), noise_std)
        adversarial = discriminator_adversarial(real_logit, fake_logit, self.adversarial, config.real_label)
        genre_fake = F.cross_entropy(fake_genre_logits.float(), fake_genres)
        latent_error = F.mse_loss(fake_latent.float(), latent)
        genre = genre_fake
        genre_real = None
        if self.use_labels:
            genre_real = F.cross_entropy(real_genre_logits.float(), labels)
            genre = config.fake_genre_weight_labelled * genre_fake + genre_real
        total = adversarial + config.genre_loss_weight * genre + config.latent_loss_weight * latent_error
        r1 = None
        if regularise and config.r1_gamma > 0:
            r1 = self.r1_penalty(real, noise_std)
            total = total + lazy_r1_weight(config) * r1
        return DiscriminatorTerms(
            total=total,
            adversarial=adversarial,
            genre_fake=genre_fake,
            latent=latent_error,
            genre_real=genre_real,
            r1=r1,
            fake=fake,
            real_logit=real_logit,
            fake_logit=fake_logit,
            real_genre_logits=real_genre_logits,
            fake_genre_logits=fake_genre_logits,
        )

    def r1_penalty(self, real: torch.Tensor, noise_std: float) -> torch.Tensor:
        """Mean squared norm of the real/fake logit's gradient with respect to the real images it judges."""
        return r1_penalty(real, lambda images: self.judge(images, noise_std)[0], self.autocast)

    def generator_loss(
        self,
        fake: torch.Tensor,
        fake_genres: torch.Tensor,
        latent: torch.Tensor,
        noise_std: float,
        noise: torch.Tensor | None = None,
    ) -> GeneratorTerms:
        """Fool the real/fake head while keeping the genre and codes recoverable (and, with
        ``mode_seeking_weight``, the pairs of ``fake`` apart; ``noise`` is then the generator's noise input)."""
        config = self.config
        with self.autocast():
            judged_logit, judged_genre_logits, judged_latent = self.judge(fake, noise_std)
        adversarial = generator_adversarial(judged_logit, self.adversarial)
        genre = F.cross_entropy(judged_genre_logits.float(), fake_genres)
        latent_error = F.mse_loss(judged_latent.float(), latent)
        total = adversarial + config.genre_loss_weight * genre + config.latent_loss_weight * latent_error
        seeking = mode_seeking_term(config, fake, latent, noise)
        if seeking is not None:
            total = total + config.mode_seeking_weight * seeking
        return GeneratorTerms(
            total=total, adversarial=adversarial, genre=genre, latent=latent_error, mode_seeking=seeking
        )

    def observed(
        self, d: DiscriminatorTerms, g: GeneratorTerms, fake_genres: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        return observed_metrics(d, g, fake_genres, labels)


def discriminator_adversarial(
    real_logit: torch.Tensor, fake_logit: torch.Tensor, kind: str, real_label: float
) -> torch.Tensor:
    """D's real/fake loss: hinge, or BCE with the real target smoothed to ``real_label``."""
    if kind == "hinge":
        return F.relu(1.0 - real_logit.float()).mean() + F.relu(1.0 + fake_logit.float()).mean()
    return adversarial_loss(real_logit, real_label) + adversarial_loss(fake_logit, 0.0)


def generator_adversarial(judged_logit: torch.Tensor, kind: str) -> torch.Tensor:
    """G's real/fake loss on D's logits for its fakes (hinge: their negated mean; BCE: non-saturating)."""
    if kind == "hinge":
        return -judged_logit.float().mean()
    return adversarial_loss(judged_logit, 1.0)


def lazy_r1_weight(config: TrainingConfig) -> float:
    """R1's weight on the steps that regularise: gamma / 2, scaled by the interval (lazy regularisation)."""
    return (config.r1_gamma / 2) * config.r1_interval


def r1_penalty(
    real: torch.Tensor,
    real_logit_of: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], AbstractContextManager],
) -> torch.Tensor:
    """Mean squared norm of the real/fake logit's gradient with respect to the real images it judges (the
    forward pass under ``autocast``, the gradient outside it)."""
    real = real.detach().requires_grad_(True)
    with autocast():
        real_logit = real_logit_of(real)
    (gradient,) = torch.autograd.grad(real_logit.float().sum(), real, create_graph=True)
    return gradient.float().square().sum(dim=(1, 2, 3)).mean()


def mode_seeking_term(
    config: TrainingConfig, fake: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor | None:
    """MSGAN's term over the generator's inputs (codes and noise), or None when its weight is 0."""
    if config.mode_seeking_weight <= 0:
        return None
    if noise is None:
        raise ValueError("mode_seeking_weight needs the generator's noise input to compare pairs")
    return mode_seeking(fake, torch.cat([latent, noise], dim=1))


def paired_fake_genres(count: int, num_genres: int, device: torch.device | str) -> torch.Tensor:
    """Uniform genres in adjacent pairs (rows 2i and 2i+1 share one), for the mode-seeking term; an odd
    ``count`` ends with an unpaired row."""
    pairs = torch.randint(0, num_genres, ((count + 1) // 2,), device=device)
    return pairs.repeat_interleave(2)[:count]


def mode_seeking(fake: torch.Tensor, inputs: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's term for the adjacent pairs of a batch (Mao et al. 2019, eq. 3 as in their code): the reciprocal
    of mean |G(z1) - G(z2)| / mean |z1 - z2|, averaged over pairs. It falls as a pair's covers move apart
    relative to their inputs, so minimising it fights the collapse of one genre onto one cover."""
    pairs = fake.shape[0] // 2
    if pairs < 1:
        raise ValueError("the mode-seeking term needs at least 2 fakes (one pair)")
    images = fake[: 2 * pairs].float().flatten(1)
    codes = inputs[: 2 * pairs].float()
    image_distance = (images[0::2] - images[1::2]).abs().mean(dim=1)
    input_distance = (codes[0::2] - codes[1::2]).abs().mean(dim=1)
    return (1.0 / (image_distance / input_distance + eps)).mean()


def observed_metrics(
    d: DiscriminatorTerms,
    g: GeneratorTerms,
    fake_genres: torch.Tensor,
    labels: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """What the loop averages and logs for one step, as (undetached) scalar tensors."""
    observed = {
        "loss_d": d.total,
        "loss_g": g.total,
        "d_adversarial": d.adversarial,
        "d_genre_fake": d.genre_fake,
        "d_latent": d.latent,
        "g_adversarial": g.adversarial,
        "g_genre": g.genre,
        "g_latent": g.latent,
        "d_genre_accuracy_fake": (d.fake_genre_logits.argmax(1) == fake_genres).float().mean(),
        "d_real_probability": torch.sigmoid(d.real_logit.float()).mean(),
        "d_fake_probability": torch.sigmoid(d.fake_logit.float()).mean(),
    }
    if g.mode_seeking is not None:
        observed["g_mode_seeking"] = g.mode_seeking
    if d.genre_real is not None:
        observed["d_genre_real"] = d.genre_real
        observed["d_genre_accuracy_real"] = (d.real_genre_logits.argmax(1) == labels).float().mean()
    return observed


def with_instance_noise(images: torch.Tensor, std: float) -> torch.Tensor:
    return images + std * torch.randn_like(images) if std > 0 else images


def adversarial_loss(logits: torch.Tensor, target: float) -> torch.Tensor:
    """BCE of real/fake logits against a constant target (1 real, 0 fake, ``real_label`` when smoothed)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
