"""The champion gate on plain metrics: every branch of ``ChampionPolicy.decide`` and its reason sentence."""

import math

import pytest

from album_pipeline.metrics import names
from album_pipeline.metrics.floors import QualityFloors
from album_pipeline.registry.gate import ChampionPolicy

HEALTHY = {
    names.GENRE_ACCURACY: 0.95,
    names.heldout(names.GENRE_ACCURACY): 1.0,
    names.DIVERSITY: 0.8,
    names.NEAR_COPY_SHARE: 0.01,
    names.FD_GENRE_CLASSIFIER: 5.1,
}


def healthy(**changes: float) -> dict[str, float]:
    return {**HEALTHY, **changes}


def test_the_first_version_that_passes_every_floor_becomes_champion():
    decision = ChampionPolicy().decide(HEALTHY)
    assert decision.moved and decision.passed_floors
    assert decision.primary_metric == names.FD_GENRE_CLASSIFIER and decision.value == 5.1
    assert decision.champion_value is None
    assert decision.reason == "moved: the first version to pass every floor (fd_genre_classifier 5.1)"


def test_a_newcomer_with_a_lower_distance_takes_the_alias():
    decision = ChampionPolicy().decide(HEALTHY, "3", healthy(fd_genre_classifier=6.2))
    assert decision.moved and decision.champion_value == 6.2
    assert decision.reason == "moved: fd_genre_classifier 5.1 < 6.2 of v3"


def test_a_newcomer_with_a_higher_distance_leaves_the_champion():
    decision = ChampionPolicy().decide(healthy(fd_genre_classifier=7.0), "3", HEALTHY)
    assert not decision.moved and decision.passed_floors
    assert decision.reason == "stayed: fd_genre_classifier 7 > 5.1 of v3"


def test_a_tie_keeps_the_incumbent():
    decision = ChampionPolicy().decide(HEALTHY, "2", HEALTHY)
    assert not decision.moved
    assert decision.reason == "stayed: fd_genre_classifier 5.1 ties v2's, and ties keep the champion"


def test_a_collapsed_generator_stays_out_even_with_the_best_distance():
    collapsed = healthy(diversity=0.02, fd_genre_classifier=0.5)
    decision = ChampionPolicy().decide(collapsed, "3", HEALTHY)
    assert not decision.moved and not decision.passed_floors
    assert decision.reason == "stayed: diversity 0.020 < 0.500 (v3 stays)"
    assert [verdict.floor for verdict in decision.verdicts if not verdict.passed] == ["diversity"]


def test_every_failed_floor_is_named_and_no_champion_is_made_from_a_failure():
    copier = healthy(near_copy_share=0.9, genre_accuracy=0.5)
    decision = ChampionPolicy().decide(copier)
    assert not decision.moved
    assert decision.reason == (
        "stayed: genre_accuracy 0.500 < 0.900 (0.9 x heldout/genre_accuracy 1.000); "
        "near_copy_share 0.900 > 0.050 (no version is champion yet)"
    )


def test_a_champion_lacking_the_primary_metric_is_beaten_by_a_newcomer_that_passes():
    old_champion = {key: value for key, value in HEALTHY.items() if key != names.FD_GENRE_CLASSIFIER}
    decision = ChampionPolicy().decide(HEALTHY, "1", old_champion)
    assert decision.moved and decision.champion_value is None
    assert decision.reason == "moved: fd_genre_classifier 5.1, and champion v1 records no fd_genre_classifier"
    nan_champion = healthy(fd_genre_classifier=math.nan)
    assert ChampionPolicy().decide(HEALTHY, "1", nan_champion).moved


def test_fid_is_the_primary_metric_when_present():
    with_fid = healthy(fid=30.0)
    decision = ChampionPolicy().decide(with_fid, "4", healthy(fid=35.0, fd_genre_classifier=1.0))
    assert decision.primary_metric == names.FID
    assert decision.moved and decision.reason == "moved: fid 30 < 35 of v4"


def test_a_configured_primary_metric_and_direction_are_obeyed():
    policy = ChampionPolicy(primary_metric=names.GENRE_ACCURACY, greater_is_better=True)
    better = policy.decide(healthy(genre_accuracy=0.97), "2", HEALTHY)
    worse = policy.decide(healthy(genre_accuracy=0.93), "2", HEALTHY)
    assert better.moved and better.reason == "moved: genre_accuracy 0.97 > 0.95 of v2"
    assert not worse.moved and worse.reason == "stayed: genre_accuracy 0.93 < 0.95 of v2"


def test_configured_floors_are_the_ones_judged():
    lenient = ChampionPolicy(floors=QualityFloors(min_diversity=0.0))
    assert lenient.decide(healthy(diversity=0.02)).moved
    strict = ChampionPolicy(floors=QualityFloors(min_coverage_ratio=0.9))
    decision = strict.decide(HEALTHY)  # coverage is missing, so its floor fails rather than passes
    assert not decision.moved and "coverage is missing or not finite" in decision.reason


@pytest.mark.parametrize(
    ("policy", "metrics", "message"),
    [
        (ChampionPolicy(), {names.GENRE_ACCURACY: 0.9}, "hold none of \\['fid', 'fd_genre_classifier'\\]"),
        (ChampionPolicy(primary_metric="fdd"), HEALTHY, "primary_metric 'fdd' is not among the 5 metrics"),
        (ChampionPolicy(), healthy(fd_genre_classifier=math.inf), "is inf; it must be a finite number"),
    ],
)
def test_a_newcomer_without_a_usable_primary_metric_is_refused(policy, metrics, message):
    with pytest.raises(ValueError, match=message):
        policy.decide(metrics)


def test_bad_policies_are_refused_when_built():
    with pytest.raises(ValueError, match="primary_metric must name one of the logged metrics"):
        ChampionPolicy(primary_metric=" ")
    with pytest.raises(TypeError, match="floors must be a QualityFloors"):
        ChampionPolicy(floors={"min_diversity": 0.5})
