"""The executor every job runs with, chosen by ``ALBUM_PIPELINE_EXECUTOR`` (album_pipeline.execution).

On Kubernetes the steps that need a GPU are found from the asset graph (their pool is ``gpu``), so an asset
joins them by its pool alone and no asset carries Kubernetes tags.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from album_pipeline.defs.instance import GPU_POOL
from album_pipeline.execution import IN_PROCESS, K8S, ExecutionSettings


def gpu_step_names(assets: Iterable[dg.AssetsDefinition]) -> list[str]:
    """The op names of the assets in pool ``gpu``: the keys of k8s_job_executor's per-step config."""
    return sorted(asset.op.name for asset in assets if asset.op.pool == GPU_POOL)


def build_executor(
    execution: ExecutionSettings, assets: Iterable[dg.AssetsDefinition]
) -> dg.ExecutorDefinition:
    if execution.executor == IN_PROCESS:
        return dg.in_process_executor
    if execution.executor == K8S:
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise ImportError(
                f'ALBUM_PIPELINE_EXECUTOR={K8S} needs dagster-k8s: `pip install -e ".[k8s]"`, or unset '
                "ALBUM_PIPELINE_EXECUTOR to run steps in local processes."
            ) from None
        return k8s_job_executor.configured(execution.k8s_config(gpu_step_names(assets)), name=K8S)
    if execution.max_concurrent is None:
        # Dagster's own default: multiprocess, and a run's config may still pick in_process or a limit.
        return dg.multi_or_in_process_executor
    return dg.multiprocess_executor.configured(execution.multiprocess_config(), name="multiprocess")
