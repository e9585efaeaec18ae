from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from album_pipeline.metrics import names
from album_pipeline.metrics.evaluate import (
    EvaluationConfig,
    evaluate_generator,
    evaluated_floors,
    load_metrics,
    save_genre_grid,
)
from album_pipeline.metrics.floors import QualityFloors
from album_pipeline.metrics.frechet import FeatureExtractor
from album_pipeline.metrics.genre_classifier import GenreClassifier, accuracy, predict_genres
from album_pipeline.metrics.samples import InMemoryCovers
from album_pipeline.model.architectures import build_generator
from album_pipeline.model.networks import Discriminator, GanArchitecture, Generator, generate_covers

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


def make_real(count: int = 30, seed: int = 1) -> InMemoryCovers:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 64, 64, 3)).astype(np.uint8)
    return InMemoryCovers(images, np.arange(count, dtype=np.int64) % len(GENRES))


def evaluate(tmp_path, config, generator=None, classifier=None, **kwargs):
    return evaluate_generator(
        generator or make_generator(),
        classifier or make_classifier(),
        GENRES,
        kwargs.pop("reference", make_real(45, seed=2)),
        kwargs.pop("heldout", make_real(30)),
        COLOUR_LAYOUT,
        tmp_path,
        config,
        **kwargs,
    )


def test_evaluation_reports_every_metric_beside_its_heldout_value_and_writes_its_files(tmp_path):
    generator, classifier = make_generator(), make_classifier()
    heldout = make_real(30)
    torch.manual_seed(5)
    discriminator = Discriminator(GanArchitecture(num_genres=len(GENRES), discriminator_width=8)).eval()
    config = EvaluationConfig(samples_per_genre=20, seed=3, grid_columns=4, ms_ssim_pairs=5)
    report = evaluate(
        tmp_path / "eval", config, generator, classifier, heldout=heldout, discriminator=discriminator
    )

    # Every genre, the last one included, is drawn samples_per_genre times and judged by the classifier.
    intended = np.repeat(np.arange(len(GENRES)), 20)
    generated = generate_covers(generator, intended.tolist(), seed=3).numpy()
    correct = predict_genres(classifier, generated) == intended
    metrics = report.metrics
    assert metrics[names.GENERATED_COUNT] == 60 and metrics[names.HELDOUT_COUNT] == 30
    assert metrics[names.REFERENCE_COUNT] == 45
    assert metrics[names.GENRE_ACCURACY] == pytest.approx(correct.mean())
    for index, genre in enumerate(GENRES):
        assert metrics[names.per_genre("genre_accuracy", genre)] == pytest.approx(
            correct[intended == index].mean()
        )
    assert metrics[names.heldout(names.GENRE_ACCURACY)] == pytest.approx(
        accuracy(classifier, heldout.images, heldout.labels)
    )
    assert "real_test_accuracy" not in metrics

    overall = [*names.JUDGED, "fd_colour_layout", "kd_colour_layout"]
    per_genre = [name for name in overall if name != "fd_colour_layout"]
    for name in overall:
        assert name in metrics and names.heldout(name) in metrics, name
    for name in per_genre:
        for genre in GENRES:
            assert names.per_genre(name, genre) in metrics, (name, genre)
            assert names.heldout(names.per_genre(name, genre)) in metrics, (name, genre)
    assert "fid" not in metrics and "kid" not in metrics
    assert all(isinstance(value, float) and np.isfinite(value) for value in metrics.values())
    # The held-out covers set the near-copy threshold: about the quantile of them are near-copies.
    assert metrics[names.heldout(names.NEAR_COPY_SHARE)] <= 0.05

    written = load_metrics(report.metrics_path)
    assert report.metrics_path == tmp_path / "eval" / "metrics.json"
    assert written["metrics"] == pytest.approx(metrics)
    assert written["genres"] == list(GENRES) and written["feature_name"] == "colour_layout"
    assert written["config"]["samples_per_genre"] == 20 and written["config"]["nearest_k"] == 5
    assert any("94.6%" in note for note in written["notes"])
    assert report.grid_path == tmp_path / "eval" / "grid.png"
    with Image.open(report.grid_path) as grid:
        assert grid.size == (4 * 66 + 2, 3 * 66 + 2)
    with Image.open(report.near_copies_path) as pairs:
        assert pairs.size == (8 * 66 + 2, 2 * 66 + 2)
    table = pd.read_json(report.per_genre_path, orient="split")
    assert list(table.index) == [*GENRES, "all"]
    assert {
        "genre_accuracy",
        "heldout/genre_accuracy",
        "kd_colour_layout",
        "coverage",
        "heldout/coverage",
    } <= set(table.columns)
    assert table.loc["all", "genre_accuracy"] == pytest.approx(metrics["genre_accuracy"])
    assert table.loc["rock", "heldout/diversity"] == pytest.approx(metrics["heldout/diversity/rock"])


def test_repeated_evaluation_is_deterministic(tmp_path):
    config = EvaluationConfig(samples_per_genre=8, ms_ssim_pairs=4)
    first = evaluate(tmp_path / "a", config)
    second = evaluate(tmp_path / "b", config)
    assert first.metrics == second.metrics
    assert (tmp_path / "a" / "grid.png").read_bytes() == (tmp_path / "b" / "grid.png").read_bytes()


def test_a_cover_source_stands_in_for_the_generator(tmp_path):
    real = make_real(30)
    asked = []

    def copier(genre_indices, seed):
        asked.append((genre_indices.tolist(), seed))
        rows = [np.flatnonzero(real.labels == index)[0] for index in genre_indices]
        return real.images[rows]

    report = evaluate(
        tmp_path, EvaluationConfig(samples_per_genre=6, seed=9, ms_ssim_pairs=4), copier, reference=real
    )
    assert asked == [(np.repeat(np.arange(3), 6).tolist(), 9)]
    assert report.metrics[names.NEAR_COPY_SHARE] == 1.0 and report.near_copies_found
    assert report.metrics[names.DIVERSITY] == 0.0


def test_a_projection_generator_is_evaluated_and_its_missing_genre_head_said(tmp_path):
    torch.manual_seed(0)
    arch = GanArchitecture(architecture="projection", num_genres=len(GENRES), noise_dim=8, generator_width=32)
    report = evaluate(tmp_path, EvaluationConfig(samples_per_genre=10), generator=build_generator(arch).eval())
    assert report.metrics["generated_count"] == 30 and "d_genre_accuracy" not in report.metrics
    assert any("no discriminator with a genre head" in note for note in report.notes)


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
    report = evaluate(tmp_path, EvaluationConfig(samples_per_genre=4, ms_ssim_pairs=2), heldout=make_real(6))
    assert any("rank-deficient" in warning for warning in report.warnings)
    assert any("precision/recall/density/coverage omitted" in warning for warning in report.warnings)
    assert json.loads(report.metrics_path.read_text())["warnings"] == report.warnings


def test_mismatched_genres_are_refused(tmp_path):
    with pytest.raises(ValueError, match="2 genre names given for a generator conditioned on 3"):
        save_genre_grid(make_generator(), GENRES[:2], tmp_path / "grid.png")
    four_genre_classifier = GenreClassifier(num_genres=4, widths=(4,))
    with pytest.raises(ValueError, match="classifier knows 4 genres"):
        evaluate(tmp_path, EvaluationConfig(), classifier=four_genre_classifier)
    with pytest.raises(ValueError, match="samples_per_genre must be >= 2"):
        EvaluationConfig(samples_per_genre=1)
    with pytest.raises(ValueError, match="near_copy_quantile"):
        EvaluationConfig(near_copy_quantile=1.0)
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


def test_the_floors_judged_by_are_recorded_beside_their_verdicts(tmp_path):
    floors = QualityFloors(min_diversity=0.0, max_near_copy_share=1.0, min_genre_accuracy_ratio=0.0)
    config = EvaluationConfig(samples_per_genre=10, grid_columns=2, ms_ssim_pairs=3, floors=floors)
    report = evaluate(tmp_path, config)
    payload = load_metrics(report.metrics_path)
    assert evaluated_floors(payload) == floors
    assert all(verdict.passed for verdict in report.verdicts)  # nothing can fail floors this lenient
    assert {floor: verdict["passed"] for floor, verdict in payload["floor_verdicts"].items()} == {
        "genre_accuracy": True,
        "diversity": True,
        "near_copies": True,
    }
    assert evaluated_floors({"metrics": {}}) == QualityFloors()  # a payload from before floors were recorded
