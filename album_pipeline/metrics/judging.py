"""Every metric of one sample of covers against the reference (the real train split), overall and per genre.

One function judges generated covers and, in their place, the real held-out covers, so the two values of every
metric come from the same code and stand side by side (``names.heldout``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from album_pipeline.metrics import names
from album_pipeline.metrics.discriminator_accuracy import discriminator_genre_accuracy
from album_pipeline.metrics.diversity import mean_pair_ms_ssim, mean_pairwise_distance
from album_pipeline.metrics.frechet import distances_from_features, seeded_kernel_distance
from album_pipeline.metrics.genre_classifier import GenreClassifier, genre_accuracies
from album_pipeline.metrics.memorisation import NearestNeighbours, near_copies, nearest_neighbours
from album_pipeline.metrics.prdc import matched_size_prdc
from album_pipeline.model.networks import Discriminator


@dataclass(frozen=True)
class Reference:
    """The train split's features and labels, and each genre's spread (mean pairwise feature distance)."""

    features: np.ndarray
    labels: np.ndarray
    genres: tuple[str, ...]
    feature_name: str
    spread: dict[int, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        genres: tuple[str, ...],
        feature_name: str,
        max_covers: int,
        rng: np.random.Generator,
    ) -> Reference:
        spread = {}
        for index in range(len(genres)):
            rows = at_most(np.flatnonzero(labels == index), max_covers, rng)
            if len(rows) < 2:
                raise ValueError(
                    f"the train split has {len(rows)} cover(s) of {genres[index]}; diversity needs at least 2 "
                    "real covers of every genre"
                )
            spread[index] = mean_pairwise_distance(features[rows])
        return cls(features, labels, genres, feature_name, spread)


@dataclass(frozen=True)
class Sample:
    """Covers judged together: pixels, the genre each was meant to be (or is), and their features."""

    images: np.ndarray
    labels: np.ndarray
    features: np.ndarray


@dataclass(frozen=True)
class SampleSettings:
    nearest_k: int
    ms_ssim_pairs: int
    diversity_covers: int


@dataclass
class Judgement:
    metrics: dict[str, float]
    neighbours: NearestNeighbours
    warnings: list[str]


def at_most(rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` itself, or ``count`` of them drawn without replacement (sorted)."""
    return rows if len(rows) <= count else np.sort(rng.choice(rows, count, replace=False))


def _put(metrics: dict[str, float], name: str, overall: float, per_genre: Mapping[str, float]) -> None:
    metrics[name] = overall
    metrics.update({names.per_genre(name, genre): value for genre, value in per_genre.items()})


def accuracy_metrics(
    sample: Sample, genres: tuple[str, ...], classifier: GenreClassifier, discriminator: Discriminator | None
) -> dict[str, float]:
    """Genre accuracy by the independent classifier and, given one, by the discriminator's genre head."""
    metrics: dict[str, float] = {}
    _put(metrics, names.GENRE_ACCURACY, *genre_accuracies(classifier, sample.images, sample.labels, genres))
    if discriminator is not None:
        accuracy = discriminator_genre_accuracy(discriminator, sample.images, sample.labels, genres)
        _put(metrics, names.D_GENRE_ACCURACY, *accuracy)
    return metrics


def sample_metrics(
    sample: Sample,
    reference: Reference,
    settings: SampleSettings,
    *,
    near_copy_threshold: float,
    prdc_sizes: Mapping[str, int],
    seed: int,
) -> Judgement:
    """The flat metrics of ``sample`` that its features and pixels give (plain names; the caller prefixes the
    held-out's), its nearest training covers, and warnings. ``prdc_sizes`` gives the fake-side size that PRDC
    is matched to: ``"all"`` and each genre name."""
    genres, rng = reference.genres, np.random.default_rng(seed)
    warnings: list[str] = []
    metrics = _distances(sample, reference, seed, warnings)
    metrics.update(_prdc(sample, reference, settings.nearest_k, prdc_sizes, rng, warnings))

    diversity, similarity = {}, {}
    for index, genre in enumerate(genres):
        rows = np.flatnonzero(sample.labels == index)
        if len(rows) < 2:
            warnings.append(f"fewer than 2 judged covers of {genre}: its diversity and MS-SSIM are omitted")
            continue
        spread = mean_pairwise_distance(sample.features[at_most(rows, settings.diversity_covers, rng)])
        diversity[genre] = spread / reference.spread[index] if reference.spread[index] > 0 else 0.0
        similarity[genre] = mean_pair_ms_ssim(sample.images[rows], settings.ms_ssim_pairs, rng)
    if diversity:
        _put(metrics, names.DIVERSITY, float(np.mean(list(diversity.values()))), diversity)
        _put(metrics, names.MS_SSIM, float(np.mean(list(similarity.values()))), similarity)

    neighbours = nearest_neighbours(sample.features, reference.features)
    copies = near_copies(neighbours.distances, near_copy_threshold)
    by_genre = _per_genre(sample.labels, genres)
    _put(
        metrics,
        names.NEAR_COPY_SHARE,
        float(copies.mean()),
        by_genre(lambda rows: float(copies[rows].mean())),
    )
    _put(
        metrics,
        names.NN_DISTANCE_MEDIAN,
        float(np.median(neighbours.distances)),
        by_genre(lambda rows: float(np.median(neighbours.distances[rows]))),
    )
    return Judgement(metrics, neighbours, warnings)


def _per_genre(labels: np.ndarray, genres: tuple[str, ...]) -> Callable[[Callable], dict[str, float]]:
    def compute(value: Callable[[np.ndarray], float]) -> dict[str, float]:
        return {
            genre: value(rows)
            for index, genre in enumerate(genres)
            if len(rows := np.flatnonzero(labels == index))
        }

    return compute


def _distances(sample: Sample, reference: Reference, seed: int, warnings: list[str]) -> dict[str, float]:
    """Frechet and kernel distances overall, and the kernel distance per genre, by clean-fid's functions.

    Per genre only the kernel distance: it is unbiased at any sample size, while a Frechet distance of a few
    hundred covers in 128-2048 dimensions rests on rank-deficient covariances.
    """
    report = distances_from_features(reference.features, sample.features, reference.feature_name, seed=seed)
    metrics = dict(report.metrics)
    warnings.extend(report.warnings)
    for index, genre in enumerate(reference.genres):
        fake, real = sample.features[sample.labels == index], reference.features[reference.labels == index]
        if min(len(fake), len(real)) >= 2:
            metrics[names.per_genre(report.kernel_name, genre)] = seeded_kernel_distance(
                real, fake, seed=seed
            )
    return metrics


def _prdc(
    sample: Sample,
    reference: Reference,
    nearest_k: int,
    sizes: Mapping[str, int],
    rng: np.random.Generator,
    warnings: list[str],
) -> dict[str, float]:
    """Precision, recall, density and coverage overall and per genre, the fake side matched to ``sizes``."""
    metrics: dict[str, float] = {}
    groups = [("all", slice(None), slice(None))] + [
        (genre, sample.labels == index, reference.labels == index)
        for index, genre in enumerate(reference.genres)
    ]
    skipped = []
    for group, ours, theirs in groups:
        fake, real = sample.features[ours], reference.features[theirs]
        size = min(sizes.get(group, len(fake)), len(fake))
        if min(len(real), size) < nearest_k + 2:
            skipped.append(group)
            continue
        values = matched_size_prdc(real, fake, size, nearest_k, rng)
        for name, value in values.items():
            metrics[name if group == "all" else names.per_genre(name, group)] = value
    if skipped:
        warnings.append(
            f"precision/recall/density/coverage omitted for {skipped}: they need at least nearest_k + 2 = "
            f"{nearest_k + 2} covers on each side"
        )
    return metrics
