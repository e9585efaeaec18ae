"""When a grown labelled set is worth a retrain: the rule the retrain sensor applies, free of Dagster.

The sensor (``album_pipeline.defs.automation``) reads two numbers off the instance: the covers in the labelled
manifest now, and the covers of the labelled set the last finetune trained from. A retrain pays off only
when enough new covers came in; a recrawl that adds a handful would otherwise cost a whole finetune.

A retrain trains as the last training did: its run config is each retrained asset's config from the run that
last materialized it (``retrain_run_config``), so a pipeline built with the demo profile, or a tiny test
config, is not retrained at the full scale of the assets' defaults.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


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


@dataclass(frozen=True)
class LastMaterialization:
    """Where one asset of the retrain came from: the op that wrote it and the run that did, as the instance
    recorded them."""

    op_name: str
    run_id: str | None = None  # None: the asset was never materialized
    run_config: Mapping[str, Any] | None = None  # the run's stored config; None when the run is gone
    # The config of the run's job, which Dagster fills in where the launch's own config (stored) has no entry:
    # a job defined with a config dict and launched without one stores {}.
    job_defaults: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RetrainRunConfig:
    run_config: dict[str, Any]
    notes: tuple[str, ...]  # one sentence per asset that falls back to its defaults, and why


def retrain_run_config(materializations: Sequence[LastMaterialization]) -> RetrainRunConfig:
    """The run config that retrains as the last training did: each asset's ``ops`` entry from the run that
    materialized it last, and the ``resources`` those runs set (a later run's over an earlier one's).

    ``materializations`` come oldest first. An asset never materialized, or whose run was deleted, runs with
    its defaults; the notes say so.
    """
    ops: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    notes = []
    for item in materializations:
        if item.run_id is None:
            notes.append(f"{item.op_name} was never materialized: it retrains with its defaults")
            continue
        if item.run_config is None:
            notes.append(
                f"{item.op_name}: run {item.run_id}, which materialized it last, is no longer on the instance: "
                "it retrains with its defaults"
            )
            continue
        effective = _laid_over(item.job_defaults or {}, item.run_config)
        entry = (effective.get("ops") or {}).get(item.op_name)
        if entry:
            ops[item.op_name] = copy.deepcopy(entry)
        resources = _laid_over(resources, effective.get("resources") or {})
    run_config: dict[str, Any] = {"ops": ops} if ops else {}
    if resources:
        run_config["resources"] = resources
    return RetrainRunConfig(run_config, tuple(notes))


def _laid_over(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base`` as Dagster lays a launch's config over its job's: per section (``ops``,
    ``resources``) and per entry in it; an entry ``top`` sets replaces ``base``'s whole."""
    merged = copy.deepcopy(dict(base))
    for section, entries in top.items():
        if isinstance(entries, Mapping) and isinstance(merged.get(section), Mapping):
            merged[section] = {**merged[section], **copy.deepcopy(dict(entries))}
        else:
            merged[section] = copy.deepcopy(entries)
    return merged
