"""Training shards: every cover decoded once to uint8 at the training resolution, read back a batch at a time.

The seed project decoded every cover into one float32 array held in memory; a single packed uint8 file
followed, but it had to be rebuilt from scratch whenever the manifest grew. Here the covers live in shard
files of at most ``shard_size`` images each, and a rebuild after new data decodes only the new images.

Layout of a shard set folder (e.g. ``$HOME/training_data/labeled``)::

    index.parquet                          one row per manifest image: image_id, split, genre,
                                           label (int64; -1 unlabelled or off-list), shard (int32), row (int32);
                                           schema metadata: format, resolution, genres (json)
    shards/r64/shard-000000.npy            uint8 (n, R, R, 3) RGB; immutable once it has this name
    shards/r64/shard-000000.ids.parquet    image_id of each of its rows, in row order

A shard's ``.ids.parquet`` is its own record of what it holds, and what an incremental build trusts. The
index is the commit point: it is replaced atomically once every shard it names is complete, so a build that
dies midway leaves the previous index (and every shard it names) as it was, and the next build reuses the
shards the dead one completed. Shard files no index row references are deleted after the commit.

Index rows are ordered by split (train, val, test) and, within a split, labelled rows first, so the usual
selections are contiguous. Labels live in the index only: relabelling or resplitting an image rewrites the
index, not its pixels.

This package does not import torch, so that decode processes start quickly; the batch stream the GAN trains on
is in ``album_pipeline.data.loader``.

Modules by job: ``format`` (file names, shard headers), ``reader`` (``ShardSet``, ``load_shards``),
``builder`` (``build_shards``: placement, compaction), ``writing`` (new shard files, the commit, the build
lock), ``decode`` (decode tasks, in process or in a forkserver pool, with read-ahead).
"""

from album_pipeline.data.shards.builder import ShardBuild, ShardBuildOptions, build_shards
from album_pipeline.data.shards.decode import DecodeTask, decode_image
from album_pipeline.data.shards.format import DEFAULT_SHARD_SIZE, INDEX_FILE, SHARD_SET_FORMAT, SHARDS_DIR
from album_pipeline.data.shards.reader import ShardSet, load_shards, manifest_mismatches

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "INDEX_FILE",
    "SHARDS_DIR",
    "SHARD_SET_FORMAT",
    "DecodeTask",
    "ShardBuild",
    "ShardBuildOptions",
    "ShardSet",
    "build_shards",
    "decode_image",
    "load_shards",
    "manifest_mismatches",
]
