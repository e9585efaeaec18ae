"""The retrain rule: how much the labelled set must grow, and the clear refusals of bad settings."""

import pytest

from album_pipeline.automation import RetrainPolicy, RetrainPolicyError
from album_pipeline.settings import RETRAIN_GROWTH_VAR, ConfigurationError, Settings


def test_retrains_from_the_threshold_on_and_not_below_it():
    policy = RetrainPolicy()  # 10%
    assert policy.decide(1_100, 1_000).retrain
    assert policy.decide(2_000, 1_000).retrain
    below = policy.decide(1_099, 1_000)
    assert not below.retrain
    assert below.reason == (
        "1,099 covers in the manifest against 1,000 at the last finetune (+9.9%, threshold 10.0%)"
    )
    assert not policy.decide(900, 1_000).retrain  # a shrunken manifest never retrains
    assert RetrainPolicy(min_growth=0.5).decide(1_499, 1_000).retrain is False


def test_without_a_recorded_finetune_it_waits_for_the_whole_pipeline():
    decision = RetrainPolicy().decide(5_000, None)
    assert not decision.retrain
    assert "materialize the whole pipeline once" in decision.reason


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), True, "0.1"])
def test_bad_fractions_are_refused_with_what_to_set(bad):
    with pytest.raises(RetrainPolicyError, match="min_growth must be"):
        RetrainPolicy(min_growth=bad)


def test_the_environment_sets_the_fraction_as_a_fraction_or_a_percentage():
    assert Settings.from_environ({}).retrain == RetrainPolicy(min_growth=0.10)
    assert Settings.from_environ({RETRAIN_GROWTH_VAR: "0.25"}).retrain.min_growth == 0.25
    assert Settings.from_environ({RETRAIN_GROWTH_VAR: " 5% "}).retrain.min_growth == pytest.approx(0.05)
    with pytest.raises(ConfigurationError, match=rf"{RETRAIN_GROWTH_VAR}='lots'.*such as 10%"):
        Settings.from_environ({RETRAIN_GROWTH_VAR: "lots"})
    with pytest.raises(ConfigurationError, match="above 0"):
        Settings.from_environ({RETRAIN_GROWTH_VAR: "0%"})
