"""Frechet and kernel distances between real and generated covers, computed with clean-fid's own functions.

clean-fid resizes with its "clean" PIL bicubic resizer to 299x299, extracts features, then compares
Gaussian fits (Frechet distance) and polynomial-kernel MMD (kernel distance). Here the images come as arrays
rather than folders, and the feature extractor is pluggable (clean-fid's ``custom_feat_extractor``
convention: float N x 3 x 299 x 299 in [0, 255] -> N x F), because this pipeline never downloads
Inception weights.

Naming rule: the distances are called ``fid`` and ``kid`` only on Inception features; on any other features
they are ``fd_{name}`` and ``kd_{name}``, so a number on different features is never mistaken for an FID.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cleanfid.downloads_helper import inception_url as CLEANFID_INCEPTION_URL
from cleanfid.fid import frechet_distance, kernel_distance
from cleanfid.inception_torchscript import InceptionV3W
from cleanfid.resize import build_resizer, make_resizer

from album_pipeline.metrics.feature_cache import file_sha256, tensors_sha256
from album_pipeline.metrics.genre_classifier import IMAGE_SIZE, GenreClassifier
from album_pipeline.model.pixels import check_image_batch, to_unit_range
from album_pipeline.settings import INCEPTION_WEIGHTS_VAR

INCEPTION_FEATURE_NAME = "inception_v3"
INCEPTION_FILE_NAME = "inception-2015-12-05.pt"  # the name clean-fid's InceptionV3W loads
INCEPTION_WEIGHTS_ENV = INCEPTION_WEIGHTS_VAR
CLEANFID_DEFAULT_WEIGHTS = Path("/tmp") / INCEPTION_FILE_NAME  # clean-fid's fixed cache path on Linux
CLASSIFIER_FEATURE_NAME = "genre_classifier"
CLEANFID_SIZE = 299

_FEATURE_NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")


class InceptionWeightsMissing(FileNotFoundError):
    """clean-fid's Inception weights are not on disk, and this pipeline never downloads them."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(
            f"Inception weights not found at {path}. This pipeline never downloads them "
            f"(clean-fid would fetch {CLEANFID_INCEPTION_URL}). To compute FID/KID: download that URL "
            f"on a machine with network access (e.g. "
            f"`curl -L -o {INCEPTION_FILE_NAME} {CLEANFID_INCEPTION_URL}`), then either put the file at "
            f"{CLEANFID_DEFAULT_WEIGHTS} (clean-fid's default), or anywhere and set "
            f"{INCEPTION_WEIGHTS_ENV}=/path/to/{INCEPTION_FILE_NAME} (the file or the folder holding it; "
            f"the file must keep that name). Alternatively compute distances offline on the genre "
            f"classifier's features with classifier_feature_extractor(model); they are reported as "
            f"fd_{CLASSIFIER_FEATURE_NAME} / kd_{CLASSIFIER_FEATURE_NAME}, not as FID/KID."
        )


@dataclass(frozen=True)
class FeatureExtractor:
    """A named clean-fid ``custom_feat_extractor``: float (N, 3, S, S) in [0, 255] -> (N, F), where S is
    ``input_size`` (299 for Inception; a network trained at another size takes its own, so that covers are not
    resampled up to 299 and back)."""

    name: str
    extract: Callable[[torch.Tensor], torch.Tensor]
    # What the features depend on besides the name (the sha256 of the weights file); None: never cached.
    identity: str | None = None
    input_size: int = CLEANFID_SIZE

    def __post_init__(self) -> None:
        # The name becomes part of metric names (fd_{name}), so keep it to what MLflow and JSON keys accept.
        if not _FEATURE_NAME_PATTERN.match(self.name):
            raise ValueError(f"feature extractor name must match [a-z0-9_]+, got {self.name!r}")

    @property
    def is_inception(self) -> bool:
        return self.name == INCEPTION_FEATURE_NAME

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.extract(batch)


def resolve_inception_weights(weights_path: Path | str | None = None) -> Path:
    """The weights file to load: the argument, else ``$ALBUM_PIPELINE_INCEPTION_WEIGHTS``, else clean-fid's
    ``/tmp/inception-2015-12-05.pt``. A folder means the file of clean-fid's name inside it."""
    if weights_path is None:
        weights_path = os.environ.get(INCEPTION_WEIGHTS_ENV) or CLEANFID_DEFAULT_WEIGHTS
    path = Path(weights_path).expanduser()
    if path.is_dir():
        path = path / INCEPTION_FILE_NAME
    if path.name != INCEPTION_FILE_NAME:
        raise ValueError(
            f"Inception weights must be in a file named {INCEPTION_FILE_NAME} (clean-fid's loader expects "
            f"that name), got {path}; rename the file or link it under that name"
        )
    return path


def inception_weights_path(weights_path: Path | str | None = None) -> Path:
    """The resolved weights file (see ``resolve_inception_weights``); ``InceptionWeightsMissing`` if absent.

    Cheap: a preflight check can call it before any long-running work starts.
    """
    path = resolve_inception_weights(weights_path)
    if not path.is_file():
        raise InceptionWeightsMissing(path)
    return path


def inception_feature_extractor(
    weights_path: Path | str | None = None, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """clean-fid's TorchScript InceptionV3 (2048-d pool features), loaded from disk and never downloaded."""
    path = inception_weights_path(weights_path)
    try:
        with warnings.catch_warnings():
            # clean-fid ships the network as TorchScript; newer torch flags torch.jit as deprecated.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*")
            model = InceptionV3W(str(path.parent), download=False, resize_inside=False)
    except Exception as error:
        raise ValueError(
            f"{path} could not be loaded as clean-fid's TorchScript Inception ({error}); download it again "
            f"from {CLEANFID_INCEPTION_URL}"
        ) from error
    model = model.to(device).eval()

    def extract(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(batch.to(device))

    return FeatureExtractor(INCEPTION_FEATURE_NAME, extract, identity=file_sha256(path))


def classifier_feature_extractor(
    model: GenreClassifier, weights_file: Path | None = None
) -> FeatureExtractor:
    """The genre classifier's penultimate features, usable offline in place of Inception's.

    Its identity (the feature cache's key) is the sha256 of ``weights_file``, the checkpoint the model was
    loaded from, or without one a hash of the weights in memory.
    """
    identity = file_sha256(weights_file) if weights_file is not None else tensors_sha256(model.state_dict())

    def extract(batch: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        small = batch.float()
        if small.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):  # a caller that resized for Inception; antialias
            small = F.interpolate(  # avoids aliasing when shrinking by ~4.7x
                small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True, align_corners=False
            )
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model.features(to_unit_range(small).to(device))
        finally:
            model.train(was_training)

    return FeatureExtractor(CLASSIFIER_FEATURE_NAME, extract, identity=identity, input_size=IMAGE_SIZE)


def frechet_metric_name(feature_name: str) -> str:
    return "fid" if feature_name == INCEPTION_FEATURE_NAME else f"fd_{feature_name}"


def kernel_metric_name(feature_name: str) -> str:
    return "kid" if feature_name == INCEPTION_FEATURE_NAME else f"kd_{feature_name}"


@dataclass(frozen=True)
class DistanceReport:
    frechet_name: str  # "fid" on Inception features, else "fd_{feature_name}"
    frechet_distance: float
    kernel_name: str  # "kid" on Inception features, else "kd_{feature_name}"
    kernel_distance: float
    feature_name: str
    feature_dim: int
    real_count: int
    fake_count: int
    warnings: tuple[str, ...] = ()

    @property
    def metrics(self) -> dict[str, float]:
        return {self.frechet_name: self.frechet_distance, self.kernel_name: self.kernel_distance}

    def to_dict(self) -> dict:
        report = asdict(self)
        report["warnings"] = list(self.warnings)
        return report


def _check_image_batch(images: np.ndarray, what: str) -> None:
    check_image_batch(images, what)
    if len(images) < 2:
        raise ValueError(
            f"{what} has {len(images)} image(s); a distance between distributions needs at least 2 per side "
            "(and, to be meaningful, more images than feature dimensions)"
        )


def extract_features(
    images: np.ndarray,
    extractor: FeatureExtractor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """float64 (N, F) features of uint8 (N, H, W, 3) images, resized as clean-fid's "clean" mode does (PIL
    bicubic per channel on float32, no quantisation) to the extractor's input size; covers already at that
    size go in as they are.

    Exposed separately so that callers can cache the real side's features per dataset version.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = extractor.input_size
    if size == CLEANFID_SIZE:
        resize = build_resizer("clean")
    else:  # the same resampling as clean mode, to the extractor's own size
        resize = make_resizer("PIL", False, "bicubic", (size, size))
    chunks = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if chunk.shape[1:3] == (size, size):
            resized = chunk.astype(np.float32)
        else:
            resized = np.stack([resize(image) for image in chunk])
        batch = torch.from_numpy(resized).permute(0, 3, 1, 2).contiguous().to(device)
        with torch.no_grad():
            features = extractor(batch)
        features = torch.as_tensor(features).detach().cpu().double().numpy()
        if features.ndim != 2 or features.shape[0] != len(resized):
            raise ValueError(
                f"feature extractor {extractor.name!r} returned shape {features.shape} for {len(resized)} "
                "images; it must return (N, F)"
            )
        chunks.append(features)
    features = np.concatenate(chunks)
    if not np.isfinite(features).all():
        raise ValueError(f"feature extractor {extractor.name!r} produced NaN or infinite features")
    return features


def distances_from_features(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    feature_name: str,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> DistanceReport:
    """Frechet and kernel distances between two feature sets, via clean-fid's functions."""
    real_features = np.asarray(real_features, dtype=np.float64)
    fake_features = np.asarray(fake_features, dtype=np.float64)
    if real_features.ndim != 2 or fake_features.ndim != 2 or real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(
            "feature sets must be (N, F) with the same F, "
            f"got {real_features.shape} and {fake_features.shape}"
        )
    real_count, fake_count = len(real_features), len(fake_features)
    if min(real_count, fake_count) < 2:
        raise ValueError(
            f"need at least 2 samples per side, got {real_count} real and {fake_count} generated; "
            "evaluate on more images"
        )
    feature_dim = real_features.shape[1]
    notes = []
    if min(real_count, fake_count) < feature_dim:
        notes.append(
            f"only {real_count} real and {fake_count} generated samples for {feature_dim}-dimensional "
            f"features: the covariance estimates are rank-deficient, so {frechet_metric_name(feature_name)} "
            f"is unreliable and not comparable across sample counts; use well over {feature_dim} per side"
        )
    with warnings.catch_warnings():
        # clean-fid passes scipy's deprecated ``disp`` argument to sqrtm; the result is unaffected.
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*disp.*")
        frechet = frechet_distance(
            real_features.mean(axis=0),
            np.cov(real_features, rowvar=False),
            fake_features.mean(axis=0),
            np.cov(fake_features, rowvar=False),
        )
    kernel = seeded_kernel_distance(
        real_features, fake_features, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed
    )
    return DistanceReport(
        frechet_name=frechet_metric_name(feature_name),
        frechet_distance=float(np.real(frechet)),
        kernel_name=kernel_metric_name(feature_name),
        kernel_distance=float(kernel),
        feature_name=feature_name,
        feature_dim=feature_dim,
        real_count=real_count,
        fake_count=fake_count,
        warnings=tuple(notes),
    )


def seeded_kernel_distance(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """clean-fid's kernel distance, its random subsets drawn from ``seed``."""
    # clean-fid draws the KID subsets from numpy's global RNG; seed it for repeatable numbers, then put the
    # caller's RNG state back.
    saved_state = np.random.get_state()
    np.random.seed(seed)
    try:
        return float(
            kernel_distance(
                real_features, fake_features, num_subsets=kid_subsets, max_subset_size=kid_subset_size
            )
        )
    finally:
        np.random.set_state(saved_state)


def compute_distances(
    real_images: np.ndarray,
    fake_images: np.ndarray,
    extractor: FeatureExtractor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> DistanceReport:
    """Distances between real and generated uint8 (N, H, W, 3) covers on ``extractor``'s features."""
    _check_image_batch(real_images, "real_images")
    _check_image_batch(fake_images, "fake_images")
    real_features = extract_features(real_images, extractor, batch_size=batch_size, device=device)
    fake_features = extract_features(fake_images, extractor, batch_size=batch_size, device=device)
    return distances_from_features(
        real_features,
        fake_features,
        extractor.name,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        seed=seed,
    )
