"""Checks run before any work: every missing setting or unreachable source is reported at once, by name.

Only what the selected assets will reach is checked: a labelled source that ``LABELLED_SOURCES`` disables is
never contacted, so a Napster-only run starts while MusicBrainz is down, and an unlabelled-only run needs
neither labelled source.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from album_pipeline.settings import (
    INCEPTION_WEIGHTS_VAR,
    LABELLED_SOURCES_VAR,
    MUSICBRAINZ_SOURCE,
    MUSICBRAINZ_URL_VAR,
    NAPSTER_KEY_VAR,
    NAPSTER_SOURCE,
    NAPSTER_URL_VAR,
    OMACIR_URL_VAR,
    ConfigurationError,
    Settings,
)

NAPSTER_ASSETS = {"napster_covers"}
MUSICBRAINZ_ASSETS = {"musicbrainz_covers"}
OMACIR_ASSETS = {"omacir_archives", "omacir_archive_images"}


def preflight(
    settings: Settings,
    asset_names: Iterable[str],
    *,
    needs_inception: bool,
    inception_weights: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Raise ConfigurationError listing every problem that would make the selected assets fail."""
    from album_pipeline.sources.http import SourceError, make_session
    from album_pipeline.sources.musicbrainz import MusicBrainzClient
    from album_pipeline.sources.napster import NapsterClient
    from album_pipeline.sources.omacir import OmacirClient

    environ = os.environ if environ is None else environ
    names = set(asset_names)
    sources = settings.sources
    problems: list[str] = []
    # One quick retry: a preflight answers "can we start?", the runs themselves retry patiently.
    quick = make_session(total_retries=1, backoff_factor=0.1)
    # Without a key the Napster crawl is skipped (Napster no longer issues keys); with one, it must work.
    key = environ.get(NAPSTER_KEY_VAR)
    crawls_napster = bool(names & NAPSTER_ASSETS) and sources.enabled(NAPSTER_SOURCE)
    if crawls_napster and not key and sources.labelled == (NAPSTER_SOURCE,):
        problems.append(
            f"{LABELLED_SOURCES_VAR} enables only napster but {NAPSTER_KEY_VAR} is unset, so no labelled "
            f"cover would be crawled: export {NAPSTER_KEY_VAR}=<your key>, or enable musicbrainz as well"
        )
    if crawls_napster and key:
        try:
            NapsterClient(settings.napster_api_url, key, session=quick, timeout=10).check()
        except ValueError as error:  # the key itself is unusable (it is never shown): not the service's fault
            problems.append(str(error))
        except SourceError as error:
            problems.append(f"Napster API at {NAPSTER_URL_VAR}={settings.napster_api_url}: {error}")
    if names & MUSICBRAINZ_ASSETS and sources.enabled(MUSICBRAINZ_SOURCE):
        try:
            client = MusicBrainzClient(
                settings.musicbrainz_url,
                user_agent=settings.musicbrainz_user_agent,
                session=make_session(settings.musicbrainz_user_agent, total_retries=1, backoff_factor=0.1),
                timeout=10,
            )
            client.check()
        except ValueError as error:
            problems.append(str(error))
        except SourceError as error:
            problems.append(f"MusicBrainz at {MUSICBRAINZ_URL_VAR}={settings.musicbrainz_url}: {error}")
    if names & OMACIR_ASSETS:
        try:
            OmacirClient(
                settings.omacir_url,
                session=quick,
                timeout=10,
                allowed_download_hosts=settings.omacir_download_hosts,
            ).list_archives()
        except ValueError as error:  # a local folder that is missing or holds no archives
            problems.append(str(error))
        except SourceError as error:
            problems.append(f"OMACIR at {OMACIR_URL_VAR}={settings.omacir_url}: {error}")
    if "generator_evaluation" in names and needs_inception:
        weights = inception_weights or environ.get(INCEPTION_WEIGHTS_VAR)
        from album_pipeline.metrics.frechet import InceptionWeightsMissing, inception_weights_path

        try:
            inception_weights_path(Path(weights) if weights else None)
        except InceptionWeightsMissing as error:
            problems.append(str(error))
    if problems:
        raise ConfigurationError("cannot start:\n- " + "\n- ".join(problems))
