"""The architecture settings of every network (``GanArchitecture``), and the seed project's DCGAN-style AC-GAN
at 64x64 (architecture ``seed``), with its known defects fixed; ``model.projection`` holds the other
(``projection``), and ``model.architectures`` builds either by name.

Generator: genre embedding + 2 latent codes + noise -> 1 dense layer -> 4 transposed convs -> 64x64 RGB.
Discriminator: 4 strided convs -> three dense heads: real/fake logit, genre logits, latent-code regression.

Widths are parameters so that a small preset can train in minutes on a CPU; the defaults are the seed's.
The genre enters through an embedding (the seed fed the class index through a dense layer, which ordered
genres as numbers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from album_pipeline.model.pixels import to_uint8

ARCHITECTURES = ("seed", "projection")
# The seed's four stride-2 stages from 4x4 make 64x64 only; the projection GAN adds a block per doubling.
RESOLUTIONS = {"seed": (64,), "projection": (64, 128, 256)}
SUPPORTED_RESOLUTIONS = tuple(sorted({side for sides in RESOLUTIONS.values() for side in sides}))
DISCRIMINATOR_NORMS = ("batch", "spectral")
BLOCK_KINDS = ("residual", "plain")
# The defaults that differ between architectures (a field left at None takes its architecture's): the
# projection GAN has no InfoGAN codes by default (their regression head adds a classification pull of its
# own), spectral norm on every D layer (its projection term needs it) and no dropout.
ARCHITECTURE_DEFAULTS = {
    "seed": {"latent_dim": 2, "discriminator_norm": "batch", "dropout": 0.3},
    "projection": {"latent_dim": 0, "discriminator_norm": "spectral", "dropout": 0.0},
}


@dataclass(frozen=True)
class GanArchitecture:
    architecture: str = field(
        default="seed",
        metadata={
            "doc": "seed (the seed project's DCGAN-style AC-GAN, 64 px: transposed convs, genre classifier head) "
            "or projection (resize-conv generator with class-conditional batch norm, spectral-norm "
            "discriminator with a projection term, 64/128/256 px)."
        },
    )
    num_genres: int = 5
    noise_dim: int = 100
    latent_dim: int | None = field(
        default=None,
        metadata={"doc": "InfoGAN continuous codes, regressed by D (default: seed 2, projection 0)."},
    )
    genre_embedding_dim: int = 10
    generator_width: int = field(
        default=512, metadata={"doc": "Channels after G's dense layer (seed: 512); halve at each upsampling."}
    )
    discriminator_width: int = field(
        default=64,
        metadata={
            "doc": "Channels of D's first conv at 64 px (seed: 64); double at each downsampling (projection: "
            "a block of half the width in front for each doubling of the image)."
        },
    )
    dropout: float | None = field(
        default=None, metadata={"doc": "Dropout before D's heads (default: seed 0.3; projection has none)."}
    )
    resolution: int = 64  # one of RESOLUTIONS[architecture]
    blocks: str = field(
        default="residual",
        metadata={
            "doc": "projection only: residual (BigGAN's blocks, with shortcuts) or plain ([x2, conv, CBN, "
            "ReLU] in G, strided convs in D)."
        },
    )
    minibatch_std_group: int = field(
        default=0,
        metadata={
            "doc": "Images per group of D's minibatch standard deviation feature (stylegan's 4): D sees how "
            "much a batch varies, so a generator that draws one cover per genre is caught. 0 turns it off."
        },
    )
    discriminator_norm: str | None = field(
        default=None,
        metadata={
            "doc": "batch (DCGAN's batch norm in D, the seed's default) or spectral (spectral norm on every D "
            "layer instead, SNGAN's; pair it with the hinge loss). projection: spectral only."
        },
    )

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        for name, default in ARCHITECTURE_DEFAULTS[self.architecture].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)  # frozen: resolved once, stored in to_dict()
        check_resolution(self.resolution, self.architecture)
        if self.num_genres < 1:
            raise ValueError("num_genres must be at least 1")
        if self.latent_dim < 0:
            raise ValueError(f"latent_dim must be 0 (no codes) or more, got {self.latent_dim}")
        if self.blocks not in BLOCK_KINDS:
            raise ValueError(f"blocks must be one of {BLOCK_KINDS}, got {self.blocks!r}")
        if self.architecture == "projection":
            self._check_projection()
        elif self.generator_width % 8 or self.generator_width < 8:
            raise ValueError(f"generator_width must be a multiple of 8, got {self.generator_width}")
        if self.minibatch_std_group < 0 or self.minibatch_std_group == 1:
            raise ValueError(
                f"minibatch_std_group must be 0 (off) or at least 2 images, got {self.minibatch_std_group}"
            )
        if self.discriminator_norm not in DISCRIMINATOR_NORMS:
            raise ValueError(
                f"discriminator_norm must be one of {DISCRIMINATOR_NORMS}, got {self.discriminator_norm!r}"
            )

    def _check_projection(self) -> None:
        if self.discriminator_norm != "spectral":
            raise ValueError(
                "the projection discriminator has spectral norm on every layer; leave discriminator_norm unset "
                f"(or 'spectral'), got {self.discriminator_norm!r}"
            )
        if self.dropout:
            raise ValueError(
                f"the projection discriminator has no dropout; leave dropout unset, got {self.dropout}"
            )
        doublings = upsampling_blocks(self.resolution)
        if self.generator_width % 2**doublings:
            raise ValueError(
                f"generator_width must halve {doublings} times to {self.resolution} px, so be a multiple of "
                f"{2**doublings}, got {self.generator_width}"
            )
        if (self.discriminator_width * 8) % 2 ** (doublings - 1):
            raise ValueError(
                f"discriminator_width x 8 must halve {doublings - 1} times for the blocks in front at "
                f"{self.resolution} px, so be a multiple of {2 ** (doublings - 1)}, got "
                f"{self.discriminator_width * 8}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def upsampling_blocks(resolution: int) -> int:
    """Doublings from 4x4 to ``resolution`` (4 at 64 px, 5 at 128, 6 at 256)."""
    return resolution.bit_length() - 3


def check_resolution(resolution: int, architecture: str | None = None) -> None:
    """Refuse an image side the networks (of ``architecture``, or of any) cannot make or judge."""
    sides = RESOLUTIONS[architecture] if architecture is not None else SUPPORTED_RESOLUTIONS
    if resolution not in sides:
        made = ", ".join(f"{side}x{side}" for side in sides)
        whose = f"the {architecture} architecture makes" if architecture else "the networks make"
        raise ValueError(f"resolution {resolution} is not supported: {whose} {made} images")


def _transposed(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    # kernel 5, stride 2, padding 2, output padding 1 doubles the size exactly, as in the seed
    return nn.ConvTranspose2d(in_channels, out_channels, 5, stride=2, padding=2, output_padding=1, bias=False)


class Generator(nn.Module):
    def __init__(self, arch: GanArchitecture = GanArchitecture()):
        super().__init__()
        self.arch = arch
        width = arch.generator_width
        self.genre_embedding = nn.Embedding(arch.num_genres, arch.genre_embedding_dim)
        in_features = arch.genre_embedding_dim + arch.latent_dim + arch.noise_dim
        self.project = nn.Sequential(
            nn.Linear(in_features, width * 4 * 4, bias=False),
            nn.BatchNorm1d(width * 4 * 4),
            nn.ReLU(inplace=True),
        )
        self.upsample = nn.Sequential(
            _transposed(width, width // 2),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(inplace=True),
            _transposed(width // 2, width // 4),
            nn.BatchNorm2d(width // 4),
            nn.ReLU(inplace=True),
            _transposed(width // 4, width // 8),
            nn.BatchNorm2d(width // 8),
            nn.ReLU(inplace=True),
            _transposed(width // 8, 3),
            nn.Tanh(),
        )

    def forward(self, genres: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], shape (N, 3, 64, 64), from genre indices (N,), codes (N, 2), noise (N, 100)."""
        features = torch.cat([self.genre_embedding(genres), latent, noise], dim=1)
        projected = self.project(features).view(-1, self.arch.generator_width, 4, 4)
        return self.upsample(projected)


class Discriminator(nn.Module):
    def __init__(self, arch: GanArchitecture = GanArchitecture()):
        super().__init__()
        self.arch = arch
        width = arch.discriminator_width
        spectral = arch.discriminator_norm == "spectral"
        layers: list[nn.Module] = []
        channels = [3, width, width * 2, width * 4, width * 8]
        for index, (cin, cout) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            conv = nn.Conv2d(cin, cout, 5, stride=2, padding=2, bias=index == 0 or spectral)
            layers.append(spectrally_normalised(conv) if spectral else conv)
            if index > 0 and not spectral:  # no batch norm on the input layer, as in DCGAN
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.1, inplace=True))
        self.features = nn.Sequential(*layers)
        self.minibatch_std = MinibatchStd(arch.minibatch_std_group) if arch.minibatch_std_group else None
        feature_channels = width * 8 + (1 if self.minibatch_std is not None else 0)
        self.flatten = nn.Sequential(nn.Flatten(), nn.Dropout(arch.dropout))
        feature_count = feature_channels * 4 * 4
        heads = [nn.Linear(feature_count, 1), nn.Linear(feature_count, arch.num_genres)]
        heads.append(nn.Linear(feature_count, arch.latent_dim))
        if spectral:
            heads = [spectrally_normalised(head) for head in heads]
        self.real_fake_head, self.genre_head, self.latent_head = heads

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(real/fake logit (N,), genre logits (N, G), latent estimate (N, 2)) for images in [-1, 1]."""
        features = self.features(images)
        if self.minibatch_std is not None:
            features = self.minibatch_std(features)
        features = self.flatten(features)
        return (
            self.real_fake_head(features).squeeze(1),
            self.genre_head(features),
            self.latent_head(features),
        )


def spectrally_normalised(layer: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer)


class MinibatchStd(nn.Module):
    """stylegan's minibatch standard deviation: one more feature map, how much each group of images varies.

    Images ``i, i + N/G, i + 2N/G, ...`` form a group of ``G`` (the largest divisor of the batch size up to
    ``group_size``); the feature is the standard deviation over the group, averaged over channels and
    positions, broadcast to every position of each image of the group.
    """

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        count, channels, height, width = features.shape
        group = next(size for size in range(min(self.group_size, count), 0, -1) if count % size == 0)
        grouped = features.float().reshape(group, -1, channels, height, width)
        spread = grouped.var(dim=0, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))  # (N / G,)
        spread = spread.to(features.dtype).view(1, -1, 1, 1, 1).expand(group, -1, 1, height, width)
        return torch.cat([features, spread.reshape(count, 1, height, width)], dim=1)


def sample_inputs(
    arch: GanArchitecture,
    genres: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent codes uniform in [-1, 1] and standard normal noise for the given genre indices."""
    count = genres.shape[0]
    device = genres.device
    latent = torch.rand(count, arch.latent_dim, generator=generator, device=device) * 2 - 1
    noise = torch.randn(count, arch.noise_dim, generator=generator, device=device)
    return latent, noise


@torch.no_grad()
def generate_covers(
    generator: nn.Module,
    genres: torch.Tensor | list[int],
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """uint8 images (N, R, R, 3) for the given genre indices, deterministic in ``seed``."""
    device = next(generator.parameters()).device
    genres = torch.as_tensor(genres, dtype=torch.long)
    rng = torch.Generator(device="cpu").manual_seed(seed)
    was_training = generator.training
    generator.eval()
    chunks = []
    try:
        for start in range(0, len(genres), batch_size):
            batch = genres[start : start + batch_size]
            latent, noise = sample_inputs(generator.arch, batch, generator=rng)
            images = generator(batch.to(device), latent.to(device), noise.to(device)).float()
            chunks.append(to_uint8(images).permute(0, 2, 3, 1).cpu())
    finally:
        generator.train(was_training)
    if not chunks:
        side = generator.arch.resolution
        return torch.empty(0, side, side, 3, dtype=torch.uint8)
    return torch.cat(chunks)
