"""Near-duplicate pictures: groups of images whose perceptual hashes are within NEAR_IDENTICAL_BITS.

Comparing every pair is quadratic, so candidates come from locality-sensitive banding: the 256-bit hash is
cut into 16 bands of 16 bits, and two hashes at most 14 bits apart differ in at most 14 bands, so they share
at least two bands exactly. Only hashes that share a band are compared; matches are joined into groups
(union-find), so a chain of near-identical re-encodings is one group.

A group is named by its smallest hash, so the same images always give the same names: splits and
placeholder counts derived from groups do not change with order. (A later image that is near two groups
joins them, which can rename one of them; that is the price of putting near-duplicates together.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from album_pipeline.data.images import NEAR_IDENTICAL_BITS

BANDS = 16
_BAND_BITS = 256 // BANDS
_BAND_MASK = (1 << _BAND_BITS) - 1


def near_duplicate_groups(hashes: Iterable[str]) -> dict[str, str]:
    """Each distinct hash (64 hex digits) -> the name of its near-duplicate group (the group's least hash)."""
    distinct = sorted(set(hashes))
    values = [int(value, 16) for value in distinct]
    parent = list(range(len(distinct)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, value in enumerate(values):
        for band in range(BANDS):
            buckets[(band, (value >> (band * _BAND_BITS)) & _BAND_MASK)].append(index)
    for members in buckets.values():
        for position, first in enumerate(members):
            for second in members[position + 1 :]:
                a, b = root(first), root(second)
                if a != b and (values[first] ^ values[second]).bit_count() <= NEAR_IDENTICAL_BITS:
                    parent[max(a, b)] = min(a, b)  # the least index (sorted: the least hash) names the group
    return {value: distinct[root(index)] for index, value in enumerate(distinct)}
