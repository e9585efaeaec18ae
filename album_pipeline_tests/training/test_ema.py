"""The generator's moving average: stylegan2-ada's formula, its half-life, and its life in checkpoints."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from album_pipeline.model.checkpoint import load_checkpoint, load_generator
from album_pipeline.training.config import TrainingConfig
from album_pipeline.training.ema import GeneratorEma, ema_beta
from album_pipeline.training.loop import train_gan
from album_pipeline_tests.training.test_loop import FAST, TINY, pretrain_then_finetune_frozen

# A half-life of two steps of 8 images and no ramp-up, so that the average stays visibly apart from G.
SHORT_EMA = replace(FAST, ema_kimg=0.016, ema_rampup=None)


def test_beta_and_ramp_up_follow_stylegan2_ada():
    # stylegan2-ada: ema_nimg = ema_kimg * 1000, min(ema_nimg, cur_nimg * ema_rampup), 0.5 ** (batch / ema_nimg)
    assert ema_beta(64, 10_000_000, 10, None) == pytest.approx(0.9955736831881946, abs=1e-15)
    assert ema_beta(64, 32_000, 10, 0.05) == pytest.approx(0.9726549474122855, abs=1e-15)  # ramp: 1,600 img
    assert ema_beta(64, 10_000_000, 10, 0.05) == ema_beta(64, 0, 10, None)  # ramp past the half-life
    assert ema_beta(128, 0, 40, None) == pytest.approx(0.9977843871238888, abs=1e-15)
    assert ema_beta(64, 0, 10, 0.05) == 0.0  # the first step copies the generator


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)


def _filled(value: float) -> _Tiny:
    module = _Tiny()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(value)
    return module


def test_the_average_moves_half_way_in_one_half_life():
    start, target = _filled(0.0), _filled(1.0)
    ema = GeneratorEma(start, ema_kimg=0.64, ema_rampup=None)  # 640 images: 80 steps of 8
    for step in range(80):
        ema.update(target, batch_size=8, images_seen=step * 8)
    for parameter in ema.module.parameters():
        torch.testing.assert_close(parameter, torch.full_like(parameter, 0.5), rtol=0, atol=1e-5)
    for step in range(80, 160):
        ema.update(target, batch_size=8, images_seen=step * 8)
    for parameter in ema.module.parameters():
        torch.testing.assert_close(parameter, torch.full_like(parameter, 0.75), rtol=0, atol=1e-5)
    assert all(parameter.sum() == 0 for parameter in start.parameters())  # a copy, not the generator itself


def test_buffers_are_copied_while_parameters_are_averaged():
    generator = _filled(1.0)
    ema = GeneratorEma(_filled(0.0), ema_kimg=1000.0, ema_rampup=None)  # beta close to 1
    generator.norm.running_mean.fill_(3.0)
    generator.norm.num_batches_tracked.fill_(7)
    beta = ema.update(generator, batch_size=8, images_seen=0)
    assert torch.equal(ema.module.norm.running_mean, generator.norm.running_mean)
    assert int(ema.module.norm.num_batches_tracked) == 7
    torch.testing.assert_close(ema.module.linear.weight, torch.full((2, 3), 1.0 - beta))
    assert 0 < float(ema.module.linear.weight[0, 0]) < 1e-4
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_the_ramp_up_starts_the_average_at_the_generator():
    generator = _filled(2.0)
    ema = GeneratorEma(_filled(0.0), ema_kimg=10.0, ema_rampup=0.05)
    ema.update(generator, batch_size=8, images_seen=0)
    assert all(torch.equal(p, torch.full_like(p, 2.0)) for p in ema.module.parameters())


def test_bad_ema_settings_are_refused():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ema_kimg must be 0"):
            TrainingConfig(ema_kimg=bad)
    for bad in (0.0, -0.05):
        with pytest.raises(ValueError, match="ema_rampup must be None or a positive ratio"):
            TrainingConfig(ema_rampup=bad)
    TrainingConfig(ema_kimg=0, ema_rampup=None)


def _tensors_equal(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def test_checkpoints_hold_the_average_and_load_generator_prefers_it(tmp_path, dataset):
    summary = train_gan(dataset(), TINY, SHORT_EMA, tmp_path, use_labels=True)
    final, latest = load_checkpoint(summary.checkpoint_path), load_checkpoint(tmp_path / "latest.pt")
    assert _tensors_equal(final["generator_ema"], latest["generator_ema"])
    assert not _tensors_equal(final["generator_ema"], final["generator"])
    assert _tensors_equal(load_generator(summary.checkpoint_path).state_dict(), final["generator_ema"])
    raw = load_generator(summary.checkpoint_path, prefer_ema=False)
    assert _tensors_equal(raw.state_dict(), final["generator"])


def test_ema_kimg_0_writes_no_average(tmp_path, dataset):
    summary = train_gan(dataset(), TINY, replace(FAST, ema_kimg=0), tmp_path, use_labels=True)
    for name in ("final.pt", "latest.pt"):
        assert "generator_ema" not in load_checkpoint(tmp_path / name)
    assert _tensors_equal(
        load_generator(summary.checkpoint_path).state_dict(),
        load_checkpoint(summary.checkpoint_path)["generator"],
    )


# With a ramp-up of 0.5 the ramp still shortens the half-life at step 4, so a resumed run that counted its images
# from 0 again would reset its average to the generator.
@pytest.mark.parametrize("ema_rampup", [None, 0.5])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path, dataset, ema_rampup):
    # 24 images are 3 batches an epoch: resuming at step 4 skips an epoch and a batch of the data order.
    config = replace(SHORT_EMA, steps=6, ema_rampup=ema_rampup)  # checkpoints at steps 2 and 4; crash after 5
    uninterrupted = train_gan(dataset(), TINY, config, tmp_path / "a", use_labels=True)

    def crash_after_step_5(entry: dict) -> None:
        if entry["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gan(dataset(), TINY, config, tmp_path / "b", use_labels=True, log=crash_after_step_5)
    resumed = train_gan(dataset(), TINY, config, tmp_path / "b", use_labels=True)
    assert resumed.resumed_from_step == 4

    first, second = load_checkpoint(uninterrupted.checkpoint_path), load_checkpoint(resumed.checkpoint_path)
    for network in ("generator_ema", "generator", "discriminator"):  # bit for bit, in fp32 on the CPU
        assert _tensors_equal(first[network], second[network]), network
    assert not _tensors_equal(first["generator_ema"], first["generator"])

    def losses(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in entry.items() if k != "images_per_second"} for entry in history]

    assert losses(uninterrupted.history) == losses(resumed.history)


@pytest.mark.parametrize("pretrained_ema", [True, False])
def test_finetuning_starts_its_average_from_the_pretrained_one(tmp_path, dataset, pretrained_ema):
    pretraining = SHORT_EMA if pretrained_ema else replace(FAST, ema_kimg=0)
    # Frozen weights and an average that barely moves: what finetuning's average starts from is what it ends as.
    before, after = pretrain_then_finetune_frozen(
        tmp_path, dataset, pretraining, ema_kimg=1e9, ema_rampup=None
    )
    start = before["generator_ema"] if pretrained_ema else before["generator"]
    assert ("generator_ema" in before) == pretrained_ema
    if pretrained_ema:
        assert not _tensors_equal(before["generator_ema"], before["generator"])
    for name, value in start.items():
        if "running" not in name and "num_batches" not in name:  # batch norm statistics are copied from G
            torch.testing.assert_close(after["generator_ema"][name], value, rtol=0, atol=1e-6)
