from __future__ import annotations

from pathlib import Path

import pytest
import torch

from album_pipeline.model.checkpoint import (
    load_checkpoint,
    load_generator,
    load_generator_with_genres,
    save_checkpoint,
)
from album_pipeline.model.networks import GanArchitecture, Generator, generate_covers

ARCH = GanArchitecture(num_genres=3, noise_dim=8, generator_width=16, discriminator_width=4)
GENRES = ("rock", "jazz", "pop")


def _generator_checkpoint(path: Path) -> Generator:
    torch.manual_seed(0)
    generator = Generator(ARCH)
    save_checkpoint(
        path, {"generator": generator.state_dict(), "arch": ARCH.to_dict(), "genres": list(GENRES)}
    )
    return generator


def test_save_and_load_round_trip_atomically(tmp_path):
    path = tmp_path / "deep" / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "weights": torch.arange(3)})
    save_checkpoint(path, {"step": 2, "weights": torch.arange(4), "betas": (0.5, 0.999)})
    payload = load_checkpoint(path)
    assert payload["step"] == 2 and torch.equal(payload["weights"], torch.arange(4))
    assert payload["betas"] == (0.5, 0.999)
    assert [item.name for item in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"step": 2, "bad": Unpicklable()})
    assert load_checkpoint(path) == {"step": 1}
    assert [item.name for item in tmp_path.iterdir() if item.name != "cwd"] == ["ckpt.pt"]


def test_load_generator_rebuilds_the_same_generator(tmp_path):
    original = _generator_checkpoint(tmp_path / "g.pt")
    loaded, genres = load_generator_with_genres(tmp_path / "g.pt")
    assert genres == GENRES and loaded.arch == ARCH and not loaded.training
    assert torch.equal(
        generate_covers(original, [0, 1, 2], seed=3), generate_covers(loaded, [0, 1, 2], seed=3)
    )
    assert load_generator(tmp_path / "g.pt").genres == GENRES


def test_clear_errors_for_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train the model first"):
        load_generator(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "classifier.pt", {"model": {"weight": torch.zeros(2)}})
    with pytest.raises(ValueError, match="not a generator checkpoint"):
        load_generator(tmp_path / "classifier.pt")
    (tmp_path / "junk.pt").write_bytes(b"definitely not torch")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "list.pt", [1, 2])
    with pytest.raises(ValueError, match="not a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")
