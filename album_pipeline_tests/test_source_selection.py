"""Choosing labelled sources: one setting (LABELLED_SOURCES), validated by the core, shown as a resource."""

import dagster as dg
import pytest
from pydantic import ValidationError

from album_pipeline.data.labeled import ManifestSources
from album_pipeline.data.musicbrainz_covers import MUSICBRAINZ
from album_pipeline.data.napster_covers import NAPSTER
from album_pipeline.definitions import build_definitions
from album_pipeline.defs.labeled import LABELED_SOURCES
from album_pipeline.defs.resources import LabelledSources
from album_pipeline.settings import LABELLED_SOURCE_NAMES, ConfigurationError, Settings, SourceSelection


def _settings(tmp_path, **environ) -> Settings:
    return Settings.from_environ({"ALBUM_PIPELINE_HOME": str(tmp_path), **environ})


def test_both_sources_are_enabled_by_default_in_the_manifests_priority_order(tmp_path):
    assert SourceSelection().labelled == ("napster", "musicbrainz")
    assert _settings(tmp_path).sources == SourceSelection()
    # An empty variable is an unset one, as for every other setting.
    assert _settings(tmp_path, LABELLED_SOURCES="").sources == SourceSelection()
    # The names are the crawls' own source names, and the manifest's priority order.
    assert LABELLED_SOURCE_NAMES == LABELED_SOURCES == (NAPSTER, MUSICBRAINZ)


def test_the_variable_takes_names_in_any_order_case_and_spacing(tmp_path):
    only_napster = _settings(tmp_path, LABELLED_SOURCES="Napster").sources
    assert only_napster.labelled == ("napster",) and only_napster.disabled == ("musicbrainz",)
    assert only_napster.enabled("napster") and not only_napster.enabled("musicbrainz")
    both = _settings(tmp_path, LABELLED_SOURCES=" musicbrainz , napster,musicbrainz").sources
    assert both.labelled == ("napster", "musicbrainz") and both.disabled == ()


def test_unknown_names_are_refused_with_the_valid_ones_listed(tmp_path):
    with pytest.raises(ConfigurationError) as raised:
        _settings(tmp_path, LABELLED_SOURCES="napster,spotify")
    message = str(raised.value)
    assert "LABELLED_SOURCES='napster,spotify'" in message
    assert "['spotify']" in message and "napster, musicbrainz" in message


def test_an_empty_list_is_refused_and_points_at_the_unlabelled_assets(tmp_path):
    with pytest.raises(ConfigurationError, match="no labelled source is enabled.*unlabelled assets"):
        _settings(tmp_path, LABELLED_SOURCES=" , ")
    with pytest.raises(ValueError, match="no labelled source is enabled"):
        SourceSelection(())


def test_the_resource_shows_the_setting_and_refuses_what_the_core_refuses():
    assert LabelledSources().enabled == ["napster", "musicbrainz"]
    assert "LABELLED_SOURCES" in LabelledSources.model_fields["enabled"].description
    assert LabelledSources(enabled=["musicbrainz"]).selection == SourceSelection(("musicbrainz",))
    with pytest.raises(ValidationError, match=r"unknown labelled sources \['lastfm'\]; choose from napster"):
        LabelledSources(enabled=["lastfm"])
    with pytest.raises(ValidationError, match="no labelled source is enabled"):
        LabelledSources(enabled=[])


def test_the_definitions_carry_the_environment_setting_as_a_resource(tmp_path):
    resources = build_definitions(_settings(tmp_path, LABELLED_SOURCES="musicbrainz")).resources
    assert resources["labelled_sources"].enabled == ["musicbrainz"]
    assert build_definitions(_settings(tmp_path)).resources["labelled_sources"].enabled == [
        "napster",
        "musicbrainz",
    ]


def test_a_bad_list_in_run_config_is_refused_before_any_crawl(tmp_path):
    defs = build_definitions(_settings(tmp_path, NAPSTER_API_URL="http://127.0.0.1:9"))
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("napster_covers")}
    )
    run_config = {"resources": {"labelled_sources": {"config": {"enabled": ["napstr"]}}}}
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
        event_log = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    assert not result.success
    # The resource fails to initialise, so the step never starts.
    assert "unknown labelled sources ['napstr']; choose from napster, musicbrainz" in event_log
    assert not (tmp_path / "crawls").exists()


def test_manifest_sources_say_why_each_source_is_left_out():
    only_musicbrainz = SourceSelection(("musicbrainz",))
    sources = ManifestSources.of(only_musicbrainz, {"musicbrainz": 12})
    assert (sources.used, sources.empty, sources.not_crawled, sources.disabled) == (
        ("musicbrainz",),
        (),
        (),
        ("napster",),
    )
    sources = ManifestSources.of(SourceSelection(), {"napster": 0})
    assert (sources.used, sources.empty, sources.not_crawled, sources.disabled) == (
        (),
        ("napster",),
        ("musicbrainz",),
        (),
    )


def test_the_cli_takes_sources_from_its_option_before_the_variable(monkeypatch, tmp_path, capsys):
    from album_pipeline.cli import dagster_home, main
    from album_pipeline.testing.emulators.loopback import LoopbackServer

    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NAPSTER_API_KEY", "a-key-for-a-disabled-source")
    monkeypatch.setenv("LABELLED_SOURCES", "napster")
    assert main(["run", "--sources", "spotify", "--select", "napster_covers"]) == 2
    assert "--sources='spotify': unknown labelled sources ['spotify']" in capsys.readouterr().err
    with LoopbackServer() as untouchable:
        monkeypatch.setenv("NAPSTER_API_URL", untouchable.url)
        assert (
            main(["run", "--profile", "demo", "--sources", "musicbrainz", "--select", "napster_covers"]) == 0
        )
        assert untouchable.requests == []
    with dg.DagsterInstance.from_config(str(dagster_home(Settings.from_environ()))) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("napster_covers"))
    assert event.asset_materialization.metadata["skipped"].value.startswith("disabled:")
