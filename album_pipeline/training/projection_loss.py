"""The projection GAN's losses (architecture ``projection``), behind the interface the loop calls for every
architecture: ``discriminator_loss``, ``generator_loss`` and ``observed``.

The discriminator judges each image together with its conditioning index: the real cover's genre and the genre
each fake was drawn for when finetuning; when pretraining on unlabelled covers, the one "any cover" class for
all of them (``model.projection.any_cover_class``), so that pretraining learns covers in general and finetuning
starts every genre from them. There is no genre classifier, so no genre loss (``genre_loss_weight`` and
``fake_genre_weight_labelled`` are the seed's); the adversarial loss is hinge unless ``adversarial_loss`` says
otherwise. DiffAugment, instance noise, lazy R1, the InfoGAN codes' regression (when ``latent_dim`` > 0) and
the mode-seeking term work as in the seed's loss (``training.losses``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from album_pipeline.training.config import TrainingConfig
from album_pipeline.training.losses import (
    GanLoss,
    discriminator_adversarial,
    generator_adversarial,
    lazy_r1_weight,
    mode_seeking_term,
    r1_penalty,
)


@dataclass
class ProjectionDiscriminatorTerms:
    total: torch.Tensor
    adversarial: torch.Tensor
    latent: torch.Tensor | None  # only with InfoGAN codes
    r1: torch.Tensor | None  # only on the steps that regularise
    fake: torch.Tensor  # the generated batch (with its graph), judged again by the generator phase
    real_logit: torch.Tensor
    fake_logit: torch.Tensor


@dataclass
class ProjectionGeneratorTerms:
    total: torch.Tensor
    adversarial: torch.Tensor
    latent: torch.Tensor | None
    mode_seeking: torch.Tensor | None


class ProjectionLoss(GanLoss):
    """The projection GAN's loss of each phase for one run's networks and weights; ``any_cover`` is the
    conditioning index of unlabelled pretraining (``model.projection.any_cover_class``)."""

    ARCHITECTURE = "projection"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, config: TrainingConfig, **options):
        self.any_cover = options.pop("any_cover")
        super().__init__(generator, discriminator, config, **options)

    def conditioning(self, genres: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """The classes images are drawn and judged under: their genres, or "any cover" when pretraining."""
        if self.use_labels:
            return genres
        return torch.full((like.shape[0],), self.any_cover, dtype=torch.long, device=like.device)

    def judge(
        self, images: torch.Tensor, classes: torch.Tensor, noise_std: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The discriminator's (real/fake logit, latent estimate or None) for ``images`` of ``classes``."""
        return self.discriminator(self.as_judged(images, noise_std), classes)

    def discriminator_loss(
        self,
        real: torch.Tensor,
        labels: torch.Tensor | None,
        fake_genres: torch.Tensor,
        latent: torch.Tensor,
        noise: torch.Tensor,
        noise_std: float,
        regularise: bool = False,
    ) -> ProjectionDiscriminatorTerms:
        config = self.config
        real_classes = self.conditioning(labels, real)
        fake_classes = self.conditioning(fake_genres, fake_genres)
        with self.autocast():
            fake = self.generator(fake_classes, latent, noise)
            real_logit, _ = self.judge(real, real_classes, noise_std)
            fake_logit, fake_latent = self.judge(fake.detach(), fake_classes, noise_std)
        adversarial = discriminator_adversarial(real_logit, fake_logit, self.adversarial, config.real_label)
        total = adversarial
        latent_error = None
        if fake_latent is not None:
            latent_error = F.mse_loss(fake_latent.float(), latent)
            total = total + config.latent_loss_weight * latent_error
        r1 = None
        if regularise and config.r1_gamma > 0:
            r1 = r1_penalty(
                real, lambda images: self.judge(images, real_classes, noise_std)[0], self.autocast
            )
            total = total + lazy_r1_weight(config) * r1
        return ProjectionDiscriminatorTerms(
            total=total,
            adversarial=adversarial,
            latent=latent_error,
            r1=r1,
            fake=fake,
            real_logit=real_logit,
            fake_logit=fake_logit,
        )

    def generator_loss(
        self,
        fake: torch.Tensor,
        fake_genres: torch.Tensor,
        latent: torch.Tensor,
        noise_std: float,
        noise: torch.Tensor | None = None,
    ) -> ProjectionGeneratorTerms:
        config = self.config
        with self.autocast():
            judged_logit, judged_latent = self.judge(
                fake, self.conditioning(fake_genres, fake_genres), noise_std
            )
        adversarial = generator_adversarial(judged_logit, self.adversarial)
        total = adversarial
        latent_error = None
        if judged_latent is not None:
            latent_error = F.mse_loss(judged_latent.float(), latent)
            total = total + config.latent_loss_weight * latent_error
        seeking = mode_seeking_term(config, fake, latent, noise)
        if seeking is not None:
            total = total + config.mode_seeking_weight * seeking
        return ProjectionGeneratorTerms(
            total=total, adversarial=adversarial, latent=latent_error, mode_seeking=seeking
        )

    def observed(
        self,
        d: ProjectionDiscriminatorTerms,
        g: ProjectionGeneratorTerms,
        fake_genres: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """What the loop averages and logs for one step: the losses, and D's mean logit on real and fake
        covers (under the hinge loss, how far each side is from its margin of 1)."""
        observed = {
            "loss_d": d.total,
            "loss_g": g.total,
            "d_adversarial": d.adversarial,
            "g_adversarial": g.adversarial,
            "d_real_logit": d.real_logit.float().mean(),
            "d_fake_logit": d.fake_logit.float().mean(),
        }
        optional = {"d_latent": d.latent, "g_latent": g.latent, "g_mode_seeking": g.mode_seeking}
        observed.update({name: value for name, value in optional.items() if value is not None})
        return observed
