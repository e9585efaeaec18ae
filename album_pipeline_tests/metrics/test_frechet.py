from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cleanfid.fid import fid_from_feats
from torch import nn

from album_pipeline.metrics.frechet import (
    CLEANFID_DEFAULT_WEIGHTS,
    CLEANFID_INCEPTION_URL,
    INCEPTION_FILE_NAME,
    INCEPTION_WEIGHTS_ENV,
    FeatureExtractor,
    InceptionWeightsMissing,
    classifier_feature_extractor,
    compute_distances,
    distances_from_features,
    extract_features,
    inception_feature_extractor,
    resolve_inception_weights,
)
from album_pipeline.metrics.genre_classifier import GenreClassifier


def colour_layout_features(batch: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for Inception: per-channel means over a 2x2 grid (12 dims), in [0, 1].

    Inception's features are of order 1; KID's cubic polynomial kernel is badly conditioned on raw [0, 255].
    """
    return F.adaptive_avg_pool2d(batch / 255, 2).flatten(1)


COLOUR_LAYOUT = FeatureExtractor("colour_layout", colour_layout_features)


def make_covers(count: int, seed: int, brightness: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (count, 1, 1, 3))
    texture = rng.integers(-40, 40, (count, 64, 64, 3))
    return (base + texture + brightness).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def real() -> np.ndarray:
    return make_covers(60, seed=0)


def test_distance_of_a_set_to_itself_is_about_zero(real):
    report = compute_distances(real, real, COLOUR_LAYOUT, batch_size=16)
    assert report.frechet_distance == pytest.approx(0.0, abs=1e-6)
    shifted = compute_distances(real, make_covers(60, seed=0, brightness=40), COLOUR_LAYOUT)
    # KID's unbiased estimator is slightly negative on identical sets (its finite-sample correction).
    assert abs(report.kernel_distance) < shifted.kernel_distance / 10


def test_distances_grow_with_the_shift_between_distributions(real):
    fresh_sample = compute_distances(real, make_covers(60, seed=1), COLOUR_LAYOUT)
    small_shift = compute_distances(real, make_covers(60, seed=1, brightness=25), COLOUR_LAYOUT)
    large_shift = compute_distances(real, make_covers(60, seed=1, brightness=70), COLOUR_LAYOUT)
    assert fresh_sample.frechet_distance < small_shift.frechet_distance < large_shift.frechet_distance
    assert fresh_sample.kernel_distance < small_shift.kernel_distance < large_shift.kernel_distance


def test_custom_features_are_never_called_fid(real):
    report = compute_distances(real, make_covers(30, seed=2), COLOUR_LAYOUT)
    assert (report.frechet_name, report.kernel_name) == ("fd_colour_layout", "kd_colour_layout")
    assert set(report.metrics) == {"fd_colour_layout", "kd_colour_layout"}
    assert "fid" not in report.to_dict().values()
    assert (report.feature_name, report.feature_dim) == ("colour_layout", 12)
    assert (report.real_count, report.fake_count) == (60, 30)
    assert report.warnings == ()


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_frechet_matches_clean_fid_on_the_same_features():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 6)), rng.normal(0.5, 1.2, size=(40, 6))
    report = distances_from_features(a, b, "toy")
    assert report.frechet_distance == pytest.approx(fid_from_feats(a, b), rel=1e-9)


def test_kernel_distance_is_repeatable_and_leaves_numpy_rng_alone():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(30, 5)), rng.normal(0.3, 1.0, size=(30, 5))
    np.random.seed(99)
    state = np.random.get_state()[1].copy()
    first = distances_from_features(a, b, "toy", kid_subsets=20, kid_subset_size=10)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    second = distances_from_features(a, b, "toy", kid_subsets=20, kid_subset_size=10)
    assert first.kernel_distance == second.kernel_distance


def test_too_few_samples_are_refused_and_rank_deficiency_is_warned(real):
    with pytest.raises(ValueError, match="at least 2 per side"):
        compute_distances(real, real[:1], COLOUR_LAYOUT)
    with pytest.raises(ValueError, match="at least 2 samples per side"):
        distances_from_features(np.zeros((1, 3)), np.zeros((5, 3)), "toy")
    wide = FeatureExtractor("wide", lambda batch: F.adaptive_avg_pool2d(batch / 255, 8).flatten(1))  # 192-d
    report = compute_distances(real[:20], real[20:40], wide)
    assert report.feature_dim == 192
    assert len(report.warnings) == 1 and "rank-deficient" in report.warnings[0]


def test_bad_images_and_extractors_are_refused(real):
    with pytest.raises(TypeError, match="uint8"):
        compute_distances(real.astype(np.float32), real, COLOUR_LAYOUT)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        compute_distances(real[..., 0], real, COLOUR_LAYOUT)
    with pytest.raises(ValueError, match="must return"):
        extract_features(real[:4], FeatureExtractor("flat", lambda batch: batch.mean(dim=(1, 2, 3))))
    with pytest.raises(ValueError, match=r"\[a-z0-9_\]"):
        FeatureExtractor("Bad Name", colour_layout_features)


def test_missing_inception_weights_explain_how_to_provide_them(tmp_path, monkeypatch):
    absent = tmp_path / "weights" / INCEPTION_FILE_NAME
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(absent))
    with pytest.raises(InceptionWeightsMissing) as caught:
        inception_feature_extractor()
    message = str(caught.value)
    assert caught.value.path == absent
    for required in (
        str(absent),
        CLEANFID_INCEPTION_URL,
        str(CLEANFID_DEFAULT_WEIGHTS),
        INCEPTION_WEIGHTS_ENV,
        "classifier_feature_extractor",
        "fd_genre_classifier",
    ):
        assert required in message
    assert isinstance(caught.value, FileNotFoundError)


def test_weights_location_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    assert resolve_inception_weights() == Path("/tmp/inception-2015-12-05.pt")
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path))  # a folder: the file of clean-fid's name in it
    assert resolve_inception_weights() == tmp_path / INCEPTION_FILE_NAME
    explicit = tmp_path / "elsewhere" / INCEPTION_FILE_NAME
    assert resolve_inception_weights(explicit) == explicit  # the argument wins over the variable
    with pytest.raises(ValueError, match="must be in a file named"):
        resolve_inception_weights(tmp_path / "weights.pt")


class TinyInception(nn.Module):
    """The layout of clean-fid's TorchScript file: ``layers`` maps normalised images to 2048 features."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 2048, 1, bias=False))
        with torch.no_grad():
            self.layers[1].weight.copy_(torch.linspace(-1, 1, 2048 * 3).view(2048, 3, 1, 1))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
# The tiny network's features span only 3 dimensions, so their covariance is singular by construction.
@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_inception_path_loads_torchscript_weights_from_the_configured_place(tmp_path, monkeypatch, real):
    weights = tmp_path / INCEPTION_FILE_NAME
    torch.jit.script(TinyInception()).save(str(weights))
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(weights))

    extractor = inception_feature_extractor()
    assert extractor.name == "inception_v3" and extractor.is_inception
    grey = torch.full((2, 3, 299, 299), 192.0)
    expected = TinyInception().layers[1].weight.view(2048, 3) @ torch.full((3,), (192.0 - 128) / 128)
    torch.testing.assert_close(extractor(grey), expected.expand(2, 2048))

    assert extract_features(real[:3], extractor).shape == (3, 2048)
    # The matrix square root of a 2048x2048 covariance takes ~30 s on two cores, so the distances are
    # computed on the first 16 Inception dimensions; the naming follows the extractor's name.
    first_dims = FeatureExtractor(extractor.name, lambda batch: extractor(batch)[:, :16])
    report = compute_distances(real, make_covers(30, seed=5), first_dims)
    assert (report.frechet_name, report.kernel_name) == ("fid", "kid")
    assert set(report.metrics) == {"fid", "kid"}
    assert report.frechet_distance > 0

    corrupt = tmp_path / "corrupt" / INCEPTION_FILE_NAME
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="could not be loaded"):
        inception_feature_extractor(corrupt)


def test_classifier_features_go_through_the_classifier(real):
    model = GenreClassifier(num_genres=3, widths=(4, 8)).train()
    extractor = classifier_feature_extractor(model)
    assert extractor.name == "genre_classifier" and not extractor.is_inception
    features = extract_features(real[:5], extractor)
    assert features.shape == (5, 8)
    assert model.training  # the extractor switches to eval mode only while it runs
    # 64 -> 299 (clean-fid) -> 64 (antialiased) nearly restores the input, so the features nearly match.
    direct = model.eval().features(torch.from_numpy(real[:5]).permute(0, 3, 1, 2).float() / 127.5 - 1)
    np.testing.assert_allclose(features, direct.detach().numpy(), rtol=0.1, atol=0.05)
    report = compute_distances(real[:20], real[20:40], extractor)
    assert set(report.metrics) == {"fd_genre_classifier", "kd_genre_classifier"}
