"""What a Dagster user expects of the catalog and of failures: owners, pools, retries, freshness, summaries."""

from datetime import timedelta

import dagster as dg
import pytest

from album_pipeline.definitions import build_definitions
from album_pipeline.defs.instance import CRAWL_POOL, GPU_POOL
from album_pipeline.defs.operations import (
    FAILED_STEPS_TAG,
    FAILURE_SUMMARY_TAG,
    LABELED_FRESHNESS_POLICY,
    NETWORK_RETRY_POLICY,
    OWNERS,
    FailureSummary,
    StepFailure,
    retried_only_when_transient,
    run_failure_summary,
)
from album_pipeline.settings import Settings
from album_pipeline.sources.http import SourceAuthError, SourceUnavailableError

CRAWL_ASSETS = {"napster_covers", "musicbrainz_covers", "omacir_archive_images"}
NETWORK_ASSETS = CRAWL_ASSETS | {"omacir_archives"}  # the file list: retried, but too small for the pool
GPU_ASSETS = {"pretrained_generator", "finetuned_generator", "genre_classifier", "generator_evaluation"}


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_environ({}))


def _assets_by_name(defs) -> dict[str, dg.AssetsDefinition]:
    return {spec.key.to_user_string(): asset for asset in defs.assets for spec in asset.specs}


def test_every_asset_has_a_description_a_group_kinds_and_the_owners(defs):
    specs = [spec for asset in defs.assets for spec in asset.specs]
    assert len(specs) == 13
    for spec in specs:
        name = spec.key.to_user_string()
        assert spec.description and len(spec.description) > 40, name
        assert spec.group_name in {"labeled", "unlabeled", "training", "evaluation"}, name
        assert spec.kinds, name
        assert tuple(spec.owners) == OWNERS == ("team:album-pipeline",), name


def test_network_assets_retry_with_backoff_and_crawls_share_a_pool_and_training_the_gpu_pool(defs):
    pools, policies = {}, {}
    for name, asset in _assets_by_name(defs).items():
        pools[name], policies[name] = asset.op.pool, asset.op.retry_policy
    assert {name for name, pool in pools.items() if pool == CRAWL_POOL == "crawl"} == CRAWL_ASSETS
    assert {name for name, pool in pools.items() if pool == GPU_POOL == "gpu"} == GPU_ASSETS
    assert {name for name, policy in policies.items() if policy == NETWORK_RETRY_POLICY} == NETWORK_ASSETS
    assert {name for name, policy in policies.items() if policy is None} == set(pools) - NETWORK_ASSETS
    assert NETWORK_RETRY_POLICY.backoff == dg.Backoff.EXPONENTIAL
    assert NETWORK_RETRY_POLICY.jitter == dg.Jitter.PLUS_MINUS
    # 1, 3, 7 minutes, each within a minute of jitter: an outage of about 11 minutes is ridden out.
    for attempt, minutes in ((1, 1), (2, 3), (3, 7)):
        delay = NETWORK_RETRY_POLICY.calculate_delay(attempt)
        assert (minutes - 1) * 60 <= delay <= (minutes + 1) * 60
    assert NETWORK_RETRY_POLICY.max_retries == 3


def test_the_labelled_manifest_is_expected_within_the_weekly_recrawl_plus_slack(defs):
    by_name = {spec.key.to_user_string(): spec for asset in defs.assets for spec in asset.specs}
    assert by_name["labeled_manifest"].freshness_policy == LABELED_FRESHNESS_POLICY
    assert LABELED_FRESHNESS_POLICY.warn_window.to_timedelta() == timedelta(days=8)
    assert LABELED_FRESHNESS_POLICY.fail_window.to_timedelta() == timedelta(days=9)
    others = {name for name, spec in by_name.items() if spec.freshness_policy is not None}
    assert others == {"labeled_manifest"}
    sensors = {sensor.name: sensor for sensor in defs.sensors}
    # It only reports, so it runs by default; the retrain sensor (defs/automation.py) launches runs, so not.
    assert sensors["run_failure_summary"].default_status == dg.DefaultSensorStatus.RUNNING


def _flaky_asset(error: Exception, attempts: list[int]):
    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2, delay=0.01))
    @retried_only_when_transient()
    def flaky(context: dg.AssetExecutionContext) -> None:
        attempts.append(context.retry_number)
        if context.retry_number == 0:
            raise error

    return flaky


def test_a_source_down_is_retried_and_a_refused_key_fails_at_once_with_its_own_error(tmp_path):
    attempts: list[int] = []
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        down = SourceUnavailableError("api.example unreachable after 5 tries; try again later")
        assert dg.materialize([_flaky_asset(down, attempts)], instance=instance).success
        assert attempts == [0, 1]

        attempts.clear()
        refused = SourceAuthError("the service refused NAPSTER_API_KEY (401): set a valid key")
        result = dg.materialize([_flaky_asset(refused, attempts)], instance=instance, raise_on_error=False)
    assert not result.success and attempts == [0]
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error.cause.cls_name == "SourceAuthError" and "set a valid key" in error.cause.message


@dg.asset
def unreachable_covers() -> None:
    raise SourceUnavailableError("api.example refused 5 times (503)\nthe traceback's second line")


@dg.asset(deps=[unreachable_covers])
def manifest_after() -> None: ...


def test_a_failed_run_gets_a_summary_in_its_tags_and_event_log(tmp_path):
    job = dg.define_asset_job("crawl_then_manifest", selection=[unreachable_covers, manifest_after])
    job = dg.Definitions(assets=[unreachable_covers, manifest_after], jobs=[job]).resolve_job_def(job.name)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        context = dg.build_run_status_sensor_context(
            sensor_name=run_failure_summary.name,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        ).for_run_failure()
        run_failure_summary(context)
        tags = instance.get_run_by_id(result.run_id).tags
        messages = [entry.message for entry in instance.all_logs(result.run_id)]
    first_line = "SourceUnavailableError: api.example refused 5 times (503)"
    assert tags[FAILED_STEPS_TAG] == "unreachable_covers"
    assert tags[FAILURE_SUMMARY_TAG] == f"unreachable_covers: {first_line}"
    [summary] = [message for message in messages if message.startswith(f"run {result.run_id} ")]
    assert f"step unreachable_covers failed with {first_line}." in summary
    assert "second line" not in summary
    assert "Re-execute > From failure" in summary
    assert "album-pipeline run --select unreachable_covers" in summary


def test_a_run_that_failed_outside_any_step_is_summarized_by_its_own_message():
    summary = FailureSummary("labeled_recrawl", "abc", (), "interrupted: the process that ran it ended")
    assert summary.text().startswith("run abc of labeled_recrawl failed: interrupted: the process")
    assert summary.tags() == {
        FAILED_STEPS_TAG: "none",
        FAILURE_SUMMARY_TAG: "interrupted: the process that ran it ended",
    }
    long = FailureSummary("j", "r", (StepFailure("napster_covers", "x" * 1000),), "failed")
    assert len(long.tags()[FAILURE_SUMMARY_TAG]) == 300
    assert long.tags()[FAILURE_SUMMARY_TAG].endswith("...")
