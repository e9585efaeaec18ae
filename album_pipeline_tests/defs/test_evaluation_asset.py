"""The generator_evaluation asset on a prepared home: metadata beside held-out values, grids, the floors check."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest
import torch

from album_pipeline.defs.evaluation import QUALITY_FLOORS_CHECK, generator_evaluation
from album_pipeline.defs.resources import GenreTaxonomy, PipelineHome
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.layout import HomeLayout
from album_pipeline.metrics import names
from album_pipeline.metrics.evaluate import load_metrics
from album_pipeline.metrics.genre_classifier import ClassifierConfig, save_classifier, train_genre_classifier
from album_pipeline.model.checkpoint import save_checkpoint
from album_pipeline.model.networks import Discriminator, GanArchitecture, Generator
from album_pipeline.testing.emulators.synthetic import draw_cover
from album_pipeline.testing.shards import write_shard_set_from_arrays

pytestmark = pytest.mark.integration


def prepare_home(root) -> HomeLayout:
    """Labelled shards of emulator covers, a briefly trained classifier and an untrained GAN checkpoint."""
    layout = HomeLayout(root)
    images, labels, splits = [], [], []
    for index, genre in enumerate(DEFAULT_GENRES):
        for seed in range(40):
            images.append(np.asarray(draw_cover(genre, seed, 64).convert("RGB")))
            labels.append(index)
            splits.append("test" if seed % 4 == 0 else "train")
    write_shard_set_from_arrays(
        layout.training_data("labeled"), np.stack(images), labels, DEFAULT_GENRES, splits=splits
    )
    train = np.array(splits) == "train"
    trained = train_genre_classifier(
        np.stack(images)[train], np.array(labels)[train], DEFAULT_GENRES, ClassifierConfig(epochs=2)
    )
    save_classifier(layout.genre_classifier_checkpoint, trained.model, DEFAULT_GENRES)
    arch = GanArchitecture(num_genres=len(DEFAULT_GENRES), generator_width=16, discriminator_width=8)
    torch.manual_seed(0)
    save_checkpoint(
        layout.final_checkpoint("finetuned"),
        {
            "arch": arch.to_dict(),
            "genres": list(DEFAULT_GENRES),
            "generator": Generator(arch).state_dict(),
            "discriminator": Discriminator(arch).state_dict(),
        },
    )
    return layout


def test_the_asset_shows_every_metric_beside_its_heldout_value_and_checks_the_floors(tmp_path):
    layout = prepare_home(tmp_path / "home")
    run_config = {
        "ops": {
            "generator_evaluation": {
                "config": {
                    "samples_per_genre": 12,
                    "feature_extractor": "genre_classifier",
                    "ms_ssim_pairs": 4,
                }
            }
        }
    }
    result = dg.materialize(
        [generator_evaluation],
        run_config=run_config,
        resources={"home": PipelineHome(root=str(layout.root)), "genres": GenreTaxonomy()},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("generator_evaluation")[0].metadata
    metrics = load_metrics(layout.evaluation_metrics)["metrics"]
    for name in (
        "genre_accuracy",
        "d_genre_accuracy",
        "fd_genre_classifier",
        "coverage",
        "diversity",
        "ms_ssim",
    ):
        assert metadata[name].value == pytest.approx(metrics[name])
        assert metadata[names.heldout(name)].value == pytest.approx(metrics[names.heldout(name)])
        assert (
            f"| {name} | {metrics[name]:.4g} / {metrics[names.heldout(name)]:.4g} |"
            in metadata["overall"].value
        )
    per_genre = metadata["per_genre"].value
    assert all(f"| {genre}" in per_genre for genre in DEFAULT_GENRES) and "heldout/coverage" in per_genre
    assert metadata["grid"].value.startswith("![one row per genre](data:image/png;base64,")
    assert "data:image/png;base64," in metadata["near_copies"].value
    for path in (
        layout.evaluation_grid,
        layout.evaluation_near_copies_grid,
        layout.evaluation_per_genre_table,
    ):
        assert path.is_file()
    assert any(layout.feature_cache_dir.iterdir())

    # An untrained generator fails the floors: the check says which, without blocking anything.
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == QUALITY_FLOORS_CHECK and not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert "FAILED genre_accuracy: genre_accuracy" in check.description
    assert "heldout/genre_accuracy" in check.description
