"""The store behind the registry (issue 11): bounded waits, one sentence per unusable store, checked model
URIs, and a home that keeps working when copied elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from album_pipeline.layout import HomeLayout
from album_pipeline.model.networks import GanArchitecture, Generator, generate_covers
from album_pipeline.registry.mlflow_registry import (
    InvalidModelURI,
    load_champion,
    log_and_register,
    sqlite_tracking_uri,
)
from album_pipeline.registry.packaging import MODEL_DATA, write_generator_data
from album_pipeline.registry.store import HTTP_BOUNDS, RegistryStoreError, store_session
from album_pipeline.settings import ConfigurationError
from album_pipeline_tests.registry.gate_metrics import passing_metrics

GENRES = ("rock", "jazz")
MODEL = "cover_generator"


def make_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    return Generator(GanArchitecture(num_genres=len(GENRES), generator_width=8, noise_dim=16)).eval()


def register(home: Path, generator: Generator, distance: float = 6.0):
    """Register ``generator`` into a pipeline home laid out as the pipeline lays it out."""
    layout = HomeLayout(home)
    layout.evaluation_dir.mkdir(parents=True, exist_ok=True)
    layout.evaluation_grid.write_bytes(b"\x89PNG stand-in")
    metrics = passing_metrics(fd_genre_classifier=distance)
    layout.evaluation_metrics.write_text(json.dumps({"metrics": metrics}))
    return log_and_register(
        tracking_uri=sqlite_tracking_uri(layout.mlflow_db),
        experiment_name="album_pipeline_tests",
        artifact_location=layout.mlflow_artifacts_dir,
        model_name=MODEL,
        generator=generator,
        genres=GENRES,
        params={},
        metrics=metrics,
        artifacts=[layout.evaluation_grid, layout.evaluation_metrics],
    )


@pytest.fixture(scope="module")
def home_a(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("stores") / "home_a"
    register(home, make_generator(1))
    return home


def same_covers(first: Generator, second: Generator) -> bool:
    labels = [0, 1, 1, 0]
    return torch.equal(generate_covers(first, labels, seed=3), generate_covers(second, labels, seed=3))


def recorded_locations(home: Path) -> list[str]:
    with sqlite3.connect(HomeLayout(home).mlflow_db) as connection:
        return [
            row[0]
            for query in (
                "SELECT artifact_location FROM experiments WHERE name = 'album_pipeline_tests'",
                "SELECT artifact_uri FROM runs",
                "SELECT storage_location FROM model_versions",
                "SELECT artifact_location FROM logged_models",
            )
            for row in connection.execute(query)
        ]


def test_a_copied_home_reads_and_registers_its_own_artifacts(home_a, tmp_path):
    """Issue 11 probe: mlflow.db stored absolute paths, so `generate` on a copy read the original's model."""
    home_b = tmp_path / "home_b"
    shutil.copytree(home_a, home_b)
    # The copy's model differs from the original's: were the original read, the covers would differ.
    models_b = next((HomeLayout(home_b).mlflow_artifacts_dir / "models").iterdir()) / "artifacts"
    original = make_generator(1)
    substitute = make_generator(7)
    write_generator_data(models_b / MODEL_DATA, substitute, GENRES)
    generator, genres = load_champion(sqlite_tracking_uri(HomeLayout(home_b).mlflow_db), MODEL)
    assert genres == GENRES
    assert same_covers(generator, substitute) and not same_covers(generator, original)
    locations = recorded_locations(home_b)
    assert locations and all(HomeLayout(home_b).mlflow_artifacts_dir.as_uri() in uri for uri in locations)
    assert all(str(home_b) not in uri for uri in recorded_locations(home_a))  # the original is untouched

    # The original gone entirely: the copy still loads, and a rerun registers into the copy only.
    shutil.rmtree(home_a.parent / "gone", ignore_errors=True)
    moved = home_a.parent / "gone"
    shutil.move(home_a, moved)
    try:
        load_champion(sqlite_tracking_uri(HomeLayout(home_b).mlflow_db), MODEL)
        result = register(home_b, make_generator(2), distance=5.0)
        assert result.is_champion and not home_a.exists()
    finally:
        shutil.move(moved, home_a)


def test_a_store_shared_by_another_home_is_not_rewritten(home_a, tmp_path):
    """Only a home that holds copies of the runs adopts them: a bare mlartifacts/ folder changes nothing."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "mlartifacts").mkdir(parents=True)
    shutil.copy(HomeLayout(home_a).mlflow_db, elsewhere / "mlflow.db")
    before = recorded_locations(elsewhere)
    load_champion(sqlite_tracking_uri(elsewhere / "mlflow.db"), MODEL)
    assert recorded_locations(elsewhere) == before


def test_model_uris_are_checked_before_anything_is_fetched(home_a, tmp_path):
    """Issue 11 probe: `--model-uri file:///etc` copied the whole tree, then raised a traceback."""
    uri = sqlite_tracking_uri(HomeLayout(home_a).mlflow_db)
    for bad in ("file:///etc", "/etc", "runs:/abc", "models:/", "s3://bucket/model", "models:/m-0123"):
        started = time.monotonic()
        with pytest.raises(
            InvalidModelURI, match="names no album_pipeline generator; give models:/NAME@ALIAS"
        ):
            load_champion(uri, MODEL, model_uri=bad)
        assert time.monotonic() - started < 5
    assert issubclass(InvalidModelURI, ConfigurationError)
    logged = next((HomeLayout(home_a).mlflow_artifacts_dir / "models").iterdir()) / "artifacts"
    by_folder, genres = load_champion(uri, MODEL, model_uri=str(logged))
    by_alias, _ = load_champion(uri, MODEL, model_uri=f"models:/{MODEL}@champion")
    assert genres == GENRES and same_covers(by_folder, by_alias)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "MLmodel").write_text("flavors:\n  sklearn: {}\n")
    with pytest.raises(InvalidModelURI):
        load_champion(uri, MODEL, model_uri=(tmp_path / "foreign").as_uri())


def test_an_unknown_scheme_is_one_sentence():
    with pytest.raises(RegistryStoreError, match="'foo://x' has a scheme MLflow does not support"):
        load_champion("foo://x", MODEL)


def test_an_unreachable_server_is_one_sentence_within_seconds():
    started = time.monotonic()
    with pytest.raises(RegistryStoreError, match="server at http://127.0.0.1:9 cannot be reached"):
        load_champion("http://127.0.0.1:9", MODEL)
    assert time.monotonic() - started < 10


def _answering(status: int | None) -> type[BaseHTTPRequestHandler]:
    """A handler that answers every request with ``status`` and no body, or (None) answers the health check
    and closes the connection on every API call, as a server that fails after the store check would."""

    class Answering(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            if status is None and self.path != "/health":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(status or 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    return Answering


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [503, 502, 504, None], ids=["503", "502", "504", "connection-dropped"])
def test_a_failing_server_is_retried_a_bounded_number_of_times(status):
    """MLflow's defaults (7 retries, backoff factor 2) wait minutes on a server that keeps answering 503.

    MLflow 3.18 surfaces the last unavailable answer as an MlflowException carrying the status, where earlier
    releases raised the retries' requests error: both are the same sentence.
    """
    started = time.monotonic()
    with _serving(_answering(status)) as uri:
        with pytest.raises(RegistryStoreError, match="stopped answering"):
            load_champion(uri, MODEL)
    assert time.monotonic() - started < 30


def test_the_bounds_yield_to_the_users_settings_and_are_put_back(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with store_session("http+unchecked://x", writes=False):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == HTTP_BOUNDS["MLFLOW_HTTP_REQUEST_TIMEOUT"]
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"


def test_a_damaged_store_is_one_sentence_at_once(tmp_path):
    """MLflow retried opening a store it could not read for over 100 s."""
    database = tmp_path / "mlflow.db"
    database.write_bytes(b"not a database " * 100)
    started = time.monotonic()
    with pytest.raises(RegistryStoreError, match="cannot be read .*move it aside"):
        load_champion(sqlite_tracking_uri(database), MODEL)
    assert time.monotonic() - started < 5


def _as_unprivileged_user() -> list[str]:
    """A command prefix that drops root, whose writes permissions would not stop."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot make a folder read-only")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def open_folder():
    """A folder any user may enter (pytest's own are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="album_pipeline_read_only_"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_read_only_home_is_one_sentence_at_once(open_folder):
    tmp_path = open_folder
    home = tmp_path / "read_only_home"
    home.mkdir()
    home.chmod(0o555)
    code = (
        "from album_pipeline.registry.mlflow_registry import load_champion, sqlite_tracking_uri\n"
        "from album_pipeline.registry.store import RegistryStoreError\n"
        "try:\n"
        f"    load_champion(sqlite_tracking_uri({str(home / 'mlflow.db')!r}), 'm')\n"
        "except RegistryStoreError as error:\n"
        "    print(error)\n"
    )
    package_root = str(Path(__file__).resolve().parents[2])
    environment = {**os.environ, "PYTHONPATH": package_root, "HOME": str(tmp_path)}
    started = time.monotonic()
    result = subprocess.run(
        [*_as_unprivileged_user(), sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120, env=environment, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert "cannot be created" in result.stdout and "not a writable folder" in result.stdout, result.stderr
