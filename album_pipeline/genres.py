"""The genre classes the pipeline conditions on, and which source genres feed each of them.

The seed project trained on five Napster genre shortcuts; the order of the classes fixes each one's class
index. Each class lists the Napster genre shortcuts and the MusicBrainz tags that feed it.

Policy for an album that lands in several classes (documented in the README): the manifest keeps every class
it landed in (``genres``, in class order) and trains under one ``genre``, the class of the source's strongest
signal: on Napster the first class its own genre ids feed once mapped up the genre tree (real albums mostly
carry sub-genre ids; ``album_pipeline.sources.napster_genres`` holds that policy), else the first of its classes
in class order; on MusicBrainz the class whose tag has the most positive votes on the release group, ties going
to class order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GenreClass:
    name: str
    napster_shortcuts: tuple[str, ...] = ()
    musicbrainz_tags: tuple[str, ...] = ()


DEFAULT_GENRE_MAP: tuple[GenreClass, ...] = (
    GenreClass("rock", ("rock",), ("rock",)),
    GenreClass("jazz", ("jazz",), ("jazz",)),
    GenreClass("pop", ("pop",), ("pop",)),
    GenreClass("rap-hip-hop", ("rap-hip-hop",), ("hip hop", "rap")),
    GenreClass("classical", ("classical",), ("classical",)),
)

DEFAULT_GENRES: tuple[str, ...] = tuple(genre.name for genre in DEFAULT_GENRE_MAP)


def default_classes(*names: str) -> tuple[GenreClass, ...]:
    """The default map's classes with these names, in the order given (all of them when none are named)."""
    if not names:
        return DEFAULT_GENRE_MAP
    by_name = {genre.name: genre for genre in DEFAULT_GENRE_MAP}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"no default genre class named {unknown}; the defaults are {list(by_name)}")
    return tuple(by_name[name] for name in names)


def genre_index(genres: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Map each genre name to its class index, refusing duplicates that would make indices ambiguous."""
    if len(set(genres)) != len(genres):
        raise ValueError(f"genre list has duplicates: {list(genres)}; each class must be named once")
    return {name: index for index, name in enumerate(genres)}


def validate_genre_map(classes: Sequence[GenreClass]) -> tuple[GenreClass, ...]:
    """The map with names and source genres normalised; refuses duplicates and one feed in two classes."""
    if not classes:
        raise ValueError("the genre map is empty; list at least one class, e.g. rock <- napster 'rock'")
    genre_index([genre.name for genre in classes])
    normalised = tuple(
        GenreClass(
            genre.name.strip(),
            tuple(shortcut.strip().lower() for shortcut in genre.napster_shortcuts if shortcut.strip()),
            tuple(tag.strip().lower() for tag in genre.musicbrainz_tags if tag.strip()),
        )
        for genre in classes
    )
    for genre in normalised:
        if not genre.name:
            raise ValueError("a genre class has an empty name")
        if not genre.napster_shortcuts and not genre.musicbrainz_tags:
            raise ValueError(
                f"genre class {genre.name!r} has no feeds: give it Napster shortcuts or MusicBrainz tags"
            )
    for kind in ("napster_shortcuts", "musicbrainz_tags"):
        owner: dict[str, str] = {}
        for genre in normalised:
            for feed in getattr(genre, kind):
                if feed in owner and owner[feed] != genre.name:
                    raise ValueError(
                        f"{kind} entry {feed!r} feeds both {owner[feed]!r} and {genre.name!r}; an entry may "
                        "feed one class only (albums in several classes keep all labels anyway)"
                    )
                owner[feed] = genre.name
    return normalised


def classes_in_order(labels: Iterable[str], class_names: Sequence[str]) -> list[str]:
    """The distinct ``labels`` that are classes, in class order."""
    present = set(labels)
    return [name for name in class_names if name in present]


def strongest_class(votes: Mapping[str, float], class_names: Sequence[str]) -> str | None:
    """The class with the most votes, ties going to class order; None when no class has a vote."""
    best: str | None = None
    for name in class_names:
        if name in votes and (best is None or votes[name] > votes[best]):
            best = name
    return best
