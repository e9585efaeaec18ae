"""The training and evaluation Configs build the core objects the stages have always trained with."""

import dagster as dg
import pydantic
import pytest

from album_pipeline.defs.evaluation import GeneratorEvaluationConfig
from album_pipeline.defs.resources import GenreTaxonomy, PipelineHome
from album_pipeline.defs.training import (
    FinetuneConfig,
    PretrainConfig,
    TrainingDataConfig,
    unlabeled_training_data,
)
from album_pipeline.metrics.evaluate import EvaluationConfig
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.profiles import run_config_for
from album_pipeline.training.loop import TrainingConfig


def test_a_resolution_the_networks_refuse_fails_when_the_config_is_read(tmp_path):
    with pytest.raises(pydantic.ValidationError, match="resolution 48 is not supported.*64x64"):
        TrainingDataConfig(resolution=48)
    result = dg.materialize(
        [unlabeled_training_data],
        run_config={"ops": {"unlabeled_training_data": {"config": {"resolution": 48}}}},
        resources={"home": PipelineHome(root=str(tmp_path)), "genres": GenreTaxonomy()},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "resolution 48 is not supported" in str(failure.step_failure_data.error)
    assert not (tmp_path / "training_data").exists()  # refused before any shard is built


def test_stage_defaults_are_the_seed_scale_and_finetuning_runs_fewer_steps():
    pretrain = PretrainConfig().to_core(TrainingConfig)
    assert pretrain == TrainingConfig() and pretrain.steps == 20_000 and pretrain.betas == (0.5, 0.999)
    assert FinetuneConfig().to_core(TrainingConfig) == TrainingConfig(steps=5_000)
    arch = PretrainConfig().to_core(GanArchitecture, num_genres=5, resolution=64)
    assert arch == GanArchitecture(num_genres=5)
    assert GeneratorEvaluationConfig().to_core(EvaluationConfig).samples_per_genre == 2_000


def test_the_demo_profile_builds_the_settings_the_ablation_chose():
    """The projection GAN with plain blocks, DiffAugment and D at G's learning rate (issue 23's measurements);
    the seed's genre weights stay for architecture=seed."""
    ops = run_config_for("demo")["ops"]
    demo_gan = dict(
        batch_size=64,
        lr_generator=2e-4,
        lr_discriminator=2e-4,
        checkpoint_every=100,
        log_every=50,
        augment="color,translation,cutout",
    )
    pretrain = PretrainConfig(**ops["pretrained_generator"]["config"])
    assert pretrain.to_core(TrainingConfig) == TrainingConfig(steps=150, genre_loss_weight=0.0, **demo_gan)
    assert pretrain.to_core(GanArchitecture, num_genres=5, resolution=64) == GanArchitecture(
        architecture="projection", blocks="plain", num_genres=5, generator_width=128, discriminator_width=32
    )
    finetune = FinetuneConfig(**ops["finetuned_generator"]["config"])
    assert finetune.to_core(TrainingConfig) == TrainingConfig(
        steps=550, fake_genre_weight_labelled=0.0, genre_loss_weight=1.0, **demo_gan
    )
    evaluation = GeneratorEvaluationConfig(**ops["generator_evaluation"]["config"])
    assert evaluation.to_core(EvaluationConfig) == EvaluationConfig(samples_per_genre=200)
