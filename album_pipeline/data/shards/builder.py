"""Building a shard set incrementally: place each manifest image, decode only the new ones, compact, commit."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from album_pipeline.data.manifest import SPLITS
from album_pipeline.data.shards.decode import CHUNK_SIZE, DecodeTask, decode_new_shards
from album_pipeline.data.shards.format import (
    CHECKSUM_KEY,
    DEFAULT_SHARD_SIZE,
    SHARD_FILE,
    read_shard_header,
    resolution_dir,
    shard_digest,
    shard_path,
    training_order,
)
from album_pipeline.data.shards.reader import ShardSet, load_shards
from album_pipeline.data.shards.writing import NewShard, commit, exclusive_build, next_shard_number
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import genre_index
from album_pipeline.progress import Progress

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

_REQUIRED_COLUMNS = ("image_id", "path", "genre", "split")


@dataclass(frozen=True)
class ShardBuildOptions:
    """How a shard set is built; which resolutions the networks accept is the trainer's to check."""

    resolution: int = dataclasses.field(default=64, metadata={"doc": "Side of the square training images."})
    workers: int | None = dataclasses.field(
        default=None, metadata={"doc": "Decode processes; None: one below 20,000 images, else one per core."}
    )
    shard_size: int = dataclasses.field(
        default=DEFAULT_SHARD_SIZE, metadata={"doc": "Images per shard file."}
    )

    def __post_init__(self) -> None:
        if self.resolution < 1:
            raise ValueError(f"resolution must be positive, got {self.resolution}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {self.shard_size}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class ShardBuild:
    shard_set: ShardSet
    decoded: int  # images decoded by this build
    reused: int  # images taken from existing shards, not decoded (copied ones included)
    copied: int  # of those, images copied out of a mostly dead shard into a new one
    dropped_shards: int  # shard files deleted because the new index no longer needs them
    seconds: float
    damaged_shards: int = 0  # shards refused as damaged (or without a checksum): their images were decoded


def build_shards(
    manifest: pd.DataFrame,
    home_root: Path,
    out_dir: Path,
    genres: Sequence[str],
    options: ShardBuildOptions | None = None,
    *,
    warn: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
    progress_bar: bool | None = None,
    **settings: Any,
) -> ShardBuild:
    """Bring the shard set in ``out_dir`` up to date with ``manifest``, decoding only the images it lacks.

    ``manifest`` needs the columns image_id (unique), path (relative to ``home_root``, which it may not
    leave), genre (null when unlabelled) and split. A genre outside ``genres`` gets label -1, like an
    unlabelled image. Images that a shard already holds are not decoded again (their files need not exist
    any more) as long as the shard matches its checksum; a damaged one is decoded again, with a warning
    through ``warn`` (default: this module's logger). A changed genre or split only rewrites the index. A
    shard left less than half referenced is compacted: its live rows are copied into the new shards and it is
    deleted. Large inputs (or ``workers`` > 1) decode in a forkserver process pool, so a calling script needs
    the usual ``if __name__ == "__main__":`` guard.

    ``options`` (or the keywords ``resolution=``, ``workers=``, ``shard_size=``, which override its fields)
    say how: see ShardBuildOptions. The images decoded so far go to ``log`` at a steady cadence and to a bar
    on a terminal.
    """
    started = time.perf_counter()
    options = dataclasses.replace(options or ShardBuildOptions(), **settings)
    resolution = options.resolution
    genres = tuple(genres)
    classes = genre_index(genres)
    index = _manifest_index(manifest, classes)
    out_dir = Path(out_dir)
    shard_dir = resolution_dir(out_dir, resolution)
    with exclusive_build(out_dir):
        shard_numbers, shard_rows, shard_sizes, damaged = _existing_placement(
            shard_dir, resolution, index["image_id"], warn or logger.warning
        )
        known = shard_numbers >= 0
        live = np.bincount(shard_numbers[known], minlength=max(shard_sizes, default=-1) + 1)
        sparse = [number for number, size in shard_sizes.items() if 0 < live[number] < size / 2]
        copied = known & np.isin(shard_numbers, sparse)
        fresh = ~known
        decode_paths = _decode_paths(index.filter(pa.array(fresh)), home_root)

        shard_dir.mkdir(parents=True, exist_ok=True)
        # New shards take the fresh and the copied images in index order, so a split stays mostly contiguous.
        moved = np.flatnonzero(fresh | copied)
        sources: list[str | tuple[int, int]] = []
        fresh_paths = iter(decode_paths)
        for position in moved.tolist():
            if fresh[position]:
                sources.append(next(fresh_paths))
            else:
                sources.append((int(shard_numbers[position]), int(shard_rows[position])))
        shown = Progress(
            f"training shards {out_dir.name}: decode",
            len(decode_paths),
            unit="images",
            log=log,
            progress_bar=progress_bar,
        )
        with shown:
            new_numbers, new_rows = _write_new_shards(
                shard_dir, options, sources, index["image_id"].take(pa.array(moved)), shown.advance
            )
        shard_numbers[moved], shard_rows[moved] = new_numbers, new_rows
        dropped = commit(
            out_dir, shard_dir, index.drop_columns(["path"]), shard_numbers, shard_rows, genres, resolution
        )
        shard_set = load_shards(out_dir)
    return ShardBuild(
        shard_set=shard_set,
        decoded=int(fresh.sum()),
        reused=int(known.sum()),
        copied=int(copied.sum()),
        dropped_shards=dropped,
        seconds=time.perf_counter() - started,
        damaged_shards=damaged,
    )


def _decode_paths(rows: pa.Table, home_root: Path) -> list[str]:
    """The absolute path of each row's image; refuses rows whose path leaves the home or whose file is gone.

    Plain strings, not Paths: a first build may have a million of them.
    """
    store = ImageStore(home_root)
    paths, outside = store.confined_paths(rows["path"].to_pylist())
    if outside:
        examples = ", ".join(
            f"image_id {rows['image_id'][position].as_py()} with path {rows['path'][position].as_py()!r}"
            for position in outside[:3]
        )
        raise ValueError(
            f"{len(outside)} manifest row(s) name a file outside the pipeline home {store.root}, e.g. "
            f"{examples}; rebuild the manifest (materialize its manifest asset again)"
        )
    absent = [path or "(no path)" for path in paths if not os.path.isfile(path)]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} of {len(paths)} manifest images to decode are missing under "
            f"{store.root}, e.g. {absent[:3]}; re-run the download that writes them or rebuild the manifest"
        )
    return paths


def _refuse_escaping_paths(manifest: pd.DataFrame) -> None:
    """Refuse rows whose path is absolute or climbs out with ``..``, even when their shards are reused: such a
    manifest was not written by this pipeline. (Symlinks out of the home are caught when a row is decoded.)"""
    paths = manifest["path"].fillna("").astype(str)
    escaping = paths.str.startswith("/") | paths.str.contains(r"(?:^|/)\.\.(?:/|$)", regex=True)
    if escaping.any():
        rows = manifest[escaping]
        examples = ", ".join(
            f"image_id {row.image_id} with path {row.path!r}" for row in rows.head(3).itertuples()
        )
        raise ValueError(
            f"{len(rows)} manifest row(s) name a file outside the pipeline home, e.g. {examples}; rebuild the "
            "manifest (materialize its manifest asset again)"
        )


def _manifest_index(manifest: pd.DataFrame, classes: dict[str, int]) -> pa.Table:
    """image_id, split, genre, label, path of every manifest image, in training order; refuses bad manifests."""
    missing_columns = [name for name in _REQUIRED_COLUMNS if name not in manifest.columns]
    if missing_columns:
        raise ValueError(f"manifest lacks columns {missing_columns}; it needs {list(_REQUIRED_COLUMNS)}")
    if manifest.empty:
        raise ValueError(
            "manifest is empty: there is nothing to train on; download images before building shards"
        )
    split_ranks = manifest["split"].astype(str).map({name: rank for rank, name in enumerate(SPLITS)})
    if split_ranks.isna().any():
        bad_splits = sorted(set(manifest["split"].astype(str)) - set(SPLITS))
        raise ValueError(f"manifest has unknown split values {bad_splits}; expected {list(SPLITS)}")
    if manifest["image_id"].isna().any():
        raise ValueError("manifest has rows without an image_id; rebuild the manifest")
    image_ids = manifest["image_id"].astype(str)
    repeated = image_ids[image_ids.duplicated()].unique()
    if len(repeated):
        raise ValueError(
            f"manifest repeats {len(repeated)} image_id(s), e.g. {list(repeated[:3])}; each image needs one "
            "row: rebuild the manifest"
        )
    _refuse_escaping_paths(manifest)
    genres = [genre if isinstance(genre, str) else None for genre in manifest["genre"]]
    labels = np.array([classes.get(genre, -1) if genre else -1 for genre in genres], dtype=np.int64)
    order = training_order(labels, split_ranks.to_numpy(dtype=np.int64))
    return pa.table(
        {
            "image_id": pa.array(image_ids, pa.string()),
            "split": pa.array(manifest["split"].astype(str), pa.string()),
            "genre": pa.array(genres, pa.string()),
            "label": pa.array(labels, pa.int64()),
            "path": pa.array(
                [path if isinstance(path, str) else None for path in manifest["path"]], pa.string()
            ),
        }
    ).take(pa.array(order))


def _existing_placement(
    shard_dir: Path, resolution: int, image_ids: pa.ChunkedArray, warn: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray, dict[int, int], int]:
    """Where existing shards hold each image (shard, row; -1 where none does), every usable shard's size, and
    how many shards that held wanted images were refused as damaged (their images are decoded again).

    A shard counts when its ``.npy`` and ``.ids.parquet`` agree and, if it holds a wanted image, when its
    bytes match the checksum its ``.ids.parquet`` records; anything else in the folder is never reused, and
    deleted after the next commit.
    """
    shard_numbers = np.full(len(image_ids), -1, dtype=np.int32)
    shard_rows = np.full(len(image_ids), -1, dtype=np.int32)
    sizes: dict[int, int] = {}
    checksums: dict[int, str | None] = {}
    stored = []
    unusable = 0  # shards whose files are damaged beyond a checksum: a torn header, a bad id list
    for sidecar in sorted(shard_dir.glob("shard-*.ids.parquet")) if shard_dir.is_dir() else []:
        match = SHARD_FILE.fullmatch(sidecar.name)
        if match is None:
            continue
        number = int(match[1])
        try:
            rows, _ = read_shard_header(shard_path(shard_dir, number), resolution)
            table = pq.read_table(sidecar, columns=["image_id"])
        except FileNotFoundError:
            continue  # a commit that died while deleting a shard no index needed any more
        except (OSError, ValueError, pa.ArrowException) as error:
            unusable += 1
            warn(
                f"training shard {shard_path(shard_dir, number)} cannot be used ({error}); decoding its images again"
            )
            continue
        ids = table["image_id"]
        if len(ids) != rows:
            unusable += 1
            warn(
                f"training shard {sidecar} lists {len(ids)} images for {rows} rows; decoding its images again"
            )
            continue
        sizes[number] = rows
        recorded = (table.schema.metadata or {}).get(CHECKSUM_KEY)
        checksums[number] = recorded.decode() if recorded else None
        stored.append(
            pa.table(
                {
                    "image_id": ids.cast(pa.string()),
                    "shard": pa.array(np.full(rows, number, dtype=np.int32)),
                    "row": pa.array(np.arange(rows, dtype=np.int32)),
                }
            )
        )
    if not stored:
        return shard_numbers, shard_rows, sizes, unusable
    wanted = pa.table(
        {"image_id": image_ids, "position": pa.array(np.arange(len(image_ids), dtype=np.int64))}
    )
    found = wanted.join(pa.concat_tables(stored), keys="image_id", join_type="inner")
    # Only the shards this build would take images from are hashed: a full read of each, in threads.
    damaged = _damaged_shards(
        shard_dir, {n: checksums[n] for n in pc.unique(found["shard"]).to_pylist()}, warn
    )
    if damaged:
        found = found.filter(pc.invert(pc.is_in(found["shard"], value_set=pa.array(damaged, pa.int32()))))
        for number in damaged:
            sizes.pop(number)
    if found.num_rows == 0:
        return shard_numbers, shard_rows, sizes, unusable + len(damaged)
    positions = found["position"].to_numpy()
    numbers, rows = found["shard"].to_numpy(), found["row"].to_numpy()
    # An image in two shards is a compaction's copy whose build died before committing: keep the newer copy.
    order = np.lexsort((-numbers.astype(np.int64), positions))
    positions, numbers, rows = positions[order], numbers[order], rows[order]
    first = np.concatenate(([True], positions[1:] != positions[:-1]))
    shard_numbers[positions[first]] = numbers[first]
    shard_rows[positions[first]] = rows[first]
    return shard_numbers, shard_rows, sizes, unusable + len(damaged)


def _damaged_shards(
    shard_dir: Path, checksums: dict[int, str | None], warn: Callable[[str], None]
) -> list[int]:
    """The shards among ``checksums`` whose file does not match its recorded checksum, or records none.

    A shard written before shards carried checksums cannot be told from a damaged one, so it is decoded
    again once (its images must still exist), rather than trusted.
    """
    numbers = sorted(checksums)
    if not numbers:
        return []
    with ThreadPoolExecutor(max_workers=min(len(numbers), os.cpu_count() or 1)) as pool:
        files = [shard_path(shard_dir, number) for number in numbers]
        digests = dict(zip(numbers, pool.map(shard_digest, files), strict=True))
    damaged = []
    for number in numbers:
        if checksums[number] == digests[number]:
            continue
        damaged.append(number)
        reason = (
            "was written before shards carried checksums"
            if checksums[number] is None
            else "does not match its checksum (damaged on disk)"
        )
        warn(f"training shard {shard_path(shard_dir, number)} {reason}; decoding its images again")
    return damaged


def _write_new_shards(
    shard_dir: Path,
    options: ShardBuildOptions,
    sources: list[str | tuple[int, int]],
    image_ids: pa.ChunkedArray,
    on_decoded: Callable[[int], None],
) -> tuple[np.ndarray, np.ndarray]:
    """Write new shards holding ``sources`` in order (a path decodes, a (shard, row) copies): their places."""
    count = len(sources)
    new_numbers = np.empty(count, dtype=np.int32)
    new_rows = np.empty(count, dtype=np.int32)
    if count == 0:
        return new_numbers, new_rows
    resolution, shard_size = options.resolution, options.shard_size
    first_number = next_shard_number(shard_dir)
    shards: list[NewShard] = []
    try:
        for start in range(0, count, shard_size):
            stop = min(start + shard_size, count)
            shard = NewShard.create(
                shard_dir, first_number + start // shard_size, stop - start, resolution, image_ids[start:stop]
            )
            shards.append(shard)
            new_numbers[start:stop], new_rows[start:stop] = shard.number, np.arange(stop - start)
            decode_rows, decode_paths = [], []
            for row, source in enumerate(sources[start:stop]):
                if isinstance(source, tuple):
                    shard.copies.append((row, *source))
                else:
                    decode_rows.append(row)
                    decode_paths.append(source)
            for chunk in range(0, len(decode_rows), CHUNK_SIZE):
                shard.decode_tasks.append(
                    DecodeTask(
                        target=str(shard.temp),
                        data_offset=shard.data_offset,
                        resolution=resolution,
                        rows=decode_rows[chunk : chunk + CHUNK_SIZE],
                        paths=decode_paths[chunk : chunk + CHUNK_SIZE],
                    )
                )
        decode_new_shards(shard_dir, resolution, shards, options.workers, on_decoded)
    except BaseException:
        for shard in shards:
            if not shard.finished:
                shard.abandon()
        raise
    return new_numbers, new_rows
