from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from album_pipeline.model.networks import GanArchitecture, Generator, generate_covers
from album_pipeline.registry.champion import CHALLENGER_ALIAS, CHAMPION_ALIAS
from album_pipeline.registry.mlflow_registry import (
    ChampionPolicy,
    ModelNotRegistered,
    load_champion,
    log_and_register,
    sqlite_tracking_uri,
)
from album_pipeline_tests.registry.gate_metrics import collapsed_metrics, copier_metrics, passing_metrics

GENRES = ("rock", "jazz", "classical")
MODEL = "cover_generator"
EXPERIMENT = "album_pipeline_tests"
# fd_genre_classifier of each registered version, and whether it passes the floors: v1 first, v2 worse, v3
# collapsed (the best distance, but one cover per genre), v4 better than v1.
EVALUATIONS = [
    passing_metrics(fd_genre_classifier=6.2),
    passing_metrics(fd_genre_classifier=7.0),
    collapsed_metrics(fd_genre_classifier=3.0),
    passing_metrics(fd_genre_classifier=5.1),
]


def make_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    return Generator(GanArchitecture(num_genres=len(GENRES), generator_width=8, noise_dim=16)).eval()


class Store:
    """One sqlite store with the four versions of EVALUATIONS registered in order."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = sqlite_tracking_uri(root / "mlflow.db")
        self.artifacts_dir = root / "mlartifacts"
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        evaluation = root / "evaluation"
        evaluation.mkdir()
        self.grid = evaluation / "grid.png"
        self.grid.write_bytes(b"\x89PNG stand-in")
        self.metrics_file = evaluation / "metrics.json"
        self.metrics_file.write_text(json.dumps({"metrics": EVALUATIONS[0]}))
        self.table = evaluation / "per_genre.json"
        frame = pd.DataFrame({"diversity": [0.8, 0.7, 0.9]}, index=pd.Index(GENRES, name="genre"))
        frame.to_json(self.table, orient="split")
        self.generators = [make_generator(seed) for seed in (1, 2, 3, 4)]
        self.env_before = os.environ.get("MLFLOW_TRACKING_URI")
        self.results = []
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(self.cwd)  # registration must write nothing into the current directory
            for index, (generator, metrics) in enumerate(zip(self.generators, EVALUATIONS, strict=True)):
                self.results.append(self.register(generator, metrics, run_index=index))
                if index == 2:
                    self.aliases_after_collapse = dict(client(self).get_registered_model(MODEL).aliases)
                    self.challenger_after_collapse = load_champion(self.uri, MODEL, alias=CHALLENGER_ALIAS)
            self.loaded = load_champion(self.uri, MODEL)
            self.loaded_second = load_champion(self.uri, MODEL, model_uri=f"models:/{MODEL}/2")
            self.cwd_contents = sorted(path.name for path in self.cwd.iterdir())

    def register(self, generator: Generator, metrics: dict[str, float], run_index: int = 0, **overrides):
        arguments = dict(
            tracking_uri=self.uri,
            experiment_name=EXPERIMENT,
            artifact_location=self.artifacts_dir,
            model_name=MODEL,
            generator=generator,
            genres=GENRES,
            params={"finetuned": {"epochs": 3, "lr": 2e-4}, "run_index": run_index},
            metrics=metrics,
            artifacts=[self.grid, self.metrics_file],
            tags={"purpose": "test"},
            per_genre_table=self.table,
        )
        return log_and_register(**{**arguments, **overrides})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("registry"))


def client(store: Store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)


def same_covers(first: Generator, second: Generator) -> bool:
    labels = [0, 1, 2, 2, 1, 0]
    return torch.equal(generate_covers(first, labels, seed=5), generate_covers(second, labels, seed=5))


def test_first_version_that_passes_the_floors_becomes_champion(store):
    first = store.results[0]
    assert (first.model_version, first.is_champion) == ("1", True)
    assert (first.champion_version, first.champion_metric_value) == ("1", 6.2)
    assert first.model_uri == f"models:/{MODEL}/1"
    assert first.primary_metric == "fd_genre_classifier"
    assert first.reason == "moved: the first version to pass every floor (fd_genre_classifier 6.2)"


def test_worse_version_does_not_move_the_alias_and_a_better_one_does(store):
    second, fourth = store.results[1], store.results[3]
    assert (second.model_version, second.is_champion) == ("2", False)
    assert (second.champion_version, second.champion_metric_value) == ("1", 6.2)
    assert second.reason == "stayed: fd_genre_classifier 7 > 6.2 of v1"
    assert (fourth.model_version, fourth.is_champion) == ("4", True)
    assert (fourth.champion_version, fourth.champion_metric_value) == ("4", 5.1)
    assert fourth.reason == "moved: fd_genre_classifier 5.1 < 6.2 of v1"
    assert str(client(store).get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "4"


def test_the_gate_refuses_a_collapsed_generator_despite_its_best_distance(store):
    collapsed = store.results[2]
    assert (collapsed.model_version, collapsed.is_champion, collapsed.champion_version) == ("3", False, "1")
    assert collapsed.reason == "stayed: diversity 0.020 < 0.500 (v1 stays)"
    assert store.aliases_after_collapse == {CHAMPION_ALIAS: 1, CHALLENGER_ALIAS: 3}
    challenger, _ = store.challenger_after_collapse  # the newest version, whatever the gate said
    assert same_covers(challenger, store.generators[2])


def test_challenger_names_the_newest_version(store):
    assert [result.model_uri for result in store.results] == [f"models:/{MODEL}/{n}" for n in (1, 2, 3, 4)]
    assert str(client(store).get_model_version_by_alias(MODEL, CHALLENGER_ALIAS).version) == "4"


def test_versions_are_tagged_with_every_metric_the_primary_metric_and_the_verdicts(store):
    collapsed = client(store).get_model_version(MODEL, "3")
    tags = collapsed.tags
    assert {name for name in tags if name.startswith("metric.")} == {
        f"metric.{name}" for name in EVALUATIONS[2]
    }
    assert float(tags["metric.fd_genre_classifier"]) == 3.0 and float(tags["metric.diversity/rock"]) == 0.8
    assert tags["primary_metric"] == "fd_genre_classifier"
    assert tags["floor.diversity"] == "failed: diversity 0.020 < 0.500"
    assert tags["floor.near_copies"] == "passed: near_copy_share 0.010 <= 0.050"
    assert tags["floor.genre_accuracy"].startswith("passed: genre_accuracy 0.950 >= 0.900")
    assert tags["champion_gate"] == store.results[2].reason
    assert json.loads(tags["genres"]) == list(GENRES)


def test_load_champion_returns_the_champion_generator_and_genres(store):
    generator, genres = store.loaded
    assert isinstance(generator, Generator) and not generator.training
    assert genres == GENRES
    assert same_covers(generator, store.generators[3])
    second, _ = store.loaded_second  # an explicit model URI loads that version instead of the champion
    assert same_covers(second, store.generators[1])


def test_run_holds_params_metrics_tags_artifacts_table_and_genres(store, tmp_path):
    mlflow_client = client(store)
    run = mlflow_client.get_run(store.results[3].run_id)
    assert run.data.metrics == pytest.approx(EVALUATIONS[3])
    params = run.data.params
    assert params["finetuned.epochs"] == "3" and params["run_index"] == "3"
    assert json.loads(params["genres"]) == list(GENRES)
    assert params["generator.num_genres"] == "3" and params["generator.generator_width"] == "8"
    assert run.data.tags["purpose"] == "test"
    assert {item.path for item in mlflow_client.list_artifacts(run.info.run_id)} >= {
        "grid.png",
        "metrics.json",
        "per_genre.json",
    }
    table = pd.read_json(  # MLflow's table format: pandas "split" without the index
        mlflow_client.download_artifacts(run.info.run_id, "per_genre.json", str(tmp_path)), orient="split"
    )
    assert table["genre"].tolist() == list(GENRES) and table["diversity"].tolist() == pytest.approx(
        [0.8, 0.7, 0.9]
    )
    version = mlflow_client.get_model_version(MODEL, "4")
    assert version.run_id == run.info.run_id


def test_nothing_lands_in_the_working_directory_and_artifacts_go_where_asked(store):
    assert store.cwd_contents == []
    experiment = client(store).get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location == store.artifacts_dir.resolve().as_uri()
    assert any(store.artifacts_dir.rglob("MLmodel"))  # the logged generator
    assert any(path.name == "grid.png" for path in store.artifacts_dir.rglob("*"))
    assert os.environ.get("MLFLOW_TRACKING_URI") == store.env_before  # the global URI is put back


def test_a_configured_primary_metric_where_greater_is_better(store, caplog):
    accuracy = dict(
        model_name="by_accuracy",
        champion=ChampionPolicy(primary_metric="genre_accuracy", greater_is_better=True),
        per_genre_table=store.root / "absent.json",
    )
    with caplog.at_level(logging.WARNING, logger="album_pipeline.registry.mlflow_registry"):
        first = store.register(store.generators[0], passing_metrics(genre_accuracy=0.92), **accuracy)
    better = store.register(store.generators[1], passing_metrics(genre_accuracy=0.96), **accuracy)
    tie = store.register(store.generators[2], passing_metrics(genre_accuracy=0.96), **accuracy)
    assert first.is_champion and "no per-genre table at" in caplog.text
    assert better.is_champion and better.reason == "moved: genre_accuracy 0.96 > 0.92 of v1"
    assert not tie.is_champion and tie.champion_version == better.model_version  # ties keep the incumbent


def test_without_a_champion_load_champion_says_why_and_points_at_the_challenger(store):
    store.register(store.generators[0], copier_metrics(), model_name="only_copies")
    with pytest.raises(ModelNotRegistered, match="no version of 'only_copies' has passed the quality floors"):
        load_champion(store.uri, "only_copies")
    generator, _ = load_champion(store.uri, "only_copies", alias=CHALLENGER_ALIAS)
    assert same_covers(generator, store.generators[0])


def test_missing_models_and_aliases_have_clear_errors(store):
    with pytest.raises(ModelNotRegistered, match="no registered model 'absent'.*register a generator first"):
        load_champion(store.uri, "absent")
    with pytest.raises(ModelNotRegistered, match="has no alias 'staging'"):
        load_champion(store.uri, MODEL, alias="staging")


def test_bad_registration_inputs_are_refused_before_any_run(store, tmp_path):
    generator = store.generators[0]
    runs_before = len(
        client(store).search_runs([client(store).get_experiment_by_name(EXPERIMENT).experiment_id])
    )
    with pytest.raises(ValueError, match="hold none of \\['fid', 'fd_genre_classifier'\\]"):
        store.register(generator, {"genre_accuracy": 0.9})
    with pytest.raises(ValueError, match="primary_metric 'fid' is not among"):
        store.register(generator, passing_metrics(), champion=ChampionPolicy(primary_metric="fid"))
    with pytest.raises(TypeError, match="metric 'diversity' must be a number"):
        store.register(generator, passing_metrics(diversity="high"))
    with pytest.raises(FileNotFoundError, match="do not exist"):
        store.register(generator, passing_metrics(), artifacts=[tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="name each of the generator's 3 classes"):
        store.register(generator, passing_metrics(), genres=GENRES[:2])
    with pytest.raises(ValueError, match="stores artifacts at"):
        store.register(generator, passing_metrics(), artifact_location=tmp_path / "elsewhere")
    runs_after = len(
        client(store).search_runs([client(store).get_experiment_by_name(EXPERIMENT).experiment_id])
    )
    assert runs_after == runs_before


def test_importing_the_module_does_not_import_mlflow():
    code = "import sys, album_pipeline.registry.mlflow_registry; print('mlflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"
