"""Exact resume (issue 13, point 5): every random state, the augmentation state, the previous checkpoint when
the latest is damaged, and a run killed with SIGKILL that ends bit for bit where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import album_pipeline
from album_pipeline.model.checkpoint import load_checkpoint, save_checkpoint
from album_pipeline.recovery import unreadable_copies
from album_pipeline.testing.shards import write_shard_set_from_arrays
from album_pipeline.training import checkpointing, loop
from album_pipeline.training.checkpointing import GanModules
from album_pipeline.training.loop import train_gan
from album_pipeline.training.rng import capture_rng_states, restore_rng_states, seed_all
from album_pipeline_tests.training import resume_worker
from album_pipeline_tests.training.test_loop import FAST, TINY

CPU = torch.device("cpu")
# A half-life of two steps, so the average is part of what must resume exactly.
RESUMABLE = replace(FAST, steps=8, checkpoint_every=2, ema_kimg=0.016, ema_rampup=None)


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_every_random_state_survives_a_checkpoint_file(tmp_path):
    seed_all(7)
    np.random.randn()  # leaves a cached Gaussian, which is part of numpy's state too
    states = capture_rng_states()
    expected = _draws()
    assert set(states) >= {"python", "numpy", "torch"}
    assert ("cuda" in states) == torch.cuda.is_initialized()

    save_checkpoint(tmp_path / "rng.pt", {"rng": states})  # and back through the weights_only load
    seed_all(8)
    restore_rng_states(load_checkpoint(tmp_path / "rng.pt")["rng"], CPU)
    assert _draws() == expected
    seed_all(7)  # seeds all three: the same draws again
    np.random.randn()
    assert _draws() == expected


def _losses(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "images_per_second"} for entry in history]


def _assert_same_run(first: dict, second: dict) -> None:
    """Bit for bit: every network, optimiser, the average, the random states and the loss history."""
    for key in ("generator", "generator_ema", "discriminator"):
        for name, value in first[key].items():
            assert torch.equal(value, second[key][name]), f"{key}.{name}"
    for key in ("optimizer_generator", "optimizer_discriminator"):
        for index, state in first[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, second[key]["state"][index][name]), f"{key}[{index}].{name}"
    assert torch.equal(first["rng"]["torch"], second["rng"]["torch"])
    assert first["rng"]["python"] == second["rng"]["python"]
    assert torch.equal(first["rng"]["numpy"]["key"], second["rng"]["numpy"]["key"])
    assert _losses(first["history"]) == _losses(second["history"])


def _crash_after(step: int):
    def log(entry: dict) -> None:
        if entry["step"] == step:
            raise KeyboardInterrupt

    return log


def test_python_and_numpy_draws_resume_where_they_stopped(tmp_path, dataset, monkeypatch):
    # Augmentations may draw from Python's or NumPy's generator: here the fake genres do, so a resumed run
    # that reseeded either or left it as the process had it would draw other genres and train differently.
    def genres_from_python_and_numpy(count, num_genres, device):
        drawn = [(random.randrange(num_genres) + int(np.random.randint(num_genres))) % num_genres]
        return torch.tensor(drawn * count, device=device)

    monkeypatch.setattr(loop, "sample_fake_genres", genres_from_python_and_numpy)
    uninterrupted = train_gan(dataset(), TINY, RESUMABLE, tmp_path / "a", use_labels=True)
    with pytest.raises(KeyboardInterrupt):
        train_gan(dataset(), TINY, RESUMABLE, tmp_path / "b", use_labels=True, log=_crash_after(5))
    random.seed(99)  # whatever ran in the process since
    np.random.seed(99)
    resumed = train_gan(dataset(), TINY, RESUMABLE, tmp_path / "b", use_labels=True)

    assert resumed.resumed_from_step == 4
    _assert_same_run(load_checkpoint(uninterrupted.checkpoint_path), load_checkpoint(resumed.checkpoint_path))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_a_damaged_latest_checkpoint_resumes_the_previous_one_and_ends_the_same(tmp_path, dataset, damage):
    uninterrupted = train_gan(dataset(), TINY, RESUMABLE, tmp_path / "a", use_labels=True)
    folder = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train_gan(dataset(), TINY, RESUMABLE, folder, use_labels=True, log=_crash_after(5))
    latest, previous = folder / "latest.pt", folder / "previous.pt"
    assert load_checkpoint(latest)["step"] == 4 and load_checkpoint(previous)["step"] == 2
    whole = latest.read_bytes()
    if damage == "missing":  # killed between moving latest.pt to previous.pt and writing the new one
        latest.unlink()
    else:
        latest.write_bytes(whole[: len(whole) // 2] if damage == "truncated" else b"garbage" * 100)

    warnings: list[str] = []
    resumed = train_gan(dataset(), TINY, RESUMABLE, folder, use_labels=True, warn=warnings.append)

    assert resumed.resumed_from_step == 2 and resumed.steps_this_run == 6
    assert "resumes previous.pt, the checkpoint before it, at step 2 of 8" in warnings[-1]
    assert len(warnings) == (1 if damage == "missing" else 2)
    assert len(unreadable_copies(latest)) == (0 if damage == "missing" else 1)
    _assert_same_run(load_checkpoint(uninterrupted.checkpoint_path), load_checkpoint(resumed.checkpoint_path))


def test_an_unusable_previous_checkpoint_is_set_aside_too_and_the_run_starts_afresh(tmp_path, dataset):
    with pytest.raises(KeyboardInterrupt):
        train_gan(dataset(), TINY, RESUMABLE, tmp_path, use_labels=True, log=_crash_after(5))
    for name in ("latest.pt", "previous.pt"):
        (tmp_path / name).write_bytes(b"garbage" * 100)
    warnings: list[str] = []
    summary = train_gan(dataset(), TINY, RESUMABLE, tmp_path, use_labels=True, warn=warnings.append)
    assert summary.resumed_from_step == 0 and summary.steps_this_run == 8 and len(warnings) == 2
    assert [len(unreadable_copies(tmp_path / name)) for name in ("latest.pt", "previous.pt")] == [1, 1]


class _Counter:
    """A stand-in for an adaptive augmentation: a probability and a tensor it adjusts as it trains."""

    def __init__(self):
        self.probability, self.signs = 0.0, torch.zeros(2)

    def state_dict(self) -> dict:
        return {"probability": self.probability, "signs": self.signs.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.probability, self.signs = state["probability"], state["signs"].clone()


def _modules(augment: _Counter | None) -> GanModules:
    modules = loop._build_modules(TINY, FAST, CPU, torch.contiguous_format)
    modules.augment = augment
    return modules


def test_the_augmentation_state_is_checkpointed_and_restored(tmp_path):
    trained = _Counter()
    trained.probability, trained.signs = 0.375, torch.tensor([3.0, -1.0])
    latest = tmp_path / "latest.pt"
    checkpointing.save_latest(latest, _payload(trained, step=3))
    saved = load_checkpoint(latest)["augment"]
    assert saved["probability"] == 0.375 and torch.equal(saved["signs"], trained.signs)

    fresh = _Counter()
    start = checkpointing.restore(_modules(fresh), latest, "k", None, TINY, CPU)
    assert start.step == 3 and fresh.probability == 0.375 and torch.equal(fresh.signs, trained.signs)

    # A run that augments cannot resume a checkpoint without the augmentation's state: it is set aside, and
    # previous.pt (the first checkpoint, which has it) is resumed.
    checkpointing.save_latest(latest, _payload(None, step=5))
    warnings: list[str] = []
    start = checkpointing.restore(_modules(_Counter()), latest, "k", None, TINY, CPU, warnings.append)
    assert "it lacks ['augment']" in warnings[0] and "at step 3 of 3" in warnings[1] and start.step == 3


def _payload(augment: _Counter | None, step: int) -> dict:
    return checkpointing.checkpoint_payload(
        _modules(augment),
        run_key="k",
        step=step,
        arch=TINY,
        config=FAST,
        genres=resume_worker.GENRES,
        use_labels=True,
        history=[],
        images_per_second=0.0,
        device=CPU,
        precision="fp32",
    )


def _worker(shards: Path, checkpoints: Path, pace: float) -> subprocess.Popen:
    """A fresh Python process running resume_worker on this checkout."""
    root = Path(album_pipeline.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(
        [sys.executable, "-m", resume_worker.__name__, str(shards), str(checkpoints), str(pace)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def test_a_run_killed_with_sigkill_resumes_in_a_new_process_bit_for_bit(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    labels = np.arange(24) % len(resume_worker.GENRES)
    write_shard_set_from_arrays(tmp_path / "shards", images, labels, resume_worker.GENRES)
    uninterrupted = _worker(tmp_path / "shards", tmp_path / "a", 0.0)
    killed = _worker(tmp_path / "shards", tmp_path / "b", 0.1)  # 1.2 s of pauses: time to kill it mid-run

    previous = tmp_path / "b" / "previous.pt"  # a second checkpoint was written: the run is well under way
    deadline = time.monotonic() + 90
    while not previous.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "b" / "final.pt").exists()

    resumed = _finished(_worker(tmp_path / "shards", tmp_path / "b", 0.0))
    assert _finished(uninterrupted) == {"resumed_from_step": 0, "steps_this_run": resume_worker.CONFIG.steps}
    # Step 6 from latest.pt, or step 3 from previous.pt when the kill fell between its move and the new write.
    assert resumed["resumed_from_step"] in (3, 6, 9)
    assert resumed["steps_this_run"] == resume_worker.CONFIG.steps - resumed["resumed_from_step"]
    _assert_same_run(
        load_checkpoint(tmp_path / "a" / "final.pt"), load_checkpoint(tmp_path / "b" / "final.pt")
    )
