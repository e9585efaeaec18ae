"""The retrain sensor on a real (temporary, persistent) Dagster instance: a grown manifest whose blocking checks
passed asks for exactly one retrain run, and nothing else does."""

from __future__ import annotations

import dagster as dg
import pytest

from album_pipeline.automation import RetrainPolicy
from album_pipeline.defs.automation import (
    COVERS_TAG,
    RETRAIN_SENSOR,
    TRAINED_TAG,
    build_retrain_sensor,
    manifest_blocking_checks,
)
from album_pipeline.defs.training import TRAINED_COVERS

CHECKS = [key.name for key in manifest_blocking_checks()]


def _manifest(rows: int, failing: frozenset[str] = frozenset()) -> dg.AssetsDefinition:
    """Stand-in for labeled_manifest: the same key, blocking checks and row-count metadata."""

    @dg.asset(
        name="labeled_manifest",
        check_specs=[dg.AssetCheckSpec(name, asset="labeled_manifest", blocking=True) for name in CHECKS],
    )
    def manifest() -> dg.MaterializeResult:
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows},
            check_results=[
                dg.AssetCheckResult(check_name=name, passed=name not in failing) for name in CHECKS
            ],
        )

    return manifest


def _finetune(trained: int) -> dg.AssetsDefinition:
    @dg.asset(name="finetuned_generator")
    def finetune() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={TRAINED_COVERS: trained})

    return finetune


def _materialize(instance, asset) -> bool:
    # A failed blocking check fails the step after the materialization is recorded, as in the real asset.
    return dg.materialize([asset], instance=instance, raise_on_error=False).success


class Sensor:
    """Evaluates the sensor as the daemon does, carrying its cursor from one tick to the next."""

    def __init__(self, instance, policy: RetrainPolicy = RetrainPolicy()) -> None:
        self.instance, self.definition, self.cursor = instance, build_retrain_sensor(policy), None

    def tick(self) -> list[dg.RunRequest] | str:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, sensor_name=RETRAIN_SENSOR
        )
        result = self.definition(context)
        if isinstance(result, dg.SkipReason):
            return result.skip_message
        self.cursor = result.cursor
        return list(result.run_requests)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_a_grown_manifest_asks_for_exactly_one_retrain(instance):
    sensor = Sensor(instance)
    assert sensor.tick() == "labeled_manifest has not been materialized yet; nothing to compare"
    _materialize(instance, _manifest(1_000))
    assert "no finetune has recorded its labelled set yet" in sensor.tick()
    _materialize(instance, _finetune(1_000))
    _materialize(instance, _manifest(1_099))  # +9.9%: below the default 10%
    assert sensor.tick() == (
        "1,099 covers in the manifest against 1,000 at the last finetune (+9.9%, threshold 10.0%)"
    )
    _materialize(instance, _manifest(1_100))
    (request,) = sensor.tick()
    manifest_event = instance.fetch_materializations(dg.AssetKey("labeled_manifest"), limit=1).records[0]
    assert request.run_key == f"labeled_manifest:{manifest_event.storage_id}"
    assert request.job_name is None  # the sensor's only target: the retrain job
    assert sensor.definition.job_name == "retrain"
    assert request.tags == {COVERS_TAG: "1100", TRAINED_TAG: "1000"}
    # The same growth never asks twice: the next tick sees the cursor (and the daemon the run key).
    assert sensor.tick() == f"already asked for a retrain on manifest event {manifest_event.storage_id}"
    # Once the retrain recorded the grown set, the same manifest rebuilt again asks nothing.
    _materialize(instance, _finetune(1_100))
    _materialize(instance, _manifest(1_100))
    assert "+0.0%" in sensor.tick()


def test_failed_blocking_checks_ask_nothing_however_much_it_grew(instance):
    sensor = Sensor(instance, RetrainPolicy(min_growth=0.5))
    _materialize(instance, _finetune(1_000))
    assert not _materialize(instance, _manifest(3_000, failing=frozenset({"splits_disjoint"})))
    message = sensor.tick()
    assert "has not passed its blocking checks ['splits_disjoint']" in message
    assert "rematerialize labeled_manifest" in message
    _materialize(instance, _manifest(1_400))  # checks pass, +40% is under this policy's 50%
    assert "threshold 50.0%" in sensor.tick()
    _materialize(instance, _manifest(1_500))
    assert len(sensor.tick()) == 1


def test_the_definitions_hold_the_sensor_stopped_with_the_configured_fraction():
    from album_pipeline.definitions import build_definitions
    from album_pipeline.settings import Settings

    definitions = build_definitions(Settings.from_environ({"ALBUM_PIPELINE_RETRAIN_GROWTH": "25%"}))
    sensor = definitions.resolve_sensor_def(RETRAIN_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert "25%" in sensor.description
    job = definitions.resolve_job_def("retrain")
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        "labeled_training_data",
        "finetuned_generator",
        "generator_evaluation",
        "registered_generator",
    }
