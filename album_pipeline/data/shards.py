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

This module does not import torch, so that decode processes start quickly; the batch stream the GAN trains on
is in ``album_pipeline.data.loader``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageOps

from album_pipeline.atomic import atomic_path
from album_pipeline.data.manifest import SPLITS
from album_pipeline.genres import genre_index

if TYPE_CHECKING:
    import pandas as pd

SHARD_SET_FORMAT = "album_pipeline.training_shards/1"
INDEX_FILE = "index.parquet"
SHARDS_DIR = "shards"
DEFAULT_SHARD_SIZE = 8192

# A decode process starts in well under a second while one core decodes a few thousand covers a second, so
# a pool only pays off for large inputs.
_PARALLEL_THRESHOLD = 20_000
_CHUNK_SIZE = 256
_REQUIRED_COLUMNS = ("image_id", "path", "genre", "split")
_SHARD_FILE = re.compile(r"shard-(\d+)\.(npy|ids\.parquet)")
_ANY_SHARD_NUMBER = re.compile(r"shard-(\d+)")
_LOCK_FILE = ".build.lock"
# What the single packed file layout that shards replace left behind.
_LEGACY_FILES = ("images.npy", "meta.json")


# -- decoding ----------------------------------------------------------------------------------------------


def decode_image(path: Path | str, resolution: int) -> np.ndarray:
    """uint8 (R, R, 3): the image as RGB, centre-cropped and resized by ``ImageOps.fit`` as the seed did."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG" and min(image.size) >= 2 * resolution:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: far faster, still at least resolution².
                image.draft("RGB", (resolution, resolution))
            rgb = image.convert("RGB")
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot decode image {path}: {error}; delete it and re-download it") from error
    fitted = ImageOps.fit(rgb, (resolution, resolution))
    return np.asarray(fitted, dtype=np.uint8)


# -- the shard set ---------------------------------------------------------------------------------------


class _OpenFiles:
    """The file descriptors of one loaded shard set: the index and every shard it references.

    They are opened when the set is loaded, so a loaded set is a snapshot: a rebuild that replaces the index
    or deletes a shard meanwhile does not change what it reads (Linux keeps a deleted file's data while it is
    open).
    """

    def __init__(self, index: pa.NativeFile, shards: dict[int, tuple[int, int]]):
        self.index = index
        self.shards = shards  # shard number -> (fd, offset of row 0)
        self.lock = threading.Lock()
        weakref.finalize(self, _close_files, index, [fd for fd, _ in shards.values()])

    def image_id_column(self) -> pa.ChunkedArray:
        with self.lock:  # the index file is one stream with one position
            return pq.ParquetFile(self.index).read(columns=["image_id"])["image_id"]


def _close_files(index: pa.NativeFile, fds: list[int]) -> None:
    index.close()
    for fd in fds:
        os.close(fd)


@dataclass(frozen=True, eq=False, repr=False)
class ShardSet:
    """The images of a shard set (or a selection of them) and small per-image arrays, nothing per image else.

    Pixels stay on disk until ``read``; image ids stay in the index until ``image_ids``. Per image this holds
    25 bytes (label, split, shard, row, index position), so a million images take 25 MB.
    """

    folder: Path
    resolution: int
    genres: tuple[str, ...]
    labels: np.ndarray  # int64 (N,): class index into genres; -1 when unlabelled or off-list
    split_codes: np.ndarray  # int8 (N,): index into SPLITS
    shard_numbers: np.ndarray  # int32 (N,)
    shard_rows: np.ndarray  # int32 (N,)
    index_positions: np.ndarray  # int64 (N,): row of index.parquet
    _files: _OpenFiles = field(repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ShardSet({self.folder}, {len(self)} images, {self.resolution}px, genres={list(self.genres)})"

    def splits(self) -> np.ndarray:
        """The split name of each image (fixed-width strings, not one Python object each)."""
        return np.asarray(SPLITS)[self.split_codes]

    def subset(self, split: str | Sequence[str]) -> ShardSet:
        """Only the images of the given split(s): ``"train"`` or e.g. ``["train", "val"]``."""
        wanted = [split] if isinstance(split, str) else list(split)
        unknown = sorted(set(wanted) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; choose from {list(SPLITS)}")
        return self._select(np.isin(self.split_codes, [SPLITS.index(name) for name in wanted]))

    def labelled(self) -> ShardSet:
        """Only the images whose genre is one of ``genres``."""
        return self._select(self.labels >= 0)

    def _select(self, mask: np.ndarray) -> ShardSet:
        return ShardSet(
            folder=self.folder,
            resolution=self.resolution,
            genres=self.genres,
            labels=self.labels[mask],
            split_codes=self.split_codes[mask],
            shard_numbers=self.shard_numbers[mask],
            shard_rows=self.shard_rows[mask],
            index_positions=self.index_positions[mask],
            _files=self._files,
        )

    def read(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """uint8 (k, R, R, 3): the pixels of images ``rows`` (positions in this set), in the order asked.

        Reads go through ``os.preadv`` into a fresh array, one read per run of consecutive rows of a shard.
        A memory map would be simpler, but every page of it that an epoch touches would count towards the
        process's resident memory, which would then grow with the dataset.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        count, side = len(rows), self.resolution
        pixels = np.empty((count, side, side, 3), dtype=np.uint8)
        if count == 0:
            return pixels
        shards, shard_rows = self.shard_numbers[rows], self.shard_rows[rows]
        order = np.lexsort((shard_rows, shards))
        shards, shard_rows = shards[order], shard_rows[order]
        in_order = bool((order == np.arange(count)).all())
        target = pixels if in_order else np.empty_like(pixels)
        run_starts = np.flatnonzero(
            np.concatenate(([True], (shards[1:] != shards[:-1]) | (shard_rows[1:] != shard_rows[:-1] + 1)))
        )
        run_ends = np.append(run_starts[1:], count)
        row_bytes = side * side * 3
        for start, end in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
            fd, data_offset = self._files.shards[int(shards[start])]
            _read_exactly(fd, target[start:end], data_offset + int(shard_rows[start]) * row_bytes)
        if not in_order:
            pixels[order] = target
        return pixels

    def read_all(self) -> np.ndarray:
        """uint8 (N, R, R, 3): every image in memory at once; for small sets (classifier, evaluation)."""
        return self.read(np.arange(len(self)))

    def image_id_array(self) -> pa.StringArray:
        """The image ids of this set's images, in order, as one Arrow array (no Python string per image)."""
        column = self._files.image_id_column()
        return column.take(pa.array(self.index_positions)).combine_chunks()

    def image_ids(self) -> np.ndarray:
        """The image ids of this set's images, in order (one Python string each: fine for small sets)."""
        return self.image_id_array().to_numpy(zero_copy_only=False)

    def fingerprint(self) -> str:
        """sha256 over image ids, labels and resolution: equal for the same images in the same order."""
        digest = hashlib.sha256(f"{SHARD_SET_FORMAT} {self.resolution} {len(self)}\n".encode())
        ids = self.image_id_array()
        if len(ids):
            # The array's own buffers: offsets (rebased to 0) and the characters they delimit.
            _, offset_buffer, data = ids.buffers()
            offsets = np.frombuffer(offset_buffer, dtype=np.int32)[ids.offset : ids.offset + len(ids) + 1]
            digest.update((offsets - offsets[0]).astype("<i4").tobytes())
            digest.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])] if data is not None else b"")
        digest.update(self.labels.astype("<i8").tobytes())
        return digest.hexdigest()


def load_shards(out_dir: Path) -> ShardSet:
    """The shard set in ``out_dir``, every shard it references opened for reading (nothing read yet)."""
    out_dir = Path(out_dir)
    index_path = out_dir / INDEX_FILE
    if not index_path.is_file():
        raise FileNotFoundError(
            f"no training shards in {out_dir} ({INDEX_FILE} missing); materialize the training-data asset "
            "(build_shards) first"
        )
    index_file = pa.OSFile(str(index_path))
    try:
        return _open_shard_set(out_dir, index_file)
    except BaseException:
        index_file.close()
        raise


def _open_shard_set(out_dir: Path, index_file: pa.NativeFile) -> ShardSet:
    rebuild = "rematerialize the training-data asset (build_shards) to rebuild it"
    schema = pq.ParquetFile(index_file).schema_arrow
    meta = {key.decode(): value.decode() for key, value in (schema.metadata or {}).items()}
    if meta.get("format") != SHARD_SET_FORMAT:
        raise ValueError(
            f"{out_dir / INDEX_FILE} holds format {meta.get('format')!r}, not {SHARD_SET_FORMAT!r} "
            f"(an older packed layout?); {rebuild}"
        )
    resolution, genres = int(meta["resolution"]), tuple(json.loads(meta["genres"]))
    parquet = pq.ParquetFile(index_file, read_dictionary=["split"])
    # Column by column, the split as dictionary codes: the peak stays near the small arrays that are kept.
    split_codes = []
    for chunk in parquet.read(columns=["split"])["split"].chunks:
        known = [SPLITS.index(name) if name in SPLITS else -1 for name in chunk.dictionary.to_pylist()]
        split_codes.append(np.asarray(known, dtype=np.int8)[chunk.indices.to_numpy(zero_copy_only=False)])
    split_codes = np.concatenate(split_codes) if split_codes else np.empty(0, dtype=np.int8)
    if (split_codes < 0).any():
        raise ValueError(f"{out_dir / INDEX_FILE} has splits outside {list(SPLITS)}; {rebuild}")
    labels = parquet.read(columns=["label"])["label"].to_numpy().astype(np.int64, copy=False)
    shard_numbers = parquet.read(columns=["shard"])["shard"].to_numpy().astype(np.int32, copy=False)
    shard_rows = parquet.read(columns=["row"])["row"].to_numpy().astype(np.int32, copy=False)
    if len(shard_numbers) and min(shard_numbers.min(), shard_rows.min()) < 0:
        raise ValueError(f"{out_dir / INDEX_FILE} has negative shard or row numbers; {rebuild}")
    last_rows = np.full(shard_numbers.max(initial=-1) + 1, -1, dtype=np.int64)
    np.maximum.at(last_rows, shard_numbers, shard_rows)
    shard_dir = _shard_dir(out_dir, resolution)
    opened: dict[int, tuple[int, int]] = {}
    try:
        for number in np.flatnonzero(last_rows >= 0).tolist():
            path = _shard_path(shard_dir, number)
            try:
                rows, offset = _shard_header(path, resolution)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"shard {path} referenced by {out_dir / INDEX_FILE} is missing; {rebuild}"
                ) from None
            if rows <= last_rows[number]:
                raise ValueError(
                    f"shard {path} has fewer rows than {out_dir / INDEX_FILE} expects; {rebuild}"
                )
            opened[number] = (os.open(path, os.O_RDONLY), offset)
    except BaseException:
        for fd, _ in opened.values():
            os.close(fd)
        raise
    return ShardSet(
        folder=out_dir,
        resolution=resolution,
        genres=genres,
        labels=labels,
        split_codes=split_codes,
        shard_numbers=shard_numbers,
        shard_rows=shard_rows,
        index_positions=np.arange(len(labels), dtype=np.int64),
        _files=_OpenFiles(index_file, opened),
    )


def manifest_mismatches(data: ShardSet, manifest_ids: Iterable[str]) -> list[str]:
    """What differs between a shard set and the manifest it was built from (empty when they agree)."""
    manifest_array = pa.array(list(manifest_ids), pa.string())
    shard_array = data.image_id_array()
    problems = []
    if len(shard_array) != len(manifest_array):
        problems.append(f"the index has {len(shard_array):,} rows, the manifest {len(manifest_array):,}")
    for what, ids, others in (
        ("manifest images missing from the index", manifest_array, shard_array),
        ("index rows not in the manifest", shard_array, manifest_array),
    ):
        stray = ids.filter(pc.invert(pc.is_in(ids, value_set=others)))
        if len(stray):
            problems.append(f"{len(stray):,} {what}, e.g. {stray[:3].to_pylist()}")
    return problems


# -- building ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardBuild:
    shard_set: ShardSet
    decoded: int  # images decoded by this build
    reused: int  # images taken from existing shards, not decoded (copied ones included)
    copied: int  # of those, images copied out of a mostly dead shard into a new one
    dropped_shards: int  # shard files deleted because the new index no longer needs them
    seconds: float


def build_shards(
    manifest: pd.DataFrame,
    home_root: Path,
    out_dir: Path,
    genres: Sequence[str],
    *,
    resolution: int = 64,
    workers: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ShardBuild:
    """Bring the shard set in ``out_dir`` up to date with ``manifest``, decoding only the images it lacks.

    ``manifest`` needs the columns image_id (unique), path (relative to ``home_root``), genre (null when
    unlabelled) and split. A genre outside ``genres`` gets label -1, like an unlabelled image. Images that a
    shard already holds are not decoded again (their files need not exist any more); a changed genre or split
    only rewrites the index. A shard left less than half referenced is compacted: its live rows are copied
    into the new shards and it is deleted. Large inputs (or ``workers`` > 1) decode in a forkserver process
    pool, so a calling script needs the usual ``if __name__ == "__main__":`` guard.
    """
    started = time.perf_counter()
    genres = tuple(genres)
    classes = genre_index(genres)
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    index = _manifest_index(manifest, classes)
    out_dir = Path(out_dir)
    shard_dir = _shard_dir(out_dir, resolution)
    with _exclusive_build(out_dir):
        shard_numbers, shard_rows, shard_sizes = _existing_placement(shard_dir, resolution, index["image_id"])
        known = shard_numbers >= 0
        live = np.bincount(shard_numbers[known], minlength=max(shard_sizes, default=-1) + 1)
        sparse = [number for number, size in shard_sizes.items() if 0 < live[number] < size / 2]
        copied = known & np.isin(shard_numbers, sparse)
        fresh = ~known
        # Plain strings, not Paths: a first build may have a million of them.
        root = os.fspath(home_root)
        relative_paths = index["path"].filter(pa.array(fresh)).to_pylist()
        decode_paths = [os.path.join(root, path) if path else "" for path in relative_paths]
        absent = [path or "(no path)" for path in decode_paths if not os.path.isfile(path)]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} of {len(decode_paths)} manifest images to decode are missing under "
                f"{root}, e.g. {absent[:3]}; re-run the download that writes them or rebuild the manifest"
            )

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
        new_numbers, new_rows = _write_new_shards(
            shard_dir, resolution, shard_size, workers, sources, index["image_id"].take(pa.array(moved))
        )
        shard_numbers[moved], shard_rows[moved] = new_numbers, new_rows
        dropped = _commit(
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
    )


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
    with _exclusive_build(out_dir):
        first = _checked_chunk(next(chunks, None), None)
        resolution = first.shape[1]
        shard_dir = _shard_dir(out_dir, resolution)
        shard_dir.mkdir(parents=True, exist_ok=True)
        first_number = _next_shard_number(shard_dir)
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
                        shard = _NewShard.create(
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
        order = _training_order(labels, split_ranks.to_numpy().astype(np.int64))
        genre_names = pa.array([genres[label] if label >= 0 else None for label in labels], pa.string())
        index = pa.table({"image_id": ids, "split": split_names, "genre": genre_names, "label": labels})
        _commit(
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


# -- building blocks ---------------------------------------------------------------------------------------


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
    genres = [genre if isinstance(genre, str) else None for genre in manifest["genre"]]
    labels = np.array([classes.get(genre, -1) if genre else -1 for genre in genres], dtype=np.int64)
    order = _training_order(labels, split_ranks.to_numpy(dtype=np.int64))
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


def _training_order(labels: np.ndarray, split_ranks: np.ndarray) -> np.ndarray:
    """By split, labelled rows first within one; lexsort is stable, so the given order breaks ties."""
    return np.lexsort((labels < 0, split_ranks))


def _shard_dir(out_dir: Path, resolution: int) -> Path:
    return Path(out_dir) / SHARDS_DIR / f"r{resolution}"


def _shard_path(shard_dir: Path, number: int) -> Path:
    return shard_dir / f"shard-{number:06d}.npy"


def _ids_path(shard_dir: Path, number: int) -> Path:
    return shard_dir / f"shard-{number:06d}.ids.parquet"


def _shard_header(path: Path, resolution: int) -> tuple[int, int]:
    """(rows, offset of row 0) of a shard file; refuses one that is not uint8 (n, R, R, 3) in C order."""
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }
            shape, fortran_order, dtype = read_header[version](handle)
        except (ValueError, KeyError) as error:
            raise ValueError(f"{path} is not a shard file: {error}") from error
        offset = handle.tell()
        size = os.fstat(handle.fileno()).st_size
    if dtype != np.uint8 or fortran_order or len(shape) != 4 or shape[1:] != (resolution, resolution, 3):
        raise ValueError(f"{path} holds {dtype} {shape}, not uint8 (n, {resolution}, {resolution}, 3)")
    if size < offset + int(np.prod(shape)):
        raise ValueError(f"{path} is truncated")
    return int(shape[0]), offset


def _existing_placement(
    shard_dir: Path, resolution: int, image_ids: pa.ChunkedArray
) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """Where existing shards hold each image (shard, row; -1 where none does) and every usable shard's size.

    A shard counts when its ``.npy`` and ``.ids.parquet`` agree; anything else in the folder is a leftover of
    a build that died, never reused, and deleted after the next commit.
    """
    shard_numbers = np.full(len(image_ids), -1, dtype=np.int32)
    shard_rows = np.full(len(image_ids), -1, dtype=np.int32)
    sizes: dict[int, int] = {}
    stored = []
    for sidecar in sorted(shard_dir.glob("shard-*.ids.parquet")) if shard_dir.is_dir() else []:
        match = _SHARD_FILE.fullmatch(sidecar.name)
        if match is None:
            continue
        number = int(match[1])
        try:
            rows, _ = _shard_header(_shard_path(shard_dir, number), resolution)
            ids = pq.read_table(sidecar, columns=["image_id"])["image_id"]
        except (OSError, ValueError, pa.ArrowException):
            continue
        if len(ids) != rows:
            continue
        sizes[number] = rows
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
        return shard_numbers, shard_rows, sizes
    wanted = pa.table(
        {"image_id": image_ids, "position": pa.array(np.arange(len(image_ids), dtype=np.int64))}
    )
    found = wanted.join(pa.concat_tables(stored), keys="image_id", join_type="inner")
    positions = found["position"].to_numpy()
    numbers, rows = found["shard"].to_numpy(), found["row"].to_numpy()
    # An image in two shards is a compaction's copy whose build died before committing: keep the newer copy.
    order = np.lexsort((-numbers.astype(np.int64), positions))
    positions, numbers, rows = positions[order], numbers[order], rows[order]
    first = np.concatenate(([True], positions[1:] != positions[:-1]))
    shard_numbers[positions[first]] = numbers[first]
    shard_rows[positions[first]] = rows[first]
    return shard_numbers, shard_rows, sizes


def _next_shard_number(shard_dir: Path) -> int:
    """One past every shard number in the folder, leftovers included, so no new name meets an old file."""
    numbers = [
        int(match[1]) for entry in shard_dir.iterdir() if (match := _ANY_SHARD_NUMBER.search(entry.name))
    ]
    return max(numbers, default=-1) + 1


class _NewShard:
    """A shard file being written under a temporary name; ``finish`` names it and writes its ids."""

    def __init__(self, shard_dir: Path, number: int, size: int, data_offset: int, image_ids: pa.Array):
        self.shard_dir, self.number, self.size = shard_dir, number, size
        self.data_offset, self.image_ids = data_offset, image_ids
        self.temp = _temp_shard_path(shard_dir, number)
        self.decode_tasks: list[tuple] = []  # arguments of _decode_into_shard
        self.copies: list[tuple[int, int, int]] = []  # (row, source shard, source row)
        self.pending_tasks = 0
        self.finished = False

    @classmethod
    def create(
        cls, shard_dir: Path, number: int, size: int, resolution: int, image_ids: pa.Array
    ) -> _NewShard:
        temp = _temp_shard_path(shard_dir, number)
        # open_memmap writes the .npy header and sizes the (sparse) file; rows are written with pwrite.
        pixels = np.lib.format.open_memmap(
            temp, mode="w+", dtype=np.uint8, shape=(size, resolution, resolution, 3)
        )
        data_offset = pixels.offset
        del pixels
        return cls(shard_dir, number, size, data_offset, image_ids)

    def write_rows(self, first_row: int, pixels: np.ndarray) -> None:
        fd = os.open(self.temp, os.O_WRONLY)
        try:
            _write_exactly(fd, pixels, self.data_offset + first_row * pixels[0].nbytes)
        finally:
            os.close(fd)

    def finish(self) -> None:
        fd = os.open(self.temp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the index may name this shard only once its rows are on disk
        finally:
            os.close(fd)
        os.replace(self.temp, _shard_path(self.shard_dir, self.number))
        with atomic_path(_ids_path(self.shard_dir, self.number)) as temp_ids:
            pq.write_table(pa.table({"image_id": self.image_ids}), temp_ids)
        self.finished = True

    def abandon(self) -> None:
        self.temp.unlink(missing_ok=True)


def _temp_shard_path(shard_dir: Path, number: int) -> Path:
    return shard_dir / f".shard-{number:06d}.npy.tmp"


def _write_new_shards(
    shard_dir: Path,
    resolution: int,
    shard_size: int,
    workers: int | None,
    sources: list[str | tuple[int, int]],
    image_ids: pa.ChunkedArray,
) -> tuple[np.ndarray, np.ndarray]:
    """Write new shards holding ``sources`` in order (a path decodes, a (shard, row) copies): their places."""
    count = len(sources)
    new_numbers = np.empty(count, dtype=np.int32)
    new_rows = np.empty(count, dtype=np.int32)
    if count == 0:
        return new_numbers, new_rows
    first_number = _next_shard_number(shard_dir)
    shards: list[_NewShard] = []
    try:
        for start in range(0, count, shard_size):
            stop = min(start + shard_size, count)
            shard = _NewShard.create(
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
            for chunk in range(0, len(decode_rows), _CHUNK_SIZE):
                shard.decode_tasks.append(
                    (
                        str(shard.temp),
                        shard.data_offset,
                        resolution,
                        decode_rows[chunk : chunk + _CHUNK_SIZE],
                        decode_paths[chunk : chunk + _CHUNK_SIZE],
                    )
                )
        task_count = sum(len(shard.decode_tasks) for shard in shards)
        decode_count = sum(len(task[3]) for shard in shards for task in shard.decode_tasks)
        if _worker_count(workers, decode_count, task_count) == 1:
            upcoming = [task for shard in shards for task in shard.decode_tasks][1:] + [None]
            for shard in shards:
                _copy_rows(shard_dir, resolution, shard)
                for task in shard.decode_tasks:
                    following = upcoming.pop(0)
                    if following is not None:
                        _read_ahead(following[4])  # the disk reads the next chunk while this one decodes
                    _decode_into_shard(*task)
                shard.finish()
        else:
            _decode_in_pool(shard_dir, resolution, shards, _worker_count(workers, decode_count, task_count))
    except BaseException:
        for shard in shards:
            if not shard.finished:
                shard.abandon()
        raise
    return new_numbers, new_rows


def _decode_in_pool(shard_dir: Path, resolution: int, shards: list[_NewShard], workers: int) -> None:
    # forkserver: forking a process that runs torch or Dagster threads can deadlock the children.
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        owners = {}
        tasks = [task for shard in shards for task in shard.decode_tasks]
        # The parent mostly waits: it keeps the disk reading the chunks the workers will take next.
        look_ahead = 2 * workers
        for task in tasks[:look_ahead]:
            _read_ahead(task[4])
        for shard in shards:
            for task in shard.decode_tasks:
                owners[pool.submit(_decode_into_shard, *task)] = shard
                shard.pending_tasks += 1
        for shard in shards:  # copies and finished shards happen while the pool decodes
            _copy_rows(shard_dir, resolution, shard)
            if shard.pending_tasks == 0:
                shard.finish()
        pending = set(owners)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # a worker's error (say, a broken image) stops the build here
                if look_ahead < len(tasks):
                    _read_ahead(tasks[look_ahead][4])
                    look_ahead += 1
                shard = owners[future]
                shard.pending_tasks -= 1
                if shard.pending_tasks == 0:
                    shard.finish()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_count(requested: int | None, image_count: int, task_count: int) -> int:
    if requested is not None:
        return max(1, min(requested, task_count))
    if image_count < _PARALLEL_THRESHOLD:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), task_count))


def _decode_into_shard(
    target: str, data_offset: int, resolution: int, rows: list[int], paths: list[str]
) -> int:
    """Decode ``paths`` into rows ``rows`` (ascending) of the shard file ``target``; runs in a worker too.

    Writing the file from here rather than returning the pixels spares pickling them back to the parent.
    """
    # Callers also look ahead, but a pool worker may take this chunk before the parent's look-ahead reaches
    # it; asking again costs a few microseconds per file (measured: without it two workers lost 28-30%).
    _read_ahead(paths)
    pixels = np.empty((len(rows), resolution, resolution, 3), dtype=np.uint8)
    for slot, path in enumerate(paths):
        pixels[slot] = decode_image(path, resolution)
    row_array = np.asarray(rows)
    run_starts = np.flatnonzero(np.concatenate(([True], row_array[1:] != row_array[:-1] + 1)))
    run_ends = np.append(run_starts[1:], len(rows))
    fd = os.open(target, os.O_WRONLY)
    try:
        for start, end in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
            _write_exactly(fd, pixels[start:end], data_offset + rows[start] * pixels[0].nbytes)
    finally:
        os.close(fd)
    return len(rows)


def _read_ahead(paths: list[str]) -> None:
    """Ask the kernel to start reading ``paths`` now, so that decoding one image overlaps reading the next.

    A million covers do not fit in the page cache; without this a decode process waits on the disk for each
    file in turn.
    """
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # decode_image reports it, naming the file
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


def _copy_rows(shard_dir: Path, resolution: int, shard: _NewShard) -> None:
    """Copy rows of existing shards into ``shard`` (compaction): bytes, no decode."""
    if not shard.copies:
        return
    row_bytes = resolution * resolution * 3
    sources: dict[int, tuple[int, int]] = {}
    target = os.open(shard.temp, os.O_WRONLY)
    try:
        for row, source_number, source_row in shard.copies:
            if source_number not in sources:
                path = _shard_path(shard_dir, source_number)
                _, offset = _shard_header(path, resolution)
                sources[source_number] = (os.open(path, os.O_RDONLY), offset)
            fd, offset = sources[source_number]
            pixels = np.empty(row_bytes, dtype=np.uint8)
            _read_exactly(fd, pixels, offset + source_row * row_bytes)
            _write_exactly(target, pixels, shard.data_offset + row * row_bytes)
    finally:
        os.close(target)
        for fd, _ in sources.values():
            os.close(fd)


def _read_exactly(fd: int, into: np.ndarray, offset: int) -> None:
    view = memoryview(into).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise ValueError(
                "a shard file ended early; rematerialize the training-data asset (build_shards) to rebuild it"
            )
        done += got


def _write_exactly(fd: int, pixels: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(pixels)).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _commit(
    out_dir: Path,
    shard_dir: Path,
    index: pa.Table,
    shard_numbers: np.ndarray,
    shard_rows: np.ndarray,
    genres: tuple[str, ...],
    resolution: int,
) -> int:
    """Replace the index (the commit point), then delete what it no longer references; returns dropped shards."""
    table = index.append_column("shard", pa.array(shard_numbers, pa.int32())).append_column(
        "row", pa.array(shard_rows, pa.int32())
    )
    table = table.replace_schema_metadata(
        {"format": SHARD_SET_FORMAT, "resolution": str(resolution), "genres": json.dumps(list(genres))}
    )
    with atomic_path(out_dir / INDEX_FILE) as temp_index:
        pq.write_table(table, temp_index)
    referenced = set(np.unique(shard_numbers).tolist())
    dropped = 0
    for entry in shard_dir.iterdir():
        match = _SHARD_FILE.fullmatch(entry.name)
        if match and int(match[1]) in referenced:
            continue
        dropped += bool(match and match[2] == "npy")
        _remove(entry)
    for other in (out_dir / SHARDS_DIR).iterdir():
        if other != shard_dir:  # the shards of a resolution no longer trained at
            dropped += len(list(other.glob("shard-*.npy")))
            _remove(other)
    for leftover in [*(out_dir / name for name in _LEGACY_FILES), *out_dir.glob(f".{INDEX_FILE}.*")]:
        _remove(leftover)
    return dropped


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def _exclusive_build(out_dir: Path) -> Iterator[None]:
    """One build at a time per shard set; a folder this build created is removed again if it fails early."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(out_dir / _LOCK_FILE, "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(
                    f"another build is writing the training shards in {out_dir}; let it finish, then build again"
                ) from None
            yield
    except BaseException:
        if created and not any(out_dir.rglob("*.ids.parquet")):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
