"""Dagster resources: where the data lives and how to reach each source. Secrets come from ``EnvVar``."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, model_validator

from album_pipeline.defs.config import core_field
from album_pipeline.genres import DEFAULT_GENRE_MAP, GenreClass, validate_genre_map
from album_pipeline.layout import HomeLayout
from album_pipeline.registry.mlflow_registry import DEFAULT_MODEL_NAME
from album_pipeline.settings import (
    DEFAULT_EXPERIMENT,
    NAPSTER_KEY_VAR,
    ConfigurationError,
    Settings,
    SourceSelection,
)


class PipelineHome(dg.ConfigurableResource):
    """The root folder of every output (``ALBUM_PIPELINE_HOME``)."""

    root: str = Field(
        description="Folder holding images, manifests, checkpoints, evaluations and MLflow data."
    )

    @property
    def layout(self) -> HomeLayout:
        return HomeLayout(Path(self.root))


class NapsterApi(dg.ConfigurableResource):
    """The Napster API v2.2 (or a mirror or emulator speaking it)."""

    api_url: str = Field(description="Base URL, `NAPSTER_API_URL`.")
    api_key: str | None = Field(default=None, description="API key, from the `NAPSTER_API_KEY` variable.")
    allowed_image_hosts: list[str] = Field(
        description="Hosts image URLs may point at (`NAPSTER_IMAGE_HOSTS`, comma-separated)."
    )
    request_timeout_s: float = 30.0

    def client(self, requests_per_second: float | None = None, connections: int = 16):
        from album_pipeline.sources.napster import NapsterClient

        if not self.api_key:
            raise ConfigurationError(
                f"{NAPSTER_KEY_VAR} is not set: export {NAPSTER_KEY_VAR}=<your key> (Napster no longer issues "
                "keys; `album-pipeline demo` runs against the bundled emulator instead)"
            )
        try:
            return NapsterClient(
                self.api_url,
                self.api_key,
                timeout=self.request_timeout_s,
                requests_per_second=requests_per_second,
                allowed_image_hosts=self.allowed_image_hosts,
                connections=connections,
            )
        except ValueError as error:  # a key a header cannot carry; the message never shows it
            raise ConfigurationError(str(error)) from None


class MusicBrainzApi(dg.ConfigurableResource):
    """MusicBrainz (albums by genre tag) and the Cover Art Archive (their covers), or mirrors or emulators."""

    musicbrainz_url: str = Field(description="`MUSICBRAINZ_URL` (default https://musicbrainz.org).")
    coverart_url: str = Field(description="`COVERART_URL` (default https://coverartarchive.org).")
    user_agent: str = Field(
        description="`MUSICBRAINZ_USER_AGENT`: 'Application/version ( contact )'; MusicBrainz blocks "
        "anonymous agents."
    )
    allowed_image_hosts: list[str] = Field(
        description="Hosts cover redirects may lead to (`COVERART_IMAGE_HOSTS`; '.archive.org' matches "
        "subdomains)."
    )
    request_timeout_s: float = 30.0

    def clients(self, requests_per_second: float | None, connections: int = 16):
        from album_pipeline.sources.musicbrainz import CoverArtClient, MusicBrainzClient

        try:
            musicbrainz = MusicBrainzClient(
                self.musicbrainz_url,
                user_agent=self.user_agent,
                requests_per_second=requests_per_second,
                timeout=self.request_timeout_s,
            )
            coverart = CoverArtClient(
                self.coverart_url,
                user_agent=self.user_agent,
                allowed_image_hosts=self.allowed_image_hosts,
                timeout=self.request_timeout_s,
                connections=connections,
            )
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        return musicbrainz, coverart


class OmacirArchive(dg.ConfigurableResource):
    """archive.org's `audio-covers` item, a mirror, an emulator or a local folder of the tar files."""

    url: str = Field(description="`OMACIR_URL`: https://archive.org, a mirror, or a local folder of tars.")
    allowed_download_hosts: list[str] = Field(
        description="Hosts download redirects may lead to (`OMACIR_DOWNLOAD_HOSTS`; '.archive.org' matches "
        "subdomains; the `OMACIR_URL` host is always allowed)."
    )
    request_timeout_s: float = 60.0

    def client(self):
        from album_pipeline.sources.omacir import OmacirClient

        return OmacirClient(
            self.url, timeout=self.request_timeout_s, allowed_download_hosts=self.allowed_download_hosts
        )


class LabelledSources(dg.ConfigurableResource):
    """Which labelled sources feed the labelled set (`LABELLED_SOURCES`); the others are not crawled."""

    enabled: list[str] = core_field(SourceSelection, "labelled")

    @model_validator(mode="after")
    def _checked_by_the_core(self) -> LabelledSources:
        self.selection  # noqa: B018 -- refuses a bad list when the resource is configured, not mid-run
        return self

    @property
    def selection(self) -> SourceSelection:
        return SourceSelection(tuple(self.enabled))


class MlflowTracking(dg.ConfigurableResource):
    """Where runs are tracked and the generator is registered."""

    tracking_uri: str = Field(description="`MLFLOW_TRACKING_URI`; default sqlite in the pipeline home.")
    experiment_name: str = DEFAULT_EXPERIMENT
    registered_model_name: str = DEFAULT_MODEL_NAME


class GenreClassConfig(dg.Config):
    """One target class and the source genres that feed it."""

    name: str
    napster: list[str] = Field(default_factory=list, description="Napster genre shortcuts (e.g. `rock`).")
    musicbrainz: list[str] = Field(default_factory=list, description="MusicBrainz tags (e.g. `hip hop`).")


def _default_classes() -> list[GenreClassConfig]:
    return [
        GenreClassConfig(
            name=genre.name, napster=list(genre.napster_shortcuts), musicbrainz=list(genre.musicbrainz_tags)
        )
        for genre in DEFAULT_GENRE_MAP
    ]


class GenreTaxonomy(dg.ConfigurableResource):
    """The target genre classes in class-index order and what feeds each, shared by every asset.

    An album that lands in several classes keeps them all in the manifest's ``genres`` and trains under the
    class of its source's strongest signal (see ``album_pipeline.genres``).
    """

    classes: list[GenreClassConfig] = Field(default_factory=_default_classes)

    @property
    def genre_map(self) -> tuple[GenreClass, ...]:
        return validate_genre_map(
            [GenreClass(c.name, tuple(c.napster), tuple(c.musicbrainz)) for c in self.classes]
        )

    @property
    def genres(self) -> tuple[str, ...]:
        return tuple(genre.name for genre in self.genre_map)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource | dg.PipesSubprocessClient]:
    """Resources for a Definitions object, from environment settings; the key stays an unresolved EnvVar."""
    return {
        "home": PipelineHome(root=str(settings.home)),
        "napster": NapsterApi(
            api_url=settings.napster_api_url,
            # Dagster refuses to start a run whose EnvVar is unset; without a key the crawl is skipped instead.
            api_key=dg.EnvVar(NAPSTER_KEY_VAR) if os.environ.get(NAPSTER_KEY_VAR) else None,
            allowed_image_hosts=list(settings.napster_image_hosts),
        ),
        "musicbrainz": MusicBrainzApi(
            musicbrainz_url=settings.musicbrainz_url,
            coverart_url=settings.coverart_url,
            user_agent=settings.musicbrainz_user_agent,
            allowed_image_hosts=list(settings.coverart_image_hosts),
        ),
        "omacir": OmacirArchive(
            url=settings.omacir_url, allowed_download_hosts=list(settings.omacir_download_hosts)
        ),
        "labelled_sources": LabelledSources(enabled=list(settings.sources.labelled)),
        "mlflow": MlflowTracking(tracking_uri=settings.mlflow_tracking_uri),
        "genres": GenreTaxonomy(),
        # Launches a training stage as a torchrun job when its config asks for processes > 1.
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
