"""An MLflow run per GAN training stage, written while it trains, so that MLflow shows it live.

At the start: the settings (``TrainingConfig``, ``GanArchitecture``), the data's size and genres, and the device
and precision the run resolves to, as params. At every log entry of ``train_gan``: each of its numbers (losses,
images/s, instance noise, and whatever the loop adds later, such as an augmentation probability) as a metric at
its step. Every ``sample_every`` steps and at the end: a grid with one row per genre from the generator (its
moving average where the run keeps one), drawn from the same fixed inputs each time so that the grids show the
generator changing, logged with ``log_image(key=..., step=...)`` so that the run page's step slider walks
through them. CPU, memory, disk and GPU use come from MLflow's system metrics monitor where psutil is present.
The run ends FINISHED, FAILED (an exception) or KILLED (an interrupt).

The run id is kept beside the checkpoints (``layout.TRAINING_RUN_FILE``) with the run key, so a resumed stage
continues its run; when that run cannot be found (another store, deleted) a new run is tagged as resumed.
Finetuning's run is a child of pretraining's (``mlflow.parentRunId``), and the registration's run a child of
finetuning's: MLflow's runs table nests each under its parent, and a run's page links to its parent.

Only the client API is used (never the process-global active run or tracking URI), so training leaves nothing
behind that the registration or another asset in the process would trip over. The system metrics monitor is
the one ``mlflow.start_run(log_system_metrics=True)`` starts, built here for the client's run.

Tracking never stops training: a store that cannot be used at the start leaves the run untracked, and a call
that fails later is warned about once, after which MLflow is left alone for ``RETRY_AFTER_S`` seconds (a hung
server would otherwise cost every log entry its timeout) before it is tried again.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from album_pipeline.atomic import atomic_path
from album_pipeline.data.shards import ShardSet
from album_pipeline.layout import FINAL_CHECKPOINT, LATEST_CHECKPOINT, TRAINING_RUN_FILE
from album_pipeline.model.checkpoint import load_checkpoint
from album_pipeline.model.networks import GanArchitecture, Generator, generate_covers
from album_pipeline.model.sampling import cover_grid
from album_pipeline.registry.mlflow_registry import experiment_id_for, flatten_params, is_tracking_server
from album_pipeline.registry.store import adopt_moved_artifacts, store_session
from album_pipeline.sources.http import redact_url
from album_pipeline.training import checkpointing
from album_pipeline.training.compute import resolve_device, resolve_precision
from album_pipeline.training.distributed import SINGLE_PROCESS, ProcessGroupInfo
from album_pipeline.training.loop import TrainingConfig, TrainingSummary, train_gan

logger = logging.getLogger(__name__)

PARENT_RUN_TAG = "mlflow.parentRunId"  # what MLflow's UI nests runs by (mlflow.utils.mlflow_tags)
STAGE_TAG = "album_pipeline.stage"
RUN_KEY_TAG = "album_pipeline.run_key"
RESUMED_TAG = "album_pipeline.resumed"  # "true" on a run that continues a checkpoint of an earlier process
PRETRAIN_RUN_TAG = "album_pipeline.pretrain_run_id"
TRAINING_RUN_TAG = "album_pipeline.training_run_id"  # on a registration's run: the finetuning's run
SAMPLES_KEY = "samples"  # the log_image key of the per-genre grids
SAMPLE_SEED = 0  # every grid of a run draws the same latent codes and noise
RETRY_AFTER_S = 60.0
PARAMS_PER_CALL = 100  # MLflow's limit for params in one log_batch


def _doc(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class TrainingTracking:
    sample_every: int = _doc(
        500,
        "Steps between the per-genre sample grids logged to the MLflow run (and one at the end); 0: only "
        "at the end.",
    )
    sample_columns: int = _doc(8, "Covers per genre in each sample grid.")
    system_metrics: bool = _doc(True, "Log CPU, memory, disk and GPU use to the run (needs psutil).")

    def __post_init__(self) -> None:
        if self.sample_every < 0:
            raise ValueError(
                f"sample_every must be 0 (only at the end) or a number of steps, got {self.sample_every}"
            )
        if not 1 <= self.sample_columns <= 64:
            raise ValueError(f"sample_columns must be between 1 and 64, got {self.sample_columns}")


@dataclass(frozen=True)
class TrackingStore:
    """Where training runs go; ``artifact_location`` holds an sqlite store's artifacts (a server keeps its own)."""

    tracking_uri: str
    experiment_name: str
    artifact_location: Path


class TrainingRun:
    """The MLflow run of one training stage: the ``log`` callback and the observer of ``train_gan``.

    ``run_id`` is None when the run is not tracked (the store could not be used; a warning said why).
    """

    def __init__(self, store: TrackingStore, options: TrainingTracking, warn: Callable[[str], None]):
        self.store = store
        self.options = options
        self.warn = warn
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.continued = False  # the run of an earlier process of this stage, continued
        self.failed_calls = 0
        self._client = None
        self._num_genres = 0
        self._paused_until = 0.0

    @property
    def url(self) -> str | None:
        """The run's page on a tracking server; None for a local store (open it with ``mlflow ui``)."""
        if self.run_id is None or not is_tracking_server(self.store.tracking_uri):
            return None
        base = redact_url(self.store.tracking_uri).rstrip("/")
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def log(self, entry: Mapping[str, Any]) -> None:
        """One log entry of ``train_gan``: every number in it but the step, as metrics at that step."""
        from mlflow.entities import Metric

        step = int(entry["step"])
        now = int(time.time() * 1000)
        metrics = [
            Metric(name, float(value), now, step)
            for name, value in entry.items()
            if name != "step" and isinstance(value, int | float) and not isinstance(value, bool)
        ]
        self._call("log metrics", lambda: self._client.log_batch(self.run_id, metrics=metrics))

    def samples_due(self, step: int, total_steps: int) -> bool:
        if self.run_id is None:
            return False
        every = self.options.sample_every
        return step == total_steps or (every > 0 and step % every == 0)

    def on_samples(self, step: int, generator: Generator) -> None:
        """A grid of ``sample_columns`` covers per genre row, logged as the run's image at ``step``."""

        def log_grid() -> None:
            genres = np.repeat(np.arange(self._num_genres), self.options.sample_columns)
            with (
                torch.no_grad()
            ):  # generate_covers draws from its own seeded generator, not torch's global one
                covers = generate_covers(generator, genres.tolist(), seed=SAMPLE_SEED).numpy()
            grid = cover_grid(covers, self.options.sample_columns)
            self._client.log_image(self.run_id, grid, key=SAMPLES_KEY, step=step)

        self._call("log a sample grid", log_grid)

    def record_summary(self, summary: TrainingSummary) -> None:
        tags = {"album_pipeline.steps_this_run": str(summary.steps_this_run)}
        if summary.resumed_from_step:
            tags |= {RESUMED_TAG: "true", "album_pipeline.resumed_from_step": str(summary.resumed_from_step)}
        self._call("tag the run", lambda: _set_tags(self._client, self.run_id, tags))

    def _call(self, what: str, action: Callable[[], Any]) -> None:
        if self.run_id is None:
            return
        if time.monotonic() < self._paused_until:
            self.failed_calls += 1
            return
        try:
            action()
        except Exception as error:  # whatever MLflow or the store raise: training goes on
            self.failed_calls += 1
            self._paused_until = time.monotonic() + RETRY_AFTER_S
            self.warn(
                f"MLflow: could not {what} for run {self.run_id} ({type(error).__name__}: {error}); "
                f"training goes on, and MLflow is tried again in {RETRY_AFTER_S:.0f} s"
            )


@contextmanager
def tracked_training(
    store: TrackingStore,
    *,
    stage: str,
    checkpoint_dir: Path,
    run_key: str,
    params: Mapping[str, Any],
    num_genres: int,
    options: TrainingTracking = TrainingTracking(),
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Iterator[TrainingRun]:
    """The stage's MLflow run for the block: continued when ``checkpoint_dir`` records one of ``run_key``,
    else new; ended FINISHED, FAILED or KILLED by how the block ends. Never raises for MLflow's sake."""
    run = TrainingRun(store, options, warn or logger.warning)
    run._num_genres = num_genres
    with ExitStack() as session:
        monitor = None
        try:
            local = None if is_tracking_server(store.tracking_uri) else Path(store.artifact_location)
            session.enter_context(store_session(store.tracking_uri, writes=True, artifact_location=local))
            if local is not None:
                adopt_moved_artifacts(store.tracking_uri, local)
            _start(run, local, stage, Path(checkpoint_dir), run_key, params, parent_run_id, dict(tags or {}))
            monitor = _system_monitor(run)
        except Exception as error:
            run.warn(
                f"MLflow: training is not tracked ({type(error).__name__}: {error}); fix the store to see the "
                "next run live (the registration will need it too)"
            )
            if run.run_id is not None:  # created, then a later call failed: it must not stay RUNNING
                run._call("end the run", lambda: run._client.set_terminated(run.run_id, "FAILED"))
            run.run_id = None
        status = "FAILED"
        try:
            yield run
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if monitor is not None:
                monitor.finish()
            run._paused_until = 0.0  # the end is always tried, so that the run does not stay RUNNING
            run._call("end the run", lambda: run._client.set_terminated(run.run_id, status))


def _start(
    run: TrainingRun,
    local_artifacts: Path | None,
    stage: str,
    checkpoint_dir: Path,
    run_key: str,
    params: Mapping[str, Any],
    parent_run_id: str | None,
    tags: dict[str, str],
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=run.store.tracking_uri)
    run._client = client
    run.experiment_id = experiment_id_for(client, run.store.experiment_name, local_artifacts)
    existing = _continuable_run(client, checkpoint_dir, run_key, run.experiment_id)
    if existing is not None:
        run.run_id, run.continued = existing.info.run_id, True
        client.update_run(run.run_id, status="RUNNING")
        known_params = existing.data.params
        tags[RESUMED_TAG] = "true"
    else:
        known_params = {}
        tags |= {STAGE_TAG: stage, RUN_KEY_TAG: run_key}
        if _resumes_checkpoint(checkpoint_dir, run_key):
            tags[RESUMED_TAG] = "true"
        if parent_run_id is not None and _run_exists(client, parent_run_id, run.experiment_id):
            tags |= {PARENT_RUN_TAG: parent_run_id, PRETRAIN_RUN_TAG: parent_run_id}
        run.run_id = client.create_run(run.experiment_id, tags=tags, run_name=stage).info.run_id
        tags = {}
    _write_record(checkpoint_dir / TRAINING_RUN_FILE, run.run_id, run_key)
    _set_tags(client, run.run_id, tags)
    _log_params(client, run.run_id, {k: v for k, v in params.items() if k not in known_params})


def _system_monitor(run: TrainingRun):
    """MLflow's system metrics monitor for the run (as start_run(log_system_metrics=True)); None without psutil."""
    if not run.options.system_metrics or importlib.util.find_spec("psutil") is None:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run.run_id, resume_logging=run.continued, tracking_uri=run.store.tracking_uri
    )
    monitor.start()
    return monitor


def _continuable_run(client, checkpoint_dir: Path, run_key: str, experiment_id: str):
    """The run recorded beside the checkpoints, if it tracked this very run key and a checkpoint to resume
    exists (latest.pt stays after the end too); None otherwise."""
    from mlflow.exceptions import MlflowException

    record = _read_record(checkpoint_dir / TRAINING_RUN_FILE)
    if (
        record is None
        or record.get("run_key") != run_key
        or not (checkpoint_dir / LATEST_CHECKPOINT).is_file()
    ):
        return None
    try:
        existing = client.get_run(str(record["run_id"]))
    except MlflowException:
        return None  # another store, or the run was purged
    if existing.info.lifecycle_stage != "active" or existing.info.experiment_id != experiment_id:
        return None
    return existing


def _resumes_checkpoint(checkpoint_dir: Path, run_key: str) -> bool:
    latest = checkpoint_dir / LATEST_CHECKPOINT
    return latest.is_file() and _checkpoint_run_key(latest) == run_key


def _checkpoint_run_key(path: Path) -> str | None:
    try:
        return load_checkpoint(path).get("run_key")
    except Exception:  # unreadable: train_gan sets it aside and says so
        return None


def _run_exists(client, run_id: str, experiment_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_run(run_id)
    except MlflowException:
        return False
    return found.info.lifecycle_stage == "active" and found.info.experiment_id == experiment_id


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "run_id" in record else None


def _write_record(path: Path, run_id: str, run_key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"run_id": run_id, "run_key": run_key}) + "\n")


def _set_tags(client, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    if tags:
        client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])


def _log_params(client, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(items), PARAMS_PER_CALL):
        client.log_batch(run_id, params=items[start : start + PARAMS_PER_CALL])


def stage_run_id(checkpoint_dir: Path) -> str | None:
    """The MLflow run that trained the stage's final checkpoint, if it recorded one (None: untracked, or the
    record belongs to another run of the stage)."""
    record = _read_record(Path(checkpoint_dir) / TRAINING_RUN_FILE)
    if record is None or _checkpoint_run_key(Path(checkpoint_dir) / FINAL_CHECKPOINT) != record.get(
        "run_key"
    ):
        return None
    return str(record["run_id"])


def registration_tags(checkpoint_dir: Path) -> dict[str, str]:
    """Tags that nest a registration's run under the run that trained the checkpoint it registers."""
    run_id = stage_run_id(checkpoint_dir)
    return {} if run_id is None else {PARENT_RUN_TAG: run_id, TRAINING_RUN_TAG: run_id}


def training_params(
    data: ShardSet, arch: GanArchitecture, config: TrainingConfig, *, use_labels: bool
) -> dict[str, str]:
    """A stage's MLflow params: settings, architecture, data, and the device and precision it resolves to."""
    try:
        device = resolve_device(config.device)
        resolved = {"device": str(device), "precision": resolve_precision(config.precision, device)}
    except ValueError:  # train_gan refuses the device with its own message
        resolved = {}
    values = {
        "config": config.to_dict(),
        "arch": arch.to_dict(),
        "data": {"images": len(data), "genres": list(data.genres), "use_labels": use_labels},
        **resolved,
    }
    return flatten_params(values)


def train_tracked(
    data: ShardSet,
    arch: GanArchitecture,
    config: TrainingConfig,
    checkpoint_dir: Path,
    *,
    store: TrackingStore,
    stage: str,
    use_labels: bool,
    options: TrainingTracking = TrainingTracking(),
    init_checkpoint: Path | None = None,
    log: Callable[[dict], None] | None = None,
    warn: Callable[[str], None] | None = None,
    tags: Mapping[str, str] | None = None,
    process_group: ProcessGroupInfo = SINGLE_PROCESS,
    progress_log: Callable[[str], None] | None = None,
    progress_bar: bool | None = None,
) -> tuple[TrainingSummary, TrainingRun]:
    """``train_gan`` with its MLflow run (see the module docstring); a run started from ``init_checkpoint``
    is a child of the run that trained it."""
    rows = data.labelled() if use_labels else data
    run_key = checkpointing.run_key(rows, arch, config, use_labels, init_checkpoint)
    parent = stage_run_id(Path(init_checkpoint).parent) if init_checkpoint is not None else None
    params = training_params(rows, arch, config, use_labels=use_labels)
    if init_checkpoint is not None:
        params["init_checkpoint"] = str(init_checkpoint)

    with tracked_training(
        store,
        stage=stage,
        checkpoint_dir=checkpoint_dir,
        run_key=run_key,
        params=params,
        num_genres=arch.num_genres,
        options=options,
        parent_run_id=parent,
        tags=tags,
        warn=warn,
    ) as run:

        def log_entry(entry: dict) -> None:
            if log is not None:
                log(entry)
            run.log(entry)

        summary = train_gan(
            data,
            arch,
            config,
            checkpoint_dir,
            use_labels=use_labels,
            init_checkpoint=init_checkpoint,
            log=log_entry,
            warn=warn,
            observer=run,
            process_group=process_group,
            progress_log=progress_log,
            progress_bar=progress_bar,
        )
        run.record_summary(summary)
    return summary, run
