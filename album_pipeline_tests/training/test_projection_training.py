"""train_gan with the projection architecture (issue 23): pretraining as one "any cover" class, finetuning
from it, exact resume, refusal of another architecture's checkpoint, and 128/256 px at tiny widths."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
import torch

from album_pipeline.metrics.discriminator_accuracy import load_discriminator
from album_pipeline.model.checkpoint import load_checkpoint, load_generator_with_genres
from album_pipeline.model.networks import GanArchitecture, generate_covers
from album_pipeline.model.projection import ProjectionDiscriminator, ProjectionGenerator
from album_pipeline.training.loop import TrainingConfig, train_gan
from album_pipeline_tests.training.conftest import GENRES

TINY = GanArchitecture(
    architecture="projection", num_genres=len(GENRES), noise_dim=8, generator_width=32, discriminator_width=4
)
FAST = TrainingConfig(steps=3, batch_size=8, log_every=1, checkpoint_every=2, precision="fp32")
ANY_COVER = len(GENRES)


def crash_after_step_3(entry: dict) -> None:
    """A log callback that stops the run as a kill would, after the checkpoint of step 2."""
    if entry["step"] == 3:
        raise KeyboardInterrupt


def recorded_classes(monkeypatch) -> list[torch.Tensor]:
    """The conditioning indices every discriminator call of the test is given."""
    seen: list[torch.Tensor] = []
    forward = ProjectionDiscriminator.forward

    def recording(self, images, genres):
        seen.append(genres.detach().clone())
        return forward(self, images, genres)

    monkeypatch.setattr(ProjectionDiscriminator, "forward", recording)
    return seen


@pytest.mark.parametrize("blocks", ["residual", "plain"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pretraining_then_finetuning_stays_finite_and_loads(tmp_path, dataset, precision, blocks):
    arch = replace(TINY, blocks=blocks)
    config = replace(FAST, precision=precision)
    pretrained = train_gan(dataset(labelled=False), arch, config, tmp_path / "pre", use_labels=False)
    finetuned = train_gan(
        dataset(),
        arch,
        config,
        tmp_path / "fine",
        use_labels=True,
        init_checkpoint=pretrained.checkpoint_path,
    )
    for summary in (pretrained, finetuned):
        for entry in summary.history:
            assert all(math.isfinite(value) for value in entry.values())
        assert {"loss_d", "loss_g", "d_real_logit", "d_fake_logit"} <= set(summary.final_losses)
        assert not any("genre" in name for name in summary.final_losses)  # no classifier, no genre loss
    payload = load_checkpoint(finetuned.checkpoint_path)
    assert payload["arch"] == arch.to_dict() and payload["config"]["adversarial_loss"] is None
    generator, genres = load_generator_with_genres(finetuned.checkpoint_path)
    assert isinstance(generator, ProjectionGenerator) and genres == GENRES
    covers = generate_covers(generator, [0, 4], seed=1)
    assert covers.shape == (2, 64, 64, 3) and covers.dtype == torch.uint8
    assert load_discriminator(finetuned.checkpoint_path) is None  # no genre head to report


def test_pretraining_judges_every_cover_as_any_cover_and_finetuning_by_genre(tmp_path, dataset, monkeypatch):
    seen = recorded_classes(monkeypatch)
    train_gan(dataset(labelled=False), TINY, replace(FAST, steps=2), tmp_path / "pre", use_labels=False)
    assert seen and all(bool((classes == ANY_COVER).all()) for classes in seen)
    seen.clear()
    data = dataset()
    train_gan(data, TINY, replace(FAST, steps=2), tmp_path / "fine", use_labels=True)
    assert seen and not any(bool((classes == ANY_COVER).any()) for classes in seen)
    assert set(torch.cat(seen).tolist()) == set(range(len(GENRES)))


def test_finetuning_starts_from_the_pretrained_weights_and_each_genre_from_its_own_row(tmp_path, dataset):
    """Pretraining trains everything but the genres' rows; they keep their distinct initial values, so that
    finetuning separates genres from its first step (copied from the "any cover" row they did not separate)."""
    pretrained = train_gan(dataset(labelled=False), TINY, FAST, tmp_path / "pre", use_labels=False)
    frozen = replace(FAST, steps=1, lr_generator=0.0, lr_discriminator=0.0)
    finetuned = train_gan(
        dataset(),
        TINY,
        frozen,
        tmp_path / "fine",
        use_labels=True,
        init_checkpoint=pretrained.checkpoint_path,
    )
    before, after = load_checkpoint(pretrained.checkpoint_path), load_checkpoint(finetuned.checkpoint_path)
    for network in ("generator", "discriminator"):
        for name, value in before[network].items():
            # Batch norm statistics and spectral norm's power-iteration vectors (_u, _v) move in any forward pass.
            if not any(moving in name for moving in ("running", "num_batches", "._u", "._v")):
                assert torch.equal(value, after[network][name]), f"{network}.{name} was not loaded"
    rows = after["generator"]["genre_embedding.weight"][: len(GENRES)]
    assert torch.cdist(rows, rows).add(torch.eye(len(GENRES))).min() > 0.1  # every genre its own row


def test_an_interrupted_run_resumes_to_the_very_weights_of_an_uninterrupted_one(tmp_path, dataset):
    config = replace(FAST, steps=4, augment="color,translation,cutout", r1_gamma=1.0, r1_interval=2)
    straight = train_gan(dataset(), TINY, config, tmp_path / "straight", use_labels=True)

    with pytest.raises(KeyboardInterrupt):
        train_gan(dataset(), TINY, config, tmp_path / "resumed", use_labels=True, log=crash_after_step_3)
    resumed = train_gan(dataset(), TINY, config, tmp_path / "resumed", use_labels=True)
    assert resumed.resumed_from_step == 2
    expected, got = load_checkpoint(straight.checkpoint_path), load_checkpoint(resumed.checkpoint_path)
    for network in ("generator", "discriminator", "generator_ema"):
        for name, value in expected[network].items():
            assert torch.equal(value, got[network][name]), f"{network}.{name}"


def test_a_checkpoint_of_the_other_architecture_or_resolution_is_refused_or_not_resumed(tmp_path, dataset):
    seed = GanArchitecture(num_genres=len(GENRES), noise_dim=8, generator_width=16, discriminator_width=4)
    seed_run = train_gan(dataset(labelled=False), seed, FAST, tmp_path / "seed", use_labels=False)
    shown = re.escape(f"trained with architecture {seed.to_dict()}, not {TINY.to_dict()}")
    with pytest.raises(ValueError, match=f"{shown}; finetune with the pretrained run's architecture"):
        train_gan(
            dataset(),
            TINY,
            FAST,
            tmp_path / "fine",
            use_labels=True,
            init_checkpoint=seed_run.checkpoint_path,
        )
    # A latest.pt of the other architecture in the folder is another run's: trained over, never loaded.
    projection_run = train_gan(dataset(labelled=False), TINY, FAST, tmp_path / "seed", use_labels=False)
    assert projection_run.resumed_from_step == 0 and projection_run.steps_this_run == FAST.steps
    with pytest.raises(ValueError, match="data is 64px but the architecture makes 128px images"):
        train_gan(dataset(), replace(TINY, resolution=128), FAST, tmp_path / "x", use_labels=True)


@pytest.mark.parametrize("resolution", [128, 256])
def test_larger_covers_train_resume_and_generate_at_tiny_widths(tmp_path, dataset, resolution):
    arch = replace(TINY, resolution=resolution, generator_width=64, discriminator_width=4)
    config = replace(FAST, steps=3, batch_size=4)
    data = dataset(count=8, resolution=resolution)

    with pytest.raises(KeyboardInterrupt):
        train_gan(data, arch, config, tmp_path, use_labels=True, log=crash_after_step_3)
    resumed = train_gan(data, arch, config, tmp_path, use_labels=True)
    assert resumed.resumed_from_step == 2 and resumed.steps == 3
    generator, _ = load_generator_with_genres(resumed.checkpoint_path)
    covers = generate_covers(generator, [0, 1, 2], seed=0)
    assert covers.shape == (3, resolution, resolution, 3)
