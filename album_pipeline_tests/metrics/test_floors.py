import math

import pytest

from album_pipeline.metrics import names
from album_pipeline.metrics.floors import QualityFloors

HEALTHY = {
    names.GENRE_ACCURACY: 0.95,
    names.heldout(names.GENRE_ACCURACY): 1.0,
    names.DIVERSITY: 0.8,
    names.NEAR_COPY_SHARE: 0.01,
    names.COVERAGE: 0.6,
    names.heldout(names.COVERAGE): 0.7,
}


def test_healthy_metrics_pass_every_default_floor():
    verdicts = QualityFloors().judge(HEALTHY)
    assert [verdict.floor for verdict in verdicts] == ["genre_accuracy", "diversity", "near_copies"]
    assert all(verdict.passed for verdict in verdicts), verdicts


@pytest.mark.parametrize(
    ("metric", "value", "floor"),
    [
        (names.GENRE_ACCURACY, 0.89, "genre_accuracy"),  # under 0.9 x the real test covers' 1.0
        (names.DIVERSITY, 0.49, "diversity"),
        (names.NEAR_COPY_SHARE, 0.051, "near_copies"),
    ],
)
def test_each_floor_refuses_a_value_past_its_bound(metric, value, floor):
    failures = QualityFloors().failures({**HEALTHY, metric: value})
    assert [failure.floor for failure in failures] == [floor]
    assert metric in failures[0].description


def test_genre_accuracy_is_relative_to_the_classifiers_real_accuracy():
    weak_judge = {**HEALTHY, names.GENRE_ACCURACY: 0.5, names.heldout(names.GENRE_ACCURACY): 0.55}
    (verdict,) = [v for v in QualityFloors().judge(weak_judge) if v.floor == "genre_accuracy"]
    assert verdict.passed and math.isclose(verdict.bound, 0.495)


def test_missing_or_nan_metrics_fail_rather_than_pass():
    metrics = {**HEALTHY, names.DIVERSITY: float("nan")}
    del metrics[names.NEAR_COPY_SHARE]
    failed = {failure.floor: failure.description for failure in QualityFloors().failures(metrics)}
    assert set(failed) == {"diversity", "near_copies"}
    assert "missing or not finite" in failed["near_copies"]


def test_coverage_floor_is_off_unless_configured():
    floors = QualityFloors(min_coverage_ratio=0.9)
    failures = floors.failures(HEALTHY)  # 0.6 < 0.9 x 0.7
    assert [failure.floor for failure in failures] == ["coverage"]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_out_of_range_floors_are_refused(bad):
    with pytest.raises(ValueError, match="between 0 and 1"):
        QualityFloors(min_diversity=bad)
