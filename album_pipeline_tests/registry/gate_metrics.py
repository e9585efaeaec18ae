"""Evaluation-like metrics for tests that register generators: what the champion gate needs to decide."""

from __future__ import annotations

from album_pipeline.metrics import names

# Passes every default floor of QualityFloors, with fd_genre_classifier as the primary metric.
PASSING = {
    names.GENRE_ACCURACY: 0.95,
    names.heldout(names.GENRE_ACCURACY): 1.0,
    names.DIVERSITY: 0.8,
    names.heldout(names.DIVERSITY): 1.0,
    names.NEAR_COPY_SHARE: 0.01,
    names.heldout(names.NEAR_COPY_SHARE): 0.01,
    names.FD_GENRE_CLASSIFIER: 6.0,
    names.per_genre(names.DIVERSITY, "rock"): 0.8,
}


def passing_metrics(**changes: float) -> dict[str, float]:
    """``PASSING`` with ``changes`` (e.g. ``fd_genre_classifier=4.0``, or ``diversity=0.01`` to fail)."""
    return {**PASSING, **changes}


def collapsed_metrics(**changes: float) -> dict[str, float]:
    """A generator that draws one cover per genre: far less varied than the real covers of a genre."""
    return passing_metrics(**{names.DIVERSITY: 0.02, **changes})


def copier_metrics(**changes: float) -> dict[str, float]:
    """A generator that returns its training covers: most covers are near-copies of one."""
    return passing_metrics(**{names.NEAR_COPY_SHARE: 0.6, **changes})
