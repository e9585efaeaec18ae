"""Shard sets written straight from pixel arrays, for tests and benchmarks that need no image files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from album_pipeline.data.manifest import SPLITS
from album_pipeline.data.shards import DEFAULT_SHARD_SIZE, ShardSet, load_shards
from album_pipeline.data.shards.format import resolution_dir, training_order
from album_pipeline.data.shards.writing import NewShard, commit, exclusive_build, next_shard_number
from album_pipeline.genres import genre_index


def write_shard_set_from_arrays(
    out_dir: Path,
    images: np.ndarray | Iterable[np.ndarray],
    labels: np.ndarray | Sequence[int],
    genres: Sequence[str],
    *,
    image_ids: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ShardSet:
    """Write pixels already in memory as the shard set in ``out_dir``, replacing whatever it held.

    For tests and benchmarks, which need shard sets without image files. ``images`` is uint8 (N, R, R, 3),
    or an iterable of such chunks (N rows in all) for sets larger than memory. ``labels`` are class indices
    into ``genres`` (-1: unlabelled); image ids default to ``image000000000``, ``image000000001``, ...;
    splits default to train.
    """
    genres = tuple(genres)
    genre_index(genres)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    count = len(labels)
    if count == 0:
        raise ValueError("no images to write; a shard set needs at least one")
    if labels.min() < -1 or labels.max() >= len(genres):
        raise ValueError(f"labels must lie in [-1, {len(genres) - 1}] for genres {list(genres)}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    ids = pa.array(
        [f"image{row:09d}" for row in range(count)] if image_ids is None else [str(i) for i in image_ids],
        pa.string(),
    )
    split_names = pa.array(["train"] * count if splits is None else [str(s) for s in splits], pa.string())
    if len(ids) != count or len(split_names) != count:
        raise ValueError(f"{count} labels, but {len(ids)} image ids and {len(split_names)} splits")
    if len(pc.unique(ids)) != count:
        raise ValueError("image_ids repeat; each image needs its own id")
    split_ranks = pc.index_in(split_names, value_set=pa.array(SPLITS))
    if split_ranks.null_count:
        raise ValueError(f"splits must be among {list(SPLITS)}")

    chunks = iter([images] if isinstance(images, np.ndarray) else images)
    out_dir = Path(out_dir)
    with exclusive_build(out_dir):
        first = _checked_chunk(next(chunks, None), None)
        resolution = first.shape[1]
        shard_dir = resolution_dir(out_dir, resolution)
        shard_dir.mkdir(parents=True, exist_ok=True)
        first_number = next_shard_number(shard_dir)
        written, shard, shard_start = 0, None, 0
        try:
            for chunk in _prepend(first, (_checked_chunk(chunk, resolution) for chunk in chunks)):
                if written + len(chunk) > count:
                    raise ValueError(f"images hold more than the {count} rows that labels describe")
                consumed = 0
                while consumed < len(chunk):
                    if shard is None:
                        shard_start = written
                        number = first_number + written // shard_size
                        size = min(shard_size, count - written)
                        shard = NewShard.create(
                            shard_dir, number, size, resolution, ids[written : written + size]
                        )
                    take = min(len(chunk) - consumed, shard.size - (written - shard_start))
                    shard.write_rows(written - shard_start, chunk[consumed : consumed + take])
                    consumed, written = consumed + take, written + take
                    if written - shard_start == shard.size:
                        shard.finish()
                        shard = None
            if written != count:
                raise ValueError(f"images hold {written} rows but labels describe {count}")
        except BaseException:
            if shard is not None:
                shard.abandon()
            raise
        positions = np.arange(count)
        order = training_order(labels, split_ranks.to_numpy().astype(np.int64))
        genre_names = pa.array([genres[label] if label >= 0 else None for label in labels], pa.string())
        index = pa.table({"image_id": ids, "split": split_names, "genre": genre_names, "label": labels})
        commit(
            out_dir,
            shard_dir,
            index.take(pa.array(order)),
            (first_number + positions // shard_size)[order].astype(np.int32),
            (positions % shard_size)[order].astype(np.int32),
            genres,
            resolution,
        )
        return load_shards(out_dir)


def _checked_chunk(chunk: np.ndarray | None, resolution: int | None) -> np.ndarray:
    if chunk is None:
        raise ValueError("no images to write; a shard set needs at least one")
    chunk = np.asarray(chunk)
    side = chunk.shape[1] if chunk.ndim == 4 else None
    if chunk.dtype != np.uint8 or chunk.ndim != 4 or chunk.shape[2:] != (side, 3):
        raise ValueError(f"images must be uint8 (N, R, R, 3), got {chunk.dtype} {chunk.shape}")
    if resolution is not None and side != resolution:
        raise ValueError(f"image chunks differ in resolution: {side} after {resolution}")
    return np.ascontiguousarray(chunk)


def _prepend(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
