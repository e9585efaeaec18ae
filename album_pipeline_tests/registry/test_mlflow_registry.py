from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from album_pipeline.model.networks import GanArchitecture, Generator, generate_covers
from album_pipeline.registry.mlflow_registry import (
    CHAMPION_ALIAS,
    ChampionPolicy,
    ModelNotRegistered,
    load_champion,
    log_and_register,
    sqlite_tracking_uri,
)

GENRES = ("rock", "jazz", "classical")
MODEL = "cover_generator"
EXPERIMENT = "album_pipeline_tests"


def make_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    return Generator(GanArchitecture(num_genres=len(GENRES), generator_width=8, noise_dim=16)).eval()


class Store:
    """One sqlite store with three registered versions: champion metric 0.5, then 0.3 (worse), then 0.7."""

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
        self.metrics_file.write_text(json.dumps({"metrics": {"genre_accuracy": 0.5}}))
        self.generators = [make_generator(seed) for seed in (1, 2, 3)]
        self.env_before = os.environ.get("MLFLOW_TRACKING_URI")
        self.results = []
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(self.cwd)  # registration must write nothing into the current directory
            for index, (generator, accuracy) in enumerate(zip(self.generators, (0.5, 0.3, 0.7), strict=True)):
                self.results.append(self.register(generator, accuracy, run_index=index))
            self.loaded = load_champion(self.uri, MODEL)
            self.loaded_second = load_champion(self.uri, MODEL, model_uri=f"models:/{MODEL}/2")
            self.cwd_contents = sorted(path.name for path in self.cwd.iterdir())

    def register(self, generator: Generator, accuracy: float, run_index: int = 0, **overrides):
        arguments = dict(
            tracking_uri=self.uri,
            experiment_name=EXPERIMENT,
            artifact_location=self.artifacts_dir,
            model_name=MODEL,
            generator=generator,
            genres=GENRES,
            params={"finetuned": {"epochs": 3, "lr": 2e-4}, "run_index": run_index},
            metrics={"genre_accuracy": accuracy, "fd_genre_classifier": 10.0 - accuracy},
            artifacts=[self.grid, self.metrics_file],
            tags={"purpose": "test"},
        )
        return log_and_register(**{**arguments, **overrides})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("registry"))


def client(store: Store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)


def test_first_version_becomes_champion(store):
    first = store.results[0]
    assert (first.model_version, first.is_champion) == ("1", True)
    assert (first.champion_version, first.champion_metric_value) == ("1", 0.5)
    assert first.model_uri == f"models:/{MODEL}/1"


def test_worse_version_does_not_move_the_alias_and_a_better_one_does(store):
    second, third = store.results[1], store.results[2]
    assert (second.model_version, second.is_champion) == ("2", False)
    assert (second.champion_version, second.champion_metric_value) == ("1", 0.5)
    assert (third.model_version, third.is_champion) == ("3", True)
    assert (third.champion_version, third.champion_metric_value) == ("3", 0.7)
    assert str(client(store).get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "3"


def test_load_champion_returns_the_champion_generator_and_genres(store):
    generator, genres = store.loaded
    assert isinstance(generator, Generator) and not generator.training
    assert genres == GENRES
    labels = [0, 1, 2, 2, 1, 0]
    assert torch.equal(
        generate_covers(generator, labels, seed=5), generate_covers(store.generators[2], labels, seed=5)
    )
    second, _ = store.loaded_second  # an explicit model URI loads that version instead of the champion
    assert torch.equal(
        generate_covers(second, labels, seed=5), generate_covers(store.generators[1], labels, seed=5)
    )


def test_run_holds_params_metrics_tags_artifacts_and_genres(store):
    mlflow_client = client(store)
    run = mlflow_client.get_run(store.results[2].run_id)
    assert run.data.metrics == {"genre_accuracy": 0.7, "fd_genre_classifier": pytest.approx(9.3)}
    params = run.data.params
    assert params["finetuned.epochs"] == "3" and params["run_index"] == "2"
    assert json.loads(params["genres"]) == list(GENRES)
    assert params["generator.num_genres"] == "3" and params["generator.generator_width"] == "8"
    assert run.data.tags["purpose"] == "test"
    assert {item.path for item in mlflow_client.list_artifacts(run.info.run_id)} >= {
        "grid.png",
        "metrics.json",
    }
    version = mlflow_client.get_model_version(MODEL, "3")
    assert version.run_id == run.info.run_id
    assert json.loads(version.tags["genres"]) == list(GENRES)
    assert version.tags["champion_metric"] == "genre_accuracy"


def test_nothing_lands_in_the_working_directory_and_artifacts_go_where_asked(store):
    assert store.cwd_contents == []
    experiment = client(store).get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location == store.artifacts_dir.resolve().as_uri()
    assert any(store.artifacts_dir.rglob("model.pth"))  # the pickled generator
    assert any(path.name == "grid.png" for path in store.artifacts_dir.rglob("*"))
    assert os.environ.get("MLFLOW_TRACKING_URI") == store.env_before  # the global URI is put back


def test_lower_is_better_metrics_pick_the_smaller_value(store):
    lower = dict(
        model_name="lower_is_better", champion=ChampionPolicy("fd_genre_classifier", greater_is_better=False)
    )
    first = store.register(store.generators[0], 0.5, **lower)  # fd_genre_classifier = 10 - 0.5 = 9.5
    better = store.register(store.generators[1], 0.6, **lower)  # 9.4: smaller, so better
    tie = store.register(store.generators[2], 0.6, **lower)  # 9.4 again
    assert first.is_champion
    assert better.is_champion and better.champion_metric_value == pytest.approx(9.4)
    assert not tie.is_champion and tie.champion_version == better.model_version  # ties keep the incumbent


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
    with pytest.raises(ValueError, match="champion_metric 'genre_accuracy' is not among the metrics"):
        store.register(generator, 0.5, metrics={"fd_genre_classifier": 1.0})
    with pytest.raises(FileNotFoundError, match="do not exist"):
        store.register(generator, 0.5, artifacts=[tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="name each of the generator's 3 classes"):
        store.register(generator, 0.5, genres=GENRES[:2])
    with pytest.raises(ValueError, match="stores artifacts at"):
        store.register(generator, 0.5, artifact_location=tmp_path / "elsewhere")
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
