"""Precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020) through the ``prdc``
package's own ``compute_prdc``, with the sample-size matching that makes a generated value comparable with the
real held-out covers' value.

Recall and coverage grow with the size of the "fake" sample (more points cover more of the reference), so a
generated sample larger than the held-out split is split into disjoint random subsets of the held-out's size
and the metrics are averaged over them.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from prdc import compute_prdc

from album_pipeline.metrics import names

PRDC_NAMES = (names.PRECISION, names.RECALL, names.DENSITY, names.COVERAGE)


def prdc_metrics(reference: np.ndarray, sample: np.ndarray, nearest_k: int) -> dict[str, float]:
    """The four metrics of ``sample`` against ``reference`` (both (N, F) features), from ``prdc.compute_prdc``."""
    check_prdc_sizes(len(reference), len(sample), nearest_k)
    # compute_prdc prints the sample sizes on every call; keep the pipeline's output to what it says itself.
    with contextlib.redirect_stdout(io.StringIO()):
        values = compute_prdc(np.asarray(reference), np.asarray(sample), nearest_k)
    return {name: float(values[name]) for name in PRDC_NAMES}


def check_prdc_sizes(reference_count: int, sample_count: int, nearest_k: int) -> None:
    if nearest_k < 1:
        raise ValueError(f"nearest_k must be at least 1, got {nearest_k}")
    # prdc finds each point's k-th neighbour with argpartition at k + 1 (the point itself is its 0th), which
    # needs k + 2 points on each side.
    if min(reference_count, sample_count) < nearest_k + 2:
        raise ValueError(
            f"precision/recall with nearest_k={nearest_k} need at least {nearest_k + 2} covers on each side, got "
            f"{reference_count} reference and {sample_count} judged; lower nearest_k or evaluate more covers"
        )


def matched_size_prdc(
    reference: np.ndarray,
    sample: np.ndarray,
    subset_size: int,
    nearest_k: int,
    rng: np.random.Generator,
) -> dict[str, float]:
    """The mean of ``prdc_metrics`` over disjoint random subsets of ``sample`` with ``subset_size`` rows each
    (rows left over after the last full subset are unused); one subset of everything when ``sample`` is not
    larger than ``subset_size``."""
    if subset_size < 1:
        raise ValueError(f"subset_size must be at least 1, got {subset_size}")
    sample = np.asarray(sample)
    subsets = len(sample) // subset_size
    if subsets <= 1:
        return prdc_metrics(reference, sample, nearest_k)
    order = rng.permutation(len(sample))[: subsets * subset_size].reshape(subsets, subset_size)
    results = [prdc_metrics(reference, sample[rows], nearest_k) for rows in order]
    return {name: float(np.mean([result[name] for result in results])) for name in PRDC_NAMES}
