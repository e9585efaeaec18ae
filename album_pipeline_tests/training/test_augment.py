"""DiffAugment's three policies do what the paper's reference code does, and ADA moves p the way it says."""

from __future__ import annotations

import pytest
import torch

from album_pipeline.training.augment import AdaSettings, DiffAugment, color, cutout, parse_policy, translation


def _images(count: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


ALWAYS = torch.tensor(1.0)
NEVER = torch.tensor(0.0)


def test_policies_parse_and_unknown_ones_are_refused():
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown augmentation.*'rotate'"):
        parse_policy("color,rotate")


@pytest.mark.parametrize("operation", [color, translation, cutout])
def test_probability_zero_leaves_images_untouched(operation):
    images = _images()
    assert torch.equal(operation(images, NEVER), images)


def test_color_follows_diffaugments_formulas():
    images = _images()
    torch.manual_seed(3)
    augmented = color(images, ALWAYS)

    # The reference (DiffAugment_pytorch.py), drawing the same numbers in the same order: each policy draws its
    # factor, then which images it applies to (all of them at p = 1).
    torch.manual_seed(3)
    count = images.shape[0]
    expected = images + (torch.rand(count, 1, 1, 1) - 0.5)
    torch.rand(count, 1, 1, 1)
    mean = expected.mean(dim=1, keepdim=True)
    expected = (expected - mean) * (torch.rand(count, 1, 1, 1) * 2) + mean
    torch.rand(count, 1, 1, 1)
    mean = expected.mean(dim=(1, 2, 3), keepdim=True)
    expected = (expected - mean) * (torch.rand(count, 1, 1, 1) + 0.5) + mean
    torch.testing.assert_close(augmented, expected)


def test_translation_shifts_whole_pixels_up_to_an_eighth_and_fills_with_zeros():
    images = _images(count=8) + 2  # all positive, so a zero can only be fill
    shifted = translation(images, ALWAYS)
    seen_shifts = set()
    for original, result in zip(images, shifted, strict=True):
        matches = []
        for dy in range(-8, 9):
            for dx in range(-8, 9):
                expected = torch.zeros_like(original)
                rows = slice(max(dy, 0), 64 + min(dy, 0))
                cols = slice(max(dx, 0), 64 + min(dx, 0))
                source_rows = slice(max(-dy, 0), 64 + min(-dy, 0))
                source_cols = slice(max(-dx, 0), 64 + min(-dx, 0))
                expected[:, rows, cols] = original[:, source_rows, source_cols]
                if torch.equal(result, expected):
                    matches.append((dy, dx))
        assert len(matches) == 1
        seen_shifts.add(matches[0])
    assert len(seen_shifts) > 1  # shifts are drawn per image


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_border():
    images = _images(count=16) + 2
    cut = cutout(images, ALWAYS)
    for original, result in zip(images, cut, strict=True):
        zeroed = (result == 0).all(dim=0)
        assert torch.equal(result[:, ~zeroed], original[:, ~zeroed])
        rows = zeroed.any(dim=1).nonzero().flatten()
        cols = zeroed.any(dim=0).nonzero().flatten()
        # one rectangle, 32 on a side unless the border clips it (never below half of that)
        assert zeroed.sum() == len(rows) * len(cols)
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
        assert 16 <= len(rows) <= 32 and 16 <= len(cols) <= 32
        assert len(rows) == 32 or rows.min() == 0 or rows.max() == 63


def test_gradients_reach_the_images_through_every_policy():
    images = _images().requires_grad_(True)
    augment = DiffAugment("color,translation,cutout", 1.0, "cpu")
    augment(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_a_probability_between_applies_a_policy_to_about_that_share_of_images():
    images = _images(count=2000, seed=1)[:, :, :8, :8] + 2
    torch.manual_seed(0)
    cut_share = (cutout(images, torch.tensor(0.3)) == 0).flatten(1).any(dim=1).float().mean()
    assert 0.25 < cut_share < 0.35


def test_channels_last_images_stay_channels_last():
    images = _images().contiguous(memory_format=torch.channels_last)
    out = DiffAugment("translation,cutout", 1.0, "cpu")(images)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_ada_raises_p_while_d_overfits_and_lowers_it_otherwise():
    ada = AdaSettings(target=0.6, kimg=1.0, interval=2)
    augment = DiffAugment("color", 0.5, "cpu", ada)
    confident = torch.full((10,), 3.0)  # mean sign 1 > 0.6: D overfits the reals
    augment.observe_real_sign(torch.sign(confident).mean(), batch_size=10)
    assert augment.probability.item() == 0.5  # adjusted only every `interval` steps
    augment.observe_real_sign(torch.sign(confident).mean(), batch_size=10)
    # each adjustment moves p by batch * interval / (kimg * 1000) = 10 * 2 / 1000
    assert augment.probability.item() == pytest.approx(0.52)
    unsure = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0])  # mean sign 0.2
    for _ in range(4):
        augment.observe_real_sign(torch.sign(unsure).mean(), batch_size=10)
    assert augment.probability.item() == pytest.approx(0.48)

    state = augment.state_dict()
    restored = DiffAugment("color", 0.0, "cpu", ada)
    restored.load_state_dict(state)
    assert restored.probability.item() == pytest.approx(0.48)


def test_ada_keeps_p_within_zero_and_one():
    augment = DiffAugment("color", 0.0, "cpu", AdaSettings(target=0.6, kimg=0.001, interval=1))
    augment.observe_real_sign(torch.tensor(-1.0).sign(), batch_size=4)
    assert augment.probability.item() == 0.0
    for _ in range(3):
        augment.observe_real_sign(torch.tensor(1.0).sign(), batch_size=4)
    assert augment.probability.item() == 1.0


def test_a_fixed_probability_never_moves():
    augment = DiffAugment("color", 1.0, "cpu")
    for _ in range(10):
        augment.observe_real_sign(torch.tensor(5.0).sign(), batch_size=4)
    assert augment.probability.item() == 1.0
