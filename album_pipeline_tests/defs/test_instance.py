"""The repository's dagster.yaml: the instance it configures keeps its state across `dagster dev` restarts and
says what the CLI's instance says."""

import dagster as dg
import pytest
import yaml

from album_pipeline.defs.instance import INSTANCE_SETTINGS
from album_pipeline_tests.dagster_dev import (
    REPOSITORY,
    STAND_IN_JOB,
    dagster_dev,
    stand_in_home,
    wait_for_runs,
)


def test_the_repositorys_dagster_yaml_says_what_the_clis_instance_says():
    repository_settings = yaml.safe_load((REPOSITORY / "dagster.yaml").read_text())
    assert {key: repository_settings[key] for key in INSTANCE_SETTINGS} == INSTANCE_SETTINGS
    assert repository_settings["storage"] == {"sqlite": {"base_dir": ".album_pipeline/dagster"}}


def test_the_repositorys_dagster_yaml_loads_with_a_queued_coordinator_and_its_limits(tmp_path, monkeypatch):
    home = stand_in_home(tmp_path / "home")
    monkeypatch.chdir(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        assert config.run_queue_config.max_concurrent_runs == 4
        assert config.pool_config.default_pool_limit == 1
        assert instance.event_log_storage.supports_global_concurrency_limits
    assert (home / ".album_pipeline" / "dagster").is_dir()  # storage relative to the working directory


@pytest.mark.integration
def test_a_run_survives_a_dagster_dev_restart(tmp_path, monkeypatch):
    home = stand_in_home(tmp_path / "home")
    monkeypatch.chdir(home)  # where dagster dev ran: the storage path is relative to it
    with dagster_dev(home) as client:
        run_id = client.submit_job_execution(STAND_IN_JOB)
        assert wait_for_runs(client, [run_id]) == {run_id: "SUCCESS"}
    with dagster_dev(home) as client:
        assert client.get_run_status(run_id) == dg.DagsterRunStatus.SUCCESS
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
