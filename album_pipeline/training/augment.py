"""Differentiable augmentation of everything the discriminator sees (DiffAugment), with an ADA-style probability.

DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020)
transforms real and fake images alike, in the discriminator's and the generator's step, with operations
through which gradients flow to the generator: so D cannot memorise the few real covers, and G is not taught
to draw the augmentations (they are applied to both sides and never leak into what G makes). Its three
policies, on images in [-1, 1]:
- ``color``: brightness shift in [-0.5, 0.5), saturation scale in [0, 2), contrast scale in [0.5, 1.5).
- ``translation``: an integer shift of up to 1/8 of the side in each direction, zeros shifted in.
- ``cutout``: one square of half the side, at a random place (it may cross the border), set to 0.

Each image undergoes each policy with probability ``p`` (DiffAugment's own is ``p = 1``). As in
stylegan2-ada's ADA (Karras et al., 2020), ``p`` can adapt: every few steps it moves by
``batch * interval / (ada_kimg * 1000)`` up while the discriminator overfits, measured as the mean sign of
its logits on real covers exceeding ``ada_target``, and down otherwise. ``p`` is a device tensor updated with
device ops, so neither drawing nor adapting waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ``("color", "translation")``; ``""`` -> no augmentation."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(
            f"unknown augmentation {unknown} in {policy!r}; use a comma-separated subset of {list(POLICIES)}, "
            "or '' for none"
        )
    return names


def _chosen(images: torch.Tensor, probability: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1, 1) float mask: 1 for the images that undergo this policy."""
    draws = torch.rand(images.shape[0], 1, 1, 1, device=images.device)
    return (draws < probability).to(images.dtype)


def _blend(images: torch.Tensor, augmented: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    return images + chosen * (augmented - images)


def color(images: torch.Tensor, probability: torch.Tensor) -> torch.Tensor:
    count = images.shape[0]

    def uniform() -> torch.Tensor:
        return torch.rand(count, 1, 1, 1, dtype=images.dtype, device=images.device)

    out = _blend(images, images + (uniform() - 0.5), _chosen(images, probability))
    mean = out.mean(dim=1, keepdim=True)
    out = _blend(out, (out - mean) * (uniform() * 2) + mean, _chosen(images, probability))
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return _blend(out, (out - mean) * (uniform() + 0.5) + mean, _chosen(images, probability))


def translation(
    images: torch.Tensor, probability: torch.Tensor, ratio: float = TRANSLATION_RATIO
) -> torch.Tensor:
    """Shift each chosen image by whole pixels (up to ``ratio`` of the side), filling with zeros."""
    count, _, height, width = images.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    chosen = _chosen(images, probability).view(count, 1, 1)
    dy = torch.randint(-max_dy, max_dy + 1, (count, 1, 1), device=images.device) * chosen.long()
    dx = torch.randint(-max_dx, max_dx + 1, (count, 1, 1), device=images.device) * chosen.long()
    rows = torch.arange(height, device=images.device).view(1, height, 1) - dy  # output row r reads row r - dy
    cols = torch.arange(width, device=images.device).view(1, 1, width) - dx
    inside = ((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).unsqueeze(1)
    flat = (rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)).view(count, 1, height * width)
    gathered = images.flatten(2).gather(2, flat.expand(-1, images.shape[1], -1)).view_as(images)
    return gathered * inside.to(images.dtype)


def cutout(images: torch.Tensor, probability: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero one square of ``ratio`` times the side in each chosen image; its centre may lie near the border."""
    count, _, height, width = images.shape
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    # DiffAugment's placement: the square's top-left corner is centre - size // 2, with the centre anywhere
    # in [0, side + 1 - size % 2), so squares are clipped at the borders as often as anywhere else.
    top = torch.randint(0, height + (1 - cut_h % 2), (count, 1, 1), device=images.device) - cut_h // 2
    left = torch.randint(0, width + (1 - cut_w % 2), (count, 1, 1), device=images.device) - cut_w // 2
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)
    chosen = _chosen(images, probability).view(count, 1, 1).bool()
    return images * (~(inside & chosen)).unsqueeze(1).to(images.dtype)


_OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}


@dataclass(frozen=True)
class AdaSettings:
    target: float  # the mean sign of D's logits on reals above which D is taken to overfit
    kimg: float  # thousands of images over which p may go from 0 to 1
    interval: int  # steps between two adjustments


class DiffAugment:
    """The policies of one run, applied with probability ``p`` (fixed, or adapted when ``ada`` is given)."""

    def __init__(
        self,
        policy: str,
        probability: float,
        device: torch.device | str,
        ada: AdaSettings | None = None,
    ):
        self.policies = parse_policy(policy)
        self.ada = ada
        self.probability = torch.tensor(float(probability), device=device)
        self._real_signs = torch.zeros((), device=device)
        self._steps_since_adjustment = 0

    @property
    def enabled(self) -> bool:
        return bool(self.policies)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not self.policies:
            return images
        # Gathers and masks come out in the default layout; convolutions stay channels-last if they were.
        layout = torch.channels_last if _is_channels_last(images) else torch.contiguous_format
        for name in self.policies:
            images = _OPERATIONS[name](images, self.probability)
        return images.contiguous(memory_format=layout)

    @property
    def adaptive(self) -> bool:
        return self.ada is not None

    def observe_real_sign(self, mean_sign: torch.Tensor, batch_size: int) -> None:
        """Feed one D step's mean sign of its logits on reals (over the whole global batch of
        ``batch_size``) to the ADA heuristic; adjusts ``p`` every ``interval`` steps."""
        if self.ada is None:
            return
        self._real_signs = self._real_signs + mean_sign.detach().float()
        self._steps_since_adjustment += 1
        if self._steps_since_adjustment < self.ada.interval:
            return
        overfitting = self._real_signs / self._steps_since_adjustment
        adjust = batch_size * self._steps_since_adjustment / (self.ada.kimg * 1000)
        self.probability = (self.probability + torch.sign(overfitting - self.ada.target) * adjust).clamp(0, 1)
        self._real_signs = torch.zeros_like(self._real_signs)
        self._steps_since_adjustment = 0

    def state_dict(self) -> dict:
        return {
            "probability": self.probability.detach().cpu(),
            "real_signs": self._real_signs.detach().cpu(),
            "steps_since_adjustment": self._steps_since_adjustment,
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.probability.device
        self.probability = state["probability"].to(device)
        self._real_signs = state["real_signs"].to(device)
        self._steps_since_adjustment = int(state["steps_since_adjustment"])


def _is_channels_last(images: torch.Tensor) -> bool:
    return not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last)
