"""Networks chosen by name (``GanArchitecture.architecture``), as stylegan2-ada-pytorch chooses its networks:
everything that builds a generator or discriminator from a checkpoint's ``arch`` goes through here.

What the architectures differ in, beyond their networks, is told here too: whether D has a genre classifier
head (the seed's AC-GAN; the projection discriminator has none), and how many conditioning classes they have.
"""

from __future__ import annotations

from torch import nn

from album_pipeline.model import projection
from album_pipeline.model.networks import Discriminator, GanArchitecture, Generator

GENERATORS: dict[str, type[nn.Module]] = {"seed": Generator, "projection": projection.ProjectionGenerator}
DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "seed": Discriminator,
    "projection": projection.ProjectionDiscriminator,
}


def build_generator(arch: GanArchitecture) -> nn.Module:
    return GENERATORS[arch.architecture](arch)


def build_discriminator(arch: GanArchitecture) -> nn.Module:
    return DISCRIMINATORS[arch.architecture](arch)


def is_generator(candidate: object) -> bool:
    """Whether ``candidate`` is a generator network of any architecture."""
    return isinstance(candidate, tuple(GENERATORS.values()))


def has_genre_head(arch: GanArchitecture) -> bool:
    """Whether D classifies genres (and so can be reported as a genre judge): the seed's AC-GAN only."""
    return arch.architecture == "seed"
