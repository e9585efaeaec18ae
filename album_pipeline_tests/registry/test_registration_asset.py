"""The `registered_generator` asset on a home laid out as the pipeline lays it out: its metadata says why the
champion moved or stayed, and its settings reach the gate."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from album_pipeline.defs.registration import registered_generator
from album_pipeline.defs.resources import GenreTaxonomy, MlflowTracking, PipelineHome
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.layout import HomeLayout
from album_pipeline.metrics.floors import QualityFloors
from album_pipeline.model.checkpoint import save_checkpoint
from album_pipeline.model.networks import GanArchitecture, Generator
from album_pipeline.registry.mlflow_registry import sqlite_tracking_uri
from album_pipeline.testing.shards import write_shard_set_from_arrays
from album_pipeline_tests.registry.gate_metrics import collapsed_metrics, passing_metrics


def write_home(home: Path) -> HomeLayout:
    """Checkpoints of both stages, tiny shard sets and an evaluation's files (the per-genre table only)."""
    layout = HomeLayout(home)
    arch = GanArchitecture(num_genres=len(DEFAULT_GENRES), generator_width=8, noise_dim=16)
    torch.manual_seed(0)
    for stage in ("pretrained", "finetuned"):
        payload = {"generator": Generator(arch).state_dict(), "arch": arch.to_dict(), "config": {"steps": 2}}
        save_checkpoint(layout.final_checkpoint(stage), {**payload, "genres": list(DEFAULT_GENRES)})
    pixels = np.zeros((len(DEFAULT_GENRES), 64, 64, 3), dtype=np.uint8)
    for name in ("labeled", "unlabeled"):
        write_shard_set_from_arrays(
            layout.training_data(name), pixels, range(len(DEFAULT_GENRES)), DEFAULT_GENRES
        )
    layout.evaluation_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(
        {"diversity": [0.8] * len(DEFAULT_GENRES)}, index=pd.Index(DEFAULT_GENRES, name="genre")
    )
    table.to_json(layout.evaluation_per_genre_table, orient="split")
    return layout


def materialize(layout: HomeLayout, metrics: dict[str, float], floors: dict | None = None, **config) -> dict:
    payload = {"metrics": {**metrics, "note": "not a number"}}
    if floors is not None:  # the evaluation records the floors it judged by
        payload["config"] = {"floors": {**asdict(QualityFloors()), **floors}}
    layout.evaluation_metrics.write_text(json.dumps(payload))
    result = dg.materialize(
        [registered_generator],
        resources={
            "home": PipelineHome(root=str(layout.root)),
            "mlflow": MlflowTracking(tracking_uri=sqlite_tracking_uri(layout.mlflow_db)),
            "genres": GenreTaxonomy(),
        },
        run_config={"ops": {"registered_generator": {"config": config}}},
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("registered_generator")
    return {key: value.value for key, value in materialization.metadata.items()}


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> HomeLayout:
    return write_home(tmp_path_factory.mktemp("registration") / "home")


def test_metadata_says_why_the_champion_stayed_and_then_moved(layout):
    collapsed = materialize(layout, collapsed_metrics(fd_genre_classifier=2.0))
    assert collapsed["champion_decision"] == "stayed: diversity 0.020 < 0.500 (no version is champion yet)"
    assert (collapsed["is_champion"], collapsed["champion_version"], collapsed["challenger_version"]) == (
        False,
        None,
        "1",
    )
    assert (collapsed["primary_metric"], collapsed["primary_metric_value"]) == ("fd_genre_classifier", 2.0)

    healthy = materialize(layout, passing_metrics(fd_genre_classifier=5.0))
    assert (
        healthy["champion_decision"] == "moved: the first version to pass every floor (fd_genre_classifier 5)"
    )
    assert (healthy["champion_version"], healthy["challenger_version"]) == ("2", "2")
    assert healthy["champion_uri"] == "models:/album_cover_generator@champion"


def test_the_gate_uses_the_floors_the_evaluation_recorded(layout):
    lenient = materialize(layout, collapsed_metrics(fd_genre_classifier=1.0), floors={"min_diversity": 0.01})
    assert lenient["is_champion"] and lenient["champion_decision"].startswith(
        "moved: fd_genre_classifier 1 < 5"
    )
