import numpy as np
import pytest
import torch

from album_pipeline.model.pixels import check_image_batch, to_uint8, to_unit_range


def test_pixels_go_to_the_unit_range_and_back_exactly():
    pixels = torch.arange(256, dtype=torch.uint8)
    unit = to_unit_range(pixels)
    assert unit.dtype == torch.float32 and unit[0] == -1.0 and unit[-1] == 1.0
    # The very arithmetic the batch loader has always used (bit for bit), and the input is left alone.
    assert torch.equal(unit, pixels.float().div_(127.5).sub_(1.0)) and pixels[-1] == 255
    assert torch.equal(to_uint8(unit), pixels)
    assert to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]  # clamped first


def test_image_batches_must_be_uint8_rgb_of_the_given_size():
    check_image_batch(np.zeros((2, 8, 8, 3), np.uint8), "covers")
    check_image_batch(np.zeros((0, 64, 64, 3), np.uint8), "covers", size=64)
    with pytest.raises(TypeError, match=r"covers must be a numpy uint8 array \(N, H, W, 3\), got float32"):
        check_image_batch(np.zeros((2, 8, 8, 3), np.float32), "covers")
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) \(RGB, channels last\)"):
        check_image_batch(np.zeros((2, 8, 8), np.uint8), "covers")
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\).*resize covers to 64x64"):
        check_image_batch(np.zeros((2, 32, 32, 3), np.uint8), "covers", size=64)
