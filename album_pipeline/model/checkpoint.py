"""GAN checkpoints on disk: written atomically, read back safely, and turned into a ready generator.

A checkpoint is a plain dict saved with ``torch.save``; it holds only tensors, numbers, strings, lists and
dicts so that it loads with ``weights_only=True`` (no pickled code runs on load). The keys written by the
training loop are documented in ``album_pipeline.training.checkpointing``; this module needs only ``generator``,
``arch`` and ``genres``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from album_pipeline.atomic import atomic_path
from album_pipeline.model.networks import GanArchitecture, Generator

CHECKPOINT_FORMAT = "album_pipeline.gan_checkpoint/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train the model first (the pretrain/finetune asset writes it)"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a corrupt or foreign file
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"{path} holds a {type(payload).__name__}, not a checkpoint dict")
    return payload


def load_generator_with_genres(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[Generator, tuple[str, ...]]:
    """The generator of a GAN checkpoint in eval mode on ``device``, and the genre names of its classes."""
    payload = load_checkpoint(path, map_location=device)
    missing = [key for key in ("generator", "arch") if key not in payload]
    if missing:
        raise ValueError(
            f"{path} is not a generator checkpoint (it lacks {missing}); "
            "pass a checkpoint written by train_gan"
        )
    arch = GanArchitecture(**payload["arch"])
    generator = Generator(arch)
    generator.load_state_dict(payload["generator"])
    generator.to(device).eval()
    genres = tuple(payload.get("genres") or (str(index) for index in range(arch.num_genres)))
    if len(genres) != arch.num_genres:
        raise ValueError(f"{path} names {len(genres)} genres but its generator has {arch.num_genres} classes")
    return generator, genres


def load_generator(path: Path, device: str | torch.device = "cpu") -> Generator:
    """The generator of a GAN checkpoint in eval mode; its genre names are in ``generator.genres``."""
    generator, genres = load_generator_with_genres(path, device)
    generator.genres = genres
    return generator
