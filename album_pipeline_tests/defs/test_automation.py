"""The retrain sensor on a real (temporary, persistent) Dagster instance: a grown manifest whose blocking checks
passed asks for exactly one retrain run, and nothing else does."""

import logging

import dagster as dg
import pytest

from album_pipeline.automation import LastMaterialization, RetrainPolicy, retrain_run_config
from album_pipeline.defs.automation import (
    COVERS_TAG,
    RETRAIN_SENSOR,
    TRAINED_TAG,
    build_retrain_sensor,
    last_training_run_config,
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

    def __init__(self, instance, policy: RetrainPolicy = RetrainPolicy(), definitions=None) -> None:
        self.instance, self.definition, self.cursor = instance, build_retrain_sensor(policy), None
        self.definitions = definitions  # the code location the daemon evaluates the sensor in

    def tick(self) -> list[dg.RunRequest] | str:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            sensor_name=RETRAIN_SENSOR,
            definitions=self.definitions,
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


class _Steps(dg.Config):
    steps: int = 1
    batch_size: int = 1


class _Tracking(dg.ConfigurableResource):
    experiment: str = "default"


def _training_definitions(job_config: dict | None = None) -> dg.Definitions:
    """Stand-ins for a crawl and the finetune, and a job ``training`` of both (``job_config``: its own config)."""

    @dg.asset(name="napster_covers")
    def crawl(config: _Steps) -> None:
        return None

    @dg.asset(name="finetuned_generator")
    def finetune(config: _Steps, tracking: _Tracking) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={TRAINED_COVERS: 1_000})

    job = dg.define_asset_job("training", config=job_config)
    return dg.Definitions(assets=[crawl, finetune], jobs=[job], resources={"tracking": _Tracking()})


def _trained(instance, run_config: dict, definitions: dg.Definitions | None = None) -> str:
    """One run of the ``training`` job with ``run_config``; the run's id."""
    job = (definitions or _training_definitions()).resolve_job_def("training")
    return job.execute_in_process(run_config=run_config, instance=instance).run_id


LAST_TRAINING = {
    "ops": {
        "napster_covers": {"config": {"steps": 3}},
        "finetuned_generator": {"config": {"steps": 12, "batch_size": 16}},
    },
    "resources": {"tracking": {"config": {"experiment": "tiny"}}},
}


def test_the_retrain_runs_with_the_config_of_the_run_that_trained_last(instance):
    _trained(instance, LAST_TRAINING)
    _materialize(instance, _manifest(1_500))
    (request,) = Sensor(instance).tick()
    # Only the retrained assets' settings: the crawl is not part of the retrain.
    assert request.run_config == {
        "ops": {"finetuned_generator": {"config": {"steps": 12, "batch_size": 16}}},
        "resources": {"tracking": {"config": {"experiment": "tiny"}}},
    }


def test_a_deleted_training_run_falls_back_to_the_defaults_and_says_so(instance, caplog):
    run_id = _trained(instance, LAST_TRAINING)
    instance.delete_run(run_id)
    _materialize(instance, _manifest(1_500))
    (request,) = Sensor(instance).tick()
    assert request.run_config == {}
    notes = retrain_run_config(
        [LastMaterialization("finetuned_generator", run_id), LastMaterialization("registered_generator")]
    ).notes
    assert notes == (
        f"finetuned_generator: run {run_id}, which materialized it last, is no longer on the instance: it "
        "retrains with its defaults",
        "registered_generator was never materialized: it retrains with its defaults",
    )


def test_a_job_with_its_own_config_launched_without_one_retrains_with_the_jobs_settings(instance):
    # Such a launch stores {}: the job's config is what ran. (A partitioned job's config, the profile jobs',
    # applies through a partition only, and a launch for one stores it.)
    definitions = _training_definitions(job_config=LAST_TRAINING)
    _trained(instance, {}, definitions)
    _materialize(instance, _manifest(1_500))
    (request,) = Sensor(instance, definitions=definitions).tick()
    assert request.run_config == {
        "ops": {"finetuned_generator": {"config": {"steps": 12, "batch_size": 16}}},
        "resources": {"tracking": {"config": {"experiment": "tiny"}}},
    }
    # An entry the launch sets replaces the job's whole, as in the run (batch_size: the class's default).
    _trained(instance, {"ops": {"finetuned_generator": {"config": {"steps": 30}}}}, definitions)
    (request,) = Sensor(instance, definitions=definitions).tick()
    assert request.run_config == {
        "ops": {"finetuned_generator": {"config": {"steps": 30}}},
        "resources": {"tracking": {"config": {"experiment": "tiny"}}},
    }


def test_settings_the_current_code_refuses_fall_back_to_the_defaults(caplog, monkeypatch):
    from album_pipeline.definitions import build_definitions

    # The daemon keeps a tick's log with the tick; here it goes to Python logging, where caplog sees it.
    monkeypatch.setattr(dg.SensorEvaluationContext, "log", property(lambda _: logging.getLogger("tick")))

    definitions = build_definitions()
    with dg.instance_for_test() as instance:
        _trained(instance, {"ops": {"finetuned_generator": {"config": {"steps": 0}}}})
        _materialize(instance, _manifest(1_500))
        context = dg.build_sensor_context(instance=instance, definitions=definitions)
        assert last_training_run_config(context) == {}
    assert (
        "finetuned_generator: its last settings are refused now (`finetuned_generator`: steps must be at least "
        "1, got 0.); it retrains with its defaults"
    ) in caplog.text
