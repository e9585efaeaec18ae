"""Ground truth for near-duplicates, by brute force: every pair of pictures compared, no banding.

The emulators draw each cover from its own seed, but some plain drawings (the classical style) are
near-identical pictures, which a correct client keeps once. These helpers say which ones, independently of
the code under test.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping

import pandas as pd

from album_pipeline.data.images import NEAR_IDENTICAL_BITS, picture_hash
from album_pipeline.testing.emulators.omacir_item import OmacirItem


def near(a: str, b: str) -> bool:
    return (int(a, 16) ^ int(b, 16)).bit_count() <= NEAR_IDENTICAL_BITS


def archive_picture_hashes(item: OmacirItem, source_ids: set[str]) -> dict[str, str]:
    """source id ("{archive}/{member}") -> picture hash, for the given members of the item's tars."""
    hashes = {}
    for archive in item.archives:
        with tarfile.open(item.directory / archive.name) as tar:
            for member in tar:
                source_id = f"{archive.name}/{member.name}"
                if source_id in source_ids:
                    hashes[source_id] = picture_hash(tar.extractfile(member).read())
    return hashes


def checked_look_alikes(
    kept_rows: pd.DataFrame, failures: pd.DataFrame, hash_of: Mapping[str, str]
) -> set[str]:
    """The source ids dropped as ``near_duplicate``, after checking by brute force that each is near a kept
    picture and that no two kept pictures are near each other."""
    reasons = dict(zip(failures["source_id"], failures["reason"], strict=True))
    dropped = {source_id for source_id, reason in reasons.items() if reason == "near_duplicate"}
    kept = list(kept_rows["picture_hash"])
    assert not any(near(a, b) for i, a in enumerate(kept) for b in kept[:i]), "two kept pictures are near"
    for source_id in dropped:
        assert any(near(hash_of[source_id], value) for value in kept), f"{source_id} is near no kept picture"
    return dropped
