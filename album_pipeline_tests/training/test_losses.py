"""The loss options: hinge against its formula, R1 against a discriminator whose gradient is known, and every
technique together in a real (tiny) training run."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch
from torch import nn

from album_pipeline.model.networks import Discriminator, GanArchitecture, Generator, sample_inputs
from album_pipeline.training.augment import DiffAugment
from album_pipeline.training.config import TrainingConfig
from album_pipeline.training.loop import train_gan
from album_pipeline.training.losses import AcGanLoss

TINY = GanArchitecture(num_genres=5, noise_dim=8, generator_width=16, discriminator_width=4)


def _loss(config: TrainingConfig, discriminator: nn.Module | None = None, augment=None) -> AcGanLoss:
    torch.manual_seed(0)
    return AcGanLoss(
        Generator(TINY),
        discriminator if discriminator is not None else Discriminator(TINY),
        config,
        use_labels=True,
        autocast=nullcontext,
        augment=augment,
    )


def _batch(count: int = 8):
    torch.manual_seed(1)
    real = torch.rand(count, 3, 64, 64) * 2 - 1
    labels = torch.arange(count) % 5
    fake_genres = torch.arange(count) % 5
    latent, noise = sample_inputs(TINY, fake_genres)
    return real, labels, fake_genres, latent, noise


def test_hinge_loss_follows_sngans_formulas():
    loss = _loss(TrainingConfig(adversarial_loss="hinge", instance_noise=0.0))
    real, labels, fake_genres, latent, noise = _batch()
    d = loss.discriminator_loss(real, labels, fake_genres, latent, noise, 0.0)
    expected = torch.relu(1 - d.real_logit).mean() + torch.relu(1 + d.fake_logit).mean()
    torch.testing.assert_close(d.adversarial, expected)
    g = loss.generator_loss(d.fake, fake_genres, latent, 0.0)
    loss.discriminator.eval()  # no dropout: judge the same fakes twice alike
    judged, _, _ = loss.discriminator(d.fake)
    g_eval = loss.generator_loss(d.fake, fake_genres, latent, 0.0)
    torch.testing.assert_close(g_eval.adversarial, -judged.mean())
    assert g.adversarial.requires_grad


class _LinearCritic(nn.Module):
    """D(x) = <w, x>: its gradient at any image is w, so R1 is |w|^2 exactly."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 64, 64) * 0.01)

    def forward(self, images):
        logit = (images * self.weight).sum(dim=(1, 2, 3))
        return logit, torch.zeros(len(images), 5) + logit[:, None] * 0, torch.zeros(len(images), 2)


def test_r1_is_the_squared_gradient_norm_at_real_covers():
    critic = _LinearCritic()
    loss = _loss(TrainingConfig(r1_gamma=2.0), critic)
    real = _batch()[0]
    torch.testing.assert_close(loss.r1_penalty(real, 0.0), critic.weight.square().sum().detach())


def test_lazy_r1_adds_gamma_over_two_times_the_interval_only_when_asked():
    config = TrainingConfig(r1_gamma=2.0, r1_interval=4, instance_noise=0.0)
    loss = _loss(config)
    loss.discriminator.eval()  # deterministic forward, so two calls compare term by term
    real, labels, fake_genres, latent, noise = _batch()
    torch.manual_seed(5)
    plain = loss.discriminator_loss(real, labels, fake_genres, latent, noise, 0.0, regularise=False)
    torch.manual_seed(5)
    regularised = loss.discriminator_loss(real, labels, fake_genres, latent, noise, 0.0, regularise=True)
    assert plain.r1 is None and regularised.r1 is not None and regularised.r1 > 0
    torch.testing.assert_close(regularised.total - plain.total, (2.0 / 2) * 4 * regularised.r1)
    # gradients of the penalty reach D's weights (it is part of D's objective)
    regularised.r1.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.discriminator.parameters())


def test_augmentation_reaches_everything_d_judges():
    seen = []
    augment = DiffAugment("cutout", 1.0, "cpu")
    loss = _loss(TrainingConfig(instance_noise=0.0), augment=augment)
    loss.discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    real, labels, fake_genres, latent, noise = _batch()
    d = loss.discriminator_loss(real, labels, fake_genres, latent, noise, 0.0)
    loss.generator_loss(d.fake, fake_genres, latent, 0.0)
    assert len(seen) == 3  # reals and fakes in the D step, fakes in the G step
    assert all((judged == 0).flatten(1).sum(dim=1).min() >= 16 * 16 for judged in seen)


def test_every_technique_together_trains_and_logs_the_augmentation_probability(tmp_path, dataset):
    arch = replace(TINY, minibatch_std_group=4, discriminator_norm="spectral")
    config = TrainingConfig(
        steps=6,
        batch_size=8,
        log_every=2,
        checkpoint_every=3,
        precision="fp32",
        adversarial_loss="hinge",
        augment="color,translation,cutout",
        augment_probability=0.5,
        ada_target=0.6,
        ada_kimg=0.1,
        ada_interval=3,
        r1_gamma=1.0,
        r1_interval=2,
        lr_generator=1e-4,
        lr_discriminator=4e-4,
    )
    summary = train_gan(dataset(), arch, config, tmp_path, use_labels=True)
    assert [entry["step"] for entry in summary.history] == [2, 4, 6]
    probabilities = [entry["augment_probability"] for entry in summary.history]
    # one adjustment of 8 * 3 / 100 after step 3, up or down with the sign of D's logits on reals
    assert probabilities[0] == 0.5
    assert probabilities[1] == pytest.approx(0.74) or probabilities[1] == pytest.approx(0.26)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("adversarial_loss", "wasserstein", "adversarial_loss must be one of"),
        ("augment", "color,blur", "unknown augmentation"),
        ("augment_probability", 1.5, "augment_probability must be in"),
        ("ada_target", 1.0, "ada_target must be in"),
        ("r1_interval", 0, "r1_interval at least 1"),
    ],
)
def test_bad_technique_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**{field: value})
