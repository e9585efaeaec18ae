"""`album-pipeline bench train`: images/s of the training step on this device, with nothing else timed.

The step is ``train_gan``'s (one D step and one G step with the finetuning losses, through the same
``training.losses`` and ``training.compute``), on real batches pre-generated on the device, so that neither
the loader nor logging nor checkpointing is in the timed region. Warm-up steps (where oneDNN and cuDNN pick
kernels and torch.compile compiles) run before the clock starts; on CUDA the device is synchronised on
either side of the timed region only. ``compare_seed`` also times the seed project's own float32 step
(``benchmarks/seed_loop.py``, read from the checkout) in the same process on the same batches, alternating
the two so that other load on the machine falls on both alike.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from album_pipeline.model.architectures import build_discriminator, build_generator
from album_pipeline.model.networks import ARCHITECTURES, BLOCK_KINDS, GanArchitecture, sample_inputs
from album_pipeline.settings import ConfigurationError
from album_pipeline.training.compute import Compute, cpu_has_native_bf16, select_compute
from album_pipeline.training.config import COMPILE_MODES, PRECISIONS, TrainingConfig
from album_pipeline.training.objectives import build_loss

WIDTH_CHOICES = ("seed", "demo")
SEED_WIDTHS = (GanArchitecture.generator_width, GanArchitecture.discriminator_width)
# Relative to the checkout's root: the seed's step is a benchmark script, not part of the installed package.
SEED_LOOP_SCRIPT = Path("benchmarks") / "seed_loop.py"
CPU_FLAGS = ("avx2", "avx512_bf16", "amx_bf16")
# Copies of the real batch cycled through, so consecutive steps do not see the very same tensor.
REAL_BATCHES = 2
COMPARISON_ROUNDS = 2

Step = Callable[[torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class BenchSettings:
    batch: int = field(default=128, metadata={"doc": "Images per step (the seed's 128)."})
    steps: int = field(default=5, metadata={"doc": "Timed steps per measurement."})
    warmup: int = field(default=2, metadata={"doc": "Untimed steps before each measurement."})
    precision: str = field(default="auto", metadata={"doc": "auto | fp32 | bf16, as in training."})
    compile: bool = field(default=False, metadata={"doc": "torch.compile G and D before timing."})
    compile_mode: str = field(
        default="default",
        metadata={"doc": "torch.compile mode, as training's compile_mode (with --compile)."},
    )
    device: str = field(default="auto", metadata={"doc": "auto | cpu | cuda | cuda:N, as in training."})
    widths: str = field(
        default="seed", metadata={"doc": "seed (G 512, D 64) or demo (the demo profile's widths)."}
    )
    compare_seed: bool = field(
        default=False, metadata={"doc": "Also time the seed's own float32 step, alternating, and the ratio."}
    )
    architecture: str = field(default="seed", metadata={"doc": "seed or projection, as in training."})
    blocks: str = field(default="residual", metadata={"doc": "projection's blocks: residual or plain."})
    resolution: int = field(
        default=64, metadata={"doc": "Image side: 64 (seed), or 64, 128, 256 (projection)."}
    )

    def __post_init__(self) -> None:
        if self.batch < 2:
            raise ConfigurationError(
                f"--batch must be at least 2 (batch norm needs 2 images), got {self.batch}."
            )
        if self.steps < 1 or self.warmup < 0:
            raise ConfigurationError(
                f"--steps must be at least 1 and --warmup at least 0, got {self.steps} and {self.warmup}."
            )
        if self.precision not in PRECISIONS:
            raise ConfigurationError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}."
            )
        if self.widths not in WIDTH_CHOICES:
            raise ConfigurationError(
                f"--widths must be one of {', '.join(WIDTH_CHOICES)}, got {self.widths!r}."
            )
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigurationError(
                f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}."
            )
        if self.compile_mode != "default" and not self.compile:
            raise ConfigurationError(f"--compile-mode {self.compile_mode} needs --compile as well.")
        if self.compile and self.warmup < 1:
            raise ConfigurationError(
                "--compile needs --warmup of at least 1, so that compiling is not timed."
            )
        if self.architecture not in ARCHITECTURES:
            raise ConfigurationError(
                f"--architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}."
            )
        if self.blocks not in BLOCK_KINDS:
            raise ConfigurationError(
                f"--blocks must be one of {', '.join(BLOCK_KINDS)}, got {self.blocks!r}."
            )
        try:
            architecture(self)
        except ValueError as error:
            raise ConfigurationError(f"{error}.") from None


@dataclass(frozen=True)
class Measurement:
    name: str
    images_per_second: float
    seconds_per_step: float


def run_bench(
    settings: BenchSettings,
    *,
    report: Callable[[str], None] = print,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Measurement]:
    """Time the project's step (and, with ``compare_seed``, the seed's), reporting a line per result."""
    arch = architecture(settings)
    config = TrainingConfig(
        batch_size=settings.batch,
        precision=settings.precision,
        device=settings.device,
        compile=settings.compile,
        compile_mode=settings.compile_mode,
    )
    try:
        compute = select_compute(config)
    except ValueError as error:  # no CUDA for --device cuda, CUDA graphs off CUDA
        raise ConfigurationError(f"{error}.") from None
    check_precision(settings.precision, compute)
    report(environment_line(compute))
    batches = real_batches(settings.batch, arch, compute)
    project = project_step(arch, config, compute)
    compiled = f"compiled ({compute.compile_mode})" if compute.compile_mode else "eager"
    label = (
        f"project step ({arch.architecture}"
        f"{f' {arch.blocks}' if arch.architecture == 'projection' else ''}, {arch.resolution} px, "
        f"widths {settings.widths}: G {arch.generator_width}, D {arch.discriminator_width}; "
        f"batch {settings.batch}; {compute.precision}; {compiled}; "
        f"{'channels_last' if compute.channels_last else 'contiguous'})"
    )
    if not settings.compare_seed:
        result = measure(label, project, batches, settings, compute.device, clock)
        report(describe(result, settings))
        return [result]
    seed = load_seed_loop(compute.device).step
    seed_label = f"seed loop (G 512, D 64; batch {settings.batch}; fp32; eager)"
    results: list[Measurement] = []
    for round_number in range(1, COMPARISON_ROUNDS + 1):
        for name, step in ((label, project), (seed_label, seed)):
            result = measure(name, step, batches, settings, compute.device, clock)
            report(f"round {round_number}: {describe(result, settings)}")
            results.append(result)
    ratio = comparison_ratio(results, label, seed_label)
    report(f"project step / seed loop: {ratio:.2f}x (medians over {COMPARISON_ROUNDS} alternating rounds)")
    return results


def architecture(settings: BenchSettings) -> GanArchitecture:
    """The networks timed: the bench's architecture, blocks and resolution at the seed's or the demo's widths."""
    chosen = {
        "architecture": settings.architecture,
        "blocks": settings.blocks,
        "resolution": settings.resolution,
    }
    if settings.widths == "seed":
        return GanArchitecture(**chosen)
    from album_pipeline.profiles import PROFILES

    demo = PROFILES["demo"]["ops"]["pretrained_generator"]["config"]
    return GanArchitecture(
        **chosen, generator_width=demo["generator_width"], discriminator_width=demo["discriminator_width"]
    )


def check_precision(requested: str, compute: Compute) -> None:
    """Refuse bf16 where this device cannot compute it, as training would then only measure emulation."""
    if requested != "bf16":
        return
    if compute.device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigurationError(
            "--precision bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated; "
            "use --precision fp32 or auto."
        )
    if compute.device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ConfigurationError(
            "--precision bf16: this GPU has no native bf16 (it came with Ampere); use --precision fp32 or auto."
        )


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, bool]:
    """Which of CPU_FLAGS the CPU reports (empty where /proc/cpuinfo cannot be read, as off Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {}
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return {flag: flag in flags for flag in CPU_FLAGS}


def environment_line(compute: Compute) -> str:
    flags = cpu_flags()
    flag_text = (
        ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in flags.items()) or "unknown"
    )
    # The ISA caps that emulate an older CPU: they change the kernels, not /proc/cpuinfo.
    caps = ", ".join(
        f"{name}={os.environ.get(name, 'unset')}" for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
    )
    device = str(compute.device)
    if compute.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(compute.device)})"
    return (
        f"device {device}; torch {torch.__version__}, {torch.get_num_threads()} threads; CPU flags: {flag_text}; "
        f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}; {caps}"
    )


def real_batches(
    batch: int, arch: GanArchitecture, compute: Compute
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random real images in [-1, 1] with genre labels, already on the device in the step's memory format."""
    generator = torch.Generator().manual_seed(0)
    side = arch.resolution
    batches = []
    for _ in range(REAL_BATCHES):
        images = torch.rand(batch, 3, side, side, generator=generator) * 2 - 1
        labels = torch.randint(0, arch.num_genres, (batch,), generator=generator)
        images = images.to(compute.device).contiguous(memory_format=compute.memory_format)
        batches.append((images, labels.to(compute.device)))
    return batches


def project_step(arch: GanArchitecture, config: TrainingConfig, compute: Compute) -> Step:
    """``train_gan``'s finetuning step: the same networks, optimisers, losses and phase order."""
    torch.manual_seed(config.seed)
    generator = build_generator(arch).to(device=compute.device, memory_format=compute.memory_format).train()
    discriminator = build_discriminator(arch).to(device=compute.device, memory_format=compute.memory_format)
    discriminator.train()
    optimizer_generator = torch.optim.Adam(generator.parameters(), lr=config.lr_generator, betas=config.betas)
    optimizer_discriminator = torch.optim.Adam(
        discriminator.parameters(), lr=config.lr_discriminator, betas=config.betas
    )
    loss = build_loss(
        arch,
        compute.compiled(generator),
        compute.compiled(discriminator),
        config,
        use_labels=True,
        autocast=compute.autocast,
    )
    noise_std = config.instance_noise  # above 0 for all but the last step of a run

    def step(real: torch.Tensor, labels: torch.Tensor) -> None:
        fake_genres = torch.randint(0, arch.num_genres, (real.shape[0],), device=compute.device)
        latent, noise = sample_inputs(arch, fake_genres)
        discriminator.requires_grad_(True)
        d_terms = loss.discriminator_loss(real, labels, fake_genres, latent, noise, noise_std)
        optimizer_discriminator.zero_grad(set_to_none=True)
        d_terms.total.backward()
        optimizer_discriminator.step()
        discriminator.requires_grad_(False)
        g_terms = loss.generator_loss(d_terms.fake, fake_genres, latent, noise_std)
        optimizer_generator.zero_grad(set_to_none=True)
        g_terms.total.backward()
        optimizer_generator.step()
        loss.observed(d_terms, g_terms, fake_genres, labels)  # train_gan computes these every step

    return step


def load_seed_loop(device: torch.device | str, root: Path | None = None):
    """A ``SeedLoop`` from ``benchmarks/seed_loop.py`` in the checkout ``root`` (default: this one)."""
    root = Path(__file__).resolve().parents[2] if root is None else root
    script = root / SEED_LOOP_SCRIPT
    if not script.is_file():
        raise ConfigurationError(
            f"--compare-seed needs {SEED_LOOP_SCRIPT} from a checkout of the repository, and {script} does not "
            "exist; run the command from a checkout (pip install -e .)."
        )
    spec = importlib.util.spec_from_file_location("seed_loop", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SeedLoop(device)


def measure(
    name: str,
    step: Step,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    settings: BenchSettings,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Run ``settings.warmup`` untimed steps, then time ``settings.steps`` steps."""
    for index in range(settings.warmup):
        _warm_up(step, batches[index % len(batches)], settings.compile)
    synchronize(device)
    started = clock()
    for index in range(settings.steps):
        step(*batches[index % len(batches)])
    synchronize(device)
    seconds = (clock() - started) / settings.steps
    return Measurement(name, settings.batch / seconds if seconds > 0 else float("inf"), seconds)


def _warm_up(step: Step, batch: tuple[torch.Tensor, torch.Tensor], compiled: bool) -> None:
    if not compiled:
        step(*batch)
        return
    try:
        step(*batch)
    except Exception as error:  # torch.compile fails in many ways (no compiler, unsupported op, ...)
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise ConfigurationError(
            f"--compile: torch.compile fails on this machine ({type(error).__name__}: {first}); "
            "run without --compile."
        ) from None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(result: Measurement, settings: BenchSettings) -> str:
    return (
        f"{result.name}: {result.images_per_second:.1f} images/s ({result.seconds_per_step:.3f} s/step, "
        f"{settings.steps} steps after {settings.warmup} warm-up)"
    )


def comparison_ratio(results: list[Measurement], project: str, seed: str) -> float:
    """Median images/s of the project's step over the seed's."""
    mine = statistics.median(r.images_per_second for r in results if r.name == project)
    theirs = statistics.median(r.images_per_second for r in results if r.name == seed)
    return mine / theirs
