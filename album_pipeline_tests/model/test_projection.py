"""The projection GAN's networks (issue 23): shapes at every resolution, no transposed convolutions, spectral
norm on every D layer, the projection term as Miyato and Koyama define it, and the "any cover" class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from album_pipeline.model.architectures import build_discriminator, build_generator, has_genre_head
from album_pipeline.model.networks import (
    Discriminator,
    GanArchitecture,
    Generator,
    generate_covers,
    sample_inputs,
)
from album_pipeline.model.projection import (
    ProjectionDiscriminator,
    ProjectionGenerator,
    any_cover_class,
    discriminator_channels,
    generator_channels,
)
from album_pipeline.model.sampling import draw_covers


def tiny(**changes) -> GanArchitecture:
    settings = {"architecture": "projection", "num_genres": 3, "noise_dim": 8, "generator_width": 64}
    return GanArchitecture(**{**settings, "discriminator_width": 4, **changes})


@pytest.mark.parametrize("blocks", ["residual", "plain"])
@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_shapes_at_every_resolution(resolution, blocks):
    torch.manual_seed(0)
    arch = tiny(resolution=resolution, blocks=blocks)
    generator, discriminator = build_generator(arch), build_discriminator(arch)
    assert isinstance(generator, ProjectionGenerator) and isinstance(discriminator, ProjectionDiscriminator)
    genres = torch.tensor([0, 1, 2, any_cover_class(arch)])
    latent, noise = sample_inputs(arch, genres)
    assert latent.shape == (4, 0)  # no InfoGAN codes by default
    images = generator(genres, latent, noise)
    assert images.shape == (4, 3, resolution, resolution) and images.abs().max() <= 1
    logit, latent_estimate = discriminator(images, genres)
    assert logit.shape == (4,) and latent_estimate is None
    assert len(generator.blocks) == len(discriminator.blocks) == {64: 4, 128: 5, 256: 6}[resolution]


def test_widths_halve_as_the_image_doubles():
    assert generator_channels(tiny(resolution=64)) == [64, 32, 16, 8, 4]
    assert generator_channels(tiny(resolution=256)) == [64, 32, 16, 8, 4, 2, 1]
    assert discriminator_channels(tiny(resolution=64)) == [4, 8, 16, 32]
    assert discriminator_channels(tiny(resolution=128)) == [2, 4, 8, 16, 32]  # 4x4 features stay 8x wide


def test_the_generator_upsamples_without_transposed_convolutions():
    generator = build_generator(tiny())
    assert not any(isinstance(module, nn.ConvTranspose2d) for module in generator.modules())
    assert any(
        isinstance(module, nn.ConvTranspose2d) for module in build_generator(GanArchitecture()).modules()
    )


@pytest.mark.parametrize("blocks", ["residual", "plain"])
def test_every_discriminator_layer_is_spectrally_normalised(blocks):
    discriminator = build_discriminator(tiny(blocks=blocks, latent_dim=2, minibatch_std_group=2))
    layers = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding)]
    assert layers and all(nn.utils.parametrize.is_parametrized(layer, "weight") for layer in layers)
    assert not any(isinstance(module, nn.BatchNorm2d | nn.Dropout) for module in discriminator.modules())


def test_the_logit_is_a_linear_output_plus_the_genre_embedding_projected_on_the_features():
    torch.manual_seed(0)
    discriminator = build_discriminator(tiny()).eval()
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    pooled: list[torch.Tensor] = []
    discriminator.real_fake_head.register_forward_hook(
        lambda module, inputs, output: pooled.append(inputs[0])
    )
    genres = torch.tensor([0, 2, 3])
    with torch.no_grad():
        logit, _ = discriminator(images, genres)
        features = pooled[0]
        expected = discriminator.real_fake_head(features).squeeze(1)
        expected += (discriminator.genre_projection.weight[genres] * features).sum(dim=1)
        other, _ = discriminator(images, torch.tensor([1, 0, 0]))
    torch.testing.assert_close(logit, expected)
    assert features.shape == (3, 32) and not torch.allclose(logit, other)


def test_the_genre_changes_the_cover_through_conditional_batch_norm():
    torch.manual_seed(0)
    arch = tiny()
    generator = build_generator(arch).eval()
    latent, noise = sample_inputs(arch, torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        covers = [generator(torch.tensor([genre]), latent, noise) for genre in range(arch.num_genres)]
    assert not torch.allclose(covers[0], covers[1]) and not torch.allclose(covers[1], covers[2])


def test_genre_mixes_mix_every_conditional_batch_norm_and_a_pure_mix_is_its_genre():
    torch.manual_seed(0)
    arch = tiny()
    generator = build_generator(arch).eval()
    pure = draw_covers(generator, np.eye(arch.num_genres), seed=3)
    by_index = generate_covers(generator, [0, 1, 2], seed=3).numpy()
    assert np.abs(pure.astype(int) - by_index.astype(int)).max() <= 1  # a float rounding at most
    halfway = draw_covers(generator, np.array([[0.5, 0.5, 0.0]]), seed=3)
    assert not np.array_equal(halfway[0], pure[0]) and not np.array_equal(halfway[0], pure[1])


def test_the_seed_networks_stay_the_seed_default():
    assert GanArchitecture().architecture == "seed"
    assert isinstance(build_generator(GanArchitecture()), Generator)
    assert isinstance(build_discriminator(GanArchitecture()), Discriminator)
    assert has_genre_head(GanArchitecture()) and not has_genre_head(tiny())


def test_defaults_that_differ_are_resolved_per_architecture_and_stored():
    seed, projection = GanArchitecture(), tiny()
    assert (seed.latent_dim, seed.discriminator_norm, seed.dropout) == (2, "batch", 0.3)
    assert (projection.latent_dim, projection.discriminator_norm, projection.dropout) == (0, "spectral", 0.0)
    assert GanArchitecture(**seed.to_dict()) == seed and GanArchitecture(**projection.to_dict()) == projection
    assert tiny(latent_dim=2).latent_dim == 2  # the InfoGAN codes are an option


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architecture": "stylegan"}, "architecture must be one of"),
        ({"architecture": "seed", "resolution": 128}, "the seed architecture makes 64x64 images"),
        (
            {"resolution": 96},
            "resolution 96 is not supported: the projection architecture makes 64x64, 128x128",
        ),
        ({"discriminator_norm": "batch"}, "spectral norm on every layer"),
        ({"dropout": 0.3}, "no dropout"),
        ({"blocks": "dense"}, "blocks must be one of"),
        ({"generator_width": 40, "resolution": 128}, "multiple of 32"),
        ({"discriminator_width": 1, "resolution": 256}, "must halve 5 times .* multiple of 32, got 8"),
        ({"latent_dim": -1}, "latent_dim must be 0"),
    ],
)
def test_bad_architectures_get_a_sentence(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)
