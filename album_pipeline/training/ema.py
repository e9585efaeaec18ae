"""The generator's exponential moving average (EMA), as stylegan2-ada-pytorch's training loop keeps it.

After every generator step the average moves towards the generator's weights by ``1 - beta``, with
``beta = 0.5 ** (batch_size / ema_nimg)``: the average's half-life is ``ema_nimg`` images, ``ema_kimg``
thousand of them, capped by the ramp-up at ``ema_rampup`` times the images seen so far, so that early in a run
the average is not held back by the untrained start (at the first step it is the generator itself).
Parameters are averaged; buffers (batch norm's running statistics) are copied, as stylegan2-ada does, since an
average of statistics gathered by different weights describes none of them.

The averaged generator samples better than the raw one, whose weights oscillate from step to step in the
adversarial game (Yazici et al., "The unusual effectiveness of averaging in GAN training", ICLR 2019).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_size: int, images_seen: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """How much of the old average one step keeps (stylegan2-ada's ``ema_beta``).

    ``images_seen`` counts the images trained on before this step, so the first step (0 seen, with a
    ramp-up) gives 0: the average starts as the generator.
    """
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, images_seen * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


class GeneratorEma:
    """An averaged copy of a generator, updated in place after each of its optimiser steps.

    ``module`` is the average: in eval mode, without gradients, in the generator's device and memory format.
    """

    def __init__(self, generator: nn.Module, ema_kimg: float, ema_rampup: float | None):
        if ema_kimg <= 0:
            raise ValueError(f"ema_kimg must be positive for an EMA (0 turns it off), got {ema_kimg}")
        self.ema_kimg = ema_kimg
        self.ema_rampup = ema_rampup
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module, *, batch_size: int, images_seen: int) -> float:
        """Move the average towards ``generator`` after a step of ``batch_size`` images; returns beta.

        Python arithmetic and in-place device ops only, so the step never waits for the device.
        """
        beta = ema_beta(batch_size, images_seen, self.ema_kimg, self.ema_rampup)
        averaged = list(self.module.parameters())
        current = [parameter.detach() for parameter in generator.parameters()]
        # ema + (1 - beta) * (p - ema) == beta * ema + (1 - beta) * p, one fused kernel per dtype and device.
        torch._foreach_lerp_(averaged, current, 1.0 - beta)
        for mine, theirs in zip(self.module.buffers(), generator.buffers(), strict=True):
            mine.copy_(theirs)
        return beta

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
