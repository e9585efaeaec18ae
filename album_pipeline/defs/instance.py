"""The persistent Dagster instance the CLI and `dagster dev` share: created safely, and cleared of dead runs.

Two processes that open a fresh instance at once both create its sqlite storage and stamp its schema, which
can leave ``runs.db`` with two ``alembic_version`` rows that no later run gets past. So the instance is opened
under an exclusive lock on a file in its folder: the second process waits and then finds a ready instance.

A run whose process was killed (SIGKILL, power cut) never reports its end and would stay STARTED for ever.
Each run the CLI launches records its host, pid and the pid's start time in tags; on the next start, a run
still STARTED whose process is gone is marked failed with a message saying it was interrupted. A run without
those tags (launched from the UI) or whose process still lives is left alone.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml

from album_pipeline.layout import DAGSTER_INSTANCE_FILE, DAGSTER_LOCK_FILE

# The training and evaluation assets share the pool `gpu`: one of its steps runs at a time (across runs too), so
# two trainings never share a GPU. The crawl and download assets share `crawl`: two at once lets Napster and
# MusicBrainz crawl side by side (each keeps its own rate limit) while archive.org downloads stay polite.
# dagster.yaml can only set a default limit, so these live in the instance's storage, set on first open and
# never over a limit someone set (`dagster instance concurrency set gpu 2` where a machine has several GPUs).
GPU_POOL = "gpu"
CRAWL_POOL = "crawl"
POOL_LIMITS = {GPU_POOL: 1, CRAWL_POOL: 2}
# The instance's settings, also in the repository's dagster.yaml (a test keeps the two equal). Runs from the UI
# queue; four at a time bounds memory (each run is a process that imports torch). A pool without a limit of
# its own gets 1, the safe choice for an unknown pool.
INSTANCE_SETTINGS = {
    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"},
    "concurrency": {"pools": {"default_limit": 1, "granularity": "op"}, "runs": {"max_concurrent_runs": 4}},
    "telemetry": {"enabled": False},
}
INSTANCE_YAML = yaml.safe_dump(INSTANCE_SETTINGS, sort_keys=False)
# A team shares one instance: runs, event logs (materializations, pool slots) and schedules in PostgreSQL, the
# same run queue and pools as above. The URL stays out of the file (it holds a password).
POSTGRES_URL_VAR = "DAGSTER_POSTGRES_URL"
# What earlier releases wrote; such a file is ours, not the user's, and is brought up to date.
_EARLIER_INSTANCE_YAML = (
    "telemetry:\n  enabled: false\n",
    "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n",
)


def team_instance_settings() -> dict:
    """dagster.yaml of an instance a team shares (deploy/dagster-team.yaml; a test keeps the two equal)."""
    return {"storage": {"postgres": {"postgres_url": {"env": POSTGRES_URL_VAR}}}, **INSTANCE_SETTINGS}


HOST_TAG = "album_pipeline/host"
PID_TAG = "album_pipeline/pid"
PID_STARTED_TAG = "album_pipeline/pid_started"


@contextmanager
def instance_lock(dagster_home: Path) -> Iterator[None]:
    """An exclusive lock on ``dagster_home``'s lock file, held for the block (waits for another holder)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    with open(dagster_home / DAGSTER_LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def open_instance(dagster_home: Path) -> dg.DagsterInstance:
    """The instance in ``dagster_home``, its config and storage created once, under the lock."""
    with instance_lock(dagster_home):
        config = dagster_home / DAGSTER_INSTANCE_FILE
        if not config.exists() or config.read_text() in _EARLIER_INSTANCE_YAML:
            config.write_text(INSTANCE_YAML)
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        # Constructing the instance creates and stamps the run, event-log and schedule databases; one query
        # each makes sure they are usable before the lock is let go.
        instance.get_runs(limit=1)
        instance.event_log_storage.get_latest_materialization_events([dg.AssetKey("_")])
        if instance.schedule_storage is not None:
            instance.schedule_storage.all_instigator_state()
        set_pool_limits(instance)
        return instance


def set_pool_limits(instance: dg.DagsterInstance) -> None:
    """Gives each of POOL_LIMITS' pools its limit, unless the pool already has one set."""
    storage = instance.event_log_storage
    already_set = {pool.name for pool in storage.get_pool_limits() if not pool.from_default}
    for pool, limit in POOL_LIMITS.items():
        if pool not in already_set:
            storage.set_concurrency_slots(pool, limit)


def _process_started(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def launch_tags() -> dict[str, str]:
    """Tags naming this process, added to every run the CLI launches."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    started = _process_started(pid)
    if started is not None:
        tags[PID_STARTED_TAG] = started
    return tags


def _process_alive(tags: dict[str, str]) -> bool:
    try:
        pid = int(tags[PID_TAG])
    except (KeyError, ValueError):
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    recorded = tags.get(PID_STARTED_TAG)
    current = _process_started(pid)
    # Same pid, later start: the pid was reused after the run's process died.
    return recorded is None or current is None or recorded == current


def fail_interrupted_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every run this host's CLI started whose process is gone; returns their run ids."""
    host = socket.gethostname()
    filters = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    interrupted = []
    for run in instance.get_runs(filters=filters):
        tags = dict(run.tags)
        if tags.get(HOST_TAG) != host or PID_TAG not in tags or _process_alive(tags):
            continue
        instance.report_run_failed(
            run,
            message=f"interrupted: the process that ran it (pid {tags[PID_TAG]}) ended without reporting; "
            "outputs it finished are kept, and rerunning continues from them",
        )
        interrupted.append(run.run_id)
    return interrupted
