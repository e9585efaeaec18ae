"""The executors the definitions run with: local processes by default, Kubernetes Jobs with GPU limits on the
pool `gpu` steps for a cluster. No cluster is needed: the Kubernetes API calls are caught where dagster-k8s
makes them, after its own code has built the Job it would create."""

from __future__ import annotations

import os
import textwrap

import dagster as dg
import kubernetes
import pytest
from dagster._config import validate_config
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster_k8s import k8s_job_executor
from dagster_k8s.client import DagsterKubernetesClient

from album_pipeline.definitions import build_definitions, profile_job_name
from album_pipeline.defs.deployment import build_executor, gpu_step_names
from album_pipeline.execution import GPU_RESOURCE, ExecutionSettings
from album_pipeline.profiles import PROFILES
from album_pipeline.settings import (
    EXECUTOR_VAR,
    K8S_GPUS_VAR,
    K8S_IMAGE_VAR,
    K8S_NAMESPACE_VAR,
    MAX_CONCURRENT_VAR,
    ConfigurationError,
    Settings,
)

IMAGE = "registry.example/album-pipeline:1"
K8S_ENVIRON = {EXECUTOR_VAR: "k8s", K8S_IMAGE_VAR: IMAGE, K8S_NAMESPACE_VAR: "album", K8S_GPUS_VAR: "2"}
GPU_STEPS = ["finetuned_generator", "generator_evaluation", "genre_classifier", "pretrained_generator"]
# What a Helm chart's dagster.yaml has: the run launcher that k8s_job_executor takes its pod settings from.
K8S_RUN_LAUNCHER = {
    "module": "dagster_k8s",
    "class": "K8sRunLauncher",
    "config": {
        "service_account_name": "dagster",
        "instance_config_map": "dagster-instance",
        "dagster_home": "/opt/dagster/dagster_home",
        "job_namespace": "dagster",
    },
}


@pytest.fixture
def k8s_environ(monkeypatch):
    for name, value in K8S_ENVIRON.items():
        monkeypatch.setenv(name, value)


def pipeline_job() -> dg.JobDefinition:
    """The first profile's whole-pipeline job, built from the environment (reconstructable by name)."""
    return build_definitions().resolve_job_def(profile_job_name(next(iter(PROFILES))))


def test_the_definitions_load_with_the_k8s_executor_and_a_gpu_limit_on_the_gpu_pool_steps(k8s_environ):
    definitions = build_definitions()
    dg.Definitions.validate_loadable(definitions)
    repository = definitions.get_repository_def()
    assert repository.get_all_jobs()
    for job in repository.get_all_jobs():
        assert job.executor_def.executor_creation_fn is k8s_job_executor.executor_creation_fn, job.name
    config = Settings.from_environ().execution.k8s_config(gpu_step_names(definitions.assets))
    assert gpu_step_names(definitions.assets) == GPU_STEPS
    assert config == {
        "per_step_k8s_config": {
            step: {"container_config": {"resources": {"limits": {GPU_RESOURCE: "2"}}}} for step in GPU_STEPS
        },
        "job_image": IMAGE,
        "job_namespace": "album",
    }
    assert validate_config(k8s_job_executor.config_schema.config_type, config).success


@pytest.fixture
def launched_jobs(k8s_environ, monkeypatch):
    """The Kubernetes Jobs dagster-k8s asks the cluster to create; the first one ends the run, as a cluster
    refusing it would (there is none)."""
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: None)
    jobs = []

    def create(self, body, namespace, **kwargs):
        jobs.append((namespace, body))
        raise RuntimeError("no cluster in this test")

    monkeypatch.setattr(DagsterKubernetesClient, "create_namespaced_job_with_retries", create)
    monkeypatch.setattr(DagsterKubernetesClient, "delete_job", lambda self, job_name, namespace: None)
    return jobs


def _launch(asset: str, jobs: list) -> kubernetes.client.V1Container:
    with dg.instance_for_test(overrides={"run_launcher": K8S_RUN_LAUNCHER}) as instance:
        result = dg.execute_job(
            dg.reconstructable(pipeline_job),
            instance=instance,
            asset_selection=[dg.AssetKey(asset)],
            raise_on_error=False,
        )
    assert not result.success
    assert len(jobs) == 1, f"expected one Kubernetes Job for {asset}, got {len(jobs)}"
    namespace, job = jobs.pop()
    assert namespace == "album"
    assert job.metadata.labels["dagster/op"] == asset
    (container,) = job.spec.template.spec.containers
    assert container.image == IMAGE
    return container


def test_a_gpu_pool_step_gets_its_gpus_and_a_crawl_step_none(launched_jobs):
    training = _launch("pretrained_generator", launched_jobs)
    assert training.resources.limits == {GPU_RESOURCE: "2"}
    crawl = _launch("napster_covers", launched_jobs)
    assert GPU_RESOURCE not in ((crawl.resources and crawl.resources.limits) or {})


STAND_IN_SOURCE = textwrap.dedent(
    """
    import os

    import dagster as dg

    from album_pipeline.defs.deployment import build_executor
    from album_pipeline.execution import ExecutionSettings


    @dg.asset
    def first_stand_in() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"pid": os.getpid()})


    @dg.asset
    def second_stand_in() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"pid": os.getpid()})


    def stand_in_job() -> dg.JobDefinition:
        assets = [first_stand_in, second_stand_in]
        executor = build_executor(ExecutionSettings(max_concurrent=2), assets)
        job = dg.define_asset_job("stand_ins", selection=assets)
        return dg.Definitions(assets=assets, jobs=[job], executor=executor).resolve_job_def("stand_ins")
    """
)


def test_the_multiprocess_executor_runs_independent_steps_in_processes_of_their_own(tmp_path):
    module = tmp_path / "stand_in_steps.py"
    module.write_text(STAND_IN_SOURCE)
    with dg.instance_for_test() as instance:
        result = dg.execute_job(ReconstructableJob.for_file(str(module), "stand_in_job"), instance=instance)
        assert result.success
        assert result.job_def.executor_def.name == "multiprocess"
        pids = {
            event.asset_key.path[0]: event.step_materialization_data.materialization.metadata["pid"].value
            for event in result.get_asset_materialization_events()
        }
    assert set(pids) == {"first_stand_in", "second_stand_in"}
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()


def test_the_executor_settings_and_their_defaults():
    assert Settings.from_environ({}).execution == ExecutionSettings()
    assert build_executor(ExecutionSettings(), []) is dg.multi_or_in_process_executor
    assert build_executor(ExecutionSettings(executor="in_process"), []) is dg.in_process_executor
    limited = Settings.from_environ({EXECUTOR_VAR: "Multiprocess", MAX_CONCURRENT_VAR: "3"}).execution
    assert limited.multiprocess_config() == {"max_concurrent": 3}
    assert build_executor(limited, []).name == "multiprocess"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (EXECUTOR_VAR, "kubernetes", "set it to one of multiprocess, in_process, k8s"),
        (MAX_CONCURRENT_VAR, "0", "must be a whole number of at least 1"),
        (K8S_GPUS_VAR, "two", "must be a whole number of at least 1"),
    ],
)
def test_a_bad_execution_setting_names_its_variable_and_what_it_accepts(variable, value, message):
    with pytest.raises(ConfigurationError, match=rf"{variable}='{value}'.*{message}"):
        Settings.from_environ({variable: value})
