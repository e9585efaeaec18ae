"""Missing settings and unreachable sources stop a run before any work, naming what to set."""

import socket

import pytest

from album_pipeline.preflight import preflight
from album_pipeline.settings import ConfigurationError, Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _settings(tmp_path, napster_url="http://127.0.0.1:9", omacir_url="http://127.0.0.1:9", **extra):
    return Settings.from_environ(
        {
            "ALBUM_PIPELINE_HOME": str(tmp_path),
            "NAPSTER_API_URL": napster_url,
            "OMACIR_URL": omacir_url,
            "MUSICBRAINZ_URL": "http://127.0.0.1:9",
            **extra,
        }
    )


def test_missing_napster_key_is_no_problem_because_that_crawl_is_skipped(tmp_path):
    preflight(_settings(tmp_path), ["napster_covers"], needs_inception=False, environ={})


def test_unreachable_musicbrainz_and_a_blocked_user_agent_are_named(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ConfigurationError, match="MUSICBRAINZ_URL"):
        preflight(
            _settings(tmp_path, MUSICBRAINZ_URL=url),
            ["musicbrainz_covers"],
            needs_inception=False,
            environ={},
        )
    with pytest.raises(ConfigurationError, match="MUSICBRAINZ_USER_AGENT"):
        preflight(
            _settings(tmp_path, MUSICBRAINZ_USER_AGENT="python-requests/2"),
            ["musicbrainz_covers"],
            needs_inception=False,
            environ={},
        )


def test_unreachable_sources_are_reported_together_by_variable(tmp_path):
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ConfigurationError) as raised:
        preflight(
            _settings(tmp_path, url, url),
            ["napster_covers", "omacir_archives"],
            needs_inception=False,
            environ={"NAPSTER_API_KEY": "k-123456"},
        )
    message = str(raised.value)
    assert "NAPSTER_API_URL" in message and "OMACIR_URL" in message
    assert "k-123456" not in message


def test_wrong_key_is_an_auth_error_without_the_key(tmp_path):
    from album_pipeline.testing.emulators.napster import NapsterEmulator

    with NapsterEmulator(api_key="right-key") as emulator:
        with pytest.raises(ConfigurationError) as raised:
            preflight(
                _settings(tmp_path, emulator.url),
                ["napster_covers"],
                needs_inception=False,
                environ={"NAPSTER_API_KEY": "wrong-key-98765"},
            )
    assert "NAPSTER_API_KEY" in str(raised.value)
    assert "wrong-key-98765" not in str(raised.value)


def test_missing_inception_weights_explain_how_to_provide_them(tmp_path):
    with pytest.raises(ConfigurationError) as raised:
        preflight(
            _settings(tmp_path),
            ["generator_evaluation"],
            needs_inception=True,
            inception_weights=str(tmp_path / "nowhere" / "inception-2015-12-05.pt"),
            environ={},
        )
    message = str(raised.value)
    assert "ALBUM_PIPELINE_INCEPTION_WEIGHTS" in message and "genre_classifier" in message


def test_assets_that_need_nothing_external_pass(tmp_path):
    preflight(
        _settings(tmp_path), ["labeled_training_data", "genre_classifier"], needs_inception=False, environ={}
    )


def test_a_missing_local_omacir_folder_is_named(tmp_path):
    with pytest.raises(ConfigurationError, match="OMACIR folder .* does not exist"):
        preflight(
            _settings(tmp_path, omacir_url=str(tmp_path / "missing")),
            ["omacir_archives"],
            needs_inception=False,
            environ={},
        )


# --- choosing labelled sources (LABELLED_SOURCES) --------------------------------------------------------


@pytest.fixture
def untouchable():
    """A loopback server that answers 404 to every request and logs it: a source that must not be asked."""
    from album_pipeline.testing.emulators.loopback import LoopbackServer

    with LoopbackServer() as server:
        yield server


def test_a_napster_only_run_starts_while_musicbrainz_is_down_and_never_asks_it(tmp_path, untouchable):
    from album_pipeline.testing.emulators.napster import NapsterEmulator

    crawls = ["napster_covers", "musicbrainz_covers", "labeled_manifest"]
    with NapsterEmulator(api_key="napster-key") as napster:
        for enabled in ("napster", "NAPSTER , napster"):
            preflight(
                _settings(tmp_path, napster.url, MUSICBRAINZ_URL=untouchable.url, LABELLED_SOURCES=enabled),
                crawls,
                needs_inception=False,
                environ={"NAPSTER_API_KEY": "napster-key"},
            )
        assert napster.requests  # Napster itself was checked
        assert untouchable.requests == []
        # With both enabled (the default) the same run is refused, having asked the broken MusicBrainz.
        with pytest.raises(ConfigurationError, match="MUSICBRAINZ_URL"):
            preflight(
                _settings(tmp_path, napster.url, MUSICBRAINZ_URL=untouchable.url),
                crawls,
                needs_inception=False,
                environ={"NAPSTER_API_KEY": "napster-key"},
            )
    assert untouchable.requests


def test_a_musicbrainz_only_run_needs_no_napster_key_and_never_asks_napster(tmp_path, untouchable):
    from album_pipeline.testing.emulators.musicbrainz import MusicBrainzEmulator

    with MusicBrainzEmulator(rate_limit_per_second=None) as musicbrainz:
        settings = _settings(
            tmp_path, untouchable.url, LABELLED_SOURCES="musicbrainz", **musicbrainz.environment()
        )
        crawls = ["napster_covers", "musicbrainz_covers", "labeled_manifest"]
        preflight(settings, crawls, needs_inception=False, environ={})
        # Even a key in the environment does not make a disabled Napster worth asking.
        preflight(settings, crawls, needs_inception=False, environ={"NAPSTER_API_KEY": "unused-key"})
        assert musicbrainz.requests
    assert untouchable.requests == []


def test_napster_alone_without_a_key_is_refused_as_a_run_that_would_crawl_nothing(tmp_path, untouchable):
    with pytest.raises(ConfigurationError) as raised:
        preflight(
            _settings(tmp_path, untouchable.url, LABELLED_SOURCES="napster"),
            ["napster_covers", "labeled_manifest"],
            needs_inception=False,
            environ={},
        )
    message = str(raised.value)
    assert "LABELLED_SOURCES enables only napster" in message
    assert "export NAPSTER_API_KEY" in message and "musicbrainz" in message
    assert untouchable.requests == []


def test_only_a_local_folder_of_omacir_tars_needs_neither_labelled_source(tmp_path, untouchable):
    from album_pipeline.testing.emulators.omacir_item import OmacirItem

    item = OmacirItem.build(tmp_path / "omacir", letters=("a",), images_per_archive=12)
    settings = _settings(
        tmp_path / "home",
        untouchable.url,
        str(item.directory),
        MUSICBRAINZ_URL=untouchable.url,
        COVERART_URL=untouchable.url,
    )
    preflight(
        settings,
        ["omacir_archives", "omacir_archive_images", "unlabeled_manifest"],
        needs_inception=False,
        environ={"NAPSTER_API_KEY": "a-key"},
    )
    assert untouchable.requests == []
