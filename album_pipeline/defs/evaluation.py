"""Evaluation assets: an independent genre classifier and the generator's evaluation."""

import json
from typing import Literal

import dagster as dg
from pydantic import Field

from album_pipeline.data.shards import load_shards
from album_pipeline.defs.config import CoreConfig, core_field
from album_pipeline.defs.metadata import counts_table, png_markdown
from album_pipeline.defs.resources import GenreTaxonomy, PipelineHome
from album_pipeline.defs.training import finetuned_generator, labeled_training_data
from album_pipeline.metrics.evaluate import EvaluationConfig, evaluate_generator
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
    core_types = (EvaluationConfig,)

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


@dg.asset(group_name="evaluation", kinds={"pytorch"}, deps=[labeled_training_data])
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
            "real_test_accuracy": float(test_accuracy),
            "train_images": len(train),
            "test_images": len(test),
            "checkpoint": dg.MetadataValue.path(str(layout.genre_classifier_checkpoint)),
        }
    )


def _feature_extractor(config: GeneratorEvaluationConfig, classifier):
    if config.feature_extractor == "genre_classifier":
        return classifier_feature_extractor(classifier)
    # The core falls back to $ALBUM_PIPELINE_INCEPTION_WEIGHTS, then clean-fid's own path.
    return inception_feature_extractor(config.inception_weights)


@dg.asset(group_name="evaluation", kinds={"pytorch"}, deps=[finetuned_generator, genre_classifier])
def generator_evaluation(
    context: dg.AssetExecutionContext,
    config: GeneratorEvaluationConfig,
    home: PipelineHome,
    genres: GenreTaxonomy,
) -> dg.MaterializeResult:
    """Genre accuracy of generated covers (independent judge), distances to real test covers, and a grid."""
    layout = home.layout
    classifier, classifier_genres = load_classifier(layout.genre_classifier_checkpoint)
    if tuple(classifier_genres) != genres.genres:
        raise ValueError(
            f"the genre classifier was trained on {classifier_genres}, the pipeline now uses {genres.genres}: "
            "rematerialize genre_classifier"
        )
    extractor = _feature_extractor(config, classifier)
    generator = load_generator(layout.final_checkpoint("finetuned"))
    test = load_shards(layout.training_data("labeled")).subset("test")
    report = evaluate_generator(
        generator,
        classifier,
        genres.genres,
        test.read_all(),
        test.labels,
        extractor,
        layout.evaluation_dir,
        config.to_core(EvaluationConfig),
    )
    context.log.info(json.dumps(report.metrics, indent=1))
    per_genre = {
        genre: f"{report.metrics[f'genre_accuracy/{genre}']:.3f} / "
        f"{report.metrics.get(f'real_test_accuracy/{genre}', float('nan')):.3f}"
        for genre in genres.genres
        if f"genre_accuracy/{genre}" in report.metrics
    }
    return dg.MaterializeResult(
        metadata={
            **{name: float(value) for name, value in report.metrics.items()},
            "per_genre_accuracy": counts_table(per_genre, "genre", "accuracy: generated / real test"),
            "grid": png_markdown(report.grid_path, "one row per genre"),
            "metrics_file": dg.MetadataValue.path(str(report.metrics_path)),
        }
    )


assets = [genre_classifier, generator_evaluation]
