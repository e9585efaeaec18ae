"""When a grown labelled set is worth a retrain: the rule the retrain sensor applies, free of Dagster.

The sensor (``album_pipeline.defs.automation``) reads two numbers off the instance: the covers in the labelled
manifest now, and the covers of the labelled set the last finetune trained from. A retrain pays off only
when enough new covers came in; a recrawl that adds a handful would otherwise cost a whole finetune.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class RetrainPolicyError(ValueError):
    """A retrain setting is out of range; the message says which values are accepted."""


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


@dataclass(frozen=True)
class RetrainPolicy:
    min_growth: float = field(
        default=0.10,
        metadata={
            "doc": "Retrain once the labelled manifest holds at least this fraction more covers than the set "
            "the last finetune trained from (0.10: 10% more; `ALBUM_PIPELINE_RETRAIN_GROWTH`)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.min_growth, bool) or not isinstance(self.min_growth, int | float):
            raise RetrainPolicyError(f"min_growth must be a number, not {self.min_growth!r}")
        if not math.isfinite(self.min_growth) or self.min_growth <= 0:
            raise RetrainPolicyError(
                f"min_growth must be a finite fraction above 0 (0.10 means 10% more covers), not "
                f"{self.min_growth}; 0 would retrain on every rebuilt manifest"
            )

    @classmethod
    def from_text(cls, text: str, variable: str) -> RetrainPolicy:
        """The fraction as the environment spells it (``0.1``, or ``10%``); a bad one names ``variable``."""
        cleaned = text.strip()
        try:
            value = float(cleaned[:-1]) / 100 if cleaned.endswith("%") else float(cleaned)
            return cls(min_growth=value)
        except (ValueError, RetrainPolicyError) as error:
            raise RetrainPolicyError(
                f"{variable}={text!r}: {error}. Set it to a fraction such as 0.1 or a percentage such as 10%."
            ) from None

    def decide(self, manifest_covers: int, trained_covers: int | None) -> RetrainDecision:
        """Retrain when ``manifest_covers`` exceeds ``trained_covers`` by ``min_growth`` or more.

        ``trained_covers`` is None when no finetune recorded its labelled set: the first training is the whole
        pipeline's run, which also pretrains, not a retrain.
        """
        if trained_covers is None:
            return RetrainDecision(
                False,
                "no finetune has recorded its labelled set yet; materialize the whole pipeline once "
                "(pretraining included) before retrains can follow the labelled set",
            )
        if trained_covers <= 0:
            return RetrainDecision(
                manifest_covers > 0,
                f"the last finetune trained on no covers; the manifest has {manifest_covers:,}",
            )
        growth = (manifest_covers - trained_covers) / trained_covers
        compared = (
            f"{manifest_covers:,} covers in the manifest against {trained_covers:,} at the last finetune "
            f"({growth:+.1%}, threshold {self.min_growth:.1%})"
        )
        return RetrainDecision(growth >= self.min_growth, compared)
