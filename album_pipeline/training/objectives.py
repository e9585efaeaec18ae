"""The loss of each architecture, chosen by its name (``GanArchitecture.architecture``).

Every loss is a ``training.losses.GanLoss`` and answers the loop through one interface:
``discriminator_loss(real, labels, fake_genres, latent, noise, noise_std, regularise)`` and
``generator_loss(fake, fake_genres, latent, noise_std, noise)`` return terms with ``total`` (and, for D,
``fake`` and ``real_logit``), and ``observed(d_terms, g_terms, fake_genres, labels)`` the step's scalars to log.
"""

from __future__ import annotations

from torch import nn

from album_pipeline.model.networks import GanArchitecture
from album_pipeline.model.projection import any_cover_class
from album_pipeline.training.config import TrainingConfig
from album_pipeline.training.losses import AcGanLoss, GanLoss
from album_pipeline.training.projection_loss import ProjectionLoss


def build_loss(
    arch: GanArchitecture, generator: nn.Module, discriminator: nn.Module, config: TrainingConfig, **options
) -> GanLoss:
    """``arch``'s loss over the networks; ``options`` are GanLoss's (use_labels, autocast, augment)."""
    if arch.architecture == "projection":
        return ProjectionLoss(generator, discriminator, config, any_cover=any_cover_class(arch), **options)
    return AcGanLoss(generator, discriminator, config, **options)
