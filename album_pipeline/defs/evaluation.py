"""Evaluation assets: an independent genre classifier and the generator's evaluation."""

from typing import Literal

import dagster as dg
from pydantic import Field

from album_pipeline.data.shards import load_shards
from album_pipeline.defs.config import CoreConfig, core_field
from album_pipeline.defs.instance import GPU_POOL
from album_pipeline.defs.metadata import counts_table, png_markdown
from album_pipeline.defs.operations import OWNERS
from album_pipeline.defs.resources import GenreTaxonomy, PipelineHome
from album_pipeline.defs.training import finetuned_generator, labeled_training_data
from album_pipeline.metrics import names
from album_pipeline.metrics.discriminator_accuracy import load_discriminator
from album_pipeline.metrics.evaluate import EvaluationConfig, EvaluationReport, evaluate_generator
from album_pipeline.metrics.feature_cache import FeatureCache
from album_pipeline.metrics.floors import QualityFloors
from album_pipeline.metrics.frechet import (
    INCEPTION_FILE_NAME,
    INCEPTION_WEIGHTS_ENV,
    classifier_feature_extractor,
    inception_feature_extractor,
)
from album_pipeline.metrics.genre_classifier import (
    ClassifierConfig,
    accuracy,
    load_classifier,
    save_classifier,
    train_genre_classifier,
)
from album_pipeline.model.checkpoint import load_generator

QUALITY_FLOORS_CHECK = "quality_floors"


class GenreClassifierConfig(CoreConfig):
    core_types = (ClassifierConfig,)
    # The judge's architecture and augmentation stay as measured; only its schedule is a run setting.
    fixed_core_fields = frozenset(
        {
            "weight_decay",
            "widths",
            "dropout",
            "flip_probability",
            "brightness_jitter",
            "contrast_jitter",
            "balance_classes",
            "restore_best_val",
        }
    )

    epochs: int = core_field(ClassifierConfig, "epochs")
    batch_size: int = core_field(ClassifierConfig, "batch_size")
    learning_rate: float = core_field(ClassifierConfig, "learning_rate")
    seed: int = core_field(ClassifierConfig, "seed")


class GeneratorEvaluationConfig(CoreConfig):
    core_types = (EvaluationConfig, QualityFloors)
    # Built from the QualityFloors fields below (Dagster config is flat).
    fixed_core_fields = frozenset({"floors"})

    samples_per_genre: int = core_field(EvaluationConfig, "samples_per_genre")
    feature_extractor: Literal["inception", "genre_classifier"] = Field(
        "inception",
        description="Features for the Frechet/kernel distances: 'inception' reports FID/KID (needs clean-fid's "
        f"Inception weights, see {INCEPTION_WEIGHTS_ENV}); 'genre_classifier' reports "
        "fd_genre_classifier/kd_genre_classifier from the independent classifier's features.",
    )
    inception_weights: str | None = Field(
        None, description=f"Path to {INCEPTION_FILE_NAME}; default ${INCEPTION_WEIGHTS_ENV}."
    )
    seed: int = core_field(EvaluationConfig, "seed")
    grid_columns: int = core_field(EvaluationConfig, "grid_columns")
    batch_size: int = core_field(EvaluationConfig, "batch_size")
    nearest_k: int = core_field(EvaluationConfig, "nearest_k")
    near_copy_quantile: float = core_field(EvaluationConfig, "near_copy_quantile")
    ms_ssim_pairs: int = core_field(EvaluationConfig, "ms_ssim_pairs")
    diversity_covers: int = core_field(EvaluationConfig, "diversity_covers")
    # The floors of the quality_floors check, and of the champion gate that reads them from metrics.json.
    min_genre_accuracy_ratio: float = core_field(QualityFloors, "min_genre_accuracy_ratio")
    min_diversity: float = core_field(QualityFloors, "min_diversity")
    max_near_copy_share: float = core_field(QualityFloors, "max_near_copy_share")
    min_coverage_ratio: float | None = core_field(QualityFloors, "min_coverage_ratio")

    def evaluation(self) -> EvaluationConfig:
        return self.to_core(EvaluationConfig, floors=self.to_core(QualityFloors))


@dg.asset(
    group_name="evaluation", kinds={"pytorch"}, owners=OWNERS, deps=[labeled_training_data], pool=GPU_POOL
)
def genre_classifier(
    context: dg.AssetExecutionContext,
    config: GenreClassifierConfig,
    home: PipelineHome,
    genres: GenreTaxonomy,
) -> dg.MaterializeResult:
    """An independent CNN trained on the real labelled train split: the judge of generated covers' genres."""
    layout = home.layout
    data = load_shards(layout.training_data("labeled"))
    train, val, test = data.subset("train"), data.subset("val"), data.subset("test")
    trained = train_genre_classifier(
        train.read_all(),
        train.labels,
        genres.genres,
        config.to_core(ClassifierConfig),
        val_images=val.read_all() if len(val) else None,
        val_labels=val.labels if len(val) else None,
    )
    save_classifier(layout.genre_classifier_checkpoint, trained.model, genres.genres)
    test_accuracy = accuracy(trained.model, test.read_all(), test.labels) if len(test) else float("nan")
    context.log.info(f"genre classifier accuracy on {len(test)} real test covers: {test_accuracy:.3f}")
    return dg.MaterializeResult(
        metadata={
            names.heldout(names.GENRE_ACCURACY): float(test_accuracy),
            "train_images": len(train),
            "test_images": len(test),
            "checkpoint": dg.MetadataValue.path(str(layout.genre_classifier_checkpoint)),
        }
    )


def _feature_extractor(config: GeneratorEvaluationConfig, classifier, classifier_file):
    if config.feature_extractor == "genre_classifier":
        return classifier_feature_extractor(classifier, classifier_file)
    # The core falls back to $ALBUM_PIPELINE_INCEPTION_WEIGHTS, then clean-fid's own path.
    return inception_feature_extractor(config.inception_weights)


@dg.asset(
    group_name="evaluation",
    kinds={"pytorch"},
    owners=OWNERS,
    deps=[finetuned_generator, genre_classifier],
    pool=GPU_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            QUALITY_FLOORS_CHECK,
            asset="generator_evaluation",
            blocking=False,
            description="The generated covers clear every floor of QualityFloors (accuracy, diversity, "
            "near-copies), as the real held-out covers do.",
        )
    ],
)
def generator_evaluation(
    context: dg.AssetExecutionContext,
    config: GeneratorEvaluationConfig,
    home: PipelineHome,
    genres: GenreTaxonomy,
):
    """Every metric of the evaluation for generated covers beside the real held-out covers' own value."""
    layout = home.layout
    classifier, classifier_genres = load_classifier(layout.genre_classifier_checkpoint)
    if tuple(classifier_genres) != genres.genres:
        raise ValueError(
            f"the genre classifier was trained on {classifier_genres}, the pipeline now uses {genres.genres}: "
            "rematerialize genre_classifier"
        )
    extractor = _feature_extractor(config, classifier, layout.genre_classifier_checkpoint)
    checkpoint = layout.final_checkpoint("finetuned")
    data = load_shards(layout.training_data("labeled"))
    report = evaluate_generator(
        load_generator(checkpoint),
        classifier,
        genres.genres,
        data.subset("train"),
        data.subset("test"),
        extractor,
        layout.evaluation_dir,
        config.evaluation(),
        discriminator=load_discriminator(checkpoint),
        feature_cache=FeatureCache(layout.feature_cache_dir, log=context.log.warning),
    )
    for warning in report.warnings:
        context.log.warning(warning)
    verdicts = report.verdicts
    context.log.info("; ".join(verdict.description for verdict in verdicts))
    yield dg.MaterializeResult(metadata=evaluation_metadata(report))
    yield dg.AssetCheckResult(
        check_name=QUALITY_FLOORS_CHECK,
        passed=all(verdict.passed for verdict in verdicts),
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(
            f"{'passed' if verdict.passed else 'FAILED'} {verdict.floor}: {verdict.description}"
            for verdict in verdicts
        ),
        metadata={verdict.floor: dg.MetadataValue.bool(verdict.passed) for verdict in verdicts},
    )


def evaluation_metadata(report: EvaluationReport) -> dict:
    """Every overall metric beside its held-out value, the per-genre table, both grids and the files."""
    overall = {
        name: f"{value:.4g} / {report.metrics[names.heldout(name)]:.4g}"
        if names.heldout(name) in report.metrics
        else f"{value:.4g}"
        for name, value in sorted(report.metrics.items())
        if "/" not in name
    }
    near_copies = (
        "near-copies (top) above their nearest training covers"
        if report.near_copies_found
        else "no near-copies: the closest generated covers (top) above their nearest training covers"
    )
    return {
        **{name: float(value) for name, value in report.metrics.items()},
        "overall": counts_table(overall, "metric", "generated / real held-out"),
        "per_genre": dg.MetadataValue.md(report.per_genre.to_markdown(floatfmt=".3f")),
        "grid": png_markdown(report.grid_path, "one row per genre"),
        "near_copies": png_markdown(report.near_copies_path, near_copies),
        "warnings": dg.MetadataValue.md("\n".join(f"- {warning}" for warning in report.warnings) or "(none)"),
        "metrics_file": dg.MetadataValue.path(str(report.metrics_path)),
        "per_genre_file": dg.MetadataValue.path(str(report.per_genre_path)),
    }


assets = [genre_classifier, generator_evaluation]
