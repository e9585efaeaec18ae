"""Issue 11 probes of the MLflow store, model URIs and secrets, run against `album-pipeline` as a user would."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from album_pipeline.layout import HomeLayout
from album_pipeline.model.networks import GanArchitecture, Generator
from album_pipeline.registry.mlflow_registry import DEFAULT_MODEL_NAME, log_and_register, sqlite_tracking_uri
from album_pipeline_tests.probes.conftest import assert_clear_error, run_cli
from album_pipeline_tests.registry.gate_metrics import passing_metrics


@pytest.fixture(scope="module")
def registered_home(tmp_path_factory) -> Path:
    """A home whose store holds a tiny champion, registered as the pipeline registers one."""
    home = tmp_path_factory.mktemp("registry_probes") / "home_a"
    layout = HomeLayout(home)
    layout.evaluation_dir.mkdir(parents=True)
    layout.evaluation_grid.write_bytes(b"\x89PNG stand-in")
    layout.evaluation_metrics.write_text(json.dumps({"metrics": passing_metrics()}))
    torch.manual_seed(0)
    log_and_register(
        tracking_uri=sqlite_tracking_uri(layout.mlflow_db),
        experiment_name="album_pipeline",
        artifact_location=layout.mlflow_artifacts_dir,
        model_name=DEFAULT_MODEL_NAME,
        generator=Generator(GanArchitecture(num_genres=2, generator_width=8, noise_dim=16)).eval(),
        genres=["rock", "jazz"],
        params={},
        metrics=passing_metrics(),
        artifacts=[layout.evaluation_grid, layout.evaluation_metrics],
    )
    return home


def test_generate_against_an_unreachable_server_is_one_sentence_within_seconds(cli):
    started = time.monotonic()
    result = cli("generate", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, timeout=120)
    assert time.monotonic() - started < 30, "MLflow's own retries took minutes"
    assert_clear_error(result, "http://127.0.0.1:9 cannot be reached", "MLFLOW_TRACKING_URI")


def test_generate_with_an_unknown_store_scheme_is_one_sentence(cli):
    result = cli("generate", env={"MLFLOW_TRACKING_URI": "foo://x"}, timeout=120)
    assert_clear_error(result, "'foo://x' has a scheme MLflow does not support")
    assert "KeyError" not in result.output


def test_generate_with_a_model_uri_naming_no_generator_fetches_nothing(registered_home, tmp_path):
    started = time.monotonic()
    result = run_cli(
        "generate", "--model-uri", "file:///etc", "--out", str(tmp_path / "covers"), home=registered_home
    )
    assert time.monotonic() - started < 60
    assert_clear_error(result, "'file:///etc' names no album_pipeline generator", "models:/NAME@ALIAS")
    assert not (tmp_path / "covers").exists()


def test_a_copied_home_generates_from_its_own_model(registered_home, tmp_path):
    """The original's artifacts gone: the copy must not need them (it used to read the original's model)."""
    copy = tmp_path / "home_b"
    shutil.copytree(registered_home, copy)
    shutil.rmtree(tmp_path / "moved", ignore_errors=True)
    shutil.move(registered_home / "mlartifacts", tmp_path / "moved")
    try:
        out = tmp_path / "covers"
        result = run_cli("generate", "--count", "2", "--out", str(out), home=copy, timeout=300)
        assert result.returncode == 0, result.output
        assert (out / "grid.png").is_file() and "Traceback" not in result.output
    finally:
        shutil.move(tmp_path / "moved", registered_home / "mlartifacts")


@pytest.fixture
def unprivileged_python(monkeypatch):
    """run_cli as an ordinary user: as root, permissions would not make a home read-only."""
    if os.geteuid() != 0:
        yield
        return
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv")
    folder = Path(tempfile.mkdtemp(prefix="album_pipeline_probe_"))
    folder.chmod(0o755)
    wrapper = folder / "python"
    wrapper.write_text(
        f'#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_generate_on_a_read_only_home_is_one_sentence_at_once(unprivileged_python):
    """MLflow retried creating its sqlite file in a read-only home for over 100 s."""
    base = Path(tempfile.mkdtemp(prefix="album_pipeline_ro_"))
    try:
        base.chmod(0o755)
        home = base / "home"
        home.mkdir()
        home.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        out = base / "out"  # a folder the unprivileged user may write, so the home is what is refused
        out.mkdir()
        out.chmod(0o777)
        started = time.monotonic()
        result = run_cli("generate", "--out", str(out / "covers"), home=home, env={"HOME": str(base)})
        assert time.monotonic() - started < 60
        assert_clear_error(result)
        assert "writable" in result.stderr or "read-only" in result.stderr, result.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_napster_key_with_a_line_break_is_refused_without_showing_it(cli):
    """Issue 11 probe 7: the key was printed verbatim and the service blamed."""
    key = "sekrit-probe-key\r\nX-Evil: 1"
    result = cli(
        "run", "--select", "napster_covers",
        env={"NAPSTER_API_KEY": key, "NAPSTER_API_URL": "http://127.0.0.1:9"},
        timeout=300,
    )  # fmt: skip
    assert_clear_error(result, "NAPSTER_API_KEY contains a line break")
    assert "sekrit-probe-key" not in result.output
    assert "Napster API at" not in result.output  # the setting is at fault, not the service
