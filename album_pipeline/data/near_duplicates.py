"""Near-duplicate pictures: groups of images whose perceptual hashes are within NEAR_IDENTICAL_BITS.

Comparing every pair is quadratic, so candidates come from locality-sensitive banding: the 256-bit hash is
cut into 16 bands of 16 bits, and two hashes at most 14 bits apart differ in at most 14 bands, so they share
at least two bands exactly. Only hashes that share a band are compared; matches are joined into groups
(connected components), so a chain of near-identical re-encodings is one group.

A group is named by its smallest hash, so the same images always give the same names: splits and
placeholder counts derived from groups do not change with order. (A later image that is near two groups
joins them, which can rename one of them; that is the price of putting near-duplicates together.)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from album_pipeline.data.images import NEAR_IDENTICAL_BITS

BANDS = 16
_WORDS = 4  # 256 bits as four uint64


def near_duplicate_groups(hashes: Iterable[str]) -> dict[str, str]:
    """Each distinct hash (64 hex digits) -> the name of its near-duplicate group (the group's least hash).

    Vectorised over numpy arrays: a million hashes take seconds, not the minutes a pairwise Python loop
    over the candidate buckets needs.
    """
    distinct = sorted(set(hashes))
    count = len(distinct)
    if count == 0:
        return {}
    packed = bytes.fromhex("".join(distinct))
    words = np.frombuffer(packed, dtype=">u8").reshape(count, _WORDS).astype(np.uint64)
    bands = np.frombuffer(packed, dtype=">u2").reshape(count, BANDS)
    firsts, seconds = [], []
    for band in range(BANDS):
        first, second = _same_band_pairs(bands[:, band])
        if len(first) == 0:
            continue
        distance = np.bitwise_count(words[first] ^ words[second]).sum(axis=1)
        close = distance <= NEAR_IDENTICAL_BITS
        firsts.append(first[close])
        seconds.append(second[close])
    first = np.concatenate(firsts) if firsts else np.empty(0, np.int64)
    second = np.concatenate(seconds) if seconds else np.empty(0, np.int64)
    graph = coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    # Hashes are sorted, so a component's least index is its least hash: the name, whatever the order.
    least = np.full(component.max() + 1, count, dtype=np.int64)
    np.minimum.at(least, component, np.arange(count))
    names = least[component]
    return {value: distinct[name] for value, name in zip(distinct, names.tolist(), strict=True)}


def _same_band_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of rows whose band value is equal: the candidates to compare."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    firsts, seconds = [], []
    offset = 1
    # Row i pairs with i + offset while both lie in one run of equal values; runs are short (a 16-bit band
    # of n hashes holds about n / 65536 each), so few offsets are needed.
    while offset < len(ordered):
        same = np.flatnonzero(ordered[:-offset] == ordered[offset:])
        if len(same) == 0:
            break
        firsts.append(order[same])
        seconds.append(order[same + offset])
        offset += 1
    if not firsts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)
