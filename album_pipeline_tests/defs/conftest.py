"""The loopback emulators and a pipeline home pointed at them, shared by the pipeline's integration tests."""

import pytest

from album_pipeline.layout import HomeLayout
from album_pipeline.testing.emulators.faults import TRANSIENT_FAULTS, FaultPlan

# Distinctive, so that finding it anywhere is proof of a leak.
SECRET_KEY = "napster-secret-7c1f3a9e5b2d4f60"

# "slow" would only cost the default 30 s timeout here; the acceptance tests cover it with a short timeout.
FAST_FAULTS = tuple(kind for kind in TRANSIENT_FAULTS if kind != "slow")


@pytest.fixture(scope="module")
def emulators(tmp_path_factory):
    from album_pipeline.testing.emulators.composition import running_emulators

    with running_emulators(
        albums_per_genre=24,
        archive_letters=("a",),
        images_per_archive=180,
        release_groups_per_genre=12,
        musicbrainz_rate_limit=None,
        api_key=SECRET_KEY,
        # Every labelled-source request target fails once in ten (then behaves): errors and retries get logged.
        faults=FaultPlan(rate=0.1, seed=1, slow_seconds=35.0, kinds=FAST_FAULTS),
        cache_dir=tmp_path_factory.mktemp("emulator_cache"),
    ) as running:
        yield running


@pytest.fixture
def pipeline_env(emulators, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(home))
    for name, value in emulators.environment().items():
        monkeypatch.setenv(name, value)
    return HomeLayout(home)
