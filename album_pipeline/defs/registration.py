"""Registration: the evaluated generator logged to MLflow, and the champion alias decided."""

import dagster as dg

from album_pipeline.data.shards import load_shards
from album_pipeline.defs.config import CoreConfig, core_field
from album_pipeline.defs.evaluation import generator_evaluation
from album_pipeline.defs.resources import GenreTaxonomy, MlflowTracking, PipelineHome
from album_pipeline.metrics.evaluate import load_metrics
from album_pipeline.model.checkpoint import load_checkpoint, load_generator
from album_pipeline.registry.mlflow_registry import ChampionPolicy, log_and_register


class RegistrationConfig(CoreConfig):
    core_types = (ChampionPolicy,)

    champion_metric: str = core_field(ChampionPolicy, "champion_metric")
    greater_is_better: bool = core_field(ChampionPolicy, "greater_is_better")


@dg.asset(group_name="evaluation", kinds={"mlflow"}, deps=[generator_evaluation])
def registered_generator(
    context: dg.AssetExecutionContext,
    config: RegistrationConfig,
    home: PipelineHome,
    mlflow: MlflowTracking,
    genres: GenreTaxonomy,
) -> dg.MaterializeResult:
    """The finetuned generator logged to MLflow; alias `champion` moves to it only if it beats the champion."""
    layout = home.layout
    metrics = load_metrics(layout.evaluation_metrics)["metrics"]
    flat_metrics = {key: float(value) for key, value in metrics.items() if isinstance(value, int | float)}
    params = _training_params(layout)
    result = log_and_register(
        tracking_uri=mlflow.tracking_uri,
        experiment_name=mlflow.experiment_name,
        artifact_location=layout.mlflow_artifacts_dir,
        model_name=mlflow.registered_model_name,
        generator=load_generator(layout.final_checkpoint("finetuned")),
        genres=genres.genres,
        params=params,
        metrics=flat_metrics,
        artifacts=[layout.evaluation_grid, layout.evaluation_metrics],
        champion=config.to_core(ChampionPolicy),
        tags={"dagster_run_id": context.run.run_id},
    )
    context.log.info(
        f"registered {mlflow.registered_model_name} v{result.model_version}; champion: "
        f"v{result.champion_version}"
    )
    return dg.MaterializeResult(
        metadata={
            "model_uri": result.model_uri,
            "model_version": str(result.model_version),
            "is_champion": result.is_champion,
            "champion_version": str(result.champion_version),
            "champion_uri": f"models:/{mlflow.registered_model_name}@champion",
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
