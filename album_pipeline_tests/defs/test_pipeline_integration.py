"""The whole asset graph, materialized at tiny scale against the loopback emulators.

A real (temporary) Dagster instance and a real sqlite MLflow store; assertions on what a user gets.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest
from PIL import Image

from album_pipeline.definitions import build_definitions
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.metrics import names
from album_pipeline.model.networks import generate_covers
from album_pipeline.registry.mlflow_registry import load_champion
from album_pipeline.settings import Settings
from album_pipeline_tests.defs.conftest import SECRET_KEY

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


TINY_RUN_CONFIG_NAPSTER = {"ops": {"napster_covers": TINY_RUN_CONFIG["ops"]["napster_covers"]}}


def _files_containing(folder: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_whole_graph_materializes_with_every_output(emulators, pipeline_env, tmp_path, caplog):
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
        checks = {
            (evaluation.asset_check_key.name, evaluation.passed)
            for evaluation in result.get_asset_check_evaluations()
        }
        event_log = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
        training_metadata = {
            stage: instance.get_latest_materialization_event(
                dg.AssetKey(f"{stage}_generator")
            ).asset_materialization.metadata
            for stage in ("pretrained", "finetuned")
        }
    assert materialized == {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert checks == {
        ("failure_ratio_under_limit", True),  # both crawls (a set: one entry)
        ("covers_per_genre_at_least_minimum", True),
        ("no_labeled_images", True),
        ("manifest_schema_valid", True),  # the three contract checks: both manifests
        ("image_id_unique", True),
        ("splits_disjoint", True),
        ("shard_rows_match_manifest", True),  # both training-data assets
        ("quality_floors", False),  # a generator trained for a few steps misses the floors, visibly
    }
    assert len(result.get_asset_check_evaluations()) == 13

    # The Napster key is in no output: not the Dagster event log (run config, logs, metadata, stored
    # events), not Python logging, not any file under the pipeline home (manifests, failures tables, crawl
    # state, the MLflow store and artifacts) or the Dagster instance, though faults made errors and retries.
    assert sum(emulators.napster.injected_faults.values()) > 10
    assert sum(emulators.musicbrainz.injected_faults.values()) > 10
    assert SECRET_KEY not in event_log and SECRET_KEY not in caplog.text
    assert _files_containing(layout.root, SECRET_KEY) == []
    assert _files_containing(tmp_path / "dagster", SECRET_KEY) == []

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
    assert "fd_genre_classifier" in metrics and "fid" not in metrics
    # Every metric of the evaluation, overall, has the real held-out covers' value beside it.
    for name in (*names.JUDGED, "fd_genre_classifier", "kd_genre_classifier"):
        assert name in metrics and f"heldout/{name}" in metrics, name
    assert 0.0 <= metrics["heldout/genre_accuracy"] <= 1.0
    with Image.open(layout.evaluation_dir / "grid.png") as grid:
        assert grid.height >= 64 * len(DEFAULT_GENRES)

    # MLflow: one run with params, metrics and the grid; the new version is the challenger, and the gate
    # keeps it from the champion alias because it missed the floors.
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    version = client.get_model_version_by_alias("album_cover_generator", "challenger")
    assert version.tags["champion_gate"].startswith("stayed")
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("album_cover_generator", "champion")
    run = client.get_run(version.run_id)
    assert run.data.metrics["genre_accuracy"] == pytest.approx(metrics["genre_accuracy"])
    assert run.data.params
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert any(path.endswith("grid.png") for path in artifacts)
    generator, genres = load_champion(settings.mlflow_tracking_uri, "album_cover_generator", "challenger")
    assert genres == DEFAULT_GENRES
    assert generate_covers(generator, list(range(len(genres)))).shape == (len(genres), 64, 64, 3)
    # Artifacts stay in the pipeline home, never in the working directory.
    assert (layout.root / "mlartifacts").exists()

    # Each training stage had its own run, written while it trained and linked from the asset's metadata;
    # they nest: pretraining > finetuning > the registration's run.
    pretrain_id, finetune_id = (
        training_metadata[stage]["mlflow_run_id"].value for stage in training_metadata
    )
    assert run.data.tags["mlflow.parentRunId"] == finetune_id
    finetune_run = client.get_run(finetune_id)
    assert (
        finetune_run.info.status == "FINISHED" and finetune_run.data.tags["mlflow.parentRunId"] == pretrain_id
    )
    assert [metric.step for metric in client.get_metric_history(finetune_id, "loss_g")] == [5, 10, 12]
    assert finetune_run.data.params["config.steps"] == "12"
    assert any("samples+step+12+" in item.path for item in client.list_artifacts(finetune_id, "images"))
    assert client.get_run(pretrain_id).info.status == "FINISHED"


def test_a_refused_key_fails_the_crawl_clearly_and_shows_up_nowhere(
    emulators, pipeline_env, monkeypatch, tmp_path
):
    wrong_key = "wrong-napster-key-3b9d2e7a0c"
    monkeypatch.setenv("NAPSTER_API_KEY", wrong_key)
    defs = build_definitions(Settings.from_environ())
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("napster_covers")}
    )
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = job.execute_in_process(
            run_config=TINY_RUN_CONFIG_NAPSTER, instance=instance, raise_on_error=False
        )
        assert not result.success
        failure = result.get_step_failure_events()[0].step_failure_data.error
        event_log = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    cause = failure.cause
    assert cause.cls_name == "SourceAuthError"
    assert "NAPSTER_API_KEY" in cause.message and "401" in cause.message
    assert wrong_key not in event_log and wrong_key not in failure.to_string()
    assert _files_containing(pipeline_env.root, wrong_key) == []
    assert _files_containing(tmp_path / "dagster", wrong_key) == []


def test_the_napster_crawl_shows_its_genre_mapping(emulators, pipeline_env, tmp_path):
    defs = build_definitions(Settings.from_environ())
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("napster_covers")}
    )
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = job.execute_in_process(run_config=TINY_RUN_CONFIG_NAPSTER, instance=instance)
    [materialization] = result.asset_materializations_for_node("napster_covers")
    mapping = {row["genre_id"]: row for row in materialization.metadata["genre_mapping"].value}
    # Albums mostly carry sub-genres: each maps through its top-level genre to the class it fed.
    assert mapping["g.173"]["top_level"] == "g.146" and mapping["g.173"]["class"] == "rap-hip-hop"
    assert sum(row["albums"] for row in mapping.values() if row["top_level"] != row["genre_id"]) > sum(
        row["albums"] for row in mapping.values() if row["top_level"] == row["genre_id"]
    )
