"""Choosing sources, end to end: the labelled assets on a real temporary Dagster instance against the
emulators with one labelled source enabled, and an unlabelled-only CLI run on a local folder of OMACIR tars.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from album_pipeline.cli import main
from album_pipeline.definitions import build_definitions
from album_pipeline.defs.labeled import assets as labeled_assets
from album_pipeline.layout import HomeLayout
from album_pipeline.settings import Settings

pytestmark = pytest.mark.integration

LABELED_RUN_CONFIG = {
    "ops": {
        "napster_covers": {
            "config": {"albums_per_genre": 12, "download_workers": 4, "api_requests_per_second": 50.0}
        },
        "musicbrainz_covers": {"config": {"albums_per_genre": 8, "api_requests_per_second": 50.0}},
        "labeled_manifest": {"config": {"min_covers_per_genre": 1}},
    }
}


@pytest.fixture(scope="module")
def emulators(tmp_path_factory):
    from album_pipeline.testing.emulators.composition import running_emulators

    with running_emulators(
        albums_per_genre=12,
        archive_letters=("a",),
        images_per_archive=12,
        release_groups_per_genre=8,
        musicbrainz_rate_limit=None,
        cache_dir=tmp_path_factory.mktemp("emulator_cache"),
    ) as running:
        yield running


@pytest.fixture
def home(emulators, tmp_path, monkeypatch) -> HomeLayout:
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    for name, value in emulators.environment().items():
        monkeypatch.setenv(name, value)
    emulators.napster.clear_requests()
    emulators.musicbrainz.clear_requests()
    return HomeLayout(tmp_path / "home")


def _materialize_labeled(instance, run_config=LABELED_RUN_CONFIG) -> dict[str, dict]:
    """Materialize the labelled assets; each one's latest metadata, as plain values."""
    job = build_definitions(Settings.from_environ()).resolve_implicit_global_asset_job_def()
    result = job.get_subset(
        asset_selection={dg.AssetKey(a.key.path) for a in labeled_assets}
    ).execute_in_process(run_config=run_config, instance=instance)
    assert result.success
    return {
        name: {
            key: value.value
            for key, value in instance.get_latest_materialization_event(
                dg.AssetKey(name)
            ).asset_materialization.metadata.items()
        }
        for name in ("napster_covers", "musicbrainz_covers", "labeled_manifest")
    }


def test_musicbrainz_alone_is_crawled_and_napster_is_never_asked(emulators, home, monkeypatch, tmp_path):
    monkeypatch.setenv("LABELLED_SOURCES", "musicbrainz")
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        metadata = _materialize_labeled(instance)
    assert emulators.napster.requests == []
    assert emulators.musicbrainz.requests
    assert metadata["napster_covers"]["skipped"] == (
        "disabled: the labelled_sources resource (LABELLED_SOURCES) enables only musicbrainz"
    )
    assert metadata["napster_covers"]["covers"] == 0
    manifest = pd.read_parquet(home.labeled_manifest)
    assert len(manifest) == metadata["musicbrainz_covers"]["covers"] > 0
    assert set(manifest["source"]) == {"musicbrainz"}
    built = metadata["labeled_manifest"]
    assert built["sources_used"] == ["musicbrainz"] and built["sources_disabled"] == ["napster"]
    assert built["sources_skipped"] == {} and built["sources_not_crawled"] == []


def test_switching_sources_keeps_what_was_fetched_and_the_manifest_says_which_fed_it(
    emulators, home, monkeypatch, tmp_path
):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        # Both sources first, then Napster alone, chosen in run config as the launchpad would.
        both = _materialize_labeled(instance)
        musicbrainz_rows = pd.read_parquet(home.crawl_table("musicbrainz"))
        emulators.musicbrainz.clear_requests()
        only_napster = {
            **LABELED_RUN_CONFIG,
            "resources": {"labelled_sources": {"config": {"enabled": ["napster"]}}},
        }
        napster_alone = _materialize_labeled(instance, only_napster)
        assert emulators.musicbrainz.requests == []
        # The disabled source's earlier crawl stays on disk, untouched, but out of the manifest.
        assert napster_alone["musicbrainz_covers"]["kept_earlier_crawl"] is True
        pd.testing.assert_frame_equal(pd.read_parquet(home.crawl_table("musicbrainz")), musicbrainz_rows)
        assert set(pd.read_parquet(home.labeled_manifest)["source"]) == {"napster"}
        assert napster_alone["labeled_manifest"]["sources_used"] == ["napster"]
        assert napster_alone["labeled_manifest"]["sources_disabled"] == ["musicbrainz"]

        # Both again, without a key: Napster's crawl is skipped, its earlier covers still feed the manifest.
        monkeypatch.delenv("NAPSTER_API_KEY")
        keyless = _materialize_labeled(instance)
    assert both["labeled_manifest"]["sources_used"] == ["napster", "musicbrainz"]
    assert both["labeled_manifest"]["sources_skipped"] == {}
    assert keyless["napster_covers"]["kept_earlier_crawl"] is True
    assert keyless["labeled_manifest"]["sources_used"] == ["napster", "musicbrainz"]
    assert keyless["labeled_manifest"]["sources_skipped"] == {"napster": "NAPSTER_API_KEY unset"}
    assert keyless["labeled_manifest"]["sources_disabled"] == []
    assert set(pd.read_parquet(home.labeled_manifest)["source"]) == {"napster", "musicbrainz"}


def test_an_unlabelled_only_run_on_a_local_folder_of_tars_needs_no_labelled_source(
    emulators, monkeypatch, tmp_path
):
    from album_pipeline.testing.emulators.loopback import LoopbackServer

    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMACIR_URL", str(emulators.item.directory))
    monkeypatch.setenv("NAPSTER_API_KEY", "a-key-that-is-never-used")
    with LoopbackServer() as untouchable:
        for variable in ("NAPSTER_API_URL", "MUSICBRAINZ_URL", "COVERART_URL"):
            monkeypatch.setenv(variable, untouchable.url)
        status = main(
            [
                "run",
                "--profile",
                "demo",
                "--select",
                "group:unlabeled",
                "--set",
                'omacir_archives.archives=["a"]',
            ]
        )
        assert untouchable.requests == []
    assert status == 0
    manifest = pd.read_parquet(HomeLayout(tmp_path / "home").unlabeled_manifest)
    assert len(manifest) > 0 and manifest["genre"].isna().all()
    assert not HomeLayout(tmp_path / "home").crawls_dir.exists()
