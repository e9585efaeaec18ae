"""Pixels between their two forms: uint8 RGB as stored (0..255) and float in [-1, 1] as the networks see them.

Every network here (generator, discriminator, genre classifier) works in [-1, 1]; shards, covers on disk and
generated samples are uint8. These are the only places that convert, so the scale is written once.
"""

from __future__ import annotations

import numpy as np
import torch


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 (uint8, or float on that scale) as float32 in [-1, 1]; the input is not modified."""
    # One new tensor, scaled in place: the training loader calls this on every batch.
    return pixels.to(torch.float32, copy=True).div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (clamped there first) as uint8 0..255, rounded to the nearest value."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def check_image_batch(images: np.ndarray, what: str, *, size: int | None = None) -> None:
    """Refuse anything but a numpy uint8 (N, H, W, 3) RGB batch; ``size`` also requires H = W = size."""
    shape = f"(N, {size}, {size}, 3)" if size is not None else "(N, H, W, 3)"
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = getattr(images, "dtype", type(images).__name__)
        raise TypeError(f"{what} must be a numpy uint8 array {shape}, got {kind}")
    if size is not None:
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(
                f"{what} must have shape {shape} (RGB, channels last), got {images.shape}; resize covers to "
                f"{size}x{size} first"
            )
    elif images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"{what} must have shape {shape} (RGB, channels last), got {images.shape}")
