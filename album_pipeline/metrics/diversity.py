"""Within-genre diversity: how spread out the covers of one genre are, in features and in pixels.

- The feature ratio is the mean pairwise Euclidean distance of a sample's covers over that of the reference
  covers of the same genre: 1.0 is as varied as real covers, a generator drawing one cover per genre scores 0.
- MS-SSIM (Wang et al. 2003) of random pairs of covers of one genre: higher means more alike. It is computed
  with torchmetrics. Its default 5 scales halve a 64x64 cover four times, down to 4x4, below the 11-pixel
  Gaussian window (the 5-scale form needs sides over 160 pixels), so covers of 64 pixels use 3 scales with
  the first 3 standard weights renormalised to sum to 1 (``MS_SSIM_WEIGHTS_64``). Colour channels are scored
  one by one and averaged, as pytorch-msssim does.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import pdist

STANDARD_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003
MS_SSIM_WEIGHTS_64 = tuple(
    float(weight) / sum(STANDARD_MS_SSIM_WEIGHTS[:3]) for weight in STANDARD_MS_SSIM_WEIGHTS[:3]
)
MS_SSIM_WINDOW = 11
MS_SSIM_SIGMA = 1.5


def mean_pairwise_distance(features: np.ndarray) -> float:
    """The mean Euclidean distance over all pairs of rows of (N, F) ``features`` (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N, F) features with N >= 2 for a pairwise distance, got {features.shape}")
    return float(pdist(features, "euclidean").mean())


def diversity_ratio(sample: np.ndarray, reference: np.ndarray) -> float:
    """Mean pairwise distance of ``sample`` over that of ``reference``; 0 when the reference has no spread
    and the sample none either, infinite when only the sample has some."""
    spread = mean_pairwise_distance(reference)
    own = mean_pairwise_distance(sample)
    if spread == 0:
        return 0.0 if own == 0 else float("inf")
    return own / spread


def ms_ssim_weights(side: int) -> tuple[float, ...]:
    """The scale weights for covers of ``side`` pixels: all 5 standard scales above 160 pixels, else 3."""
    if side > (MS_SSIM_WINDOW - 1) * 2**4:
        return STANDARD_MS_SSIM_WEIGHTS
    if side > (MS_SSIM_WINDOW - 1) * 2**2:
        return MS_SSIM_WEIGHTS_64
    raise ValueError(f"MS-SSIM needs covers larger than {(MS_SSIM_WINDOW - 1) * 4} pixels, got {side}")


def ms_ssim(first: np.ndarray, second: np.ndarray, weights: tuple[float, ...] | None = None) -> np.ndarray:
    """MS-SSIM of each pair (first[i], second[i]) of uint8 (N, H, W, 3) covers, as float64 (N,)."""
    if first.shape != second.shape or first.ndim != 4 or first.shape[3] != 3:
        raise ValueError(f"need two (N, H, W, 3) batches of one shape, got {first.shape} and {second.shape}")
    count, height, width, channels = first.shape
    weights = ms_ssim_weights(min(height, width)) if weights is None else tuple(weights)

    def per_channel(images: np.ndarray) -> torch.Tensor:
        # (N, H, W, C) -> (N * C, 1, H, W): each colour channel scored as its own grey image.
        tensor = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
        return tensor.permute(0, 3, 1, 2).reshape(count * channels, 1, height, width)

    # Imported here: torchmetrics imports matplotlib at load, which warns on a read-only HOME, and only
    # the evaluation needs it.
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    scores = multiscale_structural_similarity_index_measure(
        per_channel(first),
        per_channel(second),
        kernel_size=MS_SSIM_WINDOW,
        sigma=MS_SSIM_SIGMA,
        data_range=255.0,
        betas=weights,
        reduction="none",
        normalize="relu",
    )
    return scores.reshape(count, channels).mean(dim=1).double().numpy()


def random_pairs(count: int, pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(pairs, 2) indices of distinct covers among ``count``, drawn uniformly (with repetition across pairs)."""
    if count < 2:
        raise ValueError(f"need at least 2 covers to pair, got {count}")
    first = rng.integers(0, count, pairs)
    # An offset in [1, count) makes the second index differ from the first, uniformly over the others.
    second = (first + rng.integers(1, count, pairs)) % count
    return np.stack([first, second], axis=1)


def mean_pair_ms_ssim(
    images: np.ndarray, pairs: int, rng: np.random.Generator, batch_size: int = 64
) -> float:
    """Mean MS-SSIM over ``pairs`` random pairs of distinct covers of uint8 (N, H, W, 3) ``images``."""
    chosen = random_pairs(len(images), pairs, rng)
    scores = [
        ms_ssim(images[chosen[start : start + batch_size, 0]], images[chosen[start : start + batch_size, 1]])
        for start in range(0, len(chosen), batch_size)
    ]
    return float(np.concatenate(scores).mean())
