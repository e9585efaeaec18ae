"""The real-side feature cache: hits on unchanged real data, misses on any change of what features depend on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from album_pipeline.metrics.evaluate import EvaluationConfig, evaluate_generator
from album_pipeline.metrics.feature_cache import FeatureCache, cache_key, file_sha256
from album_pipeline.metrics.frechet import FeatureExtractor
from album_pipeline.metrics.genre_classifier import GenreClassifier
from album_pipeline.metrics.samples import InMemoryCovers
from album_pipeline.recovery import unreadable_copies

GENRES = ("rock", "jazz", "pop")


class CountingExtractor:
    """A colour-layout feature extractor that records how many images it was asked for, per call."""

    def __init__(self, identity: str):
        self.calls: list[int] = []
        self.extractor = FeatureExtractor("colour_layout", self.extract, identity=identity)

    def extract(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(batch))
        return F.adaptive_avg_pool2d(batch / 255, 2).flatten(1)


def covers(count: int, seed: int) -> InMemoryCovers:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 64, 64, 3)).astype(np.uint8)
    return InMemoryCovers(images, np.arange(count) % len(GENRES))


def noise_source(genre_indices, seed):
    return np.random.default_rng(seed).integers(0, 256, (len(genre_indices), 64, 64, 3)).astype(np.uint8)


def test_a_second_evaluation_extracts_features_of_generated_covers_only(tmp_path):
    torch.manual_seed(0)
    classifier = GenreClassifier(len(GENRES), widths=(4, 8)).eval()
    reference, heldout = covers(36, 1), covers(24, 2)
    counting = CountingExtractor("weights-a")
    cache = FeatureCache(tmp_path / "cache")
    config = EvaluationConfig(samples_per_genre=10, ms_ssim_pairs=3, batch_size=1000)

    def run(folder):
        counting.calls.clear()
        return evaluate_generator(
            noise_source,
            classifier,
            GENRES,
            reference,
            heldout,
            counting.extractor,
            tmp_path / folder,
            config,
            feature_cache=cache,
        )

    first = run("first")
    assert sorted(counting.calls) == [24, 30, 36]  # held-out, generated, reference
    assert first.cache_hits == {"reference": False, "heldout": False, "heldout_metrics": False}
    second = run("second")
    assert counting.calls == [30]  # the generated covers only
    assert second.cache_hits == {"reference": True, "heldout": True, "heldout_metrics": True}
    assert second.metrics == first.metrics


def test_the_key_follows_the_split_the_resolution_and_the_weights_file(tmp_path):
    ids = np.array(["b", "a", "c"])
    key = cache_key(ids, 64, "genre_classifier", "w1")
    assert cache_key(ids[::-1], 64, "genre_classifier", "w1") == key  # the order of listing does not matter
    assert cache_key(ids[:2], 64, "genre_classifier", "w1") != key
    assert cache_key(ids, 128, "genre_classifier", "w1") != key
    assert cache_key(ids, 64, "genre_classifier", "w2") != key
    assert cache_key(ids, 64, "inception_v3", "w1") != key

    weights = tmp_path / "classifier.pt"
    weights.write_bytes(b"one set of weights")
    before = file_sha256(weights)
    weights.write_bytes(b"retrained weights")
    assert file_sha256(weights) != before

    cache = FeatureCache(tmp_path / "cache")
    computed = []

    def compute(values):
        def run():
            computed.append(values)
            return np.asarray(values, dtype=float)

        return run

    features, hit = cache.features(ids, 64, "genre_classifier", before, compute([[1.0], [2.0], [3.0]]))
    assert not hit and features.ravel().tolist() == [1.0, 2.0, 3.0]
    # Another order of the same split: a hit, its rows put in the order asked for.
    features, hit = cache.features(ids[[2, 0, 1]], 64, "genre_classifier", before, compute([[9.0]] * 3))
    assert hit and features.ravel().tolist() == [3.0, 1.0, 2.0]
    for changed in (
        (ids[:2], 64, file_sha256(weights), [[1.0], [2.0]]),  # another split
        (ids, 128, before, [[4.0], [5.0], [6.0]]),  # another resolution
        (ids, 64, file_sha256(weights), [[7.0], [8.0], [9.0]]),  # another weights file
    ):
        split, resolution, identity, values = changed
        features, hit = cache.features(split, resolution, "genre_classifier", identity, compute(values))
        assert not hit and features.ravel().tolist() == np.ravel(values).tolist()
    assert len(computed) == 4


def test_an_unreadable_entry_is_set_aside_and_computed_again(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    ids = np.array(["x", "y"])
    cache.features(ids, 64, "f", "w", lambda: np.ones((2, 3)))
    entry = cache.path(cache_key(ids, 64, "f", "w"))
    entry.write_bytes(b"not an npz file")
    messages = []
    cache = FeatureCache(tmp_path / "cache", log=messages.append)
    features, hit = cache.features(ids, 64, "f", "w", lambda: np.full((2, 3), 2.0))
    assert not hit and (features == 2.0).all()
    assert len(unreadable_copies(entry)) == 1 and "could not be read" in messages[0]
    assert cache.features(ids, 64, "f", "w", lambda: pytest.fail("recomputed"))[1]
