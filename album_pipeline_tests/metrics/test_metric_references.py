"""The metric modules against reference implementations: prdc, pytorch-msssim, scipy's pdist."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prdc import compute_prdc
from pytorch_msssim import ms_ssim as reference_ms_ssim
from scipy.spatial.distance import pdist

from album_pipeline.metrics.diversity import (
    MS_SSIM_WEIGHTS_64,
    STANDARD_MS_SSIM_WEIGHTS,
    diversity_ratio,
    mean_pair_ms_ssim,
    mean_pairwise_distance,
    ms_ssim,
    random_pairs,
)
from album_pipeline.metrics.memorisation import closest_covers, near_copy_threshold, nearest_neighbours
from album_pipeline.metrics.prdc import matched_size_prdc, prdc_metrics


def test_prdc_is_the_prdc_packages_on_random_features():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(120, 8)), rng.normal(0.3, 1.2, size=(90, 8))
    expected = compute_prdc(real, fake, 5)
    assert prdc_metrics(real, fake, 5) == pytest.approx({name: float(v) for name, v in expected.items()})


def test_prdc_by_hand_on_a_line():
    # Reference points 0, 1, 2, 3 on a line: with k = 1 each ball's radius is 1 (the nearest other point).
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0], [11.0]])
    values = prdc_metrics(real, fake, 1)
    # Only 0.5 lies inside a ball (of 0 and of 1, strictly): precision 1/3, density (2 balls / k=1) / 3.
    assert values["precision"] == pytest.approx(1 / 3)
    assert values["density"] == pytest.approx(2 / 3)
    # Coverage: balls whose nearest fake point lies inside them: 0 (0.5 at 0.5 < 1) and 1 (0.5 < 1).
    assert values["coverage"] == pytest.approx(2 / 4)
    # Recall: fake radii (k=1) are 9.5 (0.5 <-> 10), 1, 1; reals inside a fake ball: all four, within 9.5 of 0.5.
    assert values["recall"] == pytest.approx(1.0)


def test_matched_size_prdc_averages_disjoint_subsets_of_the_asked_size():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(95, 4))
    subsets = np.random.default_rng(7).permutation(95)[:90].reshape(3, 30)
    expected = [prdc_metrics(real, fake[rows], 3) for rows in subsets]
    values = matched_size_prdc(real, fake, 30, 3, np.random.default_rng(7))
    for name in values:
        assert values[name] == pytest.approx(np.mean([each[name] for each in expected]))
    # No larger than the subset size: computed once on everything.
    assert matched_size_prdc(real, fake[:30], 30, 3, rng) == prdc_metrics(real, fake[:30], 3)
    with pytest.raises(ValueError, match="at least 7 covers on each side"):
        prdc_metrics(real, fake[:6], 5)


def test_mean_pairwise_distance_is_scipys_and_the_ratio_is_one_for_the_same_spread():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(40, 6))
    assert mean_pairwise_distance(features) == pytest.approx(pdist(features).mean())
    assert diversity_ratio(features * 2, features) == pytest.approx(2.0)
    assert diversity_ratio(np.repeat(features[:1], 10, axis=0), features) == 0.0


def _images(count: int, side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (count, side // 8, side // 8, 3)).repeat(8, axis=1).repeat(8, axis=2)
    return np.clip(smooth + rng.integers(-30, 30, (count, side, side, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("weights", [MS_SSIM_WEIGHTS_64, STANDARD_MS_SSIM_WEIGHTS])
def test_ms_ssim_is_pytorch_msssims_with_the_same_weights_and_window(weights):
    # pytorch-msssim refuses sides up to 160 pixels whatever the scales, so compare at 176. Pairs that share
    # a layout, with their own noise: MS-SSIM from about 0.3 to 0.9.
    base = _images(4, 176, 3)
    rng = np.random.default_rng(4)

    def noisy(amount):
        return np.clip(base + rng.integers(-amount, amount + 1, base.shape), 0, 255).astype(np.uint8)

    first, second = noisy(20), noisy(90)
    ours = ms_ssim(first, second, weights)

    def tensor(images):
        return torch.from_numpy(images).permute(0, 3, 1, 2).float()

    theirs = reference_ms_ssim(
        tensor(first), tensor(second), data_range=255, size_average=False, weights=list(weights)
    )
    # The two libraries' single-scale SSIM already differ in the fourth decimal (float32 filtering order).
    np.testing.assert_allclose(ours, theirs.numpy(), atol=3e-3)
    assert 0.2 < ours.min() and ours.max() < 0.95


def test_ms_ssim_of_identical_covers_is_one_and_64_pixel_covers_use_three_scales():
    covers = _images(3, 64, 5)
    np.testing.assert_allclose(ms_ssim(covers, covers), 1.0, atol=1e-5)
    assert sum(MS_SSIM_WEIGHTS_64) == pytest.approx(1.0) and len(MS_SSIM_WEIGHTS_64) == 3
    assert mean_pair_ms_ssim(np.repeat(covers[:1], 5, axis=0), 20, np.random.default_rng(0)) == pytest.approx(
        1.0, abs=1e-5
    )
    assert mean_pair_ms_ssim(covers, 20, np.random.default_rng(0)) < 0.9
    pairs = random_pairs(3, 200, np.random.default_rng(1))
    assert (pairs[:, 0] != pairs[:, 1]).all() and set(pairs.ravel()) == {0, 1, 2}


def test_nearest_neighbours_are_exact_and_near_copies_use_the_heldout_quantile():
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(50, 5))
    found = nearest_neighbours(np.concatenate([reference[[3, 7]], reference[:2] + 10]), reference)
    assert found.distances[:2].tolist() == [0.0, 0.0] and found.indices[:2].tolist() == [3, 7]
    brute = np.linalg.norm((reference[:2] + 10)[:, None] - reference[None], axis=2)
    np.testing.assert_allclose(found.distances[2:], brute.min(axis=1))
    heldout = np.arange(1, 101, dtype=float)
    assert near_copy_threshold(heldout, 0.01) == pytest.approx(np.quantile(heldout, 0.01))
    rows, are_copies = closest_covers(np.array([5.0, 0.0, 3.0, 0.5]), 1.0, 8)
    assert rows.tolist() == [1, 3] and are_copies
    rows, are_copies = closest_covers(np.array([5.0, 2.0, 3.0]), 1.0, 2)
    assert rows.tolist() == [1, 2] and not are_copies
