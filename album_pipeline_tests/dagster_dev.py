"""`dagster dev` as a user starts it, on a temporary copy of the repository's dagster.yaml, for the tests of
the instance: a stand-in code location (a module of tiny assets) keeps each start to seconds and off the
network, since what is under test is the instance's configuration, not the pipeline's assets."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from album_pipeline_tests.processes import stop_process_group

REPOSITORY = Path(__file__).resolve().parents[1]
STAND_IN_MODULE = "instance_stand_in"
# Two assets in pool `gpu`: one that holds its step long enough for a second run's step to try to start
# meanwhile, and one that really trains the GAN (the project's train_gan, a few steps at tiny widths on random
# covers), for the test that two training runs never overlap.
STAND_IN_SOURCE = textwrap.dedent(
    """
    import tempfile
    import time
    from pathlib import Path

    import dagster as dg
    import numpy as np

    from album_pipeline.model.networks import GanArchitecture
    from album_pipeline.testing.shards import write_shard_set_from_arrays
    from album_pipeline.training.loop import TrainingConfig, train_gan

    GENRES = ("rock", "jazz", "pop", "rap-hip-hop", "classical")


    @dg.asset(pool="gpu")
    def stand_in_training() -> None:
        time.sleep(3)


    @dg.asset(pool="gpu")
    def tiny_training() -> dg.MaterializeResult:
        with tempfile.TemporaryDirectory() as folder:
            images = np.random.default_rng(0).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
            data = write_shard_set_from_arrays(Path(folder) / "shards", images, np.arange(40) % 5, GENRES)
            summary = train_gan(
                data,
                GanArchitecture(num_genres=5, noise_dim=8, generator_width=16, discriminator_width=4),
                TrainingConfig(steps=40, batch_size=8, log_every=10, checkpoint_every=40, precision="fp32"),
                Path(folder) / "checkpoints",
                use_labels=True,
            )
        return dg.MaterializeResult(metadata={"steps": summary.steps_this_run})


    defs = dg.Definitions(
        assets=[stand_in_training, tiny_training],
        jobs=[
            dg.define_asset_job("stand_in_training_job", "stand_in_training"),
            dg.define_asset_job("tiny_training_job", "tiny_training"),
        ],
    )
    """
)
STAND_IN_JOB = "stand_in_training_job"
TRAINING_JOB = "tiny_training_job"


def stand_in_home(folder: Path) -> Path:
    """A Dagster home in ``folder``: the repository's dagster.yaml (its storage relative to ``folder``, the
    working directory below) and the stand-in module beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPOSITORY / "dagster.yaml", folder / "dagster.yaml")
    (folder / f"{STAND_IN_MODULE}.py").write_text(STAND_IN_SOURCE)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def dagster_dev(
    home: Path,
    timeout: float = 120,
    *,
    module: str = STAND_IN_MODULE,
    port: int | None = None,
    environment: Mapping[str, str] | None = None,
) -> Iterator[DagsterGraphQLClient]:
    """`dagster dev` (webserver, daemon, code server) on ``home`` serving ``module`` (the stand-in unless told
    otherwise; the browser tests serve the real definitions), with ``environment`` added to this process's;
    yields a GraphQL client once it serves the location, and kills the whole process group on the way out."""
    port = port or free_port()
    env = dict(
        os.environ,
        **(environment or {}),
        DAGSTER_HOME=str(home),
        PYTHONPATH=f"{home}{os.pathsep}{REPOSITORY}",
    )
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-m",
        module,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log = open(home / f"dagster_dev_{port}.log", "wb")  # noqa: SIM115 - closed in the finally
    process = subprocess.Popen(
        command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=30)
        wait_until_served(process, port, timeout, home / log.name)
        yield client
    finally:
        stop_process_group(process, 20)
        log.close()


def wait_until_served(process: subprocess.Popen, port: int, timeout: float, log: Path) -> list[str]:
    """Waits until the webserver on ``port`` has loaded every code location; returns their names."""
    deadline = time.monotonic() + timeout
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            answer = requests.post(
                f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=5
            ).json()
            entries = answer["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                return [entry["name"] for entry in entries]
        except (requests.RequestException, KeyError, TypeError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"dagster dev did not serve its location in {timeout} s:\n{log.read_text()[-3000:]}")


def wait_for_runs(client: DagsterGraphQLClient, run_ids: list[str], timeout: float = 120) -> dict[str, str]:
    """Each run's final status (its name), waiting until all have ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            statuses = {run_id: client.get_run_status(run_id) for run_id in run_ids}
        except DagsterGraphQLClientError:
            statuses = {}
        if statuses and all(status in FINISHED_STATUSES for status in statuses.values()):
            return {run_id: status.value for run_id, status in statuses.items()}
        time.sleep(0.5)
    raise AssertionError(f"runs {run_ids} did not end within {timeout} s")
