"""One training or evaluation at a time: the GPU-bound assets share a pool that the instance limits to 1."""

import dagster as dg
import pytest

from album_pipeline.defs.evaluation import generator_evaluation, genre_classifier
from album_pipeline.defs.instance import CRAWL_POOL, GPU_POOL, INSTANCE_YAML, POOL_LIMITS, open_instance
from album_pipeline.defs.training import finetuned_generator, pretrained_generator
from album_pipeline.layout import DAGSTER_INSTANCE_FILE
from album_pipeline_tests.dagster_dev import TRAINING_JOB, dagster_dev, stand_in_home, wait_for_runs


@pytest.mark.parametrize(
    "asset", [pretrained_generator, finetuned_generator, genre_classifier, generator_evaluation]
)
def test_the_gpu_bound_assets_are_in_the_gpu_pool(asset):
    assert asset.op.pool == GPU_POOL == "gpu"


def test_the_instance_lets_one_step_of_the_pool_run_at_a_time(tmp_path):
    with open_instance(tmp_path) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.event_log_storage.supports_global_concurrency_limits
    assert (tmp_path / DAGSTER_INSTANCE_FILE).read_text() == INSTANCE_YAML


def test_an_instance_file_of_an_earlier_release_gets_the_limit_and_a_users_own_is_kept(tmp_path):
    earlier, own = tmp_path / "earlier", tmp_path / "own"
    for folder in (earlier, own):
        folder.mkdir()
    (earlier / DAGSTER_INSTANCE_FILE).write_text("telemetry:\n  enabled: false\n")
    users = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 2\n"
    (own / DAGSTER_INSTANCE_FILE).write_text(users)
    with open_instance(earlier) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    with open_instance(own) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
    assert (own / DAGSTER_INSTANCE_FILE).read_text() == users


def _explicit_limits(instance) -> dict[str, int]:
    return {
        pool.name: pool.limit
        for pool in instance.event_log_storage.get_pool_limits()
        if not pool.from_default
    }


def test_opening_sets_the_gpu_and_crawl_limits_and_keeps_one_set_by_hand(tmp_path):
    with open_instance(tmp_path) as instance:
        assert _explicit_limits(instance) == POOL_LIMITS == {GPU_POOL: 1, CRAWL_POOL: 2}
        instance.event_log_storage.set_concurrency_slots(GPU_POOL, 2)  # a machine with two GPUs
    with open_instance(tmp_path) as instance:
        assert _explicit_limits(instance) == {GPU_POOL: 2, CRAWL_POOL: 2}


def _step_spans(instance, run_id: str) -> tuple[float, float]:
    events = instance.all_logs(run_id)
    started = [
        event.timestamp for event in events if event.dagster_event_type == dg.DagsterEventType.STEP_START
    ]
    ended = [
        event.timestamp for event in events if event.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS
    ]
    assert len(started) == len(ended) == 1, f"run {run_id}: {len(started)} step starts, {len(ended)} ends"
    return started[0], ended[0]


@pytest.mark.integration
def test_two_queued_training_runs_never_overlap(tmp_path, monkeypatch):
    """Two runs launched at once through `dagster dev` (queued run coordinator and daemon, the repository's
    dagster.yaml, the CLI's pool limits) of an asset in pool `gpu` that trains the GAN with train_gan."""
    home = stand_in_home(tmp_path / "home")
    monkeypatch.chdir(home)  # the storage path in dagster.yaml is relative to the working directory
    open_instance(home).dispose()
    with dagster_dev(home) as client:
        run_ids = [client.submit_job_execution(TRAINING_JOB) for _ in range(2)]
        assert wait_for_runs(client, run_ids, timeout=300) == dict.fromkeys(run_ids, "SUCCESS")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (first_start, first_end), (second_start, second_end) = sorted(
            _step_spans(instance, run_id) for run_id in run_ids
        )
        trained = instance.get_latest_materialization_event(dg.AssetKey("tiny_training"))
        assert trained.asset_materialization.metadata["steps"].value == 40
    assert first_end <= second_start, "the second run's training started before the first one's ended"
