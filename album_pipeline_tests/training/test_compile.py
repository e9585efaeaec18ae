"""torch.compile of G and D: off by default, settings refused with a sentence, training through the compiled nets.

Inductor compiles the tiny networks' forward and backward in a minute or two on a small CPU, too long for every
run of the suite: the test that compiles for real runs only with ALBUM_PIPELINE_TEST_COMPILE=1. The others trace
the networks with dynamo's "eager" backend (no code generation), which checks everything but the generated code.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import pytest
import torch

from album_pipeline.cli import main
from album_pipeline.model.checkpoint import load_checkpoint
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.training import compute
from album_pipeline.training.compute import Compute, select_compute
from album_pipeline.training.loop import TrainingConfig, train_gan
from album_pipeline_tests.training.conftest import GENRES

TINY = GanArchitecture(num_genres=len(GENRES), noise_dim=8, generator_width=16, discriminator_width=4)
TWO_STEPS = TrainingConfig(steps=2, batch_size=4, log_every=1, precision="fp32", device="cpu", compile=True)
CPU = torch.device("cpu")


def test_compile_settings_are_checked_when_the_config_is_built():
    assert TrainingConfig().compile is False and TrainingConfig().compile_mode == "default"
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        TrainingConfig(compile=True, compile_mode="fastest")
    with pytest.raises(ValueError, match="'max-autotune' needs compile=True"):
        TrainingConfig(compile_mode="max-autotune")
    with pytest.raises(ValueError, match="device_data_budget_gb must be None"):
        TrainingConfig(device_data_budget_gb=-1)


def test_cuda_graphs_are_refused_off_cuda_with_a_sentence(capsys):
    with pytest.raises(ValueError, match="records CUDA graphs, which need a CUDA device"):
        select_compute(replace(TWO_STEPS, compile_mode="reduce-overhead"))
    bench = ["bench", "train", "--steps", "1", "--batch", "4", "--device", "cpu"]
    assert main([*bench, "--compile", "--compile-mode", "reduce-overhead"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("album-pipeline: compile_mode 'reduce-overhead' records CUDA graphs")
        and "\n" not in err
    )
    assert main([*bench, "--compile-mode", "max-autotune"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "album-pipeline: --compile-mode max-autotune needs --compile as well."
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_bench_on_a_missing_cuda_device_says_so(capsys):
    assert main(["bench", "train", "--steps", "1", "--batch", "4", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "album-pipeline: device 'cuda' requested but CUDA is not available; use 'auto' or 'cpu'."


def test_networks_are_compiled_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(
        compute.torch, "compile", lambda module, **options: calls.append(options) or "compiled"
    )
    module = torch.nn.Linear(2, 2)
    assert Compute(CPU, "fp32", False).compiled(module) is module
    assert Compute(CPU, "fp32", False, "default").compiled(module) == "compiled"
    assert Compute(CPU, "fp32", False, "max-autotune").compiled(module) == "compiled"
    assert calls == [{}, {"mode": "max-autotune"}]
    assert select_compute(replace(TWO_STEPS, compile=False)).compile_mode is None
    assert select_compute(replace(TWO_STEPS, compile_mode="max-autotune")).compile_mode == "max-autotune"


def train_two_compiled_steps(tmp_path, dataset) -> tuple[list[dict], dict]:
    logged: list[dict] = []
    summary = train_gan(dataset(), TINY, TWO_STEPS, tmp_path, use_labels=True, log=logged.append)
    return logged, load_checkpoint(summary.checkpoint_path)


def test_training_runs_the_compiled_networks_and_saves_the_plain_ones(tmp_path, dataset, monkeypatch):
    compiled = []
    original = torch.compile

    def traced_eagerly(module, **options):
        compiled.append(type(module).__name__)
        return original(module, backend="eager", **options)

    monkeypatch.setattr(compute.torch, "compile", traced_eagerly)
    logged, checkpoint = train_two_compiled_steps(tmp_path, dataset)
    assert sorted(compiled) == ["Discriminator", "Generator"]
    assert [entry["step"] for entry in logged] == [1, 2]
    assert all(math.isfinite(value) for entry in logged for value in entry.values())
    # The checkpoint holds the modules' own state dicts, not the compiled wrappers' ("_orig_mod." keys).
    assert not any(key.startswith("_orig_mod") for key in checkpoint["generator"])
    assert not any(key.startswith("_orig_mod") for key in checkpoint["discriminator"])


def inductor_works() -> bool:
    try:
        return bool(torch.compile(lambda x: x + 1)(torch.ones(2)).eq(2).all())
    except Exception:  # no C++ compiler, or a platform inductor does not support
        return False


@pytest.mark.skipif(
    os.environ.get("ALBUM_PIPELINE_TEST_COMPILE") != "1",
    reason="compiles for minutes; set ALBUM_PIPELINE_TEST_COMPILE=1",
)
def test_training_with_inductor_trains_two_steps(tmp_path, dataset):
    if not inductor_works():
        pytest.skip("torch.compile's inductor cannot compile on this machine")
    logged, checkpoint = train_two_compiled_steps(tmp_path, dataset)
    assert [entry["step"] for entry in logged] == [1, 2] and checkpoint["step"] == 2
    assert all(math.isfinite(value) for entry in logged for value in entry.values())
