"""What an evaluation judges: covers drawn on demand for given genres, and labelled real covers.

``CoverSource`` is any callable that draws uint8 (N, H, W, 3) covers for N genre indices, deterministic in a
seed: the trained generator (through ``GeneratorCovers``), or a stand-in (a collapsed generator, a copier of
training covers, noise) in the tests that prove the metrics tell them apart. Real covers come as
``LabelledCovers``: a training-data ``ShardSet`` split as it is, or ``InMemoryCovers`` built from arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from album_pipeline.model.networks import Generator, generate_covers
from album_pipeline.model.pixels import check_image_batch


@runtime_checkable
class CoverSource(Protocol):
    def __call__(self, genre_indices: np.ndarray, seed: int) -> np.ndarray:
        """uint8 (N, H, W, 3) covers, one per genre index (N,), the same for the same seed."""
        ...


@dataclass(frozen=True)
class GeneratorCovers:
    """A trained generator as a ``CoverSource``."""

    generator: Generator
    batch_size: int = 256

    @property
    def num_genres(self) -> int:
        return self.generator.arch.num_genres

    def __call__(self, genre_indices: np.ndarray, seed: int) -> np.ndarray:
        indices = np.asarray(genre_indices, dtype=np.int64).tolist()
        return generate_covers(self.generator, indices, seed=seed, batch_size=self.batch_size).numpy()


class LabelledCovers(Protocol):
    """Real covers with genre labels and ids: the interface of ``ShardSet`` that an evaluation reads."""

    labels: np.ndarray
    resolution: int

    def __len__(self) -> int: ...

    def image_ids(self) -> np.ndarray: ...

    def read(self, rows: np.ndarray | Sequence[int]) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class InMemoryCovers:
    """Labelled covers held in memory; ids default to each cover's sha256, as the pipeline's image ids are."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        check_image_batch(self.images, "images")
        labels = np.asarray(self.labels, dtype=np.int64)
        if labels.shape != (len(self.images),):
            raise ValueError(f"need one label per cover ({len(self.images)}), got shape {labels.shape}")
        object.__setattr__(self, "labels", labels)
        if self.ids is None:
            ids = [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in self.images]
            object.__setattr__(self, "ids", np.asarray(ids))
        elif len(self.ids) != len(self.images):
            raise ValueError(f"need one id per cover ({len(self.images)}), got {len(self.ids)}")

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def image_ids(self) -> np.ndarray:
        return np.asarray(self.ids)

    def read(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        return self.images[np.asarray(rows, dtype=np.int64)]
