"""The champion gate: whether a newly registered generator takes the ``champion`` alias, and why.

A newcomer becomes champion only when it passes every quality floor (``metrics.floors``) AND beats the current
champion on the primary metric; ties keep the incumbent. The floors come first because the primary metric
alone cannot see a collapsed generator: one cover per genre can have a fine Frechet distance and a perfect
genre accuracy. A champion whose run lacks the primary metric (logged before it existed, or on other features)
cannot be compared, so a newcomer that passes the floors replaces it.

Pure: metrics in, a decision with its one-sentence reason out; ``mlflow_registry`` reads and writes the
registry around it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from album_pipeline.metrics import names
from album_pipeline.metrics.floors import FloorVerdict, QualityFloors

# The automatic primary metric is the first of these the newcomer's metrics hold: FID when Inception weights
# were present at evaluation, else the same distance on the independent classifier's features.
AUTO_PRIMARY_METRICS = (names.FID, names.FD_GENRE_CLASSIFIER)


@dataclass(frozen=True)
class ChampionPolicy:
    """Which registered version holds the ``champion`` alias: one that passes every floor and is the best by
    the primary metric so far; ties keep the incumbent."""

    primary_metric: str | None = field(
        default=None,
        metadata={
            "doc": "Metric deciding between versions that pass the floors; None: fid when present, else "
            "fd_genre_classifier."
        },
    )
    greater_is_better: bool = field(
        default=False, metadata={"doc": "Whether a larger primary metric is better (distances: no)."}
    )
    floors: QualityFloors = field(default_factory=QualityFloors)

    def __post_init__(self) -> None:
        if self.primary_metric is not None and not self.primary_metric.strip():
            raise ValueError(
                "primary_metric must name one of the logged metrics (e.g. 'fid'), or be None for the automatic "
                "rule (fid when present, else fd_genre_classifier)"
            )
        if not isinstance(self.floors, QualityFloors):
            raise TypeError(f"floors must be a QualityFloors, got {type(self.floors).__name__}")

    def primary_metric_of(self, metrics: Mapping[str, float]) -> str:
        """The metric that ranks ``metrics``' generator; ValueError when they do not hold a finite value of it."""
        if self.primary_metric is not None:
            name = self.primary_metric
        else:
            name = next((candidate for candidate in AUTO_PRIMARY_METRICS if candidate in metrics), None)
            if name is None:
                raise ValueError(
                    f"the metrics hold none of {list(AUTO_PRIMARY_METRICS)}, the automatic primary metric; "
                    "evaluate the generator first, or set primary_metric to one of the logged metrics"
                )
        if name not in metrics:
            raise ValueError(
                f"primary_metric {name!r} is not among the {len(metrics)} metrics (e.g. "
                f"{sorted(metrics)[:6]}); pass it in metrics or choose another primary_metric"
            )
        if not _finite(metrics[name]):
            raise ValueError(f"primary metric {name!r} is {metrics[name]}; it must be a finite number")
        return name

    def decide(
        self,
        metrics: Mapping[str, float],
        champion_version: str | None = None,
        champion_metrics: Mapping[str, float] | None = None,
    ) -> GateDecision:
        """Whether the generator with ``metrics`` takes the alias from ``champion_version`` (None: no champion
        yet), whose run logged ``champion_metrics``."""
        primary = self.primary_metric_of(metrics)
        value = float(metrics[primary])
        incumbent = (champion_metrics or {}).get(primary) if champion_version is not None else None
        incumbent = float(incumbent) if _finite(incumbent) else None
        verdicts = tuple(self.floors.judge(metrics))
        failures = [verdict.description for verdict in verdicts if not verdict.passed]

        def decision(moved: bool, reason: str) -> GateDecision:
            return GateDecision(moved, reason, primary, value, incumbent, verdicts)

        if failures:
            keeps = "no version is champion yet" if champion_version is None else f"v{champion_version} stays"
            return decision(False, f"stayed: {'; '.join(failures)} ({keeps})")
        if champion_version is None:
            return decision(True, f"moved: the first version to pass every floor ({primary} {value:.4g})")
        if incumbent is None:
            return decision(
                True, f"moved: {primary} {value:.4g}, and champion v{champion_version} records no {primary}"
            )
        if value == incumbent:
            return decision(
                False, f"stayed: {primary} {value:.4g} ties v{champion_version}'s, and ties keep the champion"
            )
        better = value > incumbent if self.greater_is_better else value < incumbent
        relation = ">" if value > incumbent else "<"
        comparison = f"{primary} {value:.4g} {relation} {incumbent:.4g} of v{champion_version}"
        return decision(better, f"{'moved' if better else 'stayed'}: {comparison}")


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer for one newcomer: whether ``champion`` moved to it, and the sentence saying why."""

    moved: bool
    reason: str  # "moved: fd_genre_classifier 5.1 < 6.2 of v3", "stayed: diversity 0.120 < 0.500 (v3 stays)"
    primary_metric: str
    value: float  # the newcomer's primary metric
    champion_value: float | None  # the incumbent's primary metric; None without one or when it lacks it
    verdicts: tuple[FloorVerdict, ...]

    @property
    def passed_floors(self) -> bool:
        return all(verdict.passed for verdict in self.verdicts)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
