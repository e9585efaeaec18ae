"""Training assets: training shards, GAN pretraining on unlabelled covers, finetuning on labelled ones."""

import dataclasses

import dagster as dg
from pydantic import Field

from album_pipeline.data.manifest import read_manifest
from album_pipeline.data.shards import DEFAULT_SHARD_SIZE, build_shards, load_shards, manifest_mismatches
from album_pipeline.defs.labeled import labeled_manifest
from album_pipeline.defs.metadata import counts_table
from album_pipeline.defs.resources import GenreTaxonomy, PipelineHome
from album_pipeline.defs.unlabeled import unlabeled_manifest
from album_pipeline.model.checkpoint import load_checkpoint
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.training.loop import TrainingConfig, train_gan

_TRAINING_FIELDS = {field.name for field in dataclasses.fields(TrainingConfig)}
_ARCH_FIELDS = {field.name for field in dataclasses.fields(GanArchitecture)} - {"num_genres", "resolution"}


class TrainingDataConfig(dg.Config):
    resolution: int = Field(64, description="Side of the square training images (the seed's 64).")
    workers: int | None = Field(
        None, description="Decode processes; default: all cores when 20,000 or more images need decoding."
    )
    shard_size: int = Field(DEFAULT_SHARD_SIZE, description="Images per shard file (96 MiB at 64px).")


class GanTrainingConfig(dg.Config):
    """The seed's optimisation settings; each stage overrides what it needs."""

    steps: int = Field(20_000, description="Optimiser steps.")
    batch_size: int = 128
    lr_generator: float = 2e-4
    lr_discriminator: float = 1e-5
    beta1: float = 0.5
    beta2: float = 0.999
    real_label: float = Field(0.9, description="One-sided label smoothing for real images.")
    genre_loss_weight: float = Field(
        10.0,
        description="Weight of the genre losses (seed: 10). When pretraining, 0 keeps the genre out of the "
        "unlabelled stage so that finetuning binds styles to real genres (the demo does this).",
    )
    latent_loss_weight: float = 1.0
    fake_genre_weight_labelled: float = Field(
        1.0,
        description="Weight of fakes in D's genre loss when real labels exist (seed: 1). At 0, D's genre head "
        "learns only from real covers, so G must match the real genre rather than any style D memorised.",
    )
    instance_noise: float = Field(0.1, description="Initial std of noise on D's inputs, decaying to 0.")
    precision: str = Field("auto", description="auto | bf16 | fp32 (auto: bf16 autocast where supported).")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N.")
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50

    def training_config(self) -> TrainingConfig:
        values = self.model_dump(include=_TRAINING_FIELDS - {"betas"})
        return TrainingConfig(betas=(self.beta1, self.beta2), **values)


class PretrainConfig(GanTrainingConfig):
    generator_width: int = Field(512, description="Channels after the generator's dense layer (seed: 512).")
    discriminator_width: int = Field(64, description="Channels of the discriminator's first conv (seed: 64).")
    noise_dim: int = 100
    latent_dim: int = 2
    genre_embedding_dim: int = 10
    dropout: float = 0.3


class FinetuneConfig(GanTrainingConfig):
    steps: int = Field(5_000, description="Optimiser steps on the labelled train split.")


SHARD_CHECK = "shard_rows_match_manifest"


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
    manifest = read_manifest(manifest_path)
    build = build_shards(
        manifest,
        layout.root,
        out_dir,
        genres,
        resolution=config.resolution,
        workers=config.workers,
        shard_size=config.shard_size,
    )
    data = build.shard_set
    labelled = data.labels >= 0
    per_genre = {genres[index]: int((data.labels == index).sum()) for index in range(len(genres))}
    if labelled.any():
        per_genre["(unlabelled)"] = int((~labelled).sum())
    context.log.info(
        f"{len(data):,} images in {out_dir} in {build.seconds:.1f} s: decoded {build.decoded:,}, "
        f"reused {build.reused:,} (copied {build.copied:,}), dropped {build.dropped_shards} shard file(s)"
    )
    problems = manifest_mismatches(data, manifest["image_id"].astype(str))
    return dg.MaterializeResult(
        metadata={
            "images": len(data),
            "decoded": build.decoded,
            "reused": build.reused,
            "resolution": config.resolution,
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


@dg.asset(
    group_name="training",
    kinds={"numpy"},
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


def _training_metadata(summary) -> dict:
    return {
        "checkpoint": dg.MetadataValue.path(str(summary.checkpoint_path)),
        "steps": summary.steps,
        "images_per_second": round(summary.images_per_second, 1),
        "device": summary.device,
        "precision": summary.precision,
        **{f"final_{name}": round(float(value), 4) for name, value in summary.final_losses.items()},
    }


def _log_progress(context):
    def log(record: dict) -> None:
        context.log.info(
            " ".join(
                f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                for key, value in record.items()
            )
        )

    return log


@dg.asset(group_name="training", kinds={"pytorch"}, deps=[unlabeled_training_data])
def pretrained_generator(
    context: dg.AssetExecutionContext, config: PretrainConfig, home: PipelineHome, genres: GenreTaxonomy
) -> dg.MaterializeResult:
    """The AC-GAN pretrained on unlabelled covers; the genre acts as a categorical code until finetuning."""
    layout = home.layout
    arch = GanArchitecture(num_genres=len(genres.genres), **config.model_dump(include=_ARCH_FIELDS))
    summary = train_gan(
        load_shards(layout.training_data("unlabeled")),
        arch,
        config.training_config(),
        layout.checkpoint_dir("pretrained"),
        use_labels=False,
        log=_log_progress(context),
    )
    return dg.MaterializeResult(metadata=_training_metadata(summary))


@dg.asset(group_name="training", kinds={"pytorch"}, deps=[pretrained_generator, labeled_training_data])
def finetuned_generator(
    context: dg.AssetExecutionContext, config: FinetuneConfig, home: PipelineHome
) -> dg.MaterializeResult:
    """The pretrained AC-GAN finetuned on the labelled train split, now conditioned on real genres."""
    layout = home.layout
    pretrained = layout.checkpoint_dir("pretrained") / "final.pt"
    arch = GanArchitecture(**load_checkpoint(pretrained)["arch"])
    summary = train_gan(
        load_shards(layout.training_data("labeled")).subset("train"),
        arch,
        config.training_config(),
        layout.checkpoint_dir("finetuned"),
        use_labels=True,
        init_checkpoint=pretrained,
        log=_log_progress(context),
    )
    return dg.MaterializeResult(metadata=_training_metadata(summary))


assets = [unlabeled_training_data, labeled_training_data, pretrained_generator, finetuned_generator]
