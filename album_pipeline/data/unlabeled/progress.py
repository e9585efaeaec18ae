"""The byte progress bar that downloads and extractions show on a terminal."""

from __future__ import annotations

from tqdm import tqdm


def byte_progress_bar(total: int | None, description: str, shown: bool | None, initial: int = 0) -> tqdm:
    """A bar counting bytes; ``shown`` None lets tqdm decide: on a terminal, silent in logs and under Dagster."""
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        desc=description,
        disable=None if shown is None else not shown,
        leave=False,
    )
