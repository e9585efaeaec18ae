"""Writing a shard set: new shard files under temporary names, compaction copies, the index commit, the lock."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from album_pipeline.atomic import atomic_path
from album_pipeline.data.shards.format import (
    ANY_SHARD_NUMBER,
    CHECKSUM_KEY,
    INDEX_FILE,
    LEGACY_FILES,
    LOCK_FILE,
    SHARD_FILE,
    SHARD_SET_FORMAT,
    SHARDS_DIR,
    ids_path,
    read_exactly,
    read_shard_header,
    shard_digest,
    shard_path,
    temp_shard_path,
    write_exactly,
)

if TYPE_CHECKING:
    from album_pipeline.data.shards.decode import DecodeTask


def next_shard_number(shard_dir: Path) -> int:
    """One past every shard number in the folder, leftovers included, so no new name meets an old file."""
    numbers = [
        int(match[1]) for entry in shard_dir.iterdir() if (match := ANY_SHARD_NUMBER.search(entry.name))
    ]
    return max(numbers, default=-1) + 1


class NewShard:
    """A shard file being written under a temporary name; ``finish`` names it and writes its ids."""

    def __init__(self, shard_dir: Path, number: int, size: int, data_offset: int, image_ids: pa.Array):
        self.shard_dir, self.number, self.size = shard_dir, number, size
        self.data_offset, self.image_ids = data_offset, image_ids
        self.temp = temp_shard_path(shard_dir, number)
        self.decode_tasks: list[DecodeTask] = []
        self.copies: list[tuple[int, int, int]] = []  # (row, source shard, source row)
        self.pending_tasks = 0
        self.finished = False

    @classmethod
    def create(
        cls, shard_dir: Path, number: int, size: int, resolution: int, image_ids: pa.Array
    ) -> NewShard:
        temp = temp_shard_path(shard_dir, number)
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
            write_exactly(fd, pixels, self.data_offset + first_row * pixels[0].nbytes)
        finally:
            os.close(fd)

    def finish(self) -> None:
        fd = os.open(self.temp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the index may name this shard only once its rows are on disk
        finally:
            os.close(fd)
        # Hashed after the fsync, from the page cache: the checksum covers the bytes as they are on disk.
        digest = shard_digest(self.temp)
        os.replace(self.temp, shard_path(self.shard_dir, self.number))
        ids = pa.table({"image_id": self.image_ids}).replace_schema_metadata({CHECKSUM_KEY: digest})
        with atomic_path(ids_path(self.shard_dir, self.number)) as temp_ids:
            pq.write_table(ids, temp_ids)
        self.finished = True

    def abandon(self) -> None:
        self.temp.unlink(missing_ok=True)


def copy_rows(shard_dir: Path, resolution: int, shard: NewShard) -> None:
    """Copy rows of existing shards into ``shard`` (compaction): bytes, no decode."""
    if not shard.copies:
        return
    row_bytes = resolution * resolution * 3
    sources: dict[int, tuple[int, int]] = {}
    target = os.open(shard.temp, os.O_WRONLY)
    try:
        for row, source_number, source_row in shard.copies:
            if source_number not in sources:
                path = shard_path(shard_dir, source_number)
                _, offset = read_shard_header(path, resolution)
                sources[source_number] = (os.open(path, os.O_RDONLY), offset)
            fd, offset = sources[source_number]
            pixels = np.empty(row_bytes, dtype=np.uint8)
            read_exactly(fd, pixels, offset + source_row * row_bytes)
            write_exactly(target, pixels, shard.data_offset + row * row_bytes)
    finally:
        os.close(target)
        for fd, _ in sources.values():
            os.close(fd)


def commit(
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
        match = SHARD_FILE.fullmatch(entry.name)
        if match and int(match[1]) in referenced:
            continue
        dropped += bool(match and match[2] == "npy")
        _remove(entry)
    for other in (out_dir / SHARDS_DIR).iterdir():
        if other != shard_dir:  # the shards of a resolution no longer trained at
            dropped += len(list(other.glob("shard-*.npy")))
            _remove(other)
    for leftover in [*(out_dir / name for name in LEGACY_FILES), *out_dir.glob(f".{INDEX_FILE}.*")]:
        _remove(leftover)
    return dropped


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def exclusive_build(out_dir: Path) -> Iterator[None]:
    """One build at a time per shard set; a folder this build created is removed again if it fails early."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(out_dir / LOCK_FILE, "a") as lock:
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
