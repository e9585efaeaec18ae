"""Reading a shard set: ``load_shards`` opens it as a ``ShardSet`` snapshot that reads pixels a batch at a time."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from album_pipeline.data.manifest import SPLITS
from album_pipeline.data.shards.format import (
    INDEX_FILE,
    SHARD_SET_FORMAT,
    read_exactly,
    read_shard_header,
    resolution_dir,
    shard_path,
)


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
        return dataclasses.replace(
            self,
            labels=self.labels[mask],
            split_codes=self.split_codes[mask],
            shard_numbers=self.shard_numbers[mask],
            shard_rows=self.shard_rows[mask],
            index_positions=self.index_positions[mask],
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
            read_exactly(fd, target[start:end], data_offset + int(shard_rows[start]) * row_bytes)
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
    shard_dir = resolution_dir(out_dir, resolution)
    opened: dict[int, tuple[int, int]] = {}
    try:
        for number in np.flatnonzero(last_rows >= 0).tolist():
            path = shard_path(shard_dir, number)
            try:
                rows, offset = read_shard_header(path, resolution)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"shard {path} referenced by {out_dir / INDEX_FILE} is missing; {rebuild}"
                ) from None
            except ValueError as error:  # the cheap check at open: a header and a size that agree
                raise ValueError(f"{error}; {rebuild}") from None
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
