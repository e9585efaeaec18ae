"""The real-side feature cache's speed-up: one evaluation against real covers, then a second against the same
unchanged real covers, side by side in one process (``python benchmarks/evaluation_cache.py``).

Demo scale by default: the demo's labelled split sizes (about 1,360 train and 170 test covers of 5 genres, drawn
by the emulator) and its 200 generated covers per genre, on the genre classifier's features. The generator is a
stand-in that returns fresh emulator covers, so the timing is the evaluation's own. The second run must be at
least 1.8x faster (issue 12); it prints the ratio and exits 1 below that.

``--features inception-architecture`` measures the case the cache exists for, FID on Inception features,
where extracting the real covers' features dominates. clean-fid's Inception weights cannot be downloaded
here, so torchvision's InceptionV3 with random weights stands in: the same network and input size, so the same
cost. Its distances mean nothing and are named after it (``fd_inception_architecture``), never FID.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.metrics.evaluate import EvaluationConfig, evaluate_generator
from album_pipeline.metrics.feature_cache import FeatureCache
from album_pipeline.metrics.frechet import FeatureExtractor, classifier_feature_extractor
from album_pipeline.metrics.genre_classifier import ClassifierConfig, train_genre_classifier
from album_pipeline.metrics.samples import InMemoryCovers
from album_pipeline.testing.emulators.synthetic import draw_cover

REQUIRED_SPEEDUP = 1.8


def emulator_covers(per_genre: int, first_seed: int) -> InMemoryCovers:
    images, labels = [], []
    for index, genre in enumerate(DEFAULT_GENRES):
        for seed in range(first_seed, first_seed + per_genre):
            images.append(np.asarray(draw_cover(genre, seed, 64).convert("RGB")))
            labels.append(index)
    return InMemoryCovers(np.stack(images), np.asarray(labels))


def inception_architecture_extractor() -> FeatureExtractor:
    """InceptionV3's 2048-d pool features with random weights: Inception's cost, not its features."""
    import torch
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    network = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    network.fc = torch.nn.Identity()

    def extract(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(batch / 127.5 - 1.0)

    return FeatureExtractor(
        "inception_architecture", extract, identity="random-inception-architecture-seed-0"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-genre", type=int, default=272)
    parser.add_argument("--test-per-genre", type=int, default=34)
    parser.add_argument("--samples-per-genre", type=int, default=200)
    parser.add_argument(
        "--features", choices=("genre_classifier", "inception-architecture"), default="genre_classifier"
    )
    args = parser.parse_args()

    train = emulator_covers(args.train_per_genre, 0)
    test = emulator_covers(args.test_per_genre, 1_000_000)
    pool = emulator_covers(args.samples_per_genre, 2_000_000)
    classifier = train_genre_classifier(
        train.images, train.labels, DEFAULT_GENRES, ClassifierConfig(epochs=1)
    ).model
    if args.features == "genre_classifier":
        extractor = classifier_feature_extractor(classifier)
    else:
        extractor = inception_architecture_extractor()

    def fresh_covers(genre_indices: np.ndarray, seed: int) -> np.ndarray:
        rows = [np.flatnonzero(pool.labels == index) for index in range(len(DEFAULT_GENRES))]
        counters = [0] * len(DEFAULT_GENRES)
        picked = []
        for index in genre_indices:
            picked.append(rows[index][counters[index] % len(rows[index])])
            counters[index] += 1
        return pool.images[picked]

    config = EvaluationConfig(samples_per_genre=args.samples_per_genre)
    timings = []
    with tempfile.TemporaryDirectory() as folder:
        cache = FeatureCache(Path(folder) / "feature_cache")
        for run in ("first", "second"):
            started = time.perf_counter()
            report = evaluate_generator(
                fresh_covers,
                classifier,
                DEFAULT_GENRES,
                train,
                test,
                extractor,
                Path(folder) / run,
                config,
                feature_cache=cache,
            )
            timings.append(time.perf_counter() - started)
            print(
                f"{run:6s} evaluation: {timings[-1]:6.2f} s  (real features from cache: {report.cache_hits})"
            )
    ratio = timings[0] / timings[1]
    print(
        f"{len(train)} train + {len(test)} test real covers, {args.samples_per_genre * len(DEFAULT_GENRES)} "
        f"generated, {extractor.name} features: second evaluation {ratio:.2f}x faster (required: "
        f"{REQUIRED_SPEEDUP}x)"
    )
    return 0 if ratio >= REQUIRED_SPEEDUP else 1


if __name__ == "__main__":
    sys.exit(main())
