"""Which images of one set are the same picture as an image of another: exact copies and near-duplicates.

Used to keep evaluation honest: an image that is labelled (and so may be a test cover) must not also be in
the unlabelled pretraining set, whether as the same bytes or as a re-encoding of the same picture.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from album_pipeline.data.images import picture_hash
from album_pipeline.data.near_duplicates import near_duplicate_groups
from album_pipeline.data.storage import ImageStore

HASH_COLUMNS = ["image_id", "picture_hash"]


def picture_hashes(
    store: ImageStore, rows: pd.DataFrame, known: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """``image_id`` and ``picture_hash`` of the distinct stored images of manifest rows.

    ``known`` (image_id -> picture_hash, e.g. from the previous manifest) spares decoding those images again.
    """
    known = known or {}
    distinct = rows.drop_duplicates("image_id")
    hashes = [
        known.get(image_id) or picture_hash(store.absolute(path).read_bytes())
        for image_id, path in zip(distinct["image_id"], distinct["path"], strict=True)
    ]
    return pd.DataFrame(
        {"image_id": list(distinct["image_id"]), "picture_hash": hashes}, columns=HASH_COLUMNS
    )


def overlapping(candidates: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    """True for each candidate row (with HASH_COLUMNS) that is an image of ``reference`` or in a
    near-duplicate group with one."""
    groups = near_duplicate_groups([*candidates["picture_hash"], *reference["picture_hash"]])
    reference_groups = {groups[value] for value in reference["picture_hash"]}
    same_bytes = candidates["image_id"].isin(set(reference["image_id"]))
    near = candidates["picture_hash"].map(groups).isin(reference_groups)
    return same_bytes | near
