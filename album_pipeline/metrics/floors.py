"""The quality floors a generator must clear: one home for the evaluation's asset check, the champion gate and
the tests that prove the metrics discriminate.

A floor is judged on the flat metric names ``evaluate_generator`` writes (see ``metrics.names``), so the same
``QualityFloors`` reads a fresh report, a ``metrics.json`` or an MLflow run's metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from album_pipeline.metrics import names


@dataclass(frozen=True)
class FloorVerdict:
    """One floor's outcome: the metric, its value, the bound it was held to, and a sentence saying so."""

    floor: str
    metric: str
    value: float | None
    bound: float | None
    passed: bool
    description: str


@dataclass(frozen=True)
class QualityFloors:
    # Relative to the independent classifier's accuracy on real test covers: a generator is held to what the
    # judge can recognise at all, so a weak classifier does not fail every generator (and a strong one does
    # not let a generator through at 60%).
    min_genre_accuracy_ratio: float = field(
        default=0.9,
        metadata={"doc": "Genre accuracy of generated covers at least this times the real test covers'."},
    )
    # 1.0 is as varied as real covers of the genre; a generator drawing one cover per genre scores about 0.
    min_diversity: float = field(
        default=0.5, metadata={"doc": "Within-genre diversity ratio (generated / real) at least this."}
    )
    # Real held-out covers are near-copies of a training cover about as often as the near-copy quantile says
    # (1% by default); 5% leaves room for chance while refusing a generator that returns its training set.
    max_near_copy_share: float = field(
        default=0.05, metadata={"doc": "Share of generated covers that are near-copies of a training cover."}
    )
    # Off by default: coverage depends on the sample sizes and the feature space more than the other floors.
    min_coverage_ratio: float | None = field(
        default=None, metadata={"doc": "Coverage at least this times the real test covers' own (None: off)."}
    )

    def __post_init__(self) -> None:
        for name in ("min_genre_accuracy_ratio", "min_diversity", "max_near_copy_share"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.min_coverage_ratio is not None and not 0 <= self.min_coverage_ratio <= 1:
            raise ValueError(
                f"min_coverage_ratio must be between 0 and 1 or None, got {self.min_coverage_ratio}"
            )

    def judge(self, metrics: Mapping[str, float]) -> list[FloorVerdict]:
        """Every configured floor's verdict on ``metrics``; a metric that is missing or not finite fails."""
        verdicts = [
            self._at_least(
                "genre_accuracy",
                names.GENRE_ACCURACY,
                metrics,
                self.min_genre_accuracy_ratio,
                relative_to=names.heldout(names.GENRE_ACCURACY),
            ),
            self._at_least("diversity", names.DIVERSITY, metrics, self.min_diversity),
            self._at_most("near_copies", names.NEAR_COPY_SHARE, metrics, self.max_near_copy_share),
        ]
        if self.min_coverage_ratio is not None:
            verdicts.append(
                self._at_least(
                    "coverage",
                    names.COVERAGE,
                    metrics,
                    self.min_coverage_ratio,
                    relative_to=names.heldout(names.COVERAGE),
                )
            )
        return verdicts

    def failures(self, metrics: Mapping[str, float]) -> list[FloorVerdict]:
        return [verdict for verdict in self.judge(metrics) if not verdict.passed]

    @staticmethod
    def _value(metrics: Mapping[str, float], name: str) -> float | None:
        value = metrics.get(name)
        if value is None:
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    def _at_least(
        self,
        floor: str,
        metric: str,
        metrics: Mapping[str, float],
        factor: float,
        relative_to: str | None = None,
    ) -> FloorVerdict:
        value = self._value(metrics, metric)
        if relative_to is None:
            bound, basis = factor, ""
        else:
            reference = self._value(metrics, relative_to)
            bound = None if reference is None else factor * reference
            basis = f" ({factor:g} x {relative_to} {reference:.3f})" if reference is not None else ""
        if value is None or bound is None:
            missing = metric if value is None else relative_to
            return FloorVerdict(floor, metric, value, bound, False, f"{missing} is missing or not finite")
        passed = value >= bound
        relation = ">=" if passed else "<"
        return FloorVerdict(
            floor, metric, value, bound, passed, f"{metric} {value:.3f} {relation} {bound:.3f}{basis}"
        )

    def _at_most(self, floor: str, metric: str, metrics: Mapping[str, float], bound: float) -> FloorVerdict:
        value = self._value(metrics, metric)
        if value is None:
            return FloorVerdict(floor, metric, None, bound, False, f"{metric} is missing or not finite")
        passed = value <= bound
        relation = "<=" if passed else ">"
        return FloorVerdict(
            floor, metric, value, bound, passed, f"{metric} {value:.3f} {relation} {bound:.3f}"
        )
