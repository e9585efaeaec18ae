from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from album_pipeline.metrics.evaluate import (
    EvaluationConfig,
    evaluate_generator,
    load_metrics,
    save_genre_grid,
)
from album_pipeline.metrics.frechet import FeatureExtractor
from album_pipeline.metrics.genre_classifier import GenreClassifier, accuracy, predict_genres
from album_pipeline.model.networks import GanArchitecture, Generator, generate_covers

GENRES = ("rock", "jazz", "pop")
COLOUR_LAYOUT = FeatureExtractor(
    "colour_layout", lambda batch: F.adaptive_avg_pool2d(batch / 255, 2).flatten(1)
)


def make_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(GanArchitecture(num_genres=len(GENRES), generator_width=16)).eval()


def make_classifier(seed: int = 0) -> GenreClassifier:
    torch.manual_seed(seed)
    return GenreClassifier(num_genres=len(GENRES), widths=(4, 8)).eval()


def make_real_test(count: int = 30, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 64, 64, 3)).astype(np.uint8)
    return images, np.arange(count, dtype=np.int64) % len(GENRES)


def test_evaluation_reports_independent_accuracy_distances_and_files(tmp_path):
    generator, classifier = make_generator(), make_classifier()
    real_images, real_labels = make_real_test()
    config = EvaluationConfig(samples_per_genre=20, seed=3, grid_columns=4)
    report = evaluate_generator(
        generator, classifier, GENRES, real_images, real_labels, COLOUR_LAYOUT, tmp_path / "eval", config
    )

    # Every genre, the last one included, is generated samples_per_genre times and judged by the classifier.
    intended = np.repeat(np.arange(len(GENRES)), 20)
    generated = generate_covers(generator, intended.tolist(), seed=3).numpy()
    correct = predict_genres(classifier, generated) == intended
    assert report.generated_count == 60
    assert report.genre_accuracy == pytest.approx(correct.mean())
    for index, genre in enumerate(GENRES):
        assert report.metrics[f"genre_accuracy/{genre}"] == pytest.approx(correct[intended == index].mean())
    assert report.real_test_accuracy == pytest.approx(accuracy(classifier, real_images, real_labels))
    assert report.real_test_count == 30

    expected_keys = {
        "genre_accuracy",
        "real_test_accuracy",
        "fd_colour_layout",
        "kd_colour_layout",
        "generated_count",
        "real_test_count",
        *(f"genre_accuracy/{genre}" for genre in GENRES),
        *(f"real_test_accuracy/{genre}" for genre in GENRES),
    }
    assert set(report.metrics) == expected_keys
    assert "fid" not in report.metrics and "kid" not in report.metrics
    assert all(isinstance(value, float) for value in report.metrics.values())
    assert report.metrics["fd_colour_layout"] == report.distances.frechet_distance
    assert (report.distances.real_count, report.distances.fake_count) == (30, 60)

    written = load_metrics(report.metrics_path)
    assert report.metrics_path == tmp_path / "eval" / "metrics.json"
    assert written["metrics"] == pytest.approx(report.metrics)
    assert written["genres"] == list(GENRES)
    assert written["distances"]["feature_name"] == "colour_layout"
    assert written["config"]["samples_per_genre"] == 20
    assert report.grid_path == tmp_path / "eval" / "grid.png" and report.grid_path.is_file()


def test_repeated_evaluation_is_deterministic(tmp_path):
    generator, classifier = make_generator(), make_classifier()
    real_images, real_labels = make_real_test()
    config = EvaluationConfig(samples_per_genre=8)
    args = (generator, classifier, GENRES, real_images, real_labels, COLOUR_LAYOUT)
    first = evaluate_generator(*args, tmp_path / "a", config)
    second = evaluate_generator(*args, tmp_path / "b", config)
    assert first.metrics == second.metrics
    assert (tmp_path / "a" / "grid.png").read_bytes() == (tmp_path / "b" / "grid.png").read_bytes()


def test_grid_has_one_row_per_genre(tmp_path):
    generator = make_generator()
    path = save_genre_grid(generator, GENRES, tmp_path / "out" / "grid.png", columns=5, seed=7)
    grid = np.asarray(Image.open(path).convert("RGB"))
    padding = 2  # make_grid's default
    assert grid.shape == (3 * 64 + 4 * padding, 5 * 64 + 6 * padding, 3)
    expected = generate_covers(generator, np.repeat(np.arange(3), 5).tolist(), seed=7).numpy()
    for genre_index in range(len(GENRES)):
        top = padding + genre_index * (64 + padding)
        for column in range(5):
            left = padding + column * (64 + padding)
            tile = grid[top : top + 64, left : left + 64]
            np.testing.assert_array_equal(tile, expected[genre_index * 5 + column])
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]  # no temporary file left behind


def test_small_samples_are_warned_about(tmp_path):
    real_images, real_labels = make_real_test(count=6)
    report = evaluate_generator(
        make_generator(),
        make_classifier(),
        GENRES,
        real_images,
        real_labels,
        COLOUR_LAYOUT,
        tmp_path,
        EvaluationConfig(samples_per_genre=2),
    )
    assert any("rank-deficient" in warning for warning in report.warnings)
    assert json.loads(report.metrics_path.read_text())["warnings"] == report.warnings


def test_mismatched_genres_are_refused(tmp_path):
    real_images, real_labels = make_real_test()
    with pytest.raises(ValueError, match="2 genre names given for a generator conditioned on 3"):
        save_genre_grid(make_generator(), GENRES[:2], tmp_path / "grid.png")
    four_genre_classifier = GenreClassifier(num_genres=4, widths=(4,))
    with pytest.raises(ValueError, match="classifier knows 4 genres"):
        evaluate_generator(
            make_generator(), four_genre_classifier, GENRES, real_images, real_labels, COLOUR_LAYOUT, tmp_path
        )
    with pytest.raises(ValueError, match="samples_per_genre must be >= 2"):
        EvaluationConfig(samples_per_genre=1)
    assert not (tmp_path / "metrics.json").exists()


def test_save_genre_grid_writes_only_new_or_regular_files_in_the_format_its_suffix_names(tmp_path):
    from album_pipeline.metrics.evaluate import MAX_GRID_COLUMNS, OutputRefused

    generator = make_generator()
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    jpeg = save_genre_grid(generator, GENRES, tmp_path / "grid.jpeg", columns=1)
    assert jpeg.read_bytes().startswith(b"\xff\xd8\xff")
    target = tmp_path / "target.png"
    target.write_bytes(b"keep")
    (tmp_path / "link.png").symlink_to(target)
    for refused in (tmp_path / "link.png", tmp_path / "grid.gif", tmp_path):
        with pytest.raises(OutputRefused):
            save_genre_grid(generator, GENRES, refused, columns=1)
    assert target.read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == [
        "grid.jpeg",
        "link.png",
        "target.png",
    ]
    with pytest.raises(ValueError, match=f"between 1 and {MAX_GRID_COLUMNS}"):
        save_genre_grid(generator, GENRES, tmp_path / "wide.png", columns=MAX_GRID_COLUMNS + 1)
    with pytest.raises(ValueError, match="grid_columns"):
        EvaluationConfig(grid_columns=0)
