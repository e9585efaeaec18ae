"""Training images packed once into memory-mappable uint8 arrays, and the batch stream the GAN trains on.

The seed project decoded every cover into one float32 array held in memory (250,000 covers at 64x64 are
12 GB as float32). Here the covers are decoded once, in parallel, into ``images.npy`` as uint8 (a quarter
of the size), which ``np.load(mmap_mode="r")`` maps without reading; each batch reads only its own rows and
becomes float on the training device, so memory stays constant however large the dataset grows.

Layout of a packed folder::

    images.npy     uint8 (N, R, R, 3), RGB
    index.parquet  image_id, split, genre, label (int64 class index into ``genres``; -1 when unlabelled)
    meta.json      format, resolution, genres, count

Rows are ordered by split (train, val, test) and, within a split, labelled rows first, so that the usual
selections (one split; its labelled rows) are contiguous slices of the memory map rather than copies.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps

from album_pipeline.data.manifest import SPLITS
from album_pipeline.genres import genre_index

PACK_FORMAT = "album_pipeline.packed_images/1"
IMAGES_FILE = "images.npy"
INDEX_FILE = "index.parquet"
META_FILE = "meta.json"

# A decode process starts in about 2 s (it imports this module, torch included) while one core decodes
# about 3,000 covers a second, so a pool only pays off for large inputs.
_PARALLEL_THRESHOLD = 20_000
_CHUNK_SIZE = 256
_REQUIRED_COLUMNS = ("image_id", "path", "genre", "split")


@dataclass(frozen=True)
class PackedImages:
    images: np.ndarray  # uint8 (N, R, R, 3); usually a read-only memory map
    labels: np.ndarray  # int64 (N,), -1 when unlabelled
    image_ids: np.ndarray  # str (N,)
    splits: np.ndarray  # str (N,)
    genres: tuple[str, ...]

    def __post_init__(self) -> None:
        count = len(self.images)
        if not (len(self.labels) == len(self.image_ids) == len(self.splits) == count):
            raise ValueError(
                f"packed arrays disagree in length: images {count}, labels {len(self.labels)}, "
                f"image_ids {len(self.image_ids)}, splits {len(self.splits)}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def subset(self, split: str | Sequence[str]) -> PackedImages:
        """Only the rows of the given split(s): ``"train"`` or e.g. ``["train", "val"]``."""
        wanted = [split] if isinstance(split, str) else list(split)
        unknown = sorted(set(wanted) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; choose from {list(SPLITS)}")
        return self._select(np.isin(self.splits, wanted))

    def labelled(self) -> PackedImages:
        """Only the rows whose genre is one of ``genres``."""
        return self._select(self.labels >= 0)

    def _select(self, mask: np.ndarray) -> PackedImages:
        rows = np.flatnonzero(mask)
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            # A contiguous run stays a view of the memory map instead of being read into memory.
            chosen: slice | np.ndarray = slice(int(rows[0]), int(rows[-1]) + 1)
        else:
            chosen = rows
        return PackedImages(
            images=self.images[chosen],
            labels=self.labels[chosen],
            image_ids=self.image_ids[chosen],
            splits=self.splits[chosen],
            genres=self.genres,
        )


def pack_training_data(
    manifest: pd.DataFrame,
    home_root: Path,
    out_dir: Path,
    genres: Sequence[str],
    *,
    resolution: int = 64,
    workers: int | None = None,
) -> PackedImages:
    """Decode every image of ``manifest`` to ``resolution``² RGB and pack it into ``out_dir`` atomically.

    ``manifest`` needs the columns image_id, path (relative to ``home_root``), genre (null when
    unlabelled) and split. A genre outside ``genres`` is packed with label -1, like an unlabelled image.
    Large inputs (or ``workers`` > 1) decode in a forkserver process pool, so a calling script needs the
    usual ``if __name__ == "__main__":`` guard.
    """
    genres = tuple(genres)
    classes = genre_index(genres)
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    missing_columns = [name for name in _REQUIRED_COLUMNS if name not in manifest.columns]
    if missing_columns:
        raise ValueError(f"manifest lacks columns {missing_columns}; it needs {list(_REQUIRED_COLUMNS)}")
    if manifest.empty:
        raise ValueError("manifest is empty: there is nothing to pack; download images before packing them")
    bad_splits = sorted(set(manifest["split"].astype(str)) - set(SPLITS))
    if bad_splits:
        raise ValueError(f"manifest has unknown split values {bad_splits}; expected {list(SPLITS)}")

    ordered = _training_order(manifest, classes)
    home_root = Path(home_root)
    paths = [home_root / relative for relative in ordered["path"].to_pylist()]
    absent = [str(path) for path in paths if not path.is_file()]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} of {len(paths)} manifest images are missing under {home_root}, "
            f"e.g. {absent[:3]}; re-run the download that writes them or rebuild the manifest"
        )

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        _decode_into(staging / IMAGES_FILE, paths, resolution, workers)
        pq.write_table(ordered.drop_columns(["path"]), staging / INDEX_FILE)
        meta = {
            "format": PACK_FORMAT,
            "resolution": resolution,
            "genres": list(genres),
            "count": ordered.num_rows,
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        _replace_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_packed(out_dir)


def load_packed(out_dir: Path) -> PackedImages:
    """The packed dataset in ``out_dir``, images memory-mapped read-only."""
    out_dir = Path(out_dir)
    meta_path = out_dir / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"no packed training data in {out_dir} ({META_FILE} missing); run pack_training_data "
            "(the training-data asset) first"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != PACK_FORMAT:
        raise ValueError(
            f"{out_dir} holds format {meta.get('format')!r}, expected {PACK_FORMAT!r}; repack it"
        )
    images = np.load(out_dir / IMAGES_FILE, mmap_mode="r")
    index = pq.read_table(out_dir / INDEX_FILE)
    if len(images) != meta["count"] or index.num_rows != meta["count"]:
        raise ValueError(f"{out_dir} is inconsistent with its {META_FILE}; repack it")
    return PackedImages(
        images=images,
        labels=index["label"].to_numpy().astype(np.int64),
        image_ids=np.asarray(index["image_id"].to_pylist(), dtype=object),
        splits=np.asarray(index["split"].to_pylist(), dtype=object),
        genres=tuple(meta["genres"]),
    )


def iterate_batches(
    data: PackedImages,
    batch_size: int,
    *,
    device: torch.device | str,
    seed: int,
    drop_last: bool = True,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled epochs of (float32 images in [-1, 1], (B, 3, R, R); int64 labels, (B,)) on ``device``.

    Each batch reads only its rows from the memory map; the uint8 -> float conversion runs on ``device``
    so that only a quarter of the bytes cross to a GPU (from pinned memory, asynchronously).
    """
    count = len(data)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if count == 0:
        raise ValueError("cannot iterate batches over an empty dataset")
    if drop_last and count < batch_size:
        raise ValueError(
            f"dataset has {count} images, fewer than one batch of {batch_size}; lower the batch size "
            "or pass drop_last=False"
        )
    device = torch.device(device)
    pin = device.type == "cuda"
    rng = np.random.default_rng(seed)
    labels_all = torch.from_numpy(np.ascontiguousarray(data.labels, dtype=np.int64))
    while True:
        order = rng.permutation(count)
        stop = count - count % batch_size if drop_last else count
        for start in range(0, stop, batch_size):
            # Sorted rows read the memory map front to back; order inside a batch does not matter.
            rows = np.sort(order[start : start + batch_size])
            pixels = torch.from_numpy(np.ascontiguousarray(data.images[rows]))
            labels = labels_all[torch.from_numpy(rows)]
            if pin:
                pixels, labels = pixels.pin_memory(), labels.pin_memory()
            pixels = pixels.to(device, non_blocking=pin)
            labels = labels.to(device, non_blocking=pin)
            # NHWC permuted to NCHW is already channels-last in memory.
            images = pixels.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            if not channels_last:
                images = images.contiguous()
            yield images, labels


def _training_order(manifest: pd.DataFrame, classes: dict[str, int]) -> pa.Table:
    """The index rows (image_id, split, genre, label, path) sorted by split, labelled rows first in each."""
    genres = [genre if isinstance(genre, str) else None for genre in manifest["genre"]]
    labels = np.array([classes.get(genre, -1) if genre else -1 for genre in genres], dtype=np.int64)
    splits = [str(split) for split in manifest["split"]]
    split_rank = np.array([SPLITS.index(split) for split in splits])
    order = np.lexsort((labels < 0, split_rank))  # lexsort is stable: manifest order breaks ties
    return pa.table(
        {
            "image_id": pa.array([str(value) for value in manifest["image_id"]], pa.string()),
            "split": pa.array(splits, pa.string()),
            "genre": pa.array(genres, pa.string()),
            "label": pa.array(labels, pa.int64()),
            "path": pa.array([str(value) for value in manifest["path"]], pa.string()),
        }
    ).take(order)


def _decode_into(target: Path, paths: list[Path], resolution: int, workers: int | None) -> None:
    images = np.lib.format.open_memmap(
        target, mode="w+", dtype=np.uint8, shape=(len(paths), resolution, resolution, 3)
    )
    chunks = [paths[start : start + _CHUNK_SIZE] for start in range(0, len(paths), _CHUNK_SIZE)]
    workers = _worker_count(workers, len(paths), len(chunks))
    if workers == 1:
        decoded = map(_decode_chunk, chunks, [resolution] * len(chunks))
        for index, chunk in enumerate(decoded):
            images[index * _CHUNK_SIZE : index * _CHUNK_SIZE + len(chunk)] = chunk
    else:
        # forkserver: forking a process that runs torch or Dagster threads can deadlock the children.
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            decoded = pool.map(_decode_chunk, chunks, [resolution] * len(chunks))
            for index, chunk in enumerate(decoded):
                images[index * _CHUNK_SIZE : index * _CHUNK_SIZE + len(chunk)] = chunk
    images.flush()
    del images


def _worker_count(requested: int | None, image_count: int, chunk_count: int) -> int:
    if requested is not None:
        if requested < 1:
            raise ValueError(f"workers must be at least 1, got {requested}")
        return min(requested, chunk_count)
    if image_count < _PARALLEL_THRESHOLD:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), chunk_count))


def _decode_chunk(paths: list[Path], resolution: int) -> np.ndarray:
    return np.stack([decode_image(path, resolution) for path in paths])


def decode_image(path: Path, resolution: int) -> np.ndarray:
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


def _replace_directory(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``; an existing ``target`` is swapped out first and then removed."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, retired / target.name)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)
