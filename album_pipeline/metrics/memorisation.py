"""Memorisation: how close each judged cover lies to its nearest training cover, against how close real covers
that were never trained on lie.

The real held-out (test) covers' own nearest-neighbour distances to the train split set the scale: a judged
cover is a near-copy when it is closer to a training cover than the ``quantile`` (1% by default) of the
held-out covers are. Real held-out covers are therefore near-copies at about that rate by construction, and a
generator that returns its training covers scores near 100%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist

# Rows of the judged side per distance block: 1024 x 10,000 reference covers x 8 bytes is 80 MB at most.
_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class NearestNeighbours:
    distances: np.ndarray  # float64 (N,): each judged cover's distance to its nearest reference cover
    indices: np.ndarray  # int64 (N,): that reference cover's row


def nearest_neighbours(sample: np.ndarray, reference: np.ndarray) -> NearestNeighbours:
    """Each row of ``sample``'s nearest row of ``reference`` in Euclidean distance (exact: an identical
    feature vector is at distance 0.0, which the dot-product shortcut of other libraries does not promise)."""
    sample, reference = np.asarray(sample, np.float64), np.asarray(reference, np.float64)
    if sample.ndim != 2 or reference.ndim != 2 or sample.shape[1] != reference.shape[1] or not len(reference):
        raise ValueError(
            f"need (N, F) and non-empty (M, F) features, got {sample.shape} and {reference.shape}"
        )
    distances, indices = [], []
    for start in range(0, len(sample), _BLOCK_ROWS):
        block = cdist(sample[start : start + _BLOCK_ROWS], reference, "euclidean")
        nearest = block.argmin(axis=1)
        indices.append(nearest)
        distances.append(block[np.arange(len(block)), nearest])
    if not distances:
        return NearestNeighbours(np.empty(0), np.empty(0, dtype=np.int64))
    return NearestNeighbours(np.concatenate(distances), np.concatenate(indices).astype(np.int64))


def near_copy_threshold(heldout_distances: np.ndarray, quantile: float) -> float:
    """The distance below which a cover counts as a near-copy: ``quantile`` of the held-out covers' own
    nearest-neighbour distances to the train split."""
    if not 0 < quantile < 1:
        raise ValueError(f"near_copy_quantile must be between 0 and 1, got {quantile}")
    if len(heldout_distances) == 0:
        raise ValueError("the held-out split is empty; the near-copy threshold needs real test covers")
    return float(np.quantile(np.asarray(heldout_distances, np.float64), quantile))


def near_copies(distances: np.ndarray, threshold: float) -> np.ndarray:
    """Which covers are near-copies. Ties count: a cover exactly as close as the threshold (an exact copy when
    the held-out split itself holds exact copies at distance 0) is one."""
    return np.asarray(distances) <= threshold


def closest_covers(distances: np.ndarray, threshold: float, count: int) -> tuple[np.ndarray, bool]:
    """Rows of up to ``count`` closest near-copies, closest first, and True; when there is no near-copy, the
    ``count`` closest covers and False (so that a grid can always be drawn and captioned honestly)."""
    distances = np.asarray(distances)
    order = np.argsort(distances, kind="stable")
    copies = order[near_copies(distances[order], threshold)]
    if len(copies):
        return copies[:count], True
    return order[:count], False
