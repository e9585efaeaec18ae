"""The retrain sensor: a grown labelled manifest whose blocking checks passed asks for one retrain run.

A sensor rather than an ``AutomationCondition``: the rule compares two numbers of metadata (the manifest's
rows now, the finetune's labelled set then), which no built-in condition reads, and a sensor is stopped by
default and turned on with one click (the UI's Automation tab) or ``dagster sensor start``.

The requested run carries the run config of the last training (``album_pipeline.automation.retrain_run_config``):
each retrained asset's ``ops`` entry from the run that materialized it last (as ``album-pipeline run`` or the
launchpad passed it, laid over the defaults of that run's job, e.g. ``demo_pipeline``), and the ``resources``
those runs set. An asset whose run is gone, or whose recorded settings the current code refuses, retrains with
its defaults, and the sensor's log says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from album_pipeline.automation import LastMaterialization, RetrainPolicy, RetrainRunConfig, retrain_run_config
from album_pipeline.defs import labeled
from album_pipeline.defs.config import run_config_problems
from album_pipeline.defs.evaluation import generator_evaluation
from album_pipeline.defs.registration import registered_generator
from album_pipeline.defs.training import TRAINED_COVERS, finetuned_generator, labeled_training_data

RETRAIN_SENSOR = "retrain_on_labelled_growth"
MANIFEST_KEY = labeled.labeled_manifest.key
MANIFEST_ROWS = "dagster/row_count"
# Tags on the requested run, so that the run list shows what triggered it.
COVERS_TAG = "album_pipeline/labeled_manifest_covers"
TRAINED_TAG = "album_pipeline/trained_covers"

# The shards are rebuilt first (only new covers are decoded), else the finetune would train on the old set.
# The genre classifier stays: the gate compares metrics measured with the same classifier.
RETRAIN_ASSETS = (labeled_training_data, finetuned_generator, generator_evaluation, registered_generator)
retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(*RETRAIN_ASSETS),
    description="Rebuild the labelled shards, finetune from the pretrained generator, evaluate and register "
    "(the champion moves only if the gate says so).",
)


def manifest_blocking_checks() -> list[dg.AssetCheckKey]:
    """Every blocking check on labeled_manifest: its own and the contract checks on the file."""
    specs = [*labeled.labeled_manifest.check_specs, *(s for c in labeled.checks for s in c.check_specs)]
    return [spec.key for spec in specs if spec.blocking and spec.asset_key == MANIFEST_KEY]


def _unpassed_checks(
    instance: dg.DagsterInstance, checks: Sequence[dg.AssetCheckKey], storage_id: int
) -> list[str]:
    """The checks that did not pass on the materialization ``storage_id`` (failed, not run, or run on another)."""
    unpassed = []
    for key in checks:
        record = instance.get_latest_asset_check_evaluation_record(key)
        # None while the check is only planned (its run has not reached it) or was never run.
        evaluation = record.event.asset_check_evaluation if record and record.event else None
        target = evaluation.target_materialization_data if evaluation else None
        if not (evaluation and evaluation.passed and target and target.storage_id == storage_id):
            unpassed.append(key.name)
    return unpassed


def _trained_covers(instance: dg.DagsterInstance) -> int | None:
    event = instance.get_latest_materialization_event(finetuned_generator.key)
    value = event.asset_materialization.metadata.get(TRAINED_COVERS) if event else None
    return None if value is None else int(value.value)


def _last_materializations(
    instance: dg.DagsterInstance, repository: dg.RepositoryDefinition | None
) -> list[LastMaterialization]:
    """Each retrained asset's last materialization and its run's config, oldest first."""
    found = []
    for asset in RETRAIN_ASSETS:
        records = instance.fetch_materializations(asset.key, limit=1).records
        if not records:
            found.append((-1, LastMaterialization(asset.op.name)))
            continue
        record = records[0]
        run = instance.get_run_by_id(record.run_id)
        job_defaults = None
        if run is not None and repository is not None and repository.has_job(run.job_name):
            job_defaults = repository.get_job(run.job_name).run_config
        run_config = None if run is None else run.run_config
        found.append(
            (record.storage_id, LastMaterialization(asset.op.name, record.run_id, run_config, job_defaults))
        )
    return [item for _, item in sorted(found, key=lambda pair: pair[0])]


def _accepted(config: RetrainRunConfig, repository: dg.RepositoryDefinition | None) -> RetrainRunConfig:
    """``config`` without the asset settings the current code refuses (renamed since, out of range now)."""
    if repository is None or not repository.has_job(retrain_job.name):
        return config
    job = repository.get_job(retrain_job.name)
    run_config, notes = dict(config.run_config), list(config.notes)
    ops = dict(run_config.pop("ops", {}))
    for name, entry in list(ops.items()):
        problems = run_config_problems(job, {"ops": {name: entry}})
        if problems:
            del ops[name]
            notes.append(
                f"{name}: its last settings are refused now ({' '.join(problems)}); it retrains with "
                "its defaults"
            )
    return RetrainRunConfig({"ops": ops, **run_config} if ops else run_config, tuple(notes))


def last_training_run_config(context: dg.SensorEvaluationContext) -> dict:
    """The run config a retrain runs with: the last training's, as the module docstring says; logs fallbacks."""
    repository = context.repository_def
    config = _accepted(retrain_run_config(_last_materializations(context.instance, repository)), repository)
    for note in config.notes:
        context.log.warning(note)
    return config.run_config


def build_retrain_sensor(
    policy: RetrainPolicy, checks: Sequence[dg.AssetCheckKey] | None = None
) -> dg.SensorDefinition:
    """The sensor that asks for one ``retrain`` run per labelled manifest that grew by ``policy.min_growth``."""
    checks = manifest_blocking_checks() if checks is None else list(checks)

    @dg.sensor(
        name=RETRAIN_SENSOR,
        job=retrain_job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Retrain when labeled_manifest has {policy.min_growth:.0%} more covers than the last "
        "finetune trained from and its blocking checks passed (ALBUM_PIPELINE_RETRAIN_GROWTH sets the "
        "fraction). The retrain runs with the settings the last training of each asset ran with (its run's "
        "config); an asset whose run was deleted retrains with its defaults. Off until turned on in the "
        "Automation tab.",
    )
    def retrain_on_labelled_growth(context: dg.SensorEvaluationContext):
        instance = context.instance
        records = instance.fetch_materializations(MANIFEST_KEY, limit=1).records
        if not records:
            return dg.SkipReason("labeled_manifest has not been materialized yet; nothing to compare")
        manifest = records[0]
        if context.cursor and int(context.cursor) >= manifest.storage_id:
            return dg.SkipReason(f"already asked for a retrain on manifest event {manifest.storage_id}")
        unpassed = _unpassed_checks(instance, checks, manifest.storage_id)
        if unpassed:
            return dg.SkipReason(
                f"the latest labeled_manifest has not passed its blocking checks {unpassed}; fix what they "
                "report (the asset's Checks tab) and rematerialize labeled_manifest"
            )
        covers = int(manifest.asset_materialization.metadata[MANIFEST_ROWS].value)
        trained = _trained_covers(instance)
        decision = policy.decide(covers, trained)
        if not decision.retrain:
            return dg.SkipReason(decision.reason)
        context.log.info(f"retraining: {decision.reason}")
        request = dg.RunRequest(
            run_key=f"labeled_manifest:{manifest.storage_id}",  # one run per manifest materialization
            run_config=last_training_run_config(context),
            tags={COVERS_TAG: str(covers), TRAINED_TAG: str(trained)},
        )
        return dg.SensorResult(run_requests=[request], cursor=str(manifest.storage_id))

    return retrain_on_labelled_growth
