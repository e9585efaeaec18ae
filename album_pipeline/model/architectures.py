"""Networks chosen by name (``GanArchitecture.architecture``), as stylegan2-ada-pytorch chooses its networks:
everything that builds a generator or discriminator from a checkpoint's ``arch`` goes through here.

What the architectures differ in, beyond their networks, is told here too: whether D has a genre classifier
head (the seed's AC-GAN; the projection discriminator has none), and how finetuning starts from an unlabelled
pretraining (the projection GAN copies its "any cover" class to every genre).
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


def conditioning_classes(arch: GanArchitecture) -> int:
    """Rows of the genre embeddings: the genres, and for the projection GAN one "any cover" class more."""
    return arch.num_genres + (1 if arch.architecture == "projection" else 0)


def start_finetuning(arch: GanArchitecture, *networks: nn.Module, pretrained_with_labels: bool) -> None:
    """Prepare pretrained networks for finetuning on genres: the projection GAN, pretrained on unlabelled
    covers as one "any cover" class, starts every genre from that class. The seed's genre rows are its own
    (its pretraining drew fake genres as an InfoGAN categorical code), so it keeps them."""
    if arch.architecture == "projection" and not pretrained_with_labels:
        projection.start_genres_from_any_cover(*networks)
