from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from album_pipeline.model.checkpoint import load_checkpoint, load_generator_with_genres
from album_pipeline.model.networks import GanArchitecture, generate_covers
from album_pipeline.settings import PROGRESS_SECONDS_VAR
from album_pipeline.training import loop
from album_pipeline.training.loop import TrainingConfig, train_gan
from album_pipeline_tests.training.conftest import GENRES

TINY = GanArchitecture(num_genres=5, noise_dim=8, generator_width=16, discriminator_width=4)
FAST = TrainingConfig(steps=3, batch_size=8, log_every=1, checkpoint_every=2, precision="fp32")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_few_steps_stay_finite_and_write_a_loadable_checkpoint(tmp_path, precision, dataset):
    logged: list[dict] = []
    config = replace(FAST, precision=precision)
    summary = train_gan(dataset(), TINY, config, tmp_path / "ckpt", use_labels=True, log=logged.append)

    assert summary.steps == summary.steps_this_run == 3 and summary.resumed_from_step == 0
    assert summary.precision == precision and summary.device == "cpu" and summary.batch_size == 8
    assert summary.images_per_second > 0
    assert [entry["step"] for entry in logged] == [1, 2, 3] and summary.history == logged
    for entry in logged:  # plain floats, so no autograd graph is kept alive between steps
        assert all(isinstance(value, float | int) and math.isfinite(value) for value in entry.values())
    assert {"loss_d", "loss_g", "d_genre_real", "g_genre"} <= set(summary.final_losses)
    assert summary.checkpoint_path == tmp_path / "ckpt" / "final.pt"

    payload = load_checkpoint(summary.checkpoint_path)
    assert payload["step"] == 3 and payload["arch"] == TINY.to_dict() and payload["genres"] == list(GENRES)
    assert payload["config"]["precision"] == precision and payload["use_labels"] is True
    assert {"generator", "discriminator", "optimizer_generator", "optimizer_discriminator"} <= set(payload)
    generator, genres = load_generator_with_genres(summary.checkpoint_path)
    assert genres == GENRES and not generator.training
    covers = generate_covers(generator, [0, 4], seed=1)
    assert covers.shape == (2, 64, 64, 3) and covers.dtype == torch.uint8


def test_progress_shows_steps_images_per_second_and_time_left(tmp_path, dataset, monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_SECONDS_VAR, "1e-9")  # a progress line at every step, whatever log_every is
    lines: list[str] = []
    config = replace(FAST, steps=4, log_every=4)
    train_gan(
        dataset(), TINY, config, tmp_path, use_labels=True, progress_log=lines.append, progress_bar=True
    )
    assert lines[0] == "finetune: 0 of 4 steps (0%)"
    assert re.fullmatch(r"finetune: 1 of 4 steps \(25%\), [\d.,]+ images/s, about \d+ s left", lines[1])
    assert [int(line.split(" of ")[0].rsplit(" ", 1)[1]) for line in lines] == [0, 1, 2, 3, 4, 4]
    assert lines[-1].startswith("finetune: done, 4 of 4 steps (100%) in ")
    bar = capsys.readouterr().err
    assert "finetune" in bar and "4/4" in bar and "images/s" in bar
    lines.clear()  # a finished run trains nothing and shows nothing
    train_gan(
        dataset(), TINY, config, tmp_path, use_labels=True, progress_log=lines.append, progress_bar=True
    )
    assert lines == [] and capsys.readouterr().err == ""


def test_pretraining_ignores_labels(tmp_path, dataset):
    summary = train_gan(dataset(labelled=False), TINY, FAST, tmp_path, use_labels=False)
    assert "d_genre_real" not in summary.final_losses and "d_genre_fake" in summary.final_losses
    assert load_checkpoint(summary.checkpoint_path)["use_labels"] is False


def test_an_interrupted_run_resumes_from_latest(tmp_path, dataset):
    config = replace(FAST, steps=4)

    def crash_after_step_3(entry: dict) -> None:
        if entry["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gan(dataset(), TINY, config, tmp_path, use_labels=True, log=crash_after_step_3)
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 2
    assert not (tmp_path / "final.pt").exists()

    logged: list[dict] = []
    summary = train_gan(dataset(), TINY, config, tmp_path, use_labels=True, log=logged.append)
    assert summary.resumed_from_step == 2 and summary.steps_this_run == 2 and summary.steps == 4
    assert [entry["step"] for entry in logged] == [3, 4]
    assert [entry["step"] for entry in summary.history] == [1, 2, 3, 4]  # history survives the crash

    # Done already: a rerun trains nothing; only observation settings (log_every) differ.
    again = train_gan(dataset(), TINY, replace(config, log_every=2), tmp_path, use_labels=True)
    assert again.steps_this_run == 0 and again.resumed_from_step == 4


def test_a_checkpoint_of_a_different_run_is_not_resumed(tmp_path, dataset):
    train_gan(dataset(), TINY, FAST, tmp_path, use_labels=True)
    other_config = train_gan(dataset(), TINY, replace(FAST, lr_generator=1e-3), tmp_path, use_labels=True)
    assert other_config.resumed_from_step == 0 and other_config.steps_this_run == 3
    other_data = train_gan(
        dataset(count=25), TINY, replace(FAST, lr_generator=1e-3), tmp_path, use_labels=True
    )
    assert other_data.resumed_from_step == 0


def pretrain_then_finetune_frozen(
    tmp_path: Path, dataset, pretraining: TrainingConfig, **finetuning
) -> tuple[dict, dict]:
    """The pretrained and the finetuned checkpoint of one step of finetuning with zero learning rates."""
    pretrained = train_gan(dataset(labelled=False), TINY, pretraining, tmp_path / "pre", use_labels=False)
    frozen = replace(FAST, steps=1, lr_generator=0.0, lr_discriminator=0.0, **finetuning)
    finetuned = train_gan(
        dataset(),
        TINY,
        frozen,
        tmp_path / "fine",
        use_labels=True,
        init_checkpoint=pretrained.checkpoint_path,
    )
    return load_checkpoint(pretrained.checkpoint_path), load_checkpoint(finetuned.checkpoint_path)


def test_finetuning_starts_from_the_pretrained_weights(tmp_path, dataset):
    # With zero learning rates the optimizers change nothing, so the weights must be the pretrained ones.
    before, after = pretrain_then_finetune_frozen(tmp_path, dataset, FAST)
    for network in ("generator", "discriminator"):
        for name, value in before[network].items():
            if "running" not in name and "num_batches" not in name:  # batch norm statistics do move
                assert torch.equal(value, after[network][name]), f"{network}.{name} was not loaded"
    assert after["optimizer_generator"]["state"][0]["step"] == 1  # the optimizers restarted

    wider = replace(TINY, generator_width=24)
    # The message names the architecture the checkpoint was trained with, then the one asked for.
    shown = re.escape(f"trained with architecture {TINY.to_dict()}, not {wider.to_dict()}")
    with pytest.raises(ValueError, match=f"{shown}; finetune with the pretrained run's architecture"):
        train_gan(
            dataset(),
            wider,
            FAST,
            tmp_path / "x",
            use_labels=True,
            init_checkpoint=tmp_path / "pre" / "final.pt",
        )


def test_fake_genres_cover_every_class(tmp_path, monkeypatch, dataset):
    drawn: list[torch.Tensor] = []
    original = loop.sample_fake_genres

    def spy(count, num_genres, device):
        genres = original(count, num_genres, device)
        drawn.append(genres)
        return genres

    monkeypatch.setattr(loop, "sample_fake_genres", spy)
    train_gan(dataset(), TINY, replace(FAST, steps=4, batch_size=16), tmp_path, use_labels=True)
    seen = torch.cat(drawn)
    assert len(drawn) == 4 and set(seen.tolist()) == set(range(len(GENRES)))
    counts = torch.bincount(loop.sample_fake_genres(5000, 5, "cpu"), minlength=5)
    assert counts.min() > 850  # uniform: about 1000 each, the last genre included


def test_bad_inputs_get_clear_errors(tmp_path, dataset):
    with pytest.raises(ValueError, match="dataset is empty"):
        train_gan(dataset().subset("val"), TINY, FAST, tmp_path, use_labels=False)
    with pytest.raises(ValueError, match="no labelled images"):
        train_gan(dataset(labelled=False), TINY, FAST, tmp_path, use_labels=True)
    with pytest.raises(ValueError, match="num_genres=3 but the data has 5 genres"):
        train_gan(dataset(), replace(TINY, num_genres=3), FAST, tmp_path, use_labels=True)
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainingConfig(precision="fp16")
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        TrainingConfig(batch_size=1)
    with pytest.raises(ValueError, match="betas must be Adam's two values"):
        TrainingConfig(betas=(0.5,))
    with pytest.raises(FileNotFoundError, match="pretrain first"):
        train_gan(dataset(), TINY, FAST, tmp_path, use_labels=True, init_checkpoint=tmp_path / "none.pt")
    assert not list(Path(tmp_path).glob("*.pt"))


def test_small_datasets_train_with_a_smaller_batch(tmp_path, dataset):
    summary = train_gan(dataset(count=5), TINY, replace(FAST, steps=1), tmp_path, use_labels=True)
    assert summary.batch_size == 5


def test_training_depends_on_the_config_seed_not_on_earlier_random_draws(tmp_path, dataset):
    def trained_generator(folder: str, global_seed: int, config: TrainingConfig) -> dict:
        torch.manual_seed(global_seed)  # as if other work had drawn random numbers first
        summary = train_gan(dataset(), TINY, config, tmp_path / folder, use_labels=True)
        return load_checkpoint(summary.checkpoint_path)["generator"]

    first = trained_generator("a", 1, FAST)
    second = trained_generator("b", 2, FAST)
    assert all(torch.equal(first[name], second[name]) for name in first)
    other_seed = trained_generator("c", 1, replace(FAST, seed=7))
    assert not all(torch.equal(first[name], other_seed[name]) for name in first)


def test_rerunning_a_finished_pipeline_trains_nothing_again(tmp_path, dataset):
    def pipeline() -> tuple:
        pretrained = train_gan(dataset(labelled=False), TINY, FAST, tmp_path / "pre", use_labels=False)
        finetuned = train_gan(
            dataset(),
            TINY,
            FAST,
            tmp_path / "fine",
            use_labels=True,
            init_checkpoint=pretrained.checkpoint_path,
        )
        return pretrained, finetuned

    first_pretrain, first_finetune = pipeline()
    assert first_pretrain.steps_this_run == first_finetune.steps_this_run == FAST.steps
    # The rerun re-saves final.pt (new bytes: torch.save embeds a random id), yet finetuning is still reused.
    second_pretrain, second_finetune = pipeline()
    assert second_pretrain.steps_this_run == second_finetune.steps_this_run == 0
    # A pretraining that really differs makes the finetuning run again.
    train_gan(dataset(labelled=False), TINY, replace(FAST, seed=5), tmp_path / "pre", use_labels=False)
    rerun = train_gan(
        dataset(),
        TINY,
        FAST,
        tmp_path / "fine",
        use_labels=True,
        init_checkpoint=tmp_path / "pre" / "final.pt",
    )
    assert rerun.steps_this_run == FAST.steps
