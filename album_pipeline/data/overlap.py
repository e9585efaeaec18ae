"""Which images of one set are the same picture as an image of another: exact copies and near-duplicates.

Used to keep evaluation honest: an image that is labelled (and so may be a test cover) must not also be in
the unlabelled pretraining set, whether as the same bytes or as a re-encoding of the same picture.
"""

from __future__ import annotations

from collections.abc import Iterable

import imagehash
import pandas as pd

from album_pipeline.data.images import NEAR_IDENTICAL_BITS, picture_hash
from album_pipeline.data.storage import ImageStore

HASH_COLUMNS = ["image_id", "picture_bucket", "picture_hash"]


def picture_hashes(store: ImageStore, rows: pd.DataFrame) -> pd.DataFrame:
    """``image_id``, ``picture_bucket``, ``picture_hash`` of the distinct stored images of manifest rows."""
    distinct = rows.drop_duplicates("image_id")
    hashes = [picture_hash(store.absolute(path).read_bytes()) for path in distinct["path"]]
    return pd.DataFrame(
        {
            "image_id": list(distinct["image_id"]),
            "picture_bucket": [h.coarse for h in hashes],
            "picture_hash": [h.fine for h in hashes],
        },
        columns=HASH_COLUMNS,
    )


def overlapping(candidates: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    """True for each candidate row (with HASH_COLUMNS) that is an image of ``reference`` or near-identical
    to one: the same coarse hash and fine hashes within NEAR_IDENTICAL_BITS."""
    same_bytes = candidates["image_id"].isin(set(reference["image_id"]))
    near_pictures = _near(candidates, reference)
    return same_bytes | candidates["picture_hash"].isin(near_pictures)


def _near(candidates: pd.DataFrame, reference: pd.DataFrame) -> set[str]:
    """Candidate fine hashes within NEAR_IDENTICAL_BITS of a reference one in the same coarse bucket."""
    by_bucket = reference.groupby("picture_bucket")["picture_hash"].unique()
    found: set[str] = set()
    for bucket, group in candidates.groupby("picture_bucket", sort=False):
        if bucket not in by_bucket.index:
            continue
        theirs = [imagehash.hex_to_hash(fine) for fine in by_bucket[bucket]]
        for fine in _distinct(group["picture_hash"]):
            own = imagehash.hex_to_hash(fine)
            if any(own - other <= NEAR_IDENTICAL_BITS for other in theirs):
                found.add(fine)
    return found


def _distinct(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
