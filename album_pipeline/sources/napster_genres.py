"""Napster's genre tree, and the class an album's genre ids map to.

Real albums mostly carry sub-genre ids (a 2016 ``albums/top`` page: g.173, a child of g.146 rap-hip-hop;
g.253; g.131; g.1036, which no listed genre names as a child), rarely a top-level id. The ``/genres`` list
holds the top-level genres, each naming its children in ``links.childGenres.ids`` (its ``parentGenres`` are
catalogue roots, not genres of the list). Policy:

- An album genre id feeds the class of the nearest genre on its way up the tree that a class names: itself,
  then its parent, up to its top-level genre. A class naming a top-level shortcut such as ``rap-hip-hop`` is
  therefore fed by every sub-genre below it; a class naming a sub-genre is fed by that sub-genre only.
- The tree is read once per crawl: the ``/genres`` list, then one batched ``/genres/{ids}`` lookup for the ids
  it does not name (a sub-genre of a sub-genre, or an id seen nowhere), following their ``parentGenres`` up
  to ``MAX_LOOKUP_ROUNDS`` levels. An id still unplaced, or whose lookup failed, is unknown: it feeds no
  class, and the album keeps the labels of the top lists it was found in.
- Several genre ids: each maps on its own; the album's own classes are theirs, in the order of its ids, and
  the first of them that is among its labels is the class it trains under (see ``album_pipeline.genres``).
- A child named by two top-level genres belongs to the first listed; parents of a looked-up genre are tried
  in their order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

MAX_LOOKUP_ROUNDS = 3  # a sub-genre three levels below its top-level genre is deeper than any seen


def _key(genre_id: object) -> str:
    # Ids come back in varying case (g.173 / G.173), like album ids.
    return str(genre_id).strip().lower()


def _link_ids(genre: dict, link: str) -> list[str]:
    return [str(i) for i in (((genre.get("links") or {}).get(link) or {}).get("ids") or [])]


class NapsterGenreTree:
    """Parent links of the genres a crawl has seen: top-level genres from the ``/genres`` list, sub-genres
    from their child links and from lookups of genres the list does not name."""

    def __init__(self, top_level_genres: Iterable[dict]) -> None:
        self._top_level: dict[str, str] = {}
        self._parent: dict[str, str] = {}
        for genre in top_level_genres:
            genre_id = _key(genre.get("id", ""))
            if genre_id:
                self._top_level[genre_id] = str(genre["id"])
        for genre in top_level_genres:
            for child in _link_ids(genre, "childGenres"):
                self._parent.setdefault(_key(child), _key(genre.get("id", "")))

    def __len__(self) -> int:
        return len(self._top_level) + len(self._parent)

    def is_placed(self, genre_id: str) -> bool:
        """Whether the tree knows the way from this id up to a top-level genre."""
        return self.top_level_of(genre_id) is not None

    def ancestors(self, genre_id: str) -> list[str]:
        """The id itself, then its parents up to its top-level genre (lower-cased); [id] when not placed."""
        chain = [_key(genre_id)]
        while chain[-1] in self._parent and len(chain) <= MAX_LOOKUP_ROUNDS + 1:
            chain.append(self._parent[chain[-1]])
        return chain

    def top_level_of(self, genre_id: str) -> str | None:
        """The top-level genre id above (or equal to) ``genre_id``, as the list spells it; None if unknown."""
        return self._top_level.get(self.ancestors(genre_id)[-1])

    def learn(self, genres: Iterable[dict]) -> None:
        """Adds the parent links of looked-up genre objects (the first parent that is not a catalogue root)."""
        for genre in genres:
            genre_id = _key(genre.get("id", ""))
            if not genre_id or genre_id in self._top_level or genre_id in self._parent:
                continue
            parents = [_key(p) for p in _link_ids(genre, "parentGenres") if _key(p) != genre_id]
            placed = [p for p in parents if p in self._top_level or p in self._parent]
            if placed or parents:
                self._parent[genre_id] = (placed or parents)[0]

    def place(self, genre_ids: Iterable[str], lookup: Callable[[Sequence[str]], list[dict]]) -> None:
        """Looks up the ids (and then their unplaced parents) the tree cannot place, a batch per level."""
        asked: set[str] = set()
        for _ in range(MAX_LOOKUP_ROUNDS):
            unplaced = sorted({self.ancestors(i)[-1] for i in genre_ids if not self.is_placed(i)} - asked)
            if not unplaced:
                return
            asked.update(unplaced)
            self.learn(lookup(unplaced))


def class_of_genre(tree: NapsterGenreTree, genre_id: str, class_by_genre_id: dict[str, str]) -> str | None:
    """The class fed by the nearest genre on the way up from ``genre_id`` that a class names (ids keyed
    lower-case); None when none does."""
    for ancestor in tree.ancestors(genre_id):
        if ancestor in class_by_genre_id:
            return class_by_genre_id[ancestor]
    return None
