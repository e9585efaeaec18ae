"""The projection-conditioned GAN (architecture ``projection``): cGANs with Projection Discriminator (Miyato and
Koyama 2018) with SNGAN/BigGAN-style blocks, at 64, 128 or 256 px.

Generator: noise (+ optional InfoGAN codes) -> dense -> 4x4 -> one block per doubling, each a nearest-neighbour
x2 upsampling and 3x3 convolutions under class-conditional batch norm -> 3x3 conv -> tanh. Upsampling by
resizing, not transposed convolutions, so no checkerboard is painted (Odena, Dumoulin and Olah 2016).
Discriminator: spectral norm on every layer, one downsampling block per halving to 4x4, ReLU, global sum
pooling, then ``linear(features) + <embedding(genre), features>``: the genre enters as a projection, not as a
classifier whose loss pulls covers towards whatever is easiest to classify (TAC-GAN, ReACGAN).

Blocks are ``residual`` (BigGAN's: normalise, activate, resample, convolve twice, plus a 1x1 shortcut) or
``plain`` ([x2, conv, CBN, ReLU] in G; a 4x4 stride-2 conv and LeakyReLU in D).

Conditioning: one genre embedding feeds every conditional batch norm through a linear map to its gain and bias
(BigGAN's shared embedding), so mixing genre embeddings mixes every batch-norm parameter with them, and
``model.sampling``'s genre mixes work as for the seed. The embeddings have one row more than there are genres:
``any_cover_class`` (the last), the one class unlabelled pretraining uses for every cover, so that pretraining
trains every weight but the genres' rows. Finetuning starts each genre from its own (untrained, random) row:
copying the "any cover" row into every genre made them identical, and Adam, which moves a weight by about the
learning rate a step, had not separated them after the demo's 550 steps (genre accuracy 0.21 against 0.95;
BENCHMARKS.md, "Architectures").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from album_pipeline.model.networks import (
    GanArchitecture,
    MinibatchStd,
    spectrally_normalised,
    upsampling_blocks,
)


def generator_channels(arch: GanArchitecture) -> list[int]:
    """Channels at 4x4 and after each upsampling block: ``generator_width`` halving as the image doubles."""
    return [arch.generator_width >> block for block in range(upsampling_blocks(arch.resolution) + 1)]


def discriminator_channels(arch: GanArchitecture) -> list[int]:
    """Channels after each downsampling block: at 64 px ``discriminator_width`` doubling to 8x it at 4x4; each
    doubling of the image adds a block in front at half the width, so the 4x4 features stay 8x wide."""
    blocks = upsampling_blocks(arch.resolution)
    last = arch.discriminator_width * 8
    return [last >> (blocks - 1 - block) for block in range(blocks)]


def any_cover_class(arch: GanArchitecture) -> int:
    """The conditioning index of "any cover", used for every image when pretraining without labels."""
    return arch.num_genres


class ConditionalBatchNorm(nn.Module):
    """Batch norm without its own affine parameters; gain ``1 + W_g e`` and bias ``W_b e`` from the genre
    embedding ``e`` (BigGAN's conditional batch norm over a shared embedding)."""

    def __init__(self, channels: int, embedding_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(embedding_dim, channels, bias=False)
        self.bias = nn.Linear(embedding_dim, channels, bias=False)

    def forward(self, features: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        gain = 1 + self.gain(embedded)[:, :, None, None]
        return self.norm(features) * gain + self.bias(embedded)[:, :, None, None]


def _upsample(features: torch.Tensor) -> torch.Tensor:
    return F.interpolate(features, scale_factor=2, mode="nearest")


class PlainGeneratorBlock(nn.Module):
    """Nearest x2, 3x3 conv, conditional batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = ConditionalBatchNorm(out_channels, embedding_dim)

    def forward(self, features: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(_upsample(features)), embedded))


class ResidualGeneratorBlock(nn.Module):
    """BigGAN's generator block: CBN, ReLU, x2, 3x3 conv, CBN, ReLU, 3x3 conv, plus x2 and a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int):
        super().__init__()
        self.norm1 = ConditionalBatchNorm(in_channels, embedding_dim)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = ConditionalBatchNorm(out_channels, embedding_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, features: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(_upsample(F.relu(self.norm1(features, embedded))))
        hidden = self.conv2(F.relu(self.norm2(hidden, embedded)))
        return hidden + self.shortcut(_upsample(features))


class ProjectionGenerator(nn.Module):
    def __init__(self, arch: GanArchitecture):
        super().__init__()
        self.arch = arch
        channels = generator_channels(arch)
        embedding_dim = arch.genre_embedding_dim
        block = ResidualGeneratorBlock if arch.blocks == "residual" else PlainGeneratorBlock
        self.genre_embedding = nn.Embedding(arch.num_genres + 1, embedding_dim)
        self.project = nn.Linear(arch.noise_dim + arch.latent_dim, channels[0] * 4 * 4)
        self.blocks = nn.ModuleList(
            block(cin, cout, embedding_dim) for cin, cout in zip(channels[:-1], channels[1:], strict=True)
        )
        # The residual stream ends unnormalised; plain blocks end on CBN and ReLU already.
        self.output_norm = nn.BatchNorm2d(channels[-1]) if arch.blocks == "residual" else None
        self.to_rgb = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def forward(self, genres: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (N, 3, R, R), from genre indices (N,) (``any_cover_class`` included), codes
        (N, latent_dim) and noise (N, noise_dim)."""
        embedded = self.genre_embedding(genres)
        features = self.project(torch.cat([latent, noise], dim=1)).view(-1, self.arch.generator_width, 4, 4)
        for block in self.blocks:
            features = block(features, embedded)
        if self.output_norm is not None:
            features = F.relu(self.output_norm(features))
        return torch.tanh(self.to_rgb(features))


class PlainDiscriminatorBlock(nn.Module):
    """A spectrally normalised 4x4 stride-2 conv and LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, out_channels: int, first: bool):
        super().__init__()
        self.conv = spectrally_normalised(nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(features), 0.1)


class ResidualDiscriminatorBlock(nn.Module):
    """BigGAN's discriminator block: (ReLU), 3x3 conv, ReLU, 3x3 conv, 2x2 average pool, plus a 1x1 shortcut.

    The first block sees pixels: no ReLU before its first conv, and its shortcut pools before convolving
    (SNGAN's optimised first block)."""

    def __init__(self, in_channels: int, out_channels: int, first: bool):
        super().__init__()
        self.first = first
        self.conv1 = spectrally_normalised(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv2 = spectrally_normalised(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.shortcut = spectrally_normalised(nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = features if self.first else F.relu(features)
        hidden = F.avg_pool2d(self.conv2(F.relu(self.conv1(hidden))), 2)
        if self.first:
            return hidden + self.shortcut(F.avg_pool2d(features, 2))
        return hidden + F.avg_pool2d(self.shortcut(features), 2)


class ProjectionDiscriminator(nn.Module):
    def __init__(self, arch: GanArchitecture):
        super().__init__()
        self.arch = arch
        channels = [3, *discriminator_channels(arch)]
        block = ResidualDiscriminatorBlock if arch.blocks == "residual" else PlainDiscriminatorBlock
        self.blocks = nn.Sequential(
            *(
                block(cin, cout, first=index == 0)
                for index, (cin, cout) in enumerate(zip(channels[:-1], channels[1:], strict=True))
            )
        )
        self.minibatch_std = MinibatchStd(arch.minibatch_std_group) if arch.minibatch_std_group else None
        features = channels[-1] + (1 if self.minibatch_std is not None else 0)
        self.real_fake_head = spectrally_normalised(nn.Linear(features, 1))
        self.genre_projection = spectrally_normalised(nn.Embedding(arch.num_genres + 1, features))
        self.latent_head = (
            spectrally_normalised(nn.Linear(features, arch.latent_dim)) if arch.latent_dim else None
        )

    def forward(self, images: torch.Tensor, genres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(real/fake logit (N,), latent estimate (N, latent_dim) or None) for images in [-1, 1] of the given
        conditioning indices (N,)."""
        features = self.blocks(images)
        if self.minibatch_std is not None:
            features = self.minibatch_std(features)
        if self.arch.blocks == "residual":  # pre-activation blocks end before their ReLU
            features = F.relu(features)
        pooled = features.sum(dim=(2, 3))
        projection = (self.genre_projection(genres) * pooled).sum(dim=1)
        logit = self.real_fake_head(pooled).squeeze(1) + projection
        latent = self.latent_head(pooled) if self.latent_head is not None else None
        return logit, latent
