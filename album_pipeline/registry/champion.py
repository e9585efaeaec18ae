"""What the registry records about each new version, and where its aliases go.

Every version is tagged with every metric (``metric.NAME``), its primary metric, each floor's verdict
(``floor.FLOOR`` = "passed: ..." or "failed: ...") and the gate's reason, so that the registry's UI, or
``MlflowClient.search_model_versions``, can judge versions without opening their runs. ``challenger`` always
names the newest version; ``champion`` moves only when ``registry.gate`` says so.

mlflow is imported inside the functions (see ``mlflow_registry``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from album_pipeline.registry.gate import ChampionPolicy, GateDecision

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"  # always the newest registered version
PRIMARY_METRIC_TAG = "primary_metric"
GATE_TAG = "champion_gate"  # the gate's reason sentence at the version's registration
METRIC_TAG_PREFIX = "metric."
FLOOR_TAG_PREFIX = "floor."


@dataclass(frozen=True)
class RegistrationResult:
    run_id: str
    model_version: str
    model_uri: str  # models:/NAME/VERSION of the version just registered (also @challenger)
    is_champion: bool  # whether the new version holds the champion alias now
    champion_version: str | None  # None while no version has passed the floors
    champion_metric_value: float | None  # the champion's primary metric; None when its run lacks it
    decision: GateDecision

    @property
    def reason(self) -> str:
        """Why ``champion`` moved or stayed, in one sentence."""
        return self.decision.reason

    @property
    def primary_metric(self) -> str:
        return self.decision.primary_metric


def apply_gate(
    client: MlflowClient,
    model_name: str,
    version: str,
    run_id: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    champion: ChampionPolicy,
) -> RegistrationResult:
    """Tag the new ``version`` (``tags`` plus the gate's), point ``challenger`` at it, and ``champion`` too
    when the gate says so. The aliases move last, so a version an alias names always carries its tags."""
    champion_version, champion_metrics = current_champion(client, model_name)
    decision = champion.decide(metrics, champion_version, champion_metrics)
    for key, value in {**tags, **version_tags(metrics, decision)}.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, version)
    champion_value = decision.champion_value
    if decision.moved:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
        champion_version, champion_value = version, decision.value
    return RegistrationResult(
        run_id=run_id,
        model_version=version,
        model_uri=f"models:/{model_name}/{version}",
        is_champion=decision.moved,
        champion_version=champion_version,
        champion_metric_value=champion_value,
        decision=decision,
    )


def current_champion(client: MlflowClient, model_name: str) -> tuple[str | None, dict[str, float]]:
    """(version, its run's metrics) of the current champion, or (None, {}) when no version holds the alias."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        return None, {}
    metrics = dict(client.get_run(version.run_id).data.metrics) if version.run_id else {}
    return str(
        version.version
    ), metrics  # the registry hands versions back as int or str depending on the call


def version_tags(metrics: Mapping[str, float], decision: GateDecision) -> dict[str, str]:
    """The gate's tags of a version: every metric, the primary metric, each floor's verdict, the reason."""
    tags = {PRIMARY_METRIC_TAG: decision.primary_metric, GATE_TAG: decision.reason}
    tags.update({f"{METRIC_TAG_PREFIX}{name}": f"{value:.6g}" for name, value in metrics.items()})
    for verdict in decision.verdicts:
        outcome = "passed" if verdict.passed else "failed"
        tags[f"{FLOOR_TAG_PREFIX}{verdict.floor}"] = f"{outcome}: {verdict.description}"
    return tags
