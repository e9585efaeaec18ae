"""The finetuned discriminator's own genre head as a judge, reported beside the independent classifier.

The seed reported this head's accuracy: 94.6% on generated covers and 22.8% on real ones. The generator is
trained to satisfy this very head, so a high value on generated covers next to a low one on real covers says
the two learned a private code rather than genres; the independent classifier is the judge the floors use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from album_pipeline.metrics.genre_classifier import accuracy_by_genre, images_to_tensor
from album_pipeline.model.architectures import build_discriminator, has_genre_head
from album_pipeline.model.checkpoint import UnreadableCheckpoint, load_checkpoint
from album_pipeline.model.networks import Discriminator, GanArchitecture

SEED_REPORTED = (
    "the seed reported its discriminator's genre accuracy: 94.6% on generated, 22.8% on real covers"
)


def load_discriminator(path: Path, device: str | torch.device = "cpu") -> Discriminator | None:
    """The discriminator of a GAN checkpoint (its ``discriminator`` state dict and ``arch``), in eval mode;
    None where its architecture has no genre head to judge with (the projection discriminator)."""
    payload = load_checkpoint(path, map_location=device)
    if "discriminator" not in payload or "arch" not in payload:
        raise UnreadableCheckpoint(
            Path(path),
            "it holds no discriminator weights",
            "pass a checkpoint written by train_gan (materialize finetuned_generator)",
        )
    arch = GanArchitecture(**payload["arch"])
    if not has_genre_head(arch):
        return None
    discriminator = build_discriminator(arch)
    discriminator.load_state_dict(payload["discriminator"])
    return discriminator.to(device).eval()


@torch.no_grad()
def discriminator_genres(
    discriminator: Discriminator, images: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """The genre head's predicted class (N,) for uint8 (N, 64, 64, 3) covers."""
    device = next(discriminator.parameters()).device
    was_training = discriminator.training
    discriminator.eval()
    try:
        predictions = [
            discriminator(images_to_tensor(images[start : start + batch_size]).to(device))[1].argmax(1).cpu()
            for start in range(0, len(images), batch_size)
        ]
    finally:
        discriminator.train(was_training)
    return torch.cat(predictions).numpy().astype(np.int64) if predictions else np.empty(0, np.int64)


def discriminator_genre_accuracy(
    discriminator: Discriminator, images: np.ndarray, labels: np.ndarray, genres: Sequence[str]
) -> tuple[float, dict[str, float]]:
    """Overall accuracy of the genre head and its accuracy per genre name (genres without covers left out)."""
    if discriminator.arch.num_genres != len(genres):
        raise ValueError(
            f"the discriminator has {discriminator.arch.num_genres} genre classes but {len(genres)} genres were "
            "given; evaluate with the genre list it was trained on"
        )
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot compute accuracy on zero images")
    return accuracy_by_genre(discriminator_genres(discriminator, images) == labels, labels, genres)
