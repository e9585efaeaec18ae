"""The asset graph's shape: the lineage the pipeline promises, and that it loads as `dagster dev` loads it."""

from datetime import UTC, datetime

import dagster as dg

from album_pipeline.definitions import build_definitions, defs
from album_pipeline.profiles import PROFILES
from album_pipeline.settings import Settings

EXPECTED_UPSTREAM = {
    "napster_covers": set(),
    "musicbrainz_covers": set(),
    "labeled_manifest": {"napster_covers", "musicbrainz_covers"},
    "omacir_archives": set(),
    "omacir_archive_images": {"omacir_archives"},
    "unlabeled_manifest": {"omacir_archive_images", "labeled_manifest"},
    "labeled_training_data": {"labeled_manifest"},
    "unlabeled_training_data": {"unlabeled_manifest"},
    "pretrained_generator": {"unlabeled_training_data"},
    "finetuned_generator": {"pretrained_generator", "labeled_training_data"},
    "genre_classifier": {"labeled_training_data"},
    "generator_evaluation": {"finetuned_generator", "genre_classifier"},
    "registered_generator": {"generator_evaluation"},
}


def test_lineage_matches_the_pipeline_design():
    graph = defs.resolve_asset_graph()
    upstream = {
        key.to_user_string(): {parent.to_user_string() for parent in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert upstream == EXPECTED_UPSTREAM


def test_definitions_validate_and_offer_a_job_per_profile():
    dg.Definitions.validate_loadable(defs)
    for profile in PROFILES:
        assert defs.resolve_job_def(f"{profile}_pipeline") is not None


def test_resources_follow_the_environment_and_keep_the_key_unresolved(monkeypatch, tmp_path):
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NAPSTER_API_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("OMACIR_URL", "/data/omacir")
    monkeypatch.setenv("NAPSTER_API_KEY", "secret-key-123")
    settings = Settings.from_environ()
    resources = build_definitions(settings).resources
    assert resources["home"].root == str(tmp_path / "home")
    assert resources["napster"].api_url == "http://127.0.0.1:9"
    assert resources["omacir"].url == "/data/omacir"
    assert resources["mlflow"].tracking_uri == f"sqlite:///{tmp_path}/home/mlflow.db"
    # The key is an EnvVar, resolved only when a run starts, so it is never baked into definitions.
    assert isinstance(resources["napster"].api_key, dg.EnvVar)
    assert "secret-key-123" not in repr(resources["napster"])


def test_default_settings_point_at_the_real_services(monkeypatch, tmp_path):
    settings = Settings.from_environ({})
    assert settings.napster_api_url == "https://api.napster.com"
    assert settings.omacir_url == "https://archive.org"
    assert settings.home.name == ".album_pipeline"
    assert settings.mlflow_tracking_uri.endswith(".album_pipeline/mlflow.db")


def test_image_hosts_default_to_the_real_services_and_follow_the_environment():
    assert Settings.from_environ({}).napster_image_hosts == ("static.rhap.com", "api.napster.com")
    settings = Settings.from_environ({"NAPSTER_IMAGE_HOSTS": " 127.0.0.1, mirror.example.org ,"})
    assert settings.napster_image_hosts == ("127.0.0.1", "mirror.example.org")
    assert build_definitions(settings).resources["napster"].allowed_image_hosts == list(
        settings.napster_image_hosts
    )


def test_weekly_labeled_recrawl_is_off_until_turned_on_and_recrawls_the_labelled_sources():
    defs = build_definitions(Settings.from_environ({}))
    schedule = defs.get_schedule_def("weekly_labeled_recrawl")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 3 * * 1" and schedule.job_name == "labeled_recrawl"
    job = defs.resolve_job_def("labeled_recrawl")
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        "napster_covers",
        "musicbrainz_covers",
        "labeled_manifest",
    }
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 30, 3, tzinfo=UTC)) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1


def test_a_source_url_of_an_unsupported_scheme_names_its_variable_and_hides_the_rest(tmp_path):
    import pytest

    from album_pipeline.settings import ConfigurationError

    for variable in ("NAPSTER_API_URL", "OMACIR_URL", "MUSICBRAINZ_URL", "COVERART_URL"):
        with pytest.raises(ConfigurationError, match=f"^{variable} \\(ftp://...\\) must be") as caught:
            Settings.from_environ({variable: "ftp://user:secret@host/x"})
        assert "secret" not in str(caught.value)
    local = Settings.from_environ({"OMACIR_URL": str(tmp_path)})  # a local folder of tars is fine
    assert local.omacir_url == str(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match="is not a folder"):
        Settings.from_environ({"ALBUM_PIPELINE_HOME": str(tmp_path / "file")}).check_home(writable=False)
