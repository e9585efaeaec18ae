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
from album_pipeline.training.losses import AcGanLoss, mode_seeking, paired_fake_genres

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


def test_mode_seeking_is_msgans_ratio_of_image_to_input_distance_over_adjacent_pairs():
    # Two pairs worked by hand: pair 0's covers differ by 0.5 everywhere and its inputs by 0.25 (ratio 2),
    # pair 1's covers by 0.1 and its inputs by 1 (ratio 0.1); the term is the mean of 1 / (ratio + eps).
    fake = torch.zeros(4, 3, 2, 2)
    fake[1] = 0.5
    fake[3] = 0.1
    inputs = torch.zeros(4, 4)
    inputs[1] = 0.25
    inputs[3] = -1.0
    expected = (1 / (2 + 1e-5) + 1 / (0.1 + 1e-5)) / 2
    assert mode_seeking(fake, inputs).item() == pytest.approx(expected, rel=1e-6)
    # An odd fifth fake is unpaired and ignored; one cover is no pair at all.
    assert mode_seeking(torch.cat([fake, fake[:1]]), torch.cat([inputs, inputs[:1]])).item() == pytest.approx(
        expected, rel=1e-6
    )
    with pytest.raises(ValueError, match="at least 2 fakes"):
        mode_seeking(fake[:1], inputs[:1])


def test_mode_seeking_pairs_share_a_genre_and_pushes_a_pairs_covers_apart():
    torch.manual_seed(0)
    genres = paired_fake_genres(1001, 5, "cpu")
    assert len(genres) == 1001
    assert torch.equal(genres[0:1000:2], genres[1:1000:2])
    counts = torch.bincount(genres, minlength=5)
    assert counts.min() > 150 and counts.max() < 250  # uniform: about 200 each
    # The gradient of the term moves a pair's covers away from each other.
    fake = torch.zeros(2, 3, 4, 4)
    fake[1] = 0.01
    fake.requires_grad_(True)
    mode_seeking(fake, torch.tensor([[0.0], [1.0]])).backward()
    assert (fake.grad[0] > 0).all() and (fake.grad[1] < 0).all()


def test_mode_seeking_enters_the_generators_total_with_its_weight():
    config = TrainingConfig(precision="fp32", genre_loss_weight=1.0)
    real, labels, fake_genres, latent, noise = _batch()
    plain_loss = _loss(config)
    fake = plain_loss.generator(fake_genres, latent, noise)
    plain = plain_loss.generator_loss(fake, fake_genres, latent, 0.0)
    assert plain.mode_seeking is None
    seeking = _loss(replace(config, mode_seeking_weight=2.0)).generator_loss(
        fake, fake_genres, latent, 0.0, noise
    )
    expected = mode_seeking(fake, torch.cat([latent, noise], dim=1))
    assert seeking.mode_seeking.item() == pytest.approx(expected.item())
    assert seeking.total.item() == pytest.approx(plain.total.item() + 2.0 * expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="needs the generator's noise"):
        _loss(replace(config, mode_seeking_weight=2.0)).generator_loss(fake, fake_genres, latent, 0.0)


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
        mode_seeking_weight=1.0,
        lr_generator=1e-4,
        lr_discriminator=4e-4,
    )
    summary = train_gan(dataset(), arch, config, tmp_path, use_labels=True)
    assert [entry["step"] for entry in summary.history] == [2, 4, 6]
    assert all(entry["g_mode_seeking"] > 0 for entry in summary.history)
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
        ("mode_seeking_weight", -1.0, "mode_seeking_weight must be 0"),
    ],
)
def test_bad_technique_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**{field: value})
