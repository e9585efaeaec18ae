"""A recrawl that grows the labelled manifest retrains, once, and the champion follows the gate.

The whole pipeline at tiny scale on a real temporary (persistent) Dagster instance, against the loopback
emulators, with a real sqlite MLflow store; the retrain sensor ticked as the daemon ticks it, and the run it
asks for executed as asked, on the same instance.
"""

import copy

import dagster as dg
import mlflow
import pytest

from album_pipeline.definitions import build_definitions
from album_pipeline.defs.automation import COVERS_TAG, RETRAIN_SENSOR
from album_pipeline.defs.evaluation import QUALITY_FLOORS_CHECK
from album_pipeline.defs.training import TRAINED_COVERS
from album_pipeline.registry.champion import CHAMPION_ALIAS, FLOOR_TAG_PREFIX
from album_pipeline.settings import Settings
from album_pipeline_tests.defs.test_automation import Sensor
from album_pipeline_tests.defs.test_pipeline_integration import TINY_RUN_CONFIG

pytestmark = pytest.mark.integration

# Floors no generator trained for a dozen steps meets (genre accuracy, diversity and coverage of real covers,
# not one near-copy), and floors every generator meets: the gate's outcome is known before the run.
CLOSED_FLOORS = {
    "min_genre_accuracy_ratio": 1.0,
    "min_diversity": 1.0,
    "max_near_copy_share": 0.0,
    "min_coverage_ratio": 1.0,
}
OPEN_FLOORS = {
    "min_genre_accuracy_ratio": 0.0,
    "min_diversity": 0.0,
    "max_near_copy_share": 1.0,
    "min_coverage_ratio": 0.0,
}


def _with(run_config: dict, **ops: dict) -> dict:
    """``run_config`` with the given ops' config fields set on top of it."""
    changed = copy.deepcopy(run_config)
    for name, fields in ops.items():
        changed["ops"].setdefault(name, {}).setdefault("config", {}).update(fields)
    return changed


# The first training crawls half of what the emulators serve, so that two recrawls can each grow the set.
FIRST_TRAINING = _with(
    TINY_RUN_CONFIG,
    napster_covers={"albums_per_genre": 12},
    musicbrainz_covers={"albums_per_genre": 5},
    labeled_manifest={"min_covers_per_genre": 8},
    generator_evaluation=CLOSED_FLOORS,
)


def _recrawl_config(napster: int, musicbrainz: int) -> dict:
    labelled = ("napster_covers", "musicbrainz_covers", "labeled_manifest")
    ops = {name: FIRST_TRAINING["ops"][name] for name in labelled}
    return _with(
        {"ops": ops},
        napster_covers={"albums_per_genre": napster},
        musicbrainz_covers={"albums_per_genre": musicbrainz},
    )


class Registry:
    """The MLflow registry's view of the registered generator: where `champion` points, each version's floors."""

    def __init__(self, settings: Settings) -> None:
        self.client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        self.model = "album_cover_generator"

    def champion(self) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.model, CHAMPION_ALIAS).version)
        except mlflow.exceptions.MlflowException:
            return None

    def floors_passed(self, version: str) -> bool:
        tags = self.client.get_model_version(self.model, version).tags
        verdicts = [value for key, value in tags.items() if key.startswith(FLOOR_TAG_PREFIX)]
        return bool(verdicts) and all(verdict.startswith("passed") for verdict in verdicts)


def _registration(instance) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey("registered_generator"))
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def _quality_floors_passed(result) -> bool:
    (evaluation,) = [
        check
        for check in result.get_asset_check_evaluations()
        if check.asset_check_key.name == QUALITY_FLOORS_CHECK
    ]
    return evaluation.passed


def _retrained(instance, defs, sensor: Sensor, request: dg.RunRequest, registry: Registry, **ops: dict):
    """Executes ``request`` (with ``ops`` set on its config) as the daemon would launch it; the gate's outcome.

    Three witnesses of one decision must agree: the gate's verdict (the evaluation's quality_floors check and
    the version's floor tags), the registry's ``champion`` alias before and after, and the registration's
    metadata (``is_champion``, ``champion_decision``).
    """
    before = registry.champion()
    run_config = _with(request.run_config, **ops)
    result = defs.resolve_job_def("retrain").execute_in_process(
        run_config=run_config, tags=request.tags, instance=instance
    )
    assert result.success
    registration = _registration(instance)
    version = registration["challenger_version"]
    after = registry.champion()
    gate_passed = _quality_floors_passed(result)
    assert registry.floors_passed(version) == gate_passed
    moved = before != after and after == version
    # No version is champion yet, so the floors are the whole gate: the champion moves exactly when they pass.
    assert moved == gate_passed
    assert registration["is_champion"] == moved
    assert registration["champion_decision"].startswith("moved" if moved else "stayed")
    # One retrain per growth: the retrain's own materializations ask nothing more.
    assert sensor.tick().startswith("already asked for a retrain on manifest event")
    return {"moved": moved, "champion": after, "version": version}


def test_a_grown_labelled_manifest_retrains_once_and_the_champion_follows_the_gate(pipeline_env, tmp_path):
    settings = Settings.from_environ()
    defs = build_definitions(settings)
    registry = Registry(settings)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        whole = defs.resolve_implicit_global_asset_job_def()
        assert whole.execute_in_process(run_config=FIRST_TRAINING, instance=instance).success
        first = _registration(instance)
        assert first["champion_decision"].startswith("stayed") and registry.champion() is None
        sensor = Sensor(instance, settings.retrain, definitions=defs)
        assert defs.resolve_sensor_def(RETRAIN_SENSOR).job_name == "retrain"
        assert "+0.0%" in sensor.tick()  # the manifest the finetune trained on, unchanged

        recrawl = defs.resolve_job_def("labeled_recrawl")
        assert recrawl.execute_in_process(run_config=_recrawl_config(18, 8), instance=instance).success
        (request,) = sensor.tick()
        # The retrain trains as the first training did, not at the assets' full-scale defaults.
        assert request.run_config == {
            "ops": {
                name: FIRST_TRAINING["ops"][name] for name in ("finetuned_generator", "generator_evaluation")
            }
        }
        # As the request stands, the gate's floors are the first training's closed ones: champion stays.
        stayed = _retrained(instance, defs, sensor, request, registry)
        assert stayed["moved"] is False and stayed["champion"] is None
        finetune = instance.get_latest_materialization_event(dg.AssetKey("finetuned_generator"))
        assert finetune.asset_materialization.metadata[TRAINED_COVERS].value == int(request.tags[COVERS_TAG])

        assert recrawl.execute_in_process(run_config=_recrawl_config(24, 10), instance=instance).success
        (request,) = sensor.tick()
        assert request.run_config["ops"]["generator_evaluation"]["config"] == {
            **TINY_RUN_CONFIG["ops"]["generator_evaluation"]["config"],
            **CLOSED_FLOORS,
        }
        # Floors every generator meets (set on the request: the test is of the decision following the gate, so
        # the gate's verdict must be known), and no champion yet: the champion must move to this version.
        moved = _retrained(instance, defs, sensor, request, registry, generator_evaluation=OPEN_FLOORS)
        assert moved["moved"] is True and moved["champion"] == moved["version"]
        assert int(moved["version"]) == int(stayed["version"]) + 1
