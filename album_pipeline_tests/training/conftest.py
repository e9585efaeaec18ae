from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from album_pipeline.data.shards import ShardSet
from album_pipeline.testing.shards import write_shard_set_from_arrays

GENRES = ("rock", "jazz", "pop", "rap-hip-hop", "classical")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Callable[..., ShardSet]:
    """Random 64x64 covers as a shard set; one per (count, labelled) for the whole module (they are read-only)."""
    made: dict[tuple[int, bool], ShardSet] = {}

    def make(count: int = 24, labelled: bool = True) -> ShardSet:
        if (count, labelled) not in made:
            rng = np.random.default_rng(0)
            images = rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
            labels = np.arange(count) % len(GENRES) if labelled else np.full(count, -1)
            folder = tmp_path_factory.mktemp(f"shards-{count}-{labelled}")
            made[count, labelled] = write_shard_set_from_arrays(folder, images, labels, GENRES)
        return made[count, labelled]

    return make
