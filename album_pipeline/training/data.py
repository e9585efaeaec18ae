"""How the training shards are built: the options the shard-building assets pass to ``build_shards``.

Only the resolution is checked here, because the networks fix it (``SUPPORTED_RESOLUTIONS``): a run config
asking for another one fails when it is read, not after the shards are built and training starts.
``build_shards`` checks the other two itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from album_pipeline.data.shards import DEFAULT_SHARD_SIZE
from album_pipeline.model.networks import GanArchitecture, check_resolution


@dataclass(frozen=True)
class TrainingDataOptions:
    resolution: int = field(
        default=GanArchitecture.resolution,
        metadata={"doc": "Side of the square training images (the seed's 64; the networks make no other)."},
    )
    workers: int | None = field(
        default=None,
        metadata={"doc": "Decode processes; default: all cores when 20,000 or more images need decoding."},
    )
    shard_size: int = field(
        default=DEFAULT_SHARD_SIZE, metadata={"doc": "Images per shard file (96 MiB at 64px)."}
    )

    def __post_init__(self) -> None:
        check_resolution(self.resolution)
