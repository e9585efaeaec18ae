"""A real MLflow tracking server on loopback, as a team would share one: registration, the champion gate and
loading the champion all go through it, and its artifacts land in its own destination, not in a home."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from album_pipeline.model.networks import GanArchitecture, Generator, generate_covers
from album_pipeline.registry.champion import CHALLENGER_ALIAS
from album_pipeline.registry.mlflow_registry import load_champion, log_and_register, sqlite_tracking_uri
from album_pipeline.settings import MLFLOW_URI_VAR, Settings
from album_pipeline_tests.registry.gate_metrics import collapsed_metrics, passing_metrics
from album_pipeline_tests.registry.mlflow_process import (
    free_port,
    mlflow_cli,
    running,
    tracking_server_arguments,
)

pytestmark = pytest.mark.integration

GENRES = ("rock", "jazz")
MODEL = "cover_generator"


@dataclass(frozen=True)
class Server:
    url: str
    artifacts: Path
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    command = mlflow_cli()
    if command is None:
        pytest.skip("the `mlflow` command is not installed (it comes with `pip install mlflow`)")
    root = tmp_path_factory.mktemp("tracking_server")
    port, log = free_port(), root / "server.log"
    arguments = tracking_server_arguments(
        command,
        sqlite_tracking_uri(root / "mlflow.db"),
        port,
        "--artifacts-destination",
        str(root / "artifacts"),
    )
    url = f"http://127.0.0.1:{port}"
    with running(arguments, ready_url=f"{url}/health", log=log, cwd=root):
        yield Server(url, root / "artifacts", log)


def make_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    return Generator(GanArchitecture(num_genres=len(GENRES), generator_width=8, noise_dim=16)).eval()


def same_covers(first: Generator, second: Generator) -> bool:
    labels = [0, 1, 1, 0]
    return torch.equal(generate_covers(first, labels, seed=3), generate_covers(second, labels, seed=3))


@pytest.fixture(scope="module")
def registered(server, tmp_path_factory):
    """Two versions registered through the server: a healthy one, then a collapsed one with a better distance."""
    home = tmp_path_factory.mktemp("client_home")
    metrics_file = home / "metrics.json"
    metrics_file.write_text("{}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MLFLOW_URI_VAR, server.url)
        patch.setenv("ALBUM_PIPELINE_HOME", str(home))
        tracking_uri = Settings.from_environ().mlflow_tracking_uri  # as the pipeline resolves it
        generators = [make_generator(1), make_generator(2)]
        results = [
            log_and_register(
                tracking_uri=tracking_uri,
                experiment_name="album_pipeline",
                artifact_location=home / "mlartifacts",
                model_name=MODEL,
                generator=generator,
                genres=GENRES,
                params={"run_index": index},
                metrics=metrics,
                artifacts=[metrics_file],
            )
            for index, (generator, metrics) in enumerate(
                zip(generators, [passing_metrics(), collapsed_metrics(fd_genre_classifier=1.0)], strict=True)
            )
        ]
        champion = load_champion(tracking_uri, MODEL)
        challenger = load_champion(tracking_uri, MODEL, alias=CHALLENGER_ALIAS)
    return tracking_uri, home, generators, results, champion, challenger


def test_the_pipeline_takes_the_server_from_the_environment(server, registered):
    tracking_uri, *_ = registered
    assert tracking_uri == server.url


def test_the_champion_loads_back_through_the_server(registered):
    _, _, generators, results, (champion, genres), (challenger, _) = registered
    assert [result.is_champion for result in results] == [True, False]
    assert results[1].reason == "stayed: diversity 0.020 < 0.500 (v1 stays)"
    assert genres == GENRES
    assert same_covers(champion, generators[0]) and same_covers(challenger, generators[1])


def test_metrics_tags_and_artifacts_live_on_the_server(server, registered):
    from mlflow import MlflowClient

    tracking_uri, home, _, results, *_ = registered
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(results[1].run_id)
    assert run.data.metrics == pytest.approx(collapsed_metrics(fd_genre_classifier=1.0))
    version = client.get_model_version(MODEL, "2")
    assert version.tags["floor.diversity"] == "failed: diversity 0.020 < 0.500"
    assert float(version.tags["metric.fd_genre_classifier"]) == 1.0
    assert version.tags["primary_metric"] == "fd_genre_classifier"
    assert {alias: str(number) for alias, number in client.get_registered_model(MODEL).aliases.items()} == {
        "champion": "1",
        "challenger": "2",
    }
    # Artifacts go through the server to its destination; the client's home holds none of them.
    assert client.get_experiment_by_name("album_pipeline").artifact_location.startswith("mlflow-artifacts:")
    assert any(server.artifacts.rglob("MLmodel")) and any(server.artifacts.rglob("metrics.json"))
    assert not (home / "mlartifacts").exists()
