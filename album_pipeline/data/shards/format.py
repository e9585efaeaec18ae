"""The shard set's on-disk format: file names, the ``.npy`` header of a shard, exact reads and writes.

See the package docstring (``album_pipeline.data.shards``) for the layout these names describe.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

SHARD_SET_FORMAT = "album_pipeline.training_shards/1"
INDEX_FILE = "index.parquet"
SHARDS_DIR = "shards"
DEFAULT_SHARD_SIZE = 8192

SHARD_FILE = re.compile(r"shard-(\d+)\.(npy|ids\.parquet)")
ANY_SHARD_NUMBER = re.compile(r"shard-(\d+)")
# The sha256 of a shard's whole .npy file, in its .ids.parquet's schema metadata: a shard damaged on disk is
# decoded again instead of being reused. sha256 because it is the fastest of hashlib's on x86 with SHA-NI
# (about 0.1 s for a 96 MiB shard here, blake2b 0.14-0.25 s).
CHECKSUM_KEY = b"sha256"
LOCK_FILE = ".build.lock"  # flocked while a build writes the set
# What the single packed file layout that shards replace left behind.
LEGACY_FILES = ("images.npy", "meta.json")


def training_order(labels: np.ndarray, split_ranks: np.ndarray) -> np.ndarray:
    """By split, labelled rows first within one; lexsort is stable, so the given order breaks ties."""
    return np.lexsort((labels < 0, split_ranks))


def resolution_dir(out_dir: Path, resolution: int) -> Path:
    return Path(out_dir) / SHARDS_DIR / f"r{resolution}"


def shard_path(shard_dir: Path, number: int) -> Path:
    return shard_dir / f"shard-{number:06d}.npy"


def ids_path(shard_dir: Path, number: int) -> Path:
    return shard_dir / f"shard-{number:06d}.ids.parquet"


def read_shard_header(path: Path, resolution: int) -> tuple[int, int]:
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
    expected = offset + int(np.prod(shape))
    if size != expected:
        state = "is truncated" if size < expected else f"has {size - expected:,} bytes after its last row"
        raise ValueError(f"{path} {state}")
    return int(shape[0]), offset


def shard_digest(path: Path) -> str:
    """The checksum recorded for a shard (hex sha256 of the whole file); hashlib releases the GIL."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def temp_shard_path(shard_dir: Path, number: int) -> Path:
    return shard_dir / f".shard-{number:06d}.npy.tmp"


def read_exactly(fd: int, into: np.ndarray, offset: int) -> None:
    view = memoryview(into).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise ValueError(
                "a shard file ended early; rematerialize the training-data asset (build_shards) to rebuild it"
            )
        done += got


def write_exactly(fd: int, pixels: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(pixels)).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
