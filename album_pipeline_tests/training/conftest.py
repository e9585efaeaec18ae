from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from album_pipeline.data.shards import ShardSet
from album_pipeline.testing.shards import write_shard_set_from_arrays

GENRES = ("rock", "jazz", "pop", "rap-hip-hop", "classical")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Callable[..., ShardSet]:
    """Random covers (64x64 unless asked) as a shard set; one per (count, labelled, resolution) for the whole
    module (they are read-only)."""
    made: dict[tuple[int, bool, int], ShardSet] = {}

    def make(count: int = 24, labelled: bool = True, resolution: int = 64) -> ShardSet:
        key = (count, labelled, resolution)
        if key not in made:
            rng = np.random.default_rng(0)
            images = rng.integers(0, 256, (count, resolution, resolution, 3), dtype=np.uint8)
            labels = np.arange(count) % len(GENRES) if labelled else np.full(count, -1)
            folder = tmp_path_factory.mktemp(f"shards-{count}-{labelled}-{resolution}")
            made[key] = write_shard_set_from_arrays(folder, images, labels, GENRES)
        return made[key]

    return make
