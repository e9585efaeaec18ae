"""Probes of issue 11, run end to end against the `album-pipeline` command on small fixtures.

Each probe runs the real CLI in a fresh interpreter, as a user would, with the pipeline home and every source
pointed at the test's own folders and loopback emulators; ``assert_clear_error`` holds a failure to one or two
sentences with no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from album_pipeline import settings


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """`album-pipeline ARGS` with ``home`` as ALBUM_PIPELINE_HOME, no stdin, and only ``env`` added."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not (name.endswith("_URL") or name.startswith(("NAPSTER", "MUSICBRAINZ", "COVERART", "MLFLOW")))
    }
    environment.pop("DAGSTER_HOME", None)
    environment[settings.HOME_VAR] = str(home)
    environment.update(env or {})
    completed = subprocess.run(
        [sys.executable, "-m", "album_pipeline.cli", *args],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def assert_clear_error(result: CliResult, *expected: str) -> None:
    """A refusal: non-zero exit, no traceback, a short message that contains every ``expected`` fragment."""
    assert result.returncode != 0, result.output
    assert "Traceback" not in result.output, result.output
    message = result.stderr.strip()
    assert message, result.output
    assert len(message) < 600, f"a message, not a dump: {message[:2000]}"
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.fixture
def cli(tmp_path):
    """``cli(*args, env=...)``: the CLI on a fresh home under the test's folder (``cli.home``)."""
    home = tmp_path / "home"

    def call(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
        return run_cli(*args, home=home, env=env, timeout=timeout)

    call.home = home
    return call
