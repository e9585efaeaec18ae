"""The genre classes the pipeline conditions on.

The seed project trained on these five Napster genre shortcuts; the order fixes each genre's class index.
"""

DEFAULT_GENRES: tuple[str, ...] = ("rock", "jazz", "pop", "rap-hip-hop", "classical")


def genre_index(genres: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Map each genre name to its class index, refusing duplicates that would make indices ambiguous."""
    if len(set(genres)) != len(genres):
        raise ValueError(f"genre list has duplicates: {list(genres)}; each class must be named once")
    return {name: index for index, name in enumerate(genres)}
