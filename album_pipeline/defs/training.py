"""Training assets: training shards, GAN pretraining on unlabelled covers, finetuning on labelled ones."""

import dagster as dg

from album_pipeline.data.manifest import read_manifest
from album_pipeline.data.shards import build_shards, load_shards, manifest_mismatches
from album_pipeline.defs.config import CoreConfig, core_field
from album_pipeline.defs.instance import GPU_POOL
from album_pipeline.defs.labeled import labeled_manifest
from album_pipeline.defs.metadata import counts_table
from album_pipeline.defs.operations import OWNERS
from album_pipeline.defs.resources import GenreTaxonomy, MlflowTracking, PipelineHome
from album_pipeline.defs.training_launch import launch_training
from album_pipeline.defs.unlabeled import unlabeled_manifest
from album_pipeline.model.checkpoint import checkpoint_architecture
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.registry.training_run import TrackingStore, TrainingRun, TrainingTracking, train_tracked
from album_pipeline.training.checkpointing import REPRETRAIN
from album_pipeline.training.data import TrainingDataOptions
from album_pipeline.training.distributed import LaunchOptions
from album_pipeline.training.loop import TrainingConfig, TrainingSummary, format_log_entry


class TrainingDataConfig(CoreConfig):
    core_types = (TrainingDataOptions,)

    resolution: int = core_field(TrainingDataOptions, "resolution")
    workers: int | None = core_field(TrainingDataOptions, "workers")
    shard_size: int = core_field(TrainingDataOptions, "shard_size")


class GanTrainingConfig(CoreConfig):
    """The seed's optimisation settings (``TrainingConfig``'s defaults); each stage overrides what it needs."""

    core_types = (TrainingConfig, LaunchOptions, TrainingTracking)

    steps: int = core_field(TrainingConfig, "steps")
    batch_size: int = core_field(TrainingConfig, "batch_size")
    lr_generator: float = core_field(TrainingConfig, "lr_generator")
    lr_discriminator: float = core_field(TrainingConfig, "lr_discriminator")
    betas: list[float] = core_field(TrainingConfig, "betas")
    real_label: float = core_field(TrainingConfig, "real_label")
    genre_loss_weight: float = core_field(TrainingConfig, "genre_loss_weight")
    latent_loss_weight: float = core_field(TrainingConfig, "latent_loss_weight")
    fake_genre_weight_labelled: float = core_field(TrainingConfig, "fake_genre_weight_labelled")
    instance_noise: float = core_field(TrainingConfig, "instance_noise")
    ema_kimg: float = core_field(TrainingConfig, "ema_kimg")
    ema_rampup: float | None = core_field(TrainingConfig, "ema_rampup")
    precision: str = core_field(TrainingConfig, "precision")
    device: str = core_field(TrainingConfig, "device")
    seed: int = core_field(TrainingConfig, "seed")
    checkpoint_every: int = core_field(TrainingConfig, "checkpoint_every")
    log_every: int = core_field(TrainingConfig, "log_every")
    channels_last: bool | None = core_field(TrainingConfig, "channels_last")
    threads: int | None = core_field(TrainingConfig, "threads")
    adversarial_loss: str | None = core_field(TrainingConfig, "adversarial_loss")
    augment: str = core_field(TrainingConfig, "augment")
    augment_probability: float = core_field(TrainingConfig, "augment_probability")
    ada_target: float | None = core_field(TrainingConfig, "ada_target")
    ada_kimg: float = core_field(TrainingConfig, "ada_kimg")
    ada_interval: int = core_field(TrainingConfig, "ada_interval")
    r1_gamma: float = core_field(TrainingConfig, "r1_gamma")
    r1_interval: int = core_field(TrainingConfig, "r1_interval")
    mode_seeking_weight: float = core_field(TrainingConfig, "mode_seeking_weight")
    processes: int = core_field(LaunchOptions, "processes")
    sample_every: int = core_field(TrainingTracking, "sample_every")
    sample_columns: int = core_field(TrainingTracking, "sample_columns")
    system_metrics: bool = core_field(TrainingTracking, "system_metrics")
    device_data_budget_gb: float | None = core_field(TrainingConfig, "device_data_budget_gb")
    compile: bool = core_field(TrainingConfig, "compile")
    compile_mode: str = core_field(TrainingConfig, "compile_mode")


class PretrainConfig(GanTrainingConfig):
    core_types = (TrainingConfig, GanArchitecture, LaunchOptions, TrainingTracking)
    # The data fixes them: one genre index per class of the taxonomy, and the side of the training shards.
    fixed_core_fields = frozenset({"num_genres", "resolution"})

    genre_loss_weight: float = core_field(
        TrainingConfig,
        "genre_loss_weight",
        "Weight of the genre losses (seed: 10). When pretraining, 0 keeps the genre out of the unlabelled "
        "stage so that finetuning binds styles to real genres (the demo does this).",
    )
    architecture: str = core_field(GanArchitecture, "architecture")
    blocks: str = core_field(GanArchitecture, "blocks")
    generator_width: int = core_field(GanArchitecture, "generator_width")
    discriminator_width: int = core_field(GanArchitecture, "discriminator_width")
    noise_dim: int = core_field(GanArchitecture, "noise_dim")
    latent_dim: int | None = core_field(GanArchitecture, "latent_dim")
    genre_embedding_dim: int = core_field(GanArchitecture, "genre_embedding_dim")
    dropout: float | None = core_field(GanArchitecture, "dropout")
    minibatch_std_group: int = core_field(GanArchitecture, "minibatch_std_group")
    discriminator_norm: str | None = core_field(GanArchitecture, "discriminator_norm")


class FinetuneConfig(GanTrainingConfig):
    """The architecture is the pretrained checkpoint's, so only the optimisation settings are here."""

    stage_overrides = {
        "steps": "finetuning starts from the pretrained weights and binds genres on the much smaller labelled "
        "train split, so it runs a quarter of pretraining's steps (the pipeline's 5,000 after 20,000)"
    }

    steps: int = core_field(
        TrainingConfig, "steps", "Optimiser steps on the labelled train split.", override=5_000
    )


SHARD_CHECK = "shard_rows_match_manifest"
# Covers of the labelled set (every split) a finetune was built from.
TRAINED_COVERS = "labeled_images"


def _shard_check_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SHARD_CHECK,
        asset=asset,
        blocking=True,
        description="The shard index has one row per manifest image: the same count and the same image ids.",
    )


def _build(context, layout, name: str, genres, config: TrainingDataConfig) -> dg.MaterializeResult:
    manifest_path = layout.labeled_manifest if name == "labeled" else layout.unlabeled_manifest
    out_dir = layout.training_data(name)
    options = config.to_core(TrainingDataOptions)
    manifest = read_manifest(manifest_path)
    build = build_shards(
        manifest,
        layout.root,
        out_dir,
        genres,
        warn=context.log.warning,
        log=context.log.info,
        resolution=options.resolution,
        workers=options.workers,
        shard_size=options.shard_size,
    )
    data = build.shard_set
    labelled = data.labels >= 0
    per_genre = {genres[index]: int((data.labels == index).sum()) for index in range(len(genres))}
    if labelled.any():
        per_genre["(unlabelled)"] = int((~labelled).sum())
    damaged = f", decoded {build.damaged_shards} damaged shard(s) again" if build.damaged_shards else ""
    context.log.info(
        f"{len(data):,} images in {out_dir} in {build.seconds:.1f} s: decoded {build.decoded:,}, "
        f"reused {build.reused:,} (copied {build.copied:,}), dropped {build.dropped_shards} shard file(s)"
        f"{damaged}"
    )
    problems = manifest_mismatches(data, manifest["image_id"].astype(str))
    return dg.MaterializeResult(
        metadata={
            "images": len(data),
            "decoded": build.decoded,
            "reused": build.reused,
            "damaged_shards": build.damaged_shards,
            "resolution": options.resolution,
            "per_genre": counts_table(per_genre, "genre"),
            "path": dg.MetadataValue.path(str(out_dir)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=SHARD_CHECK,
                passed=not problems,
                metadata={"index_rows": len(data), "manifest_rows": len(manifest)},
                description=(
                    "; ".join(problems) + "; rematerialize this asset to rebuild the index"
                    if problems
                    else f"the index and the manifest list the same {len(data):,} images"
                ),
            )
        ],
    )


# Two assets written out rather than made by a factory: each keeps its own name, upstream and docstring where a
# reader (and the launchpad) looks for them; _build holds what they share.
@dg.asset(
    group_name="training",
    kinds={"numpy"},
    owners=OWNERS,
    deps=[unlabeled_manifest],
    check_specs=[_shard_check_spec("unlabeled_training_data")],
)
def unlabeled_training_data(
    context: dg.AssetExecutionContext, config: TrainingDataConfig, home: PipelineHome, genres: GenreTaxonomy
) -> dg.MaterializeResult:
    """Unlabelled covers decoded, fitted to the training resolution and stored in uint8 training shards.

    Incremental: a rebuild decodes only the covers that no shard holds yet.
    """
    return _build(context, home.layout, "unlabeled", genres.genres, config)


@dg.asset(
    group_name="training",
    kinds={"numpy"},
    owners=OWNERS,
    deps=[labeled_manifest],
    check_specs=[_shard_check_spec("labeled_training_data")],
)
def labeled_training_data(
    context: dg.AssetExecutionContext, config: TrainingDataConfig, home: PipelineHome, genres: GenreTaxonomy
) -> dg.MaterializeResult:
    """Labelled covers in training shards like the unlabelled ones, with class labels and train/val/test splits.

    A changed genre or split only rewrites the shard index; no cover is decoded again.
    """
    return _build(context, home.layout, "labeled", genres.genres, config)


def _training_metadata(summary: TrainingSummary, run: TrainingRun) -> dict:
    return {
        **_mlflow_metadata(run),
        **summary.metadata(),
        "checkpoint": dg.MetadataValue.path(str(summary.checkpoint_path)),
    }


def _mlflow_metadata(run: TrainingRun) -> dict:
    if run.run_id is None:
        return {"mlflow_run": "not tracked: the MLflow store could not be used (the run's warnings say why)"}
    where = (
        dg.MetadataValue.url(run.url)
        if run.url
        else f"run {run.run_id} in experiment {run.store.experiment_name!r} (`album-pipeline ui` or `mlflow ui`)"
    )
    return {"mlflow_run": where, "mlflow_run_id": run.run_id, "mlflow_experiment": run.store.experiment_name}


def _tracking_env(mlflow: MlflowTracking) -> dict[str, str]:
    return {"tracking_uri": mlflow.tracking_uri, "experiment_name": mlflow.experiment_name}


def _tracking_store(mlflow: MlflowTracking, layout) -> TrackingStore:
    return TrackingStore(mlflow.tracking_uri, mlflow.experiment_name, layout.mlflow_artifacts_dir)


def _log_entry(context):
    """Each ``log_every`` entry (losses, images/s); the steps, rate and time left come through ``progress_log``
    at a steady time cadence, however long ``log_every`` steps take."""
    return lambda entry: context.log.info(format_log_entry(entry))


@dg.asset(
    group_name="training", kinds={"pytorch"}, owners=OWNERS, deps=[unlabeled_training_data], pool=GPU_POOL
)
def pretrained_generator(
    context: dg.AssetExecutionContext,
    config: PretrainConfig,
    home: PipelineHome,
    genres: GenreTaxonomy,
    mlflow: MlflowTracking,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """The GAN pretrained on unlabelled covers (``architecture``: the seed's AC-GAN, whose genre acts as a
    categorical code until finetuning, or the projection GAN, which learns one "any cover" class)."""
    layout = home.layout
    data = load_shards(layout.training_data("unlabeled"))
    arch = config.to_core(GanArchitecture, num_genres=len(genres.genres), resolution=data.resolution)
    if config.processes > 1:
        return launch_training(
            context, pipes_subprocess_client, "pretrain", layout, config, arch, **_tracking_env(mlflow)
        )
    summary, run = train_tracked(
        data,
        arch,
        config.to_core(TrainingConfig),
        layout.checkpoint_dir("pretrained"),
        store=_tracking_store(mlflow, layout),
        stage="pretrained",
        use_labels=False,
        options=config.to_core(TrainingTracking),
        log=_log_entry(context),
        progress_log=context.log.info,
        warn=context.log.warning,
        tags={"dagster_run_id": context.run.run_id},
    )
    return dg.MaterializeResult(metadata=_training_metadata(summary, run))


@dg.asset(
    group_name="training",
    kinds={"pytorch"},
    owners=OWNERS,
    deps=[pretrained_generator, labeled_training_data],
    pool=GPU_POOL,
)
def finetuned_generator(
    context: dg.AssetExecutionContext,
    config: FinetuneConfig,
    home: PipelineHome,
    mlflow: MlflowTracking,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """The pretrained GAN (of the pretrained checkpoint's architecture) finetuned on the labelled train split,
    now conditioned on real genres."""
    layout = home.layout
    pretrained = layout.final_checkpoint("pretrained")
    # An input, not a resume file: unreadable, it is an error that says which asset writes it again.
    arch = checkpoint_architecture(pretrained, remedy=REPRETRAIN)
    labeled = load_shards(layout.training_data("labeled"))
    # The retrain sensor compares the labelled manifest's rows with this (album_pipeline.automation).
    context.add_asset_metadata({TRAINED_COVERS: len(labeled)})
    if config.processes > 1:
        return launch_training(
            context, pipes_subprocess_client, "finetune", layout, config, **_tracking_env(mlflow)
        )
    summary, run = train_tracked(
        labeled.subset("train"),
        arch,
        config.to_core(TrainingConfig),
        layout.checkpoint_dir("finetuned"),
        store=_tracking_store(mlflow, layout),
        stage="finetuned",
        use_labels=True,
        options=config.to_core(TrainingTracking),
        init_checkpoint=pretrained,
        log=_log_entry(context),
        progress_log=context.log.info,
        warn=context.log.warning,
        tags={"dagster_run_id": context.run.run_id},
    )
    return dg.MaterializeResult(metadata=_training_metadata(summary, run))


assets = [unlabeled_training_data, labeled_training_data, pretrained_generator, finetuned_generator]
