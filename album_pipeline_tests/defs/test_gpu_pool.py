"""One training or evaluation at a time: the GPU-bound assets share a pool that the instance limits to 1."""

import pytest

from album_pipeline.defs.evaluation import generator_evaluation, genre_classifier
from album_pipeline.defs.instance import GPU_POOL, INSTANCE_YAML, open_instance
from album_pipeline.defs.training import finetuned_generator, pretrained_generator
from album_pipeline.layout import DAGSTER_INSTANCE_FILE


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
