"""Run one of MLflow's own servers (`mlflow server`, `mlflow models serve`) on loopback for a test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from album_pipeline_tests.processes import stop_process_group

# Importing mlflow, torch and uvicorn on a busy two-core machine takes a while.
STARTUP_TIMEOUT_S = 180.0


def search_path() -> str:
    """PATH with this interpreter's bin folder first: the mlflow CLI and the uvicorn it starts sit there even
    when that folder is not on PATH."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def mlflow_cli() -> str | None:
    return shutil.which("mlflow", path=search_path())


def tracking_server_arguments(command: str, backend_store_uri: str, port: int, *options: str) -> list[str]:
    """`mlflow server` on loopback with one worker (light on a two-core machine), with ``options`` added."""
    arguments = [command, "server", "--backend-store-uri", backend_store_uri, *options]
    return [*arguments, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def running(
    command: Sequence[str], *, ready_url: str, log: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> Iterator[None]:
    """``command`` running until the block ends, once ``ready_url`` answers 200; the test fails with the log's
    tail if it exits or never answers."""
    with open(log, "wb") as output:
        # A session of its own: the CLI forks workers (uvicorn, gunicorn), and teardown stops them and nothing else.
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(ready_url):
            if process.poll() is not None:
                pytest.fail(
                    f"`{' '.join(command[:3])}` exited with {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{ready_url} did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield
    finally:
        stop_process_group(process, 30)
