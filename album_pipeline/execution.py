"""Where a run's steps execute: the executor a deployment picks and what each step asks of a cluster.

Plain data, free of Dagster: ``album_pipeline.defs.deployment`` turns it into the executor of every job.
Locally the steps of a run from the UI run in child processes (a few at a time); on a Kubernetes cluster each
step is a Kubernetes Job, and the steps that train or evaluate (pool ``gpu``) ask for GPUs while crawls and
downloads ask for none, so they never hold a GPU node.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MULTIPROCESS = "multiprocess"
IN_PROCESS = "in_process"
K8S = "k8s"
EXECUTORS = (MULTIPROCESS, IN_PROCESS, K8S)
# The extended resource NVIDIA's Kubernetes device plugin announces; a limit on it schedules the pod on a node
# with that many free GPUs and hands them to its container.
GPU_RESOURCE = "nvidia.com/gpu"


class ExecutionSettingsError(ValueError):
    """An execution setting is out of range; the message says which values are accepted."""


@dataclass(frozen=True)
class ExecutionSettings:
    executor: str = field(
        default=MULTIPROCESS,
        metadata={
            "doc": "How a run's steps execute (`ALBUM_PIPELINE_EXECUTOR`): multiprocess (each step in its own "
            "process, independent steps side by side), in_process (one process, step after step) or k8s "
            "(each step a Kubernetes Job, needs the `k8s` extra). `album-pipeline run` always runs in process."
        },
    )
    max_concurrent: int | None = field(
        default=None,
        metadata={
            "doc": "Most steps of one run executing at once (`ALBUM_PIPELINE_MAX_CONCURRENT`); unset: one per "
            "CPU core for multiprocess, no limit for k8s. Pools (`gpu`, `crawl`) still bound their own steps "
            "across runs."
        },
    )
    k8s_image: str | None = field(
        default=None,
        metadata={
            "doc": "Container image of the step pods (`ALBUM_PIPELINE_K8S_IMAGE`); unset: the code location's "
            "image (what a Helm chart's user deployment sets)."
        },
    )
    k8s_namespace: str | None = field(
        default=None,
        metadata={
            "doc": "Kubernetes namespace of the step Jobs (`ALBUM_PIPELINE_K8S_NAMESPACE`); unset: the run "
            "launcher's namespace."
        },
    )
    gpus_per_step: int = field(
        default=1,
        metadata={
            "doc": f"`{GPU_RESOURCE}` limit of each step in pool gpu (training, classifier, evaluation) on "
            "Kubernetes (`ALBUM_PIPELINE_K8S_GPUS`); other steps get none."
        },
    )

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ExecutionSettingsError(
                f"unknown executor {self.executor!r}; choose one of {', '.join(EXECUTORS)}"
            )
        for name, value in (("max_concurrent", self.max_concurrent), ("gpus_per_step", self.gpus_per_step)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ExecutionSettingsError(f"{name} must be a whole number of at least 1, not {value!r}")

    def multiprocess_config(self) -> dict[str, Any]:
        """Config of Dagster's multiprocess executor (0: one step per CPU core, Dagster's default)."""
        return {"max_concurrent": self.max_concurrent or 0}

    def k8s_config(self, gpu_steps: Iterable[str]) -> dict[str, Any]:
        """Config of dagster-k8s's ``k8s_job_executor``: a GPU limit on each of ``gpu_steps`` (op names)."""
        # Kubernetes spells a quantity as a string ("2"), as the Job it builds does.
        limits = {GPU_RESOURCE: str(self.gpus_per_step)}
        gpu_step_config = {"container_config": {"resources": {"limits": limits}}}
        config: dict[str, Any] = {
            "per_step_k8s_config": {step: gpu_step_config for step in sorted(gpu_steps)}
        }
        optional = {
            "job_image": self.k8s_image,
            "job_namespace": self.k8s_namespace,
            "max_concurrent": self.max_concurrent,
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        return config


def executor_name(text: str, variable: str) -> str:
    """An executor's name as the environment spells it (any case, ``-`` for ``_``); a bad one names ``variable``."""
    name = text.strip().lower().replace("-", "_")
    if name not in EXECUTORS:
        raise ExecutionSettingsError(
            f"{variable}={text!r} is not an executor this project runs on; set it to one of "
            f"{', '.join(EXECUTORS)} (default {MULTIPROCESS}), or unset it."
        )
    return name


def positive_count(text: str, variable: str) -> int:
    """A whole number of at least 1; a bad one names ``variable``."""
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ExecutionSettingsError(f"{variable}={text!r} must be a whole number of at least 1, or unset.")
    return value
