"""What the Napster emulator's catalogue looks like, modelled on the real responses (see PROVENANCE.md in
``../shared/reference/real-responses/``): the genre tree and the image lists real albums come with.

Nothing here is copied from the recordings: the sub-genres are made up, and the image lists are the real
patterns' sizes and order with their measured shares (the seed project's 4,995 albums).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# (id, shortcut, display name) of the top-level genres known from the real service.
KNOWN_GENRES: tuple[tuple[str, str, str], ...] = (
    ("g.5", "rock", "Rock"),
    ("g.115", "pop", "Pop"),
    ("g.299", "jazz", "Jazz"),
    ("g.146", "rap-hip-hop", "Rap/Hip-Hop"),
    ("g.21", "classical", "Classical"),
    ("g.407", "country", "Country"),
    ("g.383", "reggae", "Reggae"),
    ("g.71", "electronica-dance", "Electronic"),
    ("g.394", "metal", "Metal"),
    ("g.33", "alt-punk", "Alternative/Punk"),
    ("g.194", "soul-r-and-b", "Soul/R&B"),
    ("g.446", "folk", "Folk"),
    ("g.438", "blues", "Blues"),
    ("g.510", "latin", "Latin"),
)
GENRE_ID_BY_SHORTCUT = {shortcut: genre_id for genre_id, shortcut, _ in KNOWN_GENRES}
GENRE_SHORTCUT_BY_ID = {genre_id: shortcut for genre_id, shortcut, _ in KNOWN_GENRES}
# Real top-level genres name catalogue roots as parents, which are not genres of the list themselves.
ROOT_GENRE_ID = "g.10000"

# (id, shortcut, name, parent id): children of the five classes' genres (the /genres list names them in
# childGenres) and one grandchild each (only a /genres/{id} lookup of it names its parent).
SUB_GENRES: tuple[tuple[str, str, str, str], ...] = (
    ("g.1101", "classic-rock", "Classic Rock", "g.5"),
    ("g.1102", "indie-rock", "Indie Rock", "g.5"),
    ("g.1103", "hard-rock", "Hard Rock", "g.5"),
    ("g.1104", "garage-rock", "Garage Rock", "g.1102"),
    ("g.1201", "teen-pop", "Teen Pop", "g.115"),
    ("g.1202", "dance-pop", "Dance Pop", "g.115"),
    ("g.1203", "adult-contemporary", "Adult Contemporary", "g.115"),
    ("g.1204", "electropop", "Electropop", "g.1202"),
    ("g.1301", "bebop", "Bebop", "g.299"),
    ("g.1302", "cool-jazz", "Cool Jazz", "g.299"),
    ("g.1303", "jazz-fusion", "Jazz Fusion", "g.299"),
    ("g.1304", "hard-bop", "Hard Bop", "g.1301"),
    ("g.173", "hip-hop", "Hip-Hop", "g.146"),  # the real id the issue names, child of g.146
    ("g.1401", "southern-rap", "Southern Rap", "g.146"),
    ("g.1402", "alternative-rap", "Alternative Rap", "g.146"),
    ("g.1403", "crunk", "Crunk", "g.1401"),
    ("g.1501", "opera", "Opera", "g.21"),
    ("g.1502", "chamber-music", "Chamber Music", "g.21"),
    ("g.1503", "orchestral", "Orchestral", "g.21"),
    ("g.1504", "string-quartets", "String Quartets", "g.1502"),
)
GENRE_PARENT = {genre_id: parent for genre_id, _, _, parent in SUB_GENRES}
SUB_GENRE_BY_SHORTCUT = {shortcut: genre_id for genre_id, shortcut, _, _ in SUB_GENRES}
# Ids albums carry that no genre call knows (like the real g.1036): their top-level genre is known to the
# catalogue only; a crawl labels such an album by the top lists it is in.
UNLISTED_GENRE_BY_TOP_LEVEL = {
    "g.5": "g.1901",
    "g.115": "g.1902",
    "g.299": "g.1903",
    "g.146": "g.1904",
    "g.21": "g.1905",
}

# How deep an album's own genre id sits below its top-level genre, and how often (real albums mostly carry a
# sub-genre, rarely a top-level id).
OWN_GENRE_DEPTHS: tuple[tuple[str, float], ...] = (
    ("top_level", 0.10),
    ("child", 0.80),
    ("grandchild", 0.06),
    ("unlisted", 0.04),
)


def children_of(genre_id: str) -> list[str]:
    return [child for child, _, _, parent in SUB_GENRES if parent == genre_id]


def _pick(draw: float, weighted: tuple[tuple[T, float], ...]) -> T:
    """The entry a uniform draw in [0, 1) falls in, entries taking their share of the interval in order."""
    for entry, share in weighted:
        if draw < share:
            return entry
        draw -= share
    return weighted[0][0]


def own_genre_id(rng: random.Random, top_level: str) -> str:
    """A genre id an album of this top-level genre carries: one draw from ``OWN_GENRE_DEPTHS``."""
    depth = _pick(rng.random(), OWN_GENRE_DEPTHS)
    children = children_of(top_level)
    grandchildren = [g for child in children for g in children_of(child)]
    if depth == "child" and children:
        return rng.choice(children)
    if depth == "grandchild" and grandchildren:
        return rng.choice(grandchildren)
    if depth == "unlisted" and top_level in UNLISTED_GENRE_BY_TOP_LEVEL:
        return UNLISTED_GENRE_BY_TOP_LEVEL[top_level]
    return top_level


@dataclass(frozen=True)
class ImageList:
    """One pattern of the image lists albums come with: sizes in the order the API lists them."""

    sizes: tuple[int, ...]
    share: float
    extension: str = "jpg"


# The real patterns (seed project, 4,995 albums): 170 first for all but a few; usually 170, 70, 600, 500, 300;
# 54 where 600 is missing; 200 for 3.5%; nothing >= 200 for 0.8%; one album's URLs in .jpeg; 500 first rarely.
# Chosen under "smallest side >= 200, else largest": 300 for 94.9%, 200 for 3.5%, 500 for 0.8%, 170 for 0.8%
# (real: 4,738, 174, 42 and 41 of 4,995).
IMAGE_LISTS: tuple[ImageList, ...] = (
    ImageList((170, 70, 600, 500, 300), 0.892),
    ImageList((170, 70, 54, 500, 300), 0.055),
    ImageList((170, 70, 200, 500, 300), 0.027),
    ImageList((170, 70, 200, 300), 0.008),
    ImageList((170, 70, 54, 500), 0.007),
    ImageList((170, 70, 54, 500), 0.001, "jpeg"),
    ImageList((170, 70, 54), 0.008),
    ImageList((500, 170, 300, 70, 600), 0.002),
)
IMAGE_SIZES: tuple[int, ...] = tuple(sorted({size for pattern in IMAGE_LISTS for size in pattern.sizes}))


def image_list(draw: float) -> ImageList:
    """The image pattern a uniform draw in [0, 1) falls in."""
    return _pick(draw, tuple((pattern, pattern.share) for pattern in IMAGE_LISTS))
