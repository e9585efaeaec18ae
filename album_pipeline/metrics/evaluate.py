"""Evaluate a trained generator: genre accuracy by the independent classifier, distances, and a sample grid.

Every genre is generated equally often (the seed never generated its last genre), the classifier's accuracy
on real test covers is reported beside its accuracy on generated ones, and the distances follow the naming
rule in ``frechet`` (``fid``/``kid`` only on Inception features).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torchvision.utils import make_grid, save_image

from album_pipeline.atomic import atomic_path
from album_pipeline.layout import GRID_FILE, METRICS_FILE
from album_pipeline.metrics.frechet import DistanceReport, FeatureExtractor, compute_distances
from album_pipeline.metrics.genre_classifier import GenreClassifier, genre_accuracies
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


@dataclass(frozen=True)
class EvaluationConfig:
    # Thousands per genre: Frechet statistics of 128-2048-d features need many more samples than dimensions
    # (the demo runs 200 for speed and says so in its profile).
    samples_per_genre: int = field(
        default=2_000, metadata={"doc": "Generated covers per genre for accuracy and distances."}
    )
    seed: int = 0
    grid_columns: int = field(default=8, metadata={"doc": "Covers per genre row in the sample grid."})
    batch_size: int = field(
        default=64, metadata={"doc": "Images per feature-extraction batch (memory, not the result)."}
    )

    def __post_init__(self) -> None:
        if self.samples_per_genre < 2 or self.batch_size < 1:
            raise ValueError(
                "samples_per_genre must be >= 2 and batch_size >= 1; got "
                f"{self.samples_per_genre}, {self.batch_size}"
            )
        if not 1 <= self.grid_columns <= MAX_GRID_COLUMNS:
            raise ValueError(
                f"grid_columns must be between 1 and {MAX_GRID_COLUMNS}, got {self.grid_columns}"
            )


@dataclass
class EvaluationReport:
    metrics: dict[str, float]  # flat, ready for mlflow.log_metrics
    genres: tuple[str, ...]
    genre_accuracy: float
    genre_accuracy_per_genre: dict[str, float]
    real_test_accuracy: float
    real_test_accuracy_per_genre: dict[str, float]
    distances: DistanceReport
    generated_count: int
    real_test_count: int
    metrics_path: Path
    grid_path: Path
    config: EvaluationConfig
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "metrics": self.metrics,
            "genres": list(self.genres),
            "genre_accuracy": self.genre_accuracy,
            "genre_accuracy_per_genre": self.genre_accuracy_per_genre,
            "real_test_accuracy": self.real_test_accuracy,
            "real_test_accuracy_per_genre": self.real_test_accuracy_per_genre,
            "chance_accuracy": 1 / len(self.genres),
            "distances": self.distances.to_dict(),
            "generated_count": self.generated_count,
            "real_test_count": self.real_test_count,
            "config": asdict(self.config),
            "warnings": self.warnings,
        }


def _atomic_write(path: Path, write) -> Path:
    with atomic_path(Path(path)) as tmp:
        write(str(tmp))
    return Path(path)


def _check_genres(generator: Generator, genres: Sequence[str]) -> tuple[str, ...]:
    genres = tuple(genres)
    if len(genres) != generator.arch.num_genres:
        raise ValueError(
            f"{len(genres)} genre names given for a generator conditioned on "
            f"{generator.arch.num_genres} genres; pass the genre list the generator was trained with"
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
    genres = _check_genres(generator, genres)
    if not 1 <= columns <= MAX_GRID_COLUMNS:
        raise ValueError(f"columns must be between 1 and {MAX_GRID_COLUMNS}, got {columns}")
    image_format = grid_format(path)
    check_output_file(path)
    rows = list(genres if only is None else only)
    unknown = [genre for genre in rows if genre not in genres]
    if unknown or not rows:
        raise ValueError(f"grid rows must be among the generator's genres {list(genres)}, got {rows}")
    indices = np.repeat([genres.index(genre) for genre in rows], columns)
    covers = generate_covers(generator, indices.tolist(), seed=seed)
    grid = make_grid(covers.permute(0, 3, 1, 2).float() / 255.0, nrow=columns, padding=2)

    def write(tmp_name: str) -> None:
        save_image(grid, tmp_name, format=image_format)
        check_output_file(path)  # again, just before the rename: something may have appeared meanwhile

    return _atomic_write(Path(path), write)


def _write_json(path: Path, payload: dict) -> Path:
    def write(tmp_name: str) -> None:
        with open(tmp_name, "w", encoding="utf-8") as handle:
            # allow_nan=False: a NaN would make the file unreadable by strict JSON parsers.
            json.dump(payload, handle, indent=2, sort_keys=True, allow_nan=False)
            handle.write("\n")

    return _atomic_write(path, write)


def evaluate_generator(
    generator: Generator,
    classifier: GenreClassifier,
    genres: Sequence[str],
    real_test_images: np.ndarray,
    real_test_labels: np.ndarray,
    extractor: FeatureExtractor,
    out_dir: Path,
    config: EvaluationConfig = EvaluationConfig(),
) -> EvaluationReport:
    """Judge ``samples_per_genre`` generated covers of every genre; write metrics.json and grid.png."""
    genres = _check_genres(generator, genres)
    if classifier.num_genres != len(genres):
        raise ValueError(
            f"the classifier knows {classifier.num_genres} genres but the generator {len(genres)}; train the "
            "classifier on the same genre list"
        )
    if len(real_test_images) == 0:
        raise ValueError(
            "real_test_images is empty; the test split needs labelled covers to evaluate against"
        )

    intended = np.repeat(np.arange(len(genres), dtype=np.int64), config.samples_per_genre)
    generated = generate_covers(generator, intended.tolist(), seed=config.seed, batch_size=256).numpy()

    genre_accuracy, generated_per_genre = genre_accuracies(classifier, generated, intended, genres)
    real_test_accuracy, real_per_genre = genre_accuracies(
        classifier, real_test_images, real_test_labels, genres
    )
    report_warnings = []
    missing = [genre for genre in genres if genre not in real_per_genre]
    if missing:
        report_warnings.append(
            f"the real test split has no covers of {missing}; their real accuracy is omitted"
        )
    distances = compute_distances(real_test_images, generated, extractor, batch_size=config.batch_size)
    report_warnings += list(distances.warnings)

    metrics: dict[str, float] = {
        "genre_accuracy": genre_accuracy,
        "real_test_accuracy": real_test_accuracy,
        **{f"genre_accuracy/{genre}": value for genre, value in generated_per_genre.items()},
        **{f"real_test_accuracy/{genre}": value for genre, value in real_per_genre.items()},
        **distances.metrics,
        "generated_count": float(len(generated)),
        "real_test_count": float(len(real_test_images)),
    }
    non_finite = [name for name, value in metrics.items() if not math.isfinite(value)]
    if non_finite:
        raise ValueError(f"evaluation produced non-finite metrics {non_finite}; check the inputs")

    out_dir = Path(out_dir)
    grid_path = save_genre_grid(
        generator, genres, out_dir / GRID_FILE, columns=config.grid_columns, seed=config.seed
    )
    # Keyword arguments, one per field: alike in shape to other record constructions, not shared logic.
    report = EvaluationReport(
        metrics=metrics,
        genres=genres,
        genre_accuracy=genre_accuracy,
        genre_accuracy_per_genre=generated_per_genre,
        real_test_accuracy=real_test_accuracy,
        real_test_accuracy_per_genre=real_per_genre,
        distances=distances,
        generated_count=len(generated),
        real_test_count=len(real_test_images),
        metrics_path=out_dir / METRICS_FILE,
        grid_path=grid_path,
        config=config,
        warnings=report_warnings,
    )
    _write_json(report.metrics_path, report.to_dict())
    return report


def load_metrics(path: Path) -> dict:
    """The payload of a metrics.json written by ``evaluate_generator``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the evaluation first")
    return json.loads(path.read_text(encoding="utf-8"))
