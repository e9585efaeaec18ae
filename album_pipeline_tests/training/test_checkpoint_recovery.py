"""A resume file that does not load is set aside and training starts afresh; an input that does not load is
one clear sentence (issue 11, defect 4)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from album_pipeline.model.checkpoint import UnreadableCheckpoint, load_checkpoint, save_checkpoint
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.recovery import unreadable_copies
from album_pipeline.testing.shards import write_shard_set_from_arrays
from album_pipeline.training.loop import TrainingConfig, train_gan

GENRES = ("rock", "jazz")
TINY = GanArchitecture(num_genres=2, noise_dim=8, generator_width=16, discriminator_width=4)
FAST = TrainingConfig(steps=2, batch_size=4, log_every=1, checkpoint_every=1, precision="fp32")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    images = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    return write_shard_set_from_arrays(tmp_path_factory.mktemp("shards"), images, np.arange(8) % 2, GENRES)


@pytest.mark.parametrize(
    "content",
    [b"garbage" * 100, b"", "truncated", "a list", "this run, keys missing"],
    ids=["garbage", "empty", "truncated", "not a dict", "keys missing"],
)
def test_an_unreadable_latest_checkpoint_is_set_aside_and_training_starts_fresh(tmp_path, data, content):
    latest = tmp_path / "latest.pt"
    if content == "truncated":
        train_gan(data, TINY, FAST, tmp_path, use_labels=True)
        whole = latest.read_bytes()
        _unlink_final_and_previous(tmp_path)
        latest.write_bytes(whole[: len(whole) // 2])
    elif content == "a list":
        save_checkpoint(latest, [1, 2])
    elif content == "this run, keys missing":
        train_gan(data, TINY, FAST, tmp_path, use_labels=True)
        payload = load_checkpoint(latest)
        del payload["optimizer_generator"]
        save_checkpoint(latest, payload)
        _unlink_final_and_previous(tmp_path)
    else:
        latest.write_bytes(content)
    damaged = latest.read_bytes()
    warnings: list[str] = []

    summary = train_gan(data, TINY, FAST, tmp_path, use_labels=True, warn=warnings.append)

    assert summary.resumed_from_step == 0 and summary.steps_this_run == 2
    assert load_checkpoint(latest)["step"] == 2 and summary.checkpoint_path.is_file()
    [aside] = unreadable_copies(latest)
    assert aside.read_bytes() == damaged  # kept for inspection, not deleted
    assert len(warnings) == 1 and aside.name in warnings[0] and "weights_only" not in warnings[0]


def _unlink_final_and_previous(folder):
    """Leave latest.pt the only checkpoint, so nothing else could be resumed (test_resume covers previous.pt)."""
    for name in ("final.pt", "previous.pt"):
        (folder / name).unlink()


def test_a_foreign_run_s_readable_latest_checkpoint_is_replaced_without_a_warning(tmp_path, data, caplog):
    train_gan(data, TINY, FAST, tmp_path, use_labels=True)
    warnings: list[str] = []
    with caplog.at_level(logging.INFO, logger="album_pipeline.training.checkpointing"):
        summary = train_gan(
            data, TINY, replace(FAST, lr_generator=1e-3), tmp_path, use_labels=True, warn=warnings.append
        )
    # Said as information, not a warning: a changed setting is an ordinary reason to train afresh.
    assert f"{tmp_path / 'latest.pt'} is another run's checkpoint (other settings, architecture or data)" in (
        caplog.text
    )
    assert (
        summary.resumed_from_step == 0 and warnings == [] and unreadable_copies(tmp_path / "latest.pt") == []
    )


def test_an_unreadable_init_checkpoint_is_an_input_error_that_says_to_pretrain_again(tmp_path, data):
    pretrained = tmp_path / "pretrained" / "final.pt"
    pretrained.parent.mkdir()
    pretrained.write_bytes(b"garbage" * 100)
    with pytest.raises(UnreadableCheckpoint) as refused:
        train_gan(data, TINY, FAST, tmp_path / "fine", use_labels=True, init_checkpoint=pretrained)
    message = str(refused.value)
    assert message.startswith(f"checkpoint {pretrained} cannot be read: ")
    assert "pretrain again (materialize the pretrained_generator asset)" in message
    assert "weights_only" not in message
    assert (
        pretrained.read_bytes() == b"garbage" * 100 and unreadable_copies(pretrained) == []
    )  # an input stays
