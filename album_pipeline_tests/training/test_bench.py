"""`album-pipeline bench train`: a number for the step's speed, sentences for bad arguments, honest timing."""

import re

import pytest
import torch

from album_pipeline.cli import main
from album_pipeline.settings import ConfigurationError
from album_pipeline.training import bench

TINY = ["bench", "train", "--steps", "2", "--warmup", "1", "--batch", "4"]
SPEED = re.compile(r"project step \(.*\): (\d+\.\d) images/s")


def test_bench_train_prints_the_steps_speed_with_the_cpu_flags_and_threads(capsys):
    assert main(TINY) == 0
    out = capsys.readouterr().out
    speeds = SPEED.findall(out)
    assert len(speeds) == 1 and float(speeds[0]) > 0
    assert re.search(r"\d+ threads; CPU flags: avx2 (yes|no), avx512_bf16 (yes|no)", out)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--architecture", "projection"], "projection residual, 64 px"),
        (
            ["--architecture", "projection", "--blocks", "plain", "--resolution", "128"],
            "projection plain, 128 px",
        ),
    ],
)
def test_bench_train_times_the_projection_step_at_its_resolution(capsys, options, named):
    assert main([*TINY, "--widths", "demo", *options]) == 0
    out = capsys.readouterr().out
    assert f"project step ({named}, widths demo" in out and float(SPEED.findall(out)[0]) > 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--architecture", "stylegan"], "--architecture must be one of seed, projection, got 'stylegan'."),
        (
            ["--resolution", "128"],
            "resolution 128 is not supported: the seed architecture makes 64x64 images.",
        ),
    ],
)
def test_a_bad_architecture_is_one_sentence(capsys, options, message):
    assert main([*TINY, *options]) == 2
    assert capsys.readouterr().err.strip() == f"album-pipeline: {message}"


def test_a_bad_precision_is_one_sentence(capsys):
    assert main([*TINY, "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "album-pipeline: --precision must be one of auto, bf16, fp32, got 'fp16'."


def test_bf16_on_a_cpu_without_it_says_so(monkeypatch, capsys):
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: False)
    assert main([*TINY, "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "this CPU has neither AVX512-BF16 nor AMX" in err and "--precision fp32" in err
    assert err.count("\n") == 0


def test_compile_where_torch_compile_fails_says_so(monkeypatch, capsys):
    def failing_compile(module):
        def call(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nmore detail")

        return call

    monkeypatch.setattr(bench.torch, "compile", failing_compile)
    assert main([*TINY, "--compile"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("album-pipeline: --compile: torch.compile fails on this machine (RuntimeError: ")
    assert err.endswith("run without --compile.") and err.count("\n") == 0


def test_the_timed_region_holds_the_timed_steps_only():
    steps_run = []
    clock_reads = []

    def step(real, labels):
        steps_run.append(real)

    def clock():  # one tick per step taken so far
        clock_reads.append(len(steps_run))
        return float(len(steps_run))

    batches = [(torch.zeros(1), torch.zeros(1)), (torch.ones(1), torch.ones(1))]
    settings = bench.BenchSettings(batch=8, steps=4, warmup=3)
    result = bench.measure("x", step, batches, settings, torch.device("cpu"), clock)
    assert len(steps_run) == 7
    assert clock_reads == [3, 7]  # started after the 3 warm-up steps, stopped after the 4 timed ones
    assert result.seconds_per_step == 1.0 and result.images_per_second == 8.0
    assert [float(real) for real in steps_run[3:]] == [0.0, 1.0, 0.0, 1.0]  # the pre-generated batches cycle


def test_compare_seed_alternates_the_two_steps_and_reports_their_ratio():
    lines = []
    settings = bench.BenchSettings(batch=4, steps=1, warmup=1, precision="fp32", compare_seed=True)
    results = bench.run_bench(settings, report=lines.append)
    names = [result.name.split(" (")[0] for result in results]
    assert names == ["project step", "seed loop", "project step", "seed loop"]
    ratio = re.fullmatch(r"project step / seed loop: (\d+\.\d\d)x .*", lines[-1])
    assert ratio and float(ratio.group(1)) > 0


def test_the_seed_loops_step_runs_and_changes_both_networks_weights():
    loop = bench.load_seed_loop("cpu")
    before = {
        name: {key: value.clone() for key, value in network.state_dict().items()}
        for name, network in (("G", loop.generator), ("D", loop.discriminator))
    }
    real = torch.rand(4, 3, 64, 64) * 2 - 1
    loop.step(real, torch.tensor([0, 1, 2, 4]))
    for name, network in (("G", loop.generator), ("D", loop.discriminator)):
        for key, value in network.named_parameters():
            assert not torch.equal(value, before[name][key]), f"{name}.{key} did not change"
    with torch.no_grad():
        genres = torch.tensor([0, 1])
        images = loop.generator.eval()(genres, torch.zeros(2, 2), torch.zeros(2, 100))
    assert images.shape == (2, 3, 64, 64) and images.abs().max() <= 1


def test_compare_seed_outside_a_checkout_is_a_sentence(tmp_path):
    with pytest.raises(ConfigurationError, match=r"--compare-seed needs benchmarks/seed_loop.py"):
        bench.load_seed_loop("cpu", root=tmp_path)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert bench.cpu_flags(cpuinfo) == {"avx2": True, "avx512_bf16": False, "amx_bf16": False}
    assert bench.cpu_flags(tmp_path / "missing") == {}
