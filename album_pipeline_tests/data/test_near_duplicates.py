"""Near-duplicate groups: banded candidates, exact Hamming check, stable names."""

from __future__ import annotations

import random

from album_pipeline.data.images import NEAR_IDENTICAL_BITS
from album_pipeline.data.near_duplicates import near_duplicate_groups


def _hex(value: int) -> str:
    return f"{value:064x}"


def _flip(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def test_groups_join_everything_within_the_limit_and_nothing_beyond():
    rng = random.Random(3)
    base = [rng.getrandbits(256) for _ in range(200)]
    near = [_flip(v, rng.sample(range(256), NEAR_IDENTICAL_BITS)) for v in base]  # the worst case allowed
    far = [_flip(v, rng.sample(range(256), NEAR_IDENTICAL_BITS + 6)) for v in base]
    groups = near_duplicate_groups([_hex(v) for v in base + near + far])
    for original, close, distant in zip(base, near, far, strict=True):
        assert groups[_hex(original)] == groups[_hex(close)]
        assert groups[_hex(original)] != groups[_hex(distant)]
    # A group is named by its least hash, whatever the input order.
    shuffled = [_hex(v) for v in base + near + far]
    rng.shuffle(shuffled)
    assert near_duplicate_groups(shuffled) == groups
    assert all(name <= member for member, name in groups.items())


def test_chains_of_re_encodings_form_one_group():
    start = random.Random(5).getrandbits(256)
    chain = [start]
    for step in range(5):
        chain.append(_flip(chain[-1], [10 * step, 10 * step + 1, 10 * step + 2]))
    groups = near_duplicate_groups([_hex(v) for v in chain])
    assert len(set(groups.values())) == 1


def test_groups_equal_brute_force_on_clustered_hashes():
    rng = random.Random(11)
    values = []
    for _ in range(60):  # clusters of re-encodings around a centre, some bridging, plus loners
        centre = rng.getrandbits(256)
        values.append(centre)
        values += [
            _flip(centre, rng.sample(range(256), rng.randint(1, 16))) for _ in range(rng.randint(0, 4))
        ]
    hexes = [_hex(v) for v in values]
    distinct = sorted(set(hexes))
    parent = {h: h for h in distinct}

    def root(h: str) -> str:
        while parent[h] != h:
            h = parent[h]
        return h

    for i, a in enumerate(distinct):
        for b in distinct[:i]:
            if (int(a, 16) ^ int(b, 16)).bit_count() <= NEAR_IDENTICAL_BITS:
                ra, rb = root(a), root(b)
                parent[max(ra, rb)] = min(ra, rb)
    assert near_duplicate_groups(hexes) == {h: root(h) for h in distinct}
    assert near_duplicate_groups([]) == {}
