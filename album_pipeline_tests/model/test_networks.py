from __future__ import annotations

import pytest
import torch

from album_pipeline.model.networks import (
    Discriminator,
    GanArchitecture,
    Generator,
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
