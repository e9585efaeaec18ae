"""Where and how a training run computes: device, precision, memory format, CPU threads and compilation."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from album_pipeline.training.config import PRECISIONS, TrainingConfig


@dataclass(frozen=True)
class Compute:
    device: torch.device
    precision: str  # "bf16" or "fp32", resolved
    channels_last: bool
    compile_mode: str | None = None  # a torch.compile mode, or None to run eagerly

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> AbstractContextManager:
        """A fresh autocast region (bf16) or a no-op (fp32)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def compiled(self, module: nn.Module) -> nn.Module:
        """``module`` through torch.compile when this run compiles, else itself.

        The compiled module shares ``module``'s parameters and buffers; keep ``module`` for state dicts
        (the compiled one prefixes every key) and for ``requires_grad_``.
        """
        if self.compile_mode is None:
            return module
        if self.compile_mode == "default":
            return torch.compile(module)
        return torch.compile(module, mode=self.compile_mode)


def select_compute(config: TrainingConfig) -> Compute:
    """Resolve ``config``'s device, precision, memory format and threads, and set torch up for them."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last
    configure_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    return Compute(device, precision, channels_last, resolve_compile_mode(config, device))


def resolve_compile_mode(config: TrainingConfig, device: torch.device) -> str | None:
    if not config.compile:
        return None
    if config.compile_mode == "reduce-overhead" and device.type != "cuda":
        raise ValueError(
            f"compile_mode 'reduce-overhead' records CUDA graphs, which need a CUDA device, but training runs "
            f"on {device}; use compile_mode 'default' there"
        )
    return config.compile_mode


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """``bf16`` or ``fp32``: auto picks bf16 where the hardware computes it natively (else it is slower)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        # torch counts emulated bf16 (before Ampere) as supported by default; that one is slower than fp32.
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them oneDNN emulates bf16 and autocast slows training down."""
    # These probes are private to torch.cpu; a torch without them simply gets fp32.
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    return False


def configure_threads(threads: int | None) -> None:
    # torch counts the machine's cores, not the ones a container or affinity mask grants us.
    available = len(os.sched_getaffinity(0))
    wanted = threads if threads is not None else min(torch.get_num_threads(), available)
    if wanted < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
