"""``python -m album_pipeline.training``: one training stage as its own program, for torchrun and Dagster Pipes.

    torchrun --nproc-per-node 2 -m album_pipeline.training --stage pretrain --home HOME --set steps=200

trains the stage the ``pretrained_generator`` (``finetuned_generator``) asset trains, on the pipeline home's
training shards, into its checkpoint folder. ``--set field=value`` takes any ``TrainingConfig`` field (and,
when pretraining, any ``GanArchitecture`` field but the two the data fixes); values are JSON (``null``,
``[0.5, 0.99]``), anything else a string. Unset fields take the core defaults, not a Dagster profile's.
Without torchrun's environment it trains in this one process. Rank 0 prints each log entry and a JSON
summary, or, when Dagster launched it through Pipes, sends them to the asset (logs and its materialisation).
With ``MLFLOW_TRACKING_URI`` set (and optionally ``MLFLOW_EXPERIMENT_NAME``), rank 0 also trains with the
stage's live MLflow run (``registry.training_run``), as the in-process asset does; the training assets set
both for the job, so the URI (which may hold credentials) never appears on a command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from album_pipeline.data.shards import load_shards
from album_pipeline.layout import HomeLayout
from album_pipeline.model.checkpoint import checkpoint_architecture
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.settings import DEFAULT_EXPERIMENT, MLFLOW_EXPERIMENT_VAR, MLFLOW_URI_VAR
from album_pipeline.training.checkpointing import REPRETRAIN
from album_pipeline.training.config import TrainingConfig
from album_pipeline.training.distributed import ProcessGroupInfo, start_process_group, stop_process_group
from album_pipeline.training.loop import TrainingSummary, format_log_entry, train_gan

STAGES = ("pretrain", "finetune")
# The architecture fields the training data decides.
DATA_FIXED_FIELDS = frozenset({"num_genres", "resolution"})


def training_command(
    python: str, stage: str, home: Path | str, processes: int, settings: dict[str, Any]
) -> list[str]:
    """The command that trains ``stage`` with ``settings`` in ``processes`` processes on this machine.

    ``python -m torch.distributed.run`` is ``torchrun`` of the same environment; ``--standalone`` lets it pick
    a free port, so several runs on one machine do not collide.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    command = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command += ["-m", "album_pipeline.training", "--stage", stage, "--home", str(home)]
    for name, value in settings.items():
        command += ["--set", f"{name}={json.dumps(list(value) if isinstance(value, tuple) else value)}"]
    return command


def changed_settings(*settings: Any) -> dict[str, Any]:
    """The fields of the ``settings`` dataclasses that differ from their defaults (``--set`` for each)."""
    changed = {}
    for values in settings:
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if f.init and f.name not in DATA_FIXED_FIELDS and value != f.default:
                changed[f.name] = value
    return changed


def parse_settings(assignments: Sequence[str], stage: str) -> tuple[TrainingConfig, dict[str, Any]]:
    """The ``TrainingConfig`` and the architecture fields (pretraining only) that ``--set`` assignments give."""
    targets = [TrainingConfig] + ([GanArchitecture] if stage == "pretrain" else [])
    fields = {f.name: f for target in targets for f in dataclasses.fields(target) if f.init}
    values: dict[str, dict[str, Any]] = {target.__name__: {} for target in targets}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep:
            raise ValueError(f"--set {assignment!r} is not field=value; write e.g. --set steps=200")
        if name in DATA_FIXED_FIELDS:
            raise ValueError(f"{name} is fixed by the training shards; leave it out")
        if name not in fields:
            hint = "finetuning keeps the pretrained architecture; " if stage == "finetune" else ""
            raise ValueError(f"--set {name}: not a setting; {hint}choose one of {', '.join(sorted(fields))}")
        value = _parse_value(text)
        if isinstance(fields[name].default, tuple) and isinstance(value, list):
            value = tuple(value)
        owner = next(target for target in targets if name in {f.name for f in dataclasses.fields(target)})
        values[owner.__name__][name] = value
    return TrainingConfig(**values["TrainingConfig"]), values.get("GanArchitecture", {})


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_stage(
    stage: str,
    layout: HomeLayout,
    config: TrainingConfig,
    arch_settings: dict[str, Any],
    *,
    process_group: ProcessGroupInfo,
    log: Callable[[dict], None] | None,
    warn: Callable[[str], None] | None,
    progress_log: Callable[[str], None] | None = None,
) -> TrainingSummary:
    """Train ``stage`` as its asset does: on the home's shards, into the stage's checkpoint folder."""
    observers = {"log": log, "warn": warn, "process_group": process_group, "progress_log": progress_log}
    if stage == "pretrain":
        data = load_shards(layout.training_data("unlabeled"))
        arch = GanArchitecture(**arch_settings, num_genres=len(data.genres), resolution=data.resolution)
        checkpoint_dir, extra = layout.checkpoint_dir("pretrained"), {"use_labels": False}
    else:
        pretrained = layout.final_checkpoint("pretrained")
        data = load_shards(layout.training_data("labeled")).subset("train")
        arch = checkpoint_architecture(pretrained, remedy=REPRETRAIN)
        checkpoint_dir, extra = (
            layout.checkpoint_dir("finetuned"),
            {"use_labels": True, "init_checkpoint": pretrained},
        )
    tracking_uri = os.environ.get(MLFLOW_URI_VAR)
    if tracking_uri and process_group.is_main:
        from album_pipeline.registry.training_run import TrackingStore, train_tracked  # imports MLflow

        experiment = os.environ.get(MLFLOW_EXPERIMENT_VAR) or DEFAULT_EXPERIMENT
        store = TrackingStore(tracking_uri, experiment, layout.mlflow_artifacts_dir)
        summary, _ = train_tracked(
            data, arch, config, checkpoint_dir, store=store, stage=checkpoint_dir.name, **extra, **observers
        )
        return summary
    return train_gan(data, arch, config, checkpoint_dir, **extra, **observers)


def summary_metadata(summary: TrainingSummary) -> dict[str, Any]:
    """The run's metadata (``TrainingSummary.metadata``) with the checkpoint as a Pipes path."""
    return {**summary.metadata(), "checkpoint": {"raw_value": str(summary.checkpoint_path), "type": "path"}}


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="python -m album_pipeline.training", description=__doc__.split("\n")[0]
    )
    result.add_argument("--stage", choices=STAGES, required=True)
    result.add_argument("--home", type=Path, required=True, help="The pipeline home (ALBUM_PIPELINE_HOME).")
    result.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="A training setting (repeatable)."
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config, arch_settings = parse_settings(args.set, args.stage)
    except (TypeError, ValueError) as error:
        parser().error(str(error))
    process_group, config = start_process_group(config)
    train = partial(
        run_stage, args.stage, HomeLayout(args.home), config, arch_settings, process_group=process_group
    )
    try:
        if not process_group.is_main:
            train(log=None, warn=_print_warning)
        elif _launched_by_dagster():
            _train_reporting_to_dagster(train)
        else:
            summary = train(log=lambda entry: print(format_log_entry(entry), flush=True), warn=_print_warning)
            print(json.dumps(summary_metadata(summary)), flush=True)
    finally:
        stop_process_group(process_group)
    return 0


def _print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _launched_by_dagster() -> bool:
    from dagster_pipes import PipesEnvVarParamsLoader  # the small client package, not Dagster itself

    return PipesEnvVarParamsLoader().is_dagster_pipes_process()


def _train_reporting_to_dagster(train: Callable[..., TrainingSummary]) -> None:
    """Rank 0 under Dagster Pipes: log entries and warnings to the asset's log, the summary as its metadata."""
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        summary = train(
            log=lambda entry: pipes.log.info(format_log_entry(entry)),
            warn=pipes.log.warning,
            progress_log=pipes.log.info,
        )
        pipes.report_asset_materialization(metadata=summary_metadata(summary))
