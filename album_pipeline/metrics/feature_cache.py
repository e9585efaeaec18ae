"""Real covers' features cached on disk by content, so that a second evaluation against unchanged real data
extracts features only from the generated covers.

A cache entry is named by a sha256 over what determines its features: the split's image ids (sorted, so the
order the split happens to list them in does not matter), their resolution, the feature extractor's name and
its identity (the sha256 of its weights file: Inception's, or the genre classifier's checkpoint). Anything else
changed (another split, a retrained classifier, other weights) is another key, so a stale entry is never read;
nothing is keyed by a name, unlike clean-fid's own statistics cache (never used here). Entries are written
atomically; one that does not load is set aside (``album_pipeline.recovery``) and computed again.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from album_pipeline.atomic import atomic_path
from album_pipeline.recovery import set_aside

CACHE_FORMAT = "album_pipeline.feature_cache/2"  # 2: the classifier takes covers at its own size
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """The sha256 of a state dict's names, shapes, dtypes and values: an identity for weights held in memory."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(image_ids: np.ndarray, resolution: int, feature_name: str, extractor_identity: str) -> str:
    """The content key of one split's features (see the module docstring)."""
    digest = hashlib.sha256(
        json.dumps([CACHE_FORMAT, int(resolution), feature_name, extractor_identity]).encode() + b"\n"
    )
    for image_id in sorted(str(image_id) for image_id in image_ids):
        digest.update(image_id.encode() + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class FeatureCache:
    """A folder of cached feature arrays, one ``.npz`` file per content key."""

    folder: Path
    log: Callable[[str], None] | None = None

    def path(self, key: str) -> Path:
        return Path(self.folder) / f"{key}.npz"

    def features(
        self,
        image_ids: np.ndarray,
        resolution: int,
        feature_name: str,
        extractor_identity: str,
        compute: Callable[[], np.ndarray],
    ) -> tuple[np.ndarray, bool]:
        """The (N, F) features of the covers ``image_ids`` (in that order) and whether they came from the cache;
        on a miss ``compute()`` (features in ``image_ids``' order) runs and its result is stored."""
        image_ids = np.asarray([str(image_id) for image_id in image_ids])
        if len(set(image_ids.tolist())) != len(image_ids):
            raise ValueError("image ids repeat; each cached cover needs its own id")
        key = cache_key(image_ids, resolution, feature_name, extractor_identity)
        cached = self._load(self.path(key), image_ids)
        if cached is not None:
            return cached, True
        features = np.asarray(compute(), dtype=np.float64)
        if features.ndim != 2 or len(features) != len(image_ids):
            raise ValueError(f"computed features have shape {features.shape} for {len(image_ids)} covers")
        self._store(self.path(key), image_ids, features)
        return features, False

    def values(self, key_parts: list, compute: Callable[[], dict]) -> tuple[dict, bool]:
        """A JSON-able dict derived from real covers only (e.g. the held-out covers' own metrics), named by a
        sha256 over ``key_parts`` (which must hold the content keys of the features it derives from)."""
        key = hashlib.sha256(
            json.dumps([CACHE_FORMAT, "values", *key_parts], sort_keys=True).encode()
        ).hexdigest()
        path = Path(self.folder) / f"{key}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))["values"], True
            except (OSError, ValueError, KeyError, TypeError) as error:
                set_aside(path, str(error) or type(error).__name__, self.log)
        values = compute()
        with atomic_path(path) as tmp:
            tmp.write_text(
                json.dumps({"format": CACHE_FORMAT, "values": values}, allow_nan=False), encoding="utf-8"
            )
        return values, False

    def _load(self, path: Path, image_ids: np.ndarray) -> np.ndarray | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                stored_ids, features = entry["image_ids"], entry["features"]
                if str(entry["format"]) != CACHE_FORMAT:
                    raise ValueError(f"format {entry['format']!s} is not {CACHE_FORMAT}")
            if features.ndim != 2 or len(features) != len(stored_ids) or len(stored_ids) != len(image_ids):
                raise ValueError(f"{len(stored_ids)} ids for features of shape {features.shape}")
            # Stored sorted by id; put them back in the order asked for.
            rows = np.searchsorted(stored_ids, image_ids)
            if (rows >= len(stored_ids)).any() or (
                stored_ids[np.minimum(rows, len(stored_ids) - 1)] != image_ids
            ).any():
                raise ValueError("its image ids are not the split's")
            return features[rows]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            set_aside(path, str(error) or type(error).__name__, self.log)
            return None

    def _store(self, path: Path, image_ids: np.ndarray, features: np.ndarray) -> None:
        order = np.argsort(image_ids, kind="stable")
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle, format=np.asarray(CACHE_FORMAT), image_ids=image_ids[order], features=features[order]
            )
