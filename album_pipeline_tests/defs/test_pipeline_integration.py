"""The whole asset graph, materialized at tiny scale against the loopback emulators.

A real (temporary) Dagster instance and a real sqlite MLflow store; assertions on what a user gets.
"""

from __future__ import annotations

import hashlib

import dagster as dg
import mlflow
import pandas as pd
import pytest
from PIL import Image

from album_pipeline.definitions import build_definitions
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.layout import HomeLayout
from album_pipeline.model.networks import generate_covers
from album_pipeline.registry.mlflow_registry import load_champion
from album_pipeline.settings import Settings

pytestmark = pytest.mark.integration

TINY_GAN = {"batch_size": 16, "lr_discriminator": 2e-4, "checkpoint_every": 10, "log_every": 5}
TINY_RUN_CONFIG = {
    "ops": {
        "napster_covers": {
            "config": {"albums_per_genre": 24, "download_workers": 4, "api_requests_per_second": 50.0}
        },
        "musicbrainz_covers": {"config": {"albums_per_genre": 10, "api_requests_per_second": 50.0}},
        "labeled_manifest": {"config": {"min_covers_per_genre": 10}},
        "omacir_archives": {"config": {"archives": ["a"], "max_images": 150}},
        "unlabeled_manifest": {"config": {"max_images": 150}},
        "pretrained_generator": {
            "config": {**TINY_GAN, "steps": 12, "generator_width": 32, "discriminator_width": 8}
        },
        "finetuned_generator": {"config": {**TINY_GAN, "steps": 12}},
        "genre_classifier": {"config": {"epochs": 2}},
        "generator_evaluation": {
            "config": {"samples_per_genre": 12, "feature_extractor": "genre_classifier"}
        },
    }
}


@pytest.fixture(scope="module")
def emulators(tmp_path_factory):
    from album_pipeline.emulators.server import running_emulators

    with running_emulators(
        albums_per_genre=24,
        archive_letters=("a",),
        images_per_archive=180,
        release_groups_per_genre=12,
        musicbrainz_rate_limit=None,
        cache_dir=tmp_path_factory.mktemp("emulator_cache"),
    ) as running:
        yield running


@pytest.fixture
def pipeline_env(emulators, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(home))
    for name, value in emulators.environment().items():
        monkeypatch.setenv(name, value)
    return HomeLayout(home)


def test_whole_graph_materializes_with_every_output(pipeline_env, tmp_path):
    layout = pipeline_env
    settings = Settings.from_environ()
    assert settings.mlflow_tracking_uri == f"sqlite:///{layout.root}/mlflow.db"
    defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def()
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = job.execute_in_process(run_config=TINY_RUN_CONFIG, instance=instance)
        assert result.success
        materialized = {key.to_user_string() for key in instance.get_asset_keys()}
    assert materialized == {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}

    # Manifests: the documented columns, content hashes that match the stored bytes.
    required = {"image_id", "path", "source", "source_id", "genre", "width", "height", "split"}
    labeled = pd.read_parquet(layout.labeled_manifest)
    unlabeled = pd.read_parquet(layout.unlabeled_manifest)
    assert required <= set(labeled.columns) and required <= set(unlabeled.columns)
    assert set(labeled["genre"]) == set(DEFAULT_GENRES)
    assert unlabeled["genre"].isna().all() and len(unlabeled) > 0
    assert set(labeled["split"]) <= {"train", "val", "test"}
    for frame in (labeled.sample(10, random_state=0), unlabeled.sample(10, random_state=0)):
        for row in frame.itertuples():
            data = (layout.root / row.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row.image_id
            with Image.open(layout.root / row.path) as image:
                assert image.size == (row.width, row.height)

    # Checkpoints of both stages; the finetuned one starts from the pretrained one.
    assert (layout.checkpoint_dir("pretrained") / "final.pt").exists()
    assert (layout.checkpoint_dir("finetuned") / "final.pt").exists()

    # Evaluation: independent-classifier accuracies and an honestly named distance, plus a grid per genre.
    import json

    metrics = json.loads((layout.evaluation_dir / "metrics.json").read_text())
    metrics = metrics.get("metrics", metrics)
    assert 0.0 <= metrics["genre_accuracy"] <= 1.0
    assert 0.0 <= metrics["real_test_accuracy"] <= 1.0
    assert "fd_genre_classifier" in metrics and "fid" not in metrics
    with Image.open(layout.evaluation_dir / "grid.png") as grid:
        assert grid.height >= 64 * len(DEFAULT_GENRES)

    # MLflow: one run with params, metrics and the grid; a registered version behind the champion alias.
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    version = client.get_model_version_by_alias("album_cover_generator", "champion")
    run = client.get_run(version.run_id)
    assert run.data.metrics["genre_accuracy"] == pytest.approx(metrics["genre_accuracy"])
    assert run.data.params
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert any(path.endswith("grid.png") for path in artifacts)
    generator, genres = load_champion(settings.mlflow_tracking_uri, "album_cover_generator")
    assert genres == DEFAULT_GENRES
    assert generate_covers(generator, list(range(len(genres)))).shape == (len(genres), 64, 64, 3)
    # Artifacts stay in the pipeline home, never in the working directory.
    assert (layout.root / "mlartifacts").exists()
