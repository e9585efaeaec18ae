"""GAN checkpoints on disk: written atomically, read back safely, and turned into a ready generator.

A checkpoint is a plain dict saved with ``torch.save``; it holds only tensors, numbers, strings, lists and
dicts so that it loads with ``weights_only=True`` (no pickled code runs on load). The keys written by the
training loop are documented in ``album_pipeline.training.checkpointing``; this module needs only ``generator``
(or ``generator_ema``, the moving average of its weights, which it prefers), ``arch`` and ``genres``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from album_pipeline.atomic import atomic_path
from album_pipeline.model.architectures import build_generator
from album_pipeline.model.networks import GanArchitecture, Generator

CHECKPOINT_FORMAT = "album_pipeline.gan_checkpoint/1"
# The averaged generator's weights, written when the run kept an EMA; what evaluation, generate and the registry
# sample from.
GENERATOR_EMA = "generator_ema"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


# What to do about an unreadable or missing checkpoint, unless the caller knows better.
RETRAIN = (
    "train the model again (materialize the pretrained_generator or finetuned_generator asset that writes it)"
)


class UnreadableCheckpoint(ValueError):
    """A file that does not load as a checkpoint: empty, truncated, corrupt, or not one this pipeline wrote.

    ``reason`` says which in a few words. The message never passes on PyTorch's advice to load with
    ``weights_only=False``: for a file that fails the safe load, that advice means running its pickled code.
    """

    def __init__(self, path: Path, reason: str, remedy: str, what: str = "checkpoint"):
        super().__init__(f"{what} {path} cannot be read: {reason}; {remedy}")
        self.path, self.reason = path, reason


def torch_load(path: Path, map_location: str | torch.device, remedy: str, what: str = "checkpoint") -> Any:
    """``torch.load`` with ``weights_only=True``, every way it fails turned into an ``UnreadableCheckpoint``."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except EOFError:
        reason = "it is empty or ends early"
    except pickle.UnpicklingError:
        reason = "it is not a PyTorch file, or holds more than the tensors and plain data of a checkpoint"
    except (RuntimeError, ValueError, OSError, AttributeError, TypeError, ImportError) as error:
        # torch raises these for a torn zip archive, a bad storage record or an unknown type, among others.
        reason = f"it is truncated or corrupt ({type(error).__name__})"
    raise UnreadableCheckpoint(path, reason, remedy, what)


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", *, remedy: str = RETRAIN
) -> dict[str, Any]:
    """The payload dict of a checkpoint; ``remedy`` ends the message when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; {remedy}")
    payload = torch_load(path, map_location, remedy)
    if not isinstance(payload, dict):
        raise UnreadableCheckpoint(
            path, f"it holds a {type(payload).__name__}, not a checkpoint dict", remedy
        )
    return payload


def checkpoint_architecture(path: Path, remedy: str = RETRAIN) -> GanArchitecture:
    """The GanArchitecture a GAN checkpoint was trained with."""
    payload = load_checkpoint(path, remedy=remedy)
    try:
        return GanArchitecture(**payload["arch"])
    except (KeyError, TypeError, ValueError) as error:
        raise UnreadableCheckpoint(path, f"it records no usable architecture ({error!r})", remedy) from None


def load_generator_with_genres(
    path: Path, device: str | torch.device = "cpu", *, prefer_ema: bool = True
) -> tuple[Generator, tuple[str, ...]]:
    """The generator of a GAN checkpoint in eval mode on ``device``, and the genre names of its classes.

    That is the moving average of the generator's weights where the run kept one, unless ``prefer_ema`` is
    False, which asks for the weights as the optimiser left them.
    """
    payload = load_checkpoint(path, map_location=device)
    missing = [key for key in ("generator", "arch") if key not in payload]
    if missing:
        raise ValueError(
            f"{path} is not a generator checkpoint (it lacks {missing}); "
            "pass a checkpoint written by train_gan"
        )
    arch = GanArchitecture(**payload["arch"])
    generator = build_generator(arch)
    use_ema = prefer_ema and GENERATOR_EMA in payload
    generator.load_state_dict(payload[GENERATOR_EMA if use_ema else "generator"])
    generator.to(device).eval()
    genres = tuple(payload.get("genres") or (str(index) for index in range(arch.num_genres)))
    if len(genres) != arch.num_genres:
        raise ValueError(f"{path} names {len(genres)} genres but its generator has {arch.num_genres} classes")
    return generator, genres


def load_generator(path: Path, device: str | torch.device = "cpu", *, prefer_ema: bool = True) -> Generator:
    """The generator of a GAN checkpoint in eval mode (its EMA where it has one, as in
    ``load_generator_with_genres``); its genre names are in ``generator.genres``."""
    generator, genres = load_generator_with_genres(path, device, prefer_ema=prefer_ema)
    generator.genres = genres
    return generator
