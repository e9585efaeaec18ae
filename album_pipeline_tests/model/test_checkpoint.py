from __future__ import annotations

from pathlib import Path

import pytest
import torch

from album_pipeline.model.checkpoint import (
    UnreadableCheckpoint,
    checkpoint_architecture,
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
    with pytest.raises(FileNotFoundError, match="does not exist; train the model again"):
        load_generator(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "classifier.pt", {"model": {"weight": torch.zeros(2)}})
    with pytest.raises(ValueError, match="not a generator checkpoint"):
        load_generator(tmp_path / "classifier.pt")
    save_checkpoint(tmp_path / "list.pt", [1, 2])
    with pytest.raises(UnreadableCheckpoint, match="holds a list, not a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")


def _damaged_files(folder: Path) -> dict[str, Path]:
    """Files that fail the safe load each in their own way, as a torn copy or a stray write leaves them."""
    good = save_checkpoint(folder / "good.pt", {"weights": torch.arange(1000)})
    files = {
        "garbage": b"definitely not torch" * 50,
        "empty": b"",
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
        "zeroed": bytes(good.stat().st_size),
    }
    for name, data in files.items():
        (folder / f"{name}.pt").write_bytes(data)
    return {name: folder / f"{name}.pt" for name in files}


def test_an_unreadable_checkpoint_is_one_clear_sentence_without_torchs_unsafe_advice(tmp_path):
    for name, path in _damaged_files(tmp_path).items():
        with pytest.raises(UnreadableCheckpoint) as refused:
            load_generator(path)
        message = str(refused.value)
        assert message.startswith(f"checkpoint {path} cannot be read: "), name
        assert "train the model again (materialize the pretrained_generator" in message, name
        assert "weights_only" not in message and "\n" not in message and len(message) < 300, (name, message)
        assert refused.value.__cause__ is None and refused.value.__context__ is None, name  # no torch text
        assert refused.value.reason in message
    with pytest.raises(UnreadableCheckpoint, match="; retrain the thing$"):
        load_checkpoint(tmp_path / "garbage.pt", remedy="retrain the thing")


def test_a_pickle_that_would_run_code_is_refused_not_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"weights": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UnreadableCheckpoint, match="holds more than the tensors and plain data"):
        load_checkpoint(tmp_path / "evil.pt")


def test_the_architecture_of_a_checkpoint(tmp_path):
    _generator_checkpoint(tmp_path / "g.pt")
    assert checkpoint_architecture(tmp_path / "g.pt") == ARCH
    save_checkpoint(tmp_path / "no-arch.pt", {"generator": {}})
    with pytest.raises(UnreadableCheckpoint, match="records no usable architecture.*; pretrain"):
        checkpoint_architecture(tmp_path / "no-arch.pt", remedy="pretrain")


def test_load_generator_prefers_the_moving_average_and_gives_the_raw_one_when_asked(tmp_path):
    torch.manual_seed(0)
    raw, averaged = Generator(ARCH), Generator(ARCH)  # two different initialisations
    save_checkpoint(
        tmp_path / "g.pt",
        {
            "generator": raw.state_dict(),
            "generator_ema": averaged.state_dict(),
            "arch": ARCH.to_dict(),
            "genres": list(GENRES),
        },
    )

    def same_weights(loaded: Generator, expected: Generator) -> bool:
        expected_state = expected.state_dict()
        return all(torch.equal(value, expected_state[name]) for name, value in loaded.state_dict().items())

    assert same_weights(load_generator(tmp_path / "g.pt"), averaged)
    assert same_weights(load_generator_with_genres(tmp_path / "g.pt")[0], averaged)
    assert same_weights(load_generator(tmp_path / "g.pt", prefer_ema=False), raw)
    assert not same_weights(raw, averaged)
    # A checkpoint of a run without an EMA gives its generator either way.
    original = _generator_checkpoint(tmp_path / "plain.pt")
    assert same_weights(load_generator(tmp_path / "plain.pt"), original)
