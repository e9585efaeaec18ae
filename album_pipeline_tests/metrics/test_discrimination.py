"""The metrics tell good covers from bad: on the emulator's covers, stand-ins for a generator that is collapsed,
that copies its training covers, that draws another genre's covers, or that draws noise each land on the wrong
side of the quality floors, which the real held-out covers pass."""

from __future__ import annotations

import numpy as np
import pytest

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.metrics import names
from album_pipeline.metrics.evaluate import EvaluationConfig, evaluate_generator, heldout_as_sample
from album_pipeline.metrics.feature_cache import FeatureCache
from album_pipeline.metrics.floors import QualityFloors
from album_pipeline.metrics.frechet import classifier_feature_extractor
from album_pipeline.metrics.genre_classifier import ClassifierConfig, train_genre_classifier
from album_pipeline.testing.emulators.synthetic import draw_cover
from album_pipeline.testing.shards import write_shard_set_from_arrays

pytestmark = pytest.mark.integration

GENRES = DEFAULT_GENRES
TRAIN, TEST, POOL = 80, 30, 40  # covers per genre
CONFIG = EvaluationConfig(samples_per_genre=40, ms_ssim_pairs=10)
FLOORS = QualityFloors()


def emulator_covers(per_genre: int, first_seed: int) -> tuple[np.ndarray, np.ndarray]:
    images = [
        np.asarray(draw_cover(genre, seed, 64).convert("RGB"))
        for genre in GENRES
        for seed in range(first_seed, first_seed + per_genre)
    ]
    return np.stack(images), np.repeat(np.arange(len(GENRES)), per_genre)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Labelled shards of emulator covers (train and test splits), a briefly trained classifier, a pool of
    further covers for the stand-ins to draw from, and one feature cache shared by every evaluation."""
    folder = tmp_path_factory.mktemp("evaluation")
    train_images, train_labels = emulator_covers(TRAIN, 0)
    test_images, test_labels = emulator_covers(TEST, 100_000)
    data = write_shard_set_from_arrays(
        folder / "labeled",
        np.concatenate([train_images, test_images]),
        np.concatenate([train_labels, test_labels]),
        GENRES,
        splits=["train"] * len(train_labels) + ["test"] * len(test_labels),
    )
    classifier = train_genre_classifier(
        train_images, train_labels, GENRES, ClassifierConfig(epochs=6, batch_size=32)
    ).model
    pool = emulator_covers(POOL, 200_000)
    return {
        "reference": data.subset("train"),
        "heldout": data.subset("test"),
        "classifier": classifier,
        "extractor": classifier_feature_extractor(classifier),
        "pool": pool,
        "train": (train_images, train_labels),
        "cache": FeatureCache(folder / "feature_cache"),
        "folder": folder,
    }


def drawing_from(images: np.ndarray, labels: np.ndarray, shift: int = 0, only_first: bool = False):
    """A cover source returning the given covers of genre (g + shift) for each asked genre g, in turn."""

    def draw(genre_indices: np.ndarray, seed: int) -> np.ndarray:
        taken = {}
        rows = []
        for index in genre_indices.tolist():
            candidates = np.flatnonzero(labels == (index + shift) % len(GENRES))
            count = 0 if only_first else taken.get(index, 0)
            rows.append(candidates[count % len(candidates)])
            taken[index] = count + 1
        return images[rows]

    return draw


def evaluate(world, source, name):
    return evaluate_generator(
        source,
        world["classifier"],
        GENRES,
        world["reference"],
        world["heldout"],
        world["extractor"],
        world["folder"] / name,
        CONFIG,
        feature_cache=world["cache"],
    )


def failed_floors(metrics) -> set[str]:
    return {verdict.floor for verdict in FLOORS.failures(metrics)}


def test_real_heldout_covers_and_fresh_emulator_covers_pass_every_floor(world):
    report = evaluate(world, drawing_from(*world["pool"]), "fresh")
    assert report.metrics[names.heldout(names.GENRE_ACCURACY)] >= 0.9
    assert failed_floors(heldout_as_sample(report.metrics)) == set()
    assert failed_floors(report.metrics) == set()
    assert 0.7 < report.metrics[names.DIVERSITY] < 1.4


def test_a_collapsed_generator_fails_the_diversity_floor(world):
    report = evaluate(world, drawing_from(*world["pool"], only_first=True), "collapsed")
    assert "diversity" in failed_floors(report.metrics)
    assert report.metrics[names.DIVERSITY] == pytest.approx(0.0, abs=1e-9)
    assert report.metrics[names.MS_SSIM] == pytest.approx(1.0, abs=1e-5)


def test_a_copier_of_training_covers_fails_the_near_copy_floor(world):
    report = evaluate(world, drawing_from(*world["train"]), "copier")
    assert failed_floors(report.metrics) == {"near_copies"}
    assert report.metrics[names.NEAR_COPY_SHARE] == 1.0 and report.near_copies_found
    assert report.metrics[names.NN_DISTANCE_MEDIAN] == 0.0


def test_a_generator_drawing_another_genres_covers_fails_the_genre_accuracy_floor(world):
    report = evaluate(world, drawing_from(*world["pool"], shift=1), "shifted")
    assert "genre_accuracy" in failed_floors(report.metrics)
    assert report.metrics[names.GENRE_ACCURACY] < 0.2


def test_noise_fails_the_genre_accuracy_floor(world):
    def noise(genre_indices, seed):
        return np.random.default_rng(seed).integers(0, 256, (len(genre_indices), 64, 64, 3)).astype(np.uint8)

    report = evaluate(world, noise, "noise")
    assert "genre_accuracy" in failed_floors(report.metrics)
    assert report.metrics[names.COVERAGE] < report.metrics[names.heldout(names.COVERAGE)] / 2
