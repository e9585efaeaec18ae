"""Every random state a training run draws from, seeded at its start, captured into checkpoints and restored.

Python's ``random``, NumPy's global generator, torch's CPU generator and, where CUDA is initialised, every CUDA
device's generator. The loop itself draws only from torch, but augmentation and user code may draw from the
others, and a resumed run must continue each one where the interrupted run left it. The captured states are
tensors, ints and tuples only, so a checkpoint holding them still loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed every generator a run draws from (torch seeds CUDA's too), so a fresh run follows its seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng_states() -> dict[str, Any]:
    """The current states: ``python``, ``numpy``, ``torch`` and, when CUDA is initialised, ``cuda`` (a list,
    one state per device)."""
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Set the generators to ``states``; a state the checkpoint lacks (an older one) is left as it is, and CUDA's
    only when training on CUDA."""
    if "python" in states:
        version, internal, gauss_next = states["python"]
        random.setstate((version, tuple(internal), gauss_next))
    if "numpy" in states:
        saved = states["numpy"]
        np.random.set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": saved["key"].cpu().numpy().astype(np.uint32), "pos": saved["pos"]},
                "has_gauss": saved["has_gauss"],
                "gauss": saved["gauss"],
            }
        )
    # A checkpoint loads onto the training device, but torch takes its states as CPU byte tensors.
    torch.set_rng_state(states["torch"].cpu())
    if device.type == "cuda" and "cuda" in states:
        cuda = states["cuda"]
        if isinstance(cuda, torch.Tensor):  # checkpoints before every device's state was kept
            torch.cuda.set_rng_state(cuda.cpu(), device)
            return
        for index, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), index)
