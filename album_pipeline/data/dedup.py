"""One image per picture: exact copies (same sha256) and near-duplicates (same near-duplicate group) collapse
to one row, so that no picture is counted, trained on or evaluated twice.

The copy that stays is the largest (most pixels: the best source for any training resolution); among equally
large ones, the caller's ``rank`` (source priority, archive order) decides, then the row order. Whatever the
order rows come in, the same rows are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from album_pipeline.data.near_duplicates import near_duplicate_groups

EXACT_DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"


@dataclass(frozen=True)
class Deduplicated:
    kept: pd.DataFrame  # the input's columns plus duplicate_group, in input order
    dropped: pd.DataFrame  # the rows left out, plus duplicate_group, kept_image_id and reason


def keep_one_per_picture(
    rows: pd.DataFrame, *, rank: str | None = None, groups: Mapping[str, str] | None = None
) -> Deduplicated:
    """Keep one row per near-duplicate group of ``rows`` (columns image_id, picture_hash, width, height).

    ``rank`` names a column whose lower values win among copies of equal size. ``groups`` (picture_hash ->
    group name, from ``near_duplicate_groups``) saves recomputing groups the caller already has.
    """
    groups = near_duplicate_groups(rows["picture_hash"]) if groups is None else groups
    grouped = rows.assign(duplicate_group=rows["picture_hash"].map(groups))
    if grouped["duplicate_group"].isna().any():
        raise ValueError("groups lacks some picture_hash values of rows; compute it from these rows")
    preference = grouped.assign(
        _pixels=-(grouped["width"].astype("int64") * grouped["height"].astype("int64")),
        _rank=grouped[rank] if rank else 0,
        _position=np.arange(len(grouped)),
    ).sort_values(["duplicate_group", "_pixels", "_rank", "image_id", "_position"], kind="stable")
    first = ~preference["duplicate_group"].duplicated()
    kept_image = preference.loc[first].set_index("duplicate_group")["image_id"]
    positions = preference["_position"].to_numpy()
    dropped = grouped.iloc[np.sort(positions[~first.to_numpy()])].copy()
    dropped["kept_image_id"] = dropped["duplicate_group"].map(kept_image)
    dropped["reason"] = np.where(
        dropped["image_id"] == dropped["kept_image_id"], EXACT_DUPLICATE, NEAR_DUPLICATE
    )
    kept = grouped.iloc[np.sort(positions[first.to_numpy()])]
    return Deduplicated(kept=kept, dropped=dropped)
