"""Cover grids written to disk: one row per genre, or near-copies above their nearest training covers.

Every grid is written atomically, only to a new or a regular file, in the format its suffix names.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from album_pipeline.atomic import atomic_path
from album_pipeline.model.networks import Generator, generate_covers

# A grid has one row per genre, so 256 columns is already a 16,900-pixel-wide image that few viewers open, and
# the covers of every row are held in memory at once as floats (5,000 of one genre took 1.6 GB).
MAX_GRID_COLUMNS = 256

# Formats chosen by the output's suffix; Pillow writes each faithfully (JPEG and WebP lossy, at its defaults).
GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


class OutputRefused(ValueError):
    """The output path names something other than a new or a regular file, or a format we cannot write."""


def grid_format(path: Path) -> str:
    """The image format for ``path``'s suffix, or OutputRefused saying which suffixes are written."""
    from PIL import features

    image_format = GRID_FORMATS.get(Path(path).suffix.lower())
    if image_format is None or (image_format == "WEBP" and not features.check("webp")):
        usable = [suffix for suffix, name in GRID_FORMATS.items() if name != "WEBP" or features.check("webp")]
        raise OutputRefused(f"cannot write {path}: name the image file with one of {', '.join(usable)}")
    return image_format


def check_output_file(path: Path) -> None:
    """Refuse a path that is a symlink, folder, device, FIFO or socket: only a new file or a regular one is
    written (replaced whole), so that writing a grid never follows a link or clobbers something else."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file"
        raise OutputRefused(f"{path} is {kind}; give a new file name or a regular file to replace")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputRefused(f"{parent} is not a folder; give a file name inside a folder")


def write_cover_grid(covers: np.ndarray | torch.Tensor, path: Path, columns: int) -> Path:
    """uint8 (N, H, W, 3) covers as a grid of ``columns`` per row (2-pixel padding), written atomically."""
    image_format = grid_format(path)
    check_output_file(path)
    covers = torch.as_tensor(np.asarray(covers))
    grid = make_grid(covers.permute(0, 3, 1, 2).float() / 255.0, nrow=columns, padding=2)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_image(grid, str(tmp), format=image_format)
        check_output_file(path)  # again, just before the rename: something may have appeared meanwhile
    return path


def write_pairs_grid(judged: np.ndarray, nearest: np.ndarray, path: Path) -> Path:
    """Judged covers in the top row, each above its nearest training cover in the bottom row."""
    if judged.shape != nearest.shape or not len(judged):
        raise ValueError(f"need two non-empty batches of one shape, got {judged.shape} and {nearest.shape}")
    return write_cover_grid(np.concatenate([judged, nearest]), path, columns=len(judged))


def check_genres(num_genres: int, genres: Sequence[str], what: str = "a generator") -> tuple[str, ...]:
    genres = tuple(genres)
    if len(genres) != num_genres:
        raise ValueError(
            f"{len(genres)} genre names given for {what} conditioned on {num_genres} genres; pass the genre "
            "list it was trained with"
        )
    if len(set(genres)) != len(genres):
        raise ValueError(f"genre list has duplicates: {list(genres)}")
    return genres


def save_genre_grid(
    generator: Generator,
    genres: Sequence[str],
    path: Path,
    *,
    columns: int = 8,
    seed: int = 0,
    only: Sequence[str] | None = None,
) -> Path:
    """An image with one row of ``columns`` generated covers per genre, written atomically.

    Rows follow ``genres`` (the generator's class order), or ``only`` (a subset of genre names) when given.
    The format follows the suffix (``GRID_FORMATS``); ``path`` must be new or a regular file (see
    ``check_output_file``).
    """
    genres = check_genres(generator.arch.num_genres, genres)
    if not 1 <= columns <= MAX_GRID_COLUMNS:
        raise ValueError(f"columns must be between 1 and {MAX_GRID_COLUMNS}, got {columns}")
    grid_format(path)
    check_output_file(path)
    rows = list(genres if only is None else only)
    unknown = [genre for genre in rows if genre not in genres]
    if unknown or not rows:
        raise ValueError(f"grid rows must be among the generator's genres {list(genres)}, got {rows}")
    indices = np.repeat([genres.index(genre) for genre in rows], columns)
    return write_cover_grid(generate_covers(generator, indices.tolist(), seed=seed), path, columns)
