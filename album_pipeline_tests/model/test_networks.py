from __future__ import annotations

import pytest
import torch

from album_pipeline.model.networks import (
    Discriminator,
    GanArchitecture,
    Generator,
    MinibatchStd,
    generate_covers,
    sample_inputs,
)

ARCH = GanArchitecture(num_genres=4, noise_dim=8, generator_width=16, discriminator_width=4)


def test_generator_and_discriminator_shapes():
    torch.manual_seed(0)
    generator, discriminator = Generator(ARCH), Discriminator(ARCH)
    genres = torch.tensor([0, 1, 2, 3, 3])
    latent, noise = sample_inputs(ARCH, genres)
    assert latent.shape == (5, ARCH.latent_dim) and noise.shape == (5, ARCH.noise_dim)
    assert latent.min() >= -1 and latent.max() <= 1
    images = generator(genres, latent, noise)
    assert images.shape == (5, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    real_fake, genre_logits, latent_estimate = discriminator(images)
    assert real_fake.shape == (5,) and genre_logits.shape == (5, 4) and latent_estimate.shape == (5, 2)


def test_the_genre_changes_the_output():
    torch.manual_seed(0)
    generator = Generator(ARCH).eval()
    latent, noise = sample_inputs(ARCH, torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        first = generator(torch.tensor([0]), latent, noise)
        second = generator(torch.tensor([3]), latent, noise)
    assert not torch.allclose(first, second)


def test_generate_covers_is_deterministic_in_its_seed():
    torch.manual_seed(0)
    generator = Generator(ARCH)
    generator.train()
    covers = generate_covers(generator, [0, 1, 2, 3], seed=5, batch_size=3)
    assert covers.shape == (4, 64, 64, 3) and covers.dtype == torch.uint8
    assert torch.equal(covers, generate_covers(generator, [0, 1, 2, 3], seed=5, batch_size=3))
    assert not torch.equal(covers, generate_covers(generator, [0, 1, 2, 3], seed=6, batch_size=3))
    assert generator.training  # the caller's mode is restored
    assert generate_covers(generator, []).shape == (0, 64, 64, 3)


def test_architecture_validation():
    assert GanArchitecture().to_dict()["generator_width"] == 512  # the seed's widths stay the defaults
    with pytest.raises(ValueError, match="resolution"):
        GanArchitecture(resolution=32)
    with pytest.raises(ValueError, match="multiple of 8"):
        GanArchitecture(generator_width=12)
    with pytest.raises(ValueError, match="num_genres"):
        GanArchitecture(num_genres=0)


def _reference_minibatch_std(features: torch.Tensor, group: int) -> torch.Tensor:
    """stylegan2-ada-pytorch's MinibatchStdLayer with one channel group, written out step by step."""
    n, c, h, w = features.shape
    y = features.reshape(group, -1, 1, c, h, w)
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = (y + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])
    y = y.reshape(-1, 1, 1, 1).repeat(group, 1, h, w)
    return torch.cat([features, y], dim=1)


def test_minibatch_std_matches_stylegan2_adas_layer():
    features = torch.randn(8, 6, 4, 4)
    torch.testing.assert_close(MinibatchStd(4)(features), _reference_minibatch_std(features, 4))
    # a batch that does not divide by the group size uses the largest divisor below it
    torch.testing.assert_close(MinibatchStd(4)(features[:6]), _reference_minibatch_std(features[:6], 3))


def test_minibatch_std_tells_a_collapsed_batch_from_a_varied_one():
    arch = GanArchitecture(num_genres=3, generator_width=16, discriminator_width=4, minibatch_std_group=4)
    discriminator = Discriminator(arch)
    assert arch.to_dict()["minibatch_std_group"] == 4
    varied = torch.rand(8, 3, 64, 64) * 2 - 1
    collapsed = varied[:1].expand(8, -1, -1, -1).contiguous()
    spread = {}
    discriminator.minibatch_std.register_forward_hook(
        lambda module, inputs, output: spread.__setitem__("value", output[:, -1].mean().item())
    )
    discriminator(collapsed)
    collapsed_spread = spread["value"]
    discriminator(varied)
    assert collapsed_spread < 1e-3 < spread["value"]


def test_spectral_norm_replaces_batch_norm_in_d_and_bounds_each_layer():
    arch = GanArchitecture(
        num_genres=3, generator_width=16, discriminator_width=4, discriminator_norm="spectral"
    )
    discriminator = Discriminator(arch)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in discriminator.modules())
    for _ in range(30):  # power iterations run in train mode
        discriminator(torch.rand(4, 3, 64, 64))
    weight = discriminator.real_fake_head.weight  # the normalised weight
    assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="discriminator_norm must be one of"):
        GanArchitecture(discriminator_norm="layer")
    with pytest.raises(ValueError, match="minibatch_std_group"):
        GanArchitecture(minibatch_std_group=1)
