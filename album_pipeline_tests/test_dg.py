"""The `dg` CLI loads the project from pyproject.toml's [tool.dg] table, and plain `dagster` finds the same code
location whether it reads that table (the repository root's default) or workspace.yaml."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from album_pipeline_tests.dagster_dev import free_port, wait_until_served
from album_pipeline_tests.processes import stop_process_group

REPOSITORY = Path(__file__).resolve().parents[1]
LOCATION = "album_pipeline.definitions"


def _dg() -> str | None:
    beside_python = Path(sys.executable).with_name("dg")
    return str(beside_python) if beside_python.exists() else shutil.which("dg")


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{REPOSITORY}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=300)


NO_DG = 'the dg CLI is not installed; it comes with the test extras: pip install -e ".[test]"'


@pytest.mark.skipif(_dg() is None, reason=NO_DG)
def test_dg_check_defs_passes():
    result = _run([_dg(), "check", "defs"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully." in result.stdout


@pytest.mark.skipif(_dg() is None, reason=NO_DG)
def test_dg_list_defs_lists_the_pipelines_assets():
    result = _run([_dg(), "list", "defs", "--json"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "finetuned_generator" in result.stdout and "labeled_manifest" in result.stdout


@pytest.mark.parametrize("target", [[], ["-w", "workspace.yaml"]], ids=["tool.dg", "workspace.yaml"])
def test_dagster_loads_the_same_location_from_tool_dg_and_from_workspace_yaml(target):
    result = _run([sys.executable, "-m", "dagster", "definitions", "validate", *target])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Validation successful for code location {LOCATION}." in result.stdout + result.stderr


@pytest.mark.skipif(_dg() is None, reason=NO_DG)
def test_dg_dev_serves_the_pipeline_from_the_tool_dg_table(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPOSITORY / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    # dg starts its code server with the `dagster` beside the active Python, as a project's venv would have it.
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=f"{REPOSITORY}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    )
    log_path = home / "dg_dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [_dg(), "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPOSITORY,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            locations = wait_until_served(process, port, 180, log_path)
        finally:
            stop_process_group(process, 20)
    assert locations == [LOCATION]
