"""Evaluate a generator: every metric of ``metrics.names`` for its covers and, beside each, the same metric for
the real held-out (test) covers, both judged against the reference (the real train split).

Every genre is drawn equally often. Real covers' features come from the content-keyed ``feature_cache``;
generated covers stay in memory. Written: ``metrics.json`` (the flat metrics, warnings, notes, config),
``grid.png`` (one row per genre), ``near_copies.png`` (the closest generated covers above their nearest
training covers) and ``per_genre.json`` (the per-genre table, pandas "split" orient).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from album_pipeline.atomic import atomic_path
from album_pipeline.layout import GRID_FILE, METRICS_FILE, NEAR_COPIES_GRID_FILE, PER_GENRE_TABLE_FILE
from album_pipeline.metrics import names
from album_pipeline.metrics.discriminator_accuracy import SEED_REPORTED
from album_pipeline.metrics.diversity import ms_ssim_weights
from album_pipeline.metrics.feature_cache import FeatureCache
from album_pipeline.metrics.floors import FloorVerdict, QualityFloors
from album_pipeline.metrics.frechet import (
    FeatureExtractor,
    extract_features,
    frechet_metric_name,
    kernel_metric_name,
)
from album_pipeline.metrics.genre_classifier import GenreClassifier
from album_pipeline.metrics.grids import (
    MAX_GRID_COLUMNS,
    OutputRefused,
    check_genres,
    check_output_file,
    grid_format,
    save_genre_grid,
    write_cover_grid,
    write_pairs_grid,
)
from album_pipeline.metrics.judging import Reference, Sample, SampleSettings, accuracy_metrics, sample_metrics
from album_pipeline.metrics.memorisation import closest_covers, near_copy_threshold, nearest_neighbours
from album_pipeline.metrics.samples import CoverSource, GeneratorCovers, LabelledCovers
from album_pipeline.model.architectures import is_generator
from album_pipeline.model.networks import Discriminator, Generator
from album_pipeline.model.pixels import check_image_batch

# The command line imports the grid helpers from here, where they lived before grids.py.
__all__ = [
    "MAX_GRID_COLUMNS",
    "EvaluationConfig",
    "EvaluationReport",
    "OutputRefused",
    "check_output_file",
    "evaluate_generator",
    "grid_format",
    "heldout_as_sample",
    "load_metrics",
    "save_genre_grid",
]

NEAR_COPY_GRID_SIZE = 8
# Columns of the per-genre table (design: accuracy, distance, coverage, diversity, near-copies).
TABLE_METRICS = (  # with the kernel distance after accuracy
    names.GENRE_ACCURACY,
    names.COVERAGE,
    names.DIVERSITY,
    names.MS_SSIM,
    names.NEAR_COPY_SHARE,
)


@dataclass(frozen=True)
class EvaluationConfig:
    # Thousands per genre: Frechet statistics of 128-2048-d features need many more samples than dimensions
    # (the demo runs 200 for speed and says so in its profile).
    samples_per_genre: int = field(
        default=2_000, metadata={"doc": "Generated covers per genre for accuracy and distances."}
    )
    seed: int = field(default=0, metadata={"doc": "Seed of the generated covers and of every random subset."})
    grid_columns: int = field(default=8, metadata={"doc": "Covers per genre row in the sample grid."})
    batch_size: int = field(
        default=64, metadata={"doc": "Images per feature-extraction batch (memory, not the result)."}
    )
    nearest_k: int = field(
        default=5,
        metadata={"doc": "k of the k-nearest-neighbour balls of precision/recall/density/coverage."},
    )
    near_copy_quantile: float = field(
        default=0.01,
        metadata={
            "doc": "A near-copy is closer to a training cover than this quantile of the real test covers' "
            "own nearest-neighbour distances."
        },
    )
    # torchmetrics' MS-SSIM takes about 10-20 ms a pair of 64x64 covers on one CPU core; 50 pairs give the
    # mean of a genre within about 0.015 (pair scores spread about 0.1).
    ms_ssim_pairs: int = field(
        default=50, metadata={"doc": "Random pairs of covers per genre whose MS-SSIM is averaged."}
    )
    # Pairwise distances grow with the square of the count; 1,000 covers give the mean to well under 1%.
    diversity_covers: int = field(
        default=1_000, metadata={"doc": "Covers per genre (at most) in the mean pairwise feature distance."}
    )

    # The floors belong to the evaluation: its asset check judges them, the verdicts are written beside the
    # metrics, and the champion gate reads them from there, so one setting governs both.
    floors: QualityFloors = field(
        default_factory=QualityFloors, metadata={"doc": "The quality floors a generator must clear."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.floors, QualityFloors):
            raise TypeError(f"floors must be a QualityFloors, got {type(self.floors).__name__}")
        if self.samples_per_genre < 2 or self.batch_size < 1:
            raise ValueError(
                "samples_per_genre must be >= 2 and batch_size >= 1; got "
                f"{self.samples_per_genre}, {self.batch_size}"
            )
        if not 1 <= self.grid_columns <= MAX_GRID_COLUMNS:
            raise ValueError(
                f"grid_columns must be between 1 and {MAX_GRID_COLUMNS}, got {self.grid_columns}"
            )
        if self.nearest_k < 1 or self.ms_ssim_pairs < 1 or self.diversity_covers < 2:
            raise ValueError(
                "nearest_k and ms_ssim_pairs must be >= 1 and diversity_covers >= 2; got "
                f"{self.nearest_k}, {self.ms_ssim_pairs}, {self.diversity_covers}"
            )
        if not 0 < self.near_copy_quantile < 1:
            raise ValueError(f"near_copy_quantile must be between 0 and 1, got {self.near_copy_quantile}")


@dataclass
class EvaluationReport:
    metrics: dict[str, float]  # flat, ready for mlflow.log_metrics (names from metrics.names)
    genres: tuple[str, ...]
    feature_name: str
    per_genre: pd.DataFrame  # one row per genre and "all"
    metrics_path: Path
    grid_path: Path
    near_copies_path: Path
    per_genre_path: Path
    near_copies_found: bool  # False: the near-copy grid shows the closest covers, none of them a near-copy
    config: EvaluationConfig
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache_hits: dict[str, bool] = field(default_factory=dict)  # split -> features read from the cache

    @property
    def verdicts(self) -> list[FloorVerdict]:
        """The configured floors' verdicts on the generated covers."""
        return self.config.floors.judge(self.metrics)

    def to_dict(self) -> dict:
        return {
            "metrics": self.metrics,
            "floor_verdicts": {verdict.floor: asdict(verdict) for verdict in self.verdicts},
            "genres": list(self.genres),
            "feature_name": self.feature_name,
            "warnings": self.warnings,
            "notes": self.notes,
            "config": asdict(self.config),
        }


def heldout_as_sample(metrics: Mapping[str, float]) -> dict[str, float]:
    """The real held-out covers' metrics under the plain names, as if they were the generated sample (with
    ``heldout/genre_accuracy`` kept as the classifier's own reference): what a healthy generator scores."""
    view = {
        name.removeprefix(names.HELDOUT_PREFIX): value
        for name, value in metrics.items()
        if name.startswith(names.HELDOUT_PREFIX)
    }
    return {**view, names.heldout(names.GENRE_ACCURACY): metrics[names.heldout(names.GENRE_ACCURACY)]}


def _write_json(path: Path, payload: dict) -> Path:
    with atomic_path(Path(path)) as tmp:
        # allow_nan=False: a NaN would make the file unreadable by strict JSON parsers.
        tmp.write_text(
            json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8"
        )
    return Path(path)


def _real_features(
    covers: LabelledCovers, extractor: FeatureExtractor, cache: FeatureCache | None, batch_size: int
) -> tuple[np.ndarray, bool]:
    def compute() -> np.ndarray:
        return extract_features(covers.read(np.arange(len(covers))), extractor, batch_size=batch_size)

    if cache is None or extractor.identity is None:
        return compute(), False
    return cache.features(covers.image_ids(), covers.resolution, extractor.name, extractor.identity, compute)


def _draw(
    covers: CoverSource, genres: tuple[str, ...], config: EvaluationConfig
) -> tuple[np.ndarray, np.ndarray]:
    intended = np.repeat(np.arange(len(genres), dtype=np.int64), config.samples_per_genre)
    drawn = covers(intended, config.seed)
    check_image_batch(drawn, "the covers drawn")
    if len(drawn) != len(intended):
        raise ValueError(f"the cover source returned {len(drawn)} covers for {len(intended)} genre indices")
    return np.ascontiguousarray(drawn), intended


def _check_inputs(
    covers: CoverSource | Generator,
    classifier: GenreClassifier,
    genres: Sequence[str],
    heldout: LabelledCovers,
) -> tuple[CoverSource, tuple[str, ...]]:
    if is_generator(covers):
        covers = GeneratorCovers(covers)
    num_genres = getattr(covers, "num_genres", len(tuple(genres)))
    genres = check_genres(num_genres, genres)
    if classifier.num_genres != len(genres):
        raise ValueError(
            f"the classifier knows {classifier.num_genres} genres but the generator {len(genres)}; train the "
            "classifier on the same genre list"
        )
    if len(heldout) == 0:
        raise ValueError("the held-out (test) split is empty; the evaluation needs labelled real test covers")
    return covers, genres


@dataclass(frozen=True)
class _RealSide:
    reference: Reference
    heldout: Sample
    threshold: float  # the near-copy distance
    heldout_metrics: dict[str, float]  # plain names: everything but the accuracies
    warnings: list[str]
    cache_hits: dict[str, bool]


def _settings(config: EvaluationConfig) -> SampleSettings:
    return SampleSettings(config.nearest_k, config.ms_ssim_pairs, config.diversity_covers)


def _prdc_sizes(heldout: LabelledCovers, genres: tuple[str, ...]) -> dict[str, int]:
    # PRDC's fake side is matched to the held-out's size, overall and per genre (see metrics.prdc).
    return {
        "all": len(heldout),
        **{genre: int((heldout.labels == i).sum()) for i, genre in enumerate(genres)},
    }


def _real_side(
    reference: LabelledCovers,
    heldout: LabelledCovers,
    genres: tuple[str, ...],
    extractor: FeatureExtractor,
    config: EvaluationConfig,
    cache: FeatureCache | None,
) -> _RealSide:
    """Everything that depends on real covers only: their features, each reference genre's spread, the
    near-copy threshold and the held-out covers' own metrics (all but the accuracies), cached by content."""
    reference_features, reference_hit = _real_features(reference, extractor, cache, config.batch_size)
    heldout_features, heldout_hit = _real_features(heldout, extractor, cache, config.batch_size)
    sample = Sample(heldout.read(np.arange(len(heldout))), heldout.labels, heldout_features)

    def compute() -> dict:
        ref = Reference.build(
            reference_features,
            reference.labels,
            genres,
            extractor.name,
            config.diversity_covers,
            np.random.default_rng(config.seed),
        )
        distances = nearest_neighbours(heldout_features, reference_features).distances
        threshold = near_copy_threshold(distances, config.near_copy_quantile)
        judgement = sample_metrics(
            sample,
            ref,
            _settings(config),
            near_copy_threshold=threshold,
            prdc_sizes=_prdc_sizes(heldout, genres),
            seed=config.seed + 1,
        )
        spread = {str(index): value for index, value in ref.spread.items()}
        return {
            "spread": spread,
            "threshold": threshold,
            "metrics": judgement.metrics,
            "warnings": judgement.warnings,
        }

    if cache is None or extractor.identity is None:
        values, values_hit = compute(), False
    else:
        key_parts = [
            [str(i) for i in sorted(reference.image_ids())],
            reference.labels.tolist(),
            [str(i) for i in sorted(heldout.image_ids())],
            list(genres),
            reference.resolution,
            extractor.name,
            extractor.identity,
            asdict(config) | {"samples_per_genre": None, "grid_columns": None},
        ]
        values, values_hit = cache.values(key_parts, compute)
    spread = {int(index): value for index, value in values["spread"].items()}
    return _RealSide(
        Reference(reference_features, reference.labels, genres, extractor.name, spread),
        sample,
        values["threshold"],
        values["metrics"],
        values["warnings"],
        {"reference": reference_hit, "heldout": heldout_hit, "heldout_metrics": values_hit},
    )


def evaluate_generator(
    covers: CoverSource | Generator,
    classifier: GenreClassifier,
    genres: Sequence[str],
    reference: LabelledCovers,
    heldout: LabelledCovers,
    extractor: FeatureExtractor,
    out_dir: Path,
    config: EvaluationConfig = EvaluationConfig(),
    *,
    discriminator: Discriminator | None = None,
    feature_cache: FeatureCache | None = None,
) -> EvaluationReport:
    """Judge ``samples_per_genre`` covers of every genre drawn from ``covers`` (a Generator or any
    ``CoverSource``) and the real ``heldout`` covers against ``reference``; write the evaluation's files."""
    covers, genres = _check_inputs(covers, classifier, genres, heldout)
    images, intended = _draw(covers, genres, config)
    real = _real_side(reference, heldout, genres, extractor, config, feature_cache)
    generated_sample = Sample(
        images, intended, extract_features(images, extractor, batch_size=config.batch_size)
    )
    generated = sample_metrics(
        generated_sample,
        real.reference,
        _settings(config),
        near_copy_threshold=real.threshold,
        prdc_sizes=_prdc_sizes(heldout, genres),
        seed=config.seed,
    )
    heldout_metrics = {
        **real.heldout_metrics,
        **accuracy_metrics(real.heldout, genres, classifier, discriminator),
    }
    metrics = {
        **generated.metrics,
        **accuracy_metrics(generated_sample, genres, classifier, discriminator),
        **{names.heldout(name): value for name, value in heldout_metrics.items()},
        names.GENERATED_COUNT: float(len(images)),
        names.HELDOUT_COUNT: float(len(heldout)),
        names.REFERENCE_COUNT: float(len(reference)),
    }
    metrics, report_warnings = _finite(metrics)
    report_warnings = (
        _unique(generated.warnings + [f"held-out: {w}" for w in real.warnings]) + report_warnings
    )
    if feature_cache is not None and extractor.identity is None:
        report_warnings.append(
            f"feature extractor {extractor.name!r} has no identity: real features not cached"
        )
    missing = [genre for index, genre in enumerate(genres) if not (heldout.labels == index).any()]
    if missing:
        report_warnings.append(
            f"the real test split has no covers of {missing}; their held-out values are omitted"
        )
    report_warnings.append(
        f"held-out {frechet_metric_name(extractor.name)} rests on {len(heldout)} test covers against "
        f"{len(images)} generated: Frechet distance is biased upward at smaller n, so compare the two with "
        "care (the kernel distance is unbiased)"
    )
    out_dir = Path(out_dir)
    first_columns = np.concatenate(
        [np.flatnonzero(intended == index)[: config.grid_columns] for index in range(len(genres))]
    )
    rows, found = closest_covers(generated.neighbours.distances, real.threshold, NEAR_COPY_GRID_SIZE)
    table = per_genre_table(metrics, genres, kernel_metric_name(extractor.name))
    report = EvaluationReport(
        metrics=metrics,
        genres=genres,
        feature_name=extractor.name,
        per_genre=table,
        metrics_path=out_dir / METRICS_FILE,
        grid_path=write_cover_grid(images[first_columns], out_dir / GRID_FILE, config.grid_columns),
        near_copies_path=write_pairs_grid(
            images[rows], reference.read(generated.neighbours.indices[rows]), out_dir / NEAR_COPIES_GRID_FILE
        ),
        per_genre_path=_write_table(table, out_dir / PER_GENRE_TABLE_FILE),
        near_copies_found=found,
        config=config,
        warnings=report_warnings,
        notes=_notes(real.threshold, reference.resolution, discriminator is not None),
        cache_hits=real.cache_hits,
    )
    _write_json(report.metrics_path, report.to_dict())
    return report


def _write_table(table: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        table.to_json(tmp, orient="split")
    return path


def _unique(messages: list[str]) -> list[str]:
    return list(dict.fromkeys(messages))


def _finite(metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    dropped = [name for name, value in metrics.items() if not math.isfinite(value)]
    kept = {name: float(value) for name, value in metrics.items() if name not in dropped}
    return kept, [f"left out non-finite metrics {dropped}"] if dropped else []


def _notes(threshold: float, resolution: int, with_discriminator: bool) -> list[str]:
    weights = ms_ssim_weights(resolution)
    notes = [
        "heldout/* values are the real test covers judged in place of generated ones against the same "
        "reference (the train split): what a healthy generator scores",
        f"near-copy threshold: nearest-neighbour feature distance <= {threshold:.6g}",
        f"ms_ssim: torchmetrics, {len(weights)} scales with weights {[round(w, 4) for w in weights]}, 11-pixel "
        "Gaussian window (sigma 1.5), channels averaged",
    ]
    notes.append(
        f"d_genre_accuracy: the finetuned discriminator's genre head; {SEED_REPORTED}"
        if with_discriminator
        else "d_genre_accuracy omitted: no discriminator with a genre head was given (the seed's AC-GAN has "
        "one; the projection discriminator projects genres instead of classifying them)"
    )
    return notes


def per_genre_table(metrics: Mapping[str, float], genres: Sequence[str], distance: str) -> pd.DataFrame:
    """One row per genre and an ``all`` row; each metric beside its held-out value (NaN where absent)."""
    columns = []
    for name in (TABLE_METRICS[0], distance, *TABLE_METRICS[1:]):
        columns += [name, names.heldout(name)]
    rows = {}
    for row in (*genres, "all"):
        rows[row] = {
            column: metrics.get(column if row == "all" else _per_genre_name(column, row), float("nan"))
            for column in columns
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def _per_genre_name(column: str, genre: str) -> str:
    if column.startswith(names.HELDOUT_PREFIX):
        return names.heldout(names.per_genre(column.removeprefix(names.HELDOUT_PREFIX), genre))
    return names.per_genre(column, genre)


def load_metrics(path: Path) -> dict:
    """The payload of a metrics.json written by ``evaluate_generator``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the evaluation first")
    return json.loads(path.read_text(encoding="utf-8"))


def evaluated_floors(payload: Mapping) -> QualityFloors:
    """The floors an evaluation was judged by (from its metrics.json payload); the defaults for a payload
    written before the floors were recorded."""
    recorded = (payload.get("config") or {}).get("floors")
    return QualityFloors(**recorded) if isinstance(recorded, Mapping) else QualityFloors()
