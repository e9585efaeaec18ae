"""Registration: the evaluated generator logged to MLflow, and the champion alias decided."""

import dagster as dg

from album_pipeline.data.shards import load_shards
from album_pipeline.defs.config import CoreConfig, core_field
from album_pipeline.defs.evaluation import generator_evaluation
from album_pipeline.defs.operations import OWNERS
from album_pipeline.defs.resources import GenreTaxonomy, MlflowTracking, PipelineHome
from album_pipeline.metrics.evaluate import evaluated_floors, load_metrics
from album_pipeline.model.checkpoint import load_checkpoint, load_generator
from album_pipeline.registry.champion import CHALLENGER_ALIAS, CHAMPION_ALIAS
from album_pipeline.registry.mlflow_registry import ChampionPolicy, evaluation_artifacts, log_and_register
from album_pipeline.registry.training_run import registration_tags


class RegistrationConfig(CoreConfig):
    core_types = (ChampionPolicy,)
    # The floors are the evaluation's settings (generator_evaluation.min_diversity, ...), read from the
    # metrics.json it wrote, so that its quality_floors check and the gate never disagree.
    fixed_core_fields = frozenset({"floors"})

    primary_metric: str | None = core_field(ChampionPolicy, "primary_metric")
    greater_is_better: bool = core_field(ChampionPolicy, "greater_is_better")


@dg.asset(group_name="evaluation", kinds={"mlflow"}, owners=OWNERS, deps=[generator_evaluation])
def registered_generator(
    context: dg.AssetExecutionContext,
    config: RegistrationConfig,
    home: PipelineHome,
    mlflow: MlflowTracking,
    genres: GenreTaxonomy,
) -> dg.MaterializeResult:
    """The finetuned generator registered in MLflow as `challenger`; `champion` moves to it only if it passes
    every quality floor and beats the champion on the primary metric (the metadata says why)."""
    layout = home.layout
    evaluation = load_metrics(layout.evaluation_metrics)
    metrics = evaluation["metrics"]
    flat_metrics = {key: float(value) for key, value in metrics.items() if isinstance(value, int | float)}
    result = log_and_register(
        tracking_uri=mlflow.tracking_uri,
        experiment_name=mlflow.experiment_name,
        artifact_location=layout.mlflow_artifacts_dir,
        model_name=mlflow.registered_model_name,
        generator=load_generator(layout.final_checkpoint("finetuned")),
        genres=genres.genres,
        params=_training_params(layout),
        metrics=flat_metrics,
        artifacts=evaluation_artifacts(layout),
        champion=config.to_core(ChampionPolicy, floors=evaluated_floors(evaluation)),
        # Nested under the finetuning's MLflow run, which is nested under the pretraining's.
        tags={"dagster_run_id": context.run.run_id, **registration_tags(layout.checkpoint_dir("finetuned"))},
        per_genre_table=layout.evaluation_per_genre_table,
    )
    name = mlflow.registered_model_name
    context.log.info(f"registered {name} v{result.model_version}; {result.reason}")
    return dg.MaterializeResult(
        metadata={
            "champion_decision": result.reason,
            "is_champion": result.is_champion,
            "champion_version": result.champion_version,  # None while no version passed the floors
            "challenger_version": str(result.model_version),
            "primary_metric": result.primary_metric,
            "primary_metric_value": result.decision.value,
            "champion_primary_metric_value": result.champion_metric_value,  # None: no champion, or no value
            "model_uri": result.model_uri,
            "champion_uri": f"models:/{name}@{CHAMPION_ALIAS}",
            "challenger_uri": f"models:/{name}@{CHALLENGER_ALIAS}",
            "mlflow_run_id": result.run_id,
        }
    )


def _training_params(layout) -> dict[str, object]:
    """The settings that produced the generator, flattened for MLflow (stage.name=value)."""
    params: dict[str, object] = {}
    for stage in ("pretrained", "finetuned"):
        payload = load_checkpoint(layout.final_checkpoint(stage))
        for group in ("arch", "config"):
            for name, value in (payload.get(group) or {}).items():
                params[f"{stage}.{name}"] = value
    for name in ("labeled", "unlabeled"):
        params[f"data.{name}_images"] = len(load_shards(layout.training_data(name)))
    return params


assets = [registered_generator]
