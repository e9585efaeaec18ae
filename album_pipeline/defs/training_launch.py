"""Training in several processes: a training asset runs its stage as a torchrun job through Dagster Pipes.

The job is ``python -m torch.distributed.run ... -m album_pipeline.training`` (``training.entry``); its rank 0
streams the log entries to the asset's log and reports the materialisation's metadata, the other ranks only
train.
"""

from __future__ import annotations

import os
import shlex
import sys

import dagster as dg

from album_pipeline.defs.config import CoreConfig
from album_pipeline.layout import HomeLayout
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.settings import MLFLOW_EXPERIMENT_VAR, MLFLOW_URI_VAR
from album_pipeline.training.config import TrainingConfig
from album_pipeline.training.distributed import LaunchOptions
from album_pipeline.training.entry import changed_settings, training_command


def launch_training(
    context: dg.AssetExecutionContext,
    pipes: dg.PipesSubprocessClient,
    stage: str,
    layout: HomeLayout,
    config: CoreConfig,
    arch: GanArchitecture | None = None,
    *,
    tracking_uri: str,
    experiment_name: str,
) -> dg.MaterializeResult:
    """Train ``stage`` with ``config``'s settings (and ``arch`` when pretraining) in its ``processes``; rank 0
    logs the stage's MLflow run to ``tracking_uri``, passed in the job's environment, not its command line."""
    processes = config.to_core(LaunchOptions).processes
    settings = changed_settings(config.to_core(TrainingConfig), *([arch] if arch is not None else []))
    command = training_command(sys.executable, stage, layout.root, processes, settings)
    context.log.info(f"training in {processes} processes: {shlex.join(command)}")
    env = {**os.environ, MLFLOW_URI_VAR: tracking_uri, MLFLOW_EXPERIMENT_VAR: experiment_name}
    return pipes.run(command=command, context=context, env=env).get_materialize_result()
