"""Settings read from the environment, with defaults that point at the real services.

Tests and the demo override the URLs to reach the loopback emulators. Secrets are not read here: the Napster
key reaches the pipeline only through a Dagster ``EnvVar`` (see ``album_pipeline.defs.resources``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from album_pipeline.automation import RetrainPolicy, RetrainPolicyError
from album_pipeline.execution import ExecutionSettings, ExecutionSettingsError, executor_name, positive_count
from album_pipeline.layout import HomeLayout
from album_pipeline.progress import ProgressSettings
from album_pipeline.sources.musicbrainz import (
    DEFAULT_COVERART_IMAGE_HOSTS,
    DEFAULT_COVERART_URL,
    DEFAULT_MUSICBRAINZ_URL,
    DEFAULT_USER_AGENT,
)
from album_pipeline.sources.napster import DEFAULT_IMAGE_HOSTS
from album_pipeline.sources.omacir import DEFAULT_DOWNLOAD_HOSTS as DEFAULT_OMACIR_DOWNLOAD_HOSTS

HOME_VAR = "ALBUM_PIPELINE_HOME"
NAPSTER_URL_VAR = "NAPSTER_API_URL"
NAPSTER_KEY_VAR = "NAPSTER_API_KEY"
NAPSTER_IMAGE_HOSTS_VAR = "NAPSTER_IMAGE_HOSTS"
OMACIR_URL_VAR = "OMACIR_URL"
OMACIR_DOWNLOAD_HOSTS_VAR = "OMACIR_DOWNLOAD_HOSTS"
MLFLOW_URI_VAR = "MLFLOW_TRACKING_URI"
MLFLOW_EXPERIMENT_VAR = "MLFLOW_EXPERIMENT_NAME"  # MLflow's own; read by the torchrun training entry
DEFAULT_EXPERIMENT = "album_pipeline"
MUSICBRAINZ_URL_VAR = "MUSICBRAINZ_URL"
MUSICBRAINZ_USER_AGENT_VAR = "MUSICBRAINZ_USER_AGENT"
COVERART_URL_VAR = "COVERART_URL"
COVERART_IMAGE_HOSTS_VAR = "COVERART_IMAGE_HOSTS"
INCEPTION_WEIGHTS_VAR = "ALBUM_PIPELINE_INCEPTION_WEIGHTS"
LABELLED_SOURCES_VAR = "LABELLED_SOURCES"
T = TypeVar("T")
RETRAIN_GROWTH_VAR = "ALBUM_PIPELINE_RETRAIN_GROWTH"
EXECUTOR_VAR = "ALBUM_PIPELINE_EXECUTOR"
MAX_CONCURRENT_VAR = "ALBUM_PIPELINE_MAX_CONCURRENT"
K8S_IMAGE_VAR = "ALBUM_PIPELINE_K8S_IMAGE"
K8S_NAMESPACE_VAR = "ALBUM_PIPELINE_K8S_NAMESPACE"
K8S_GPUS_VAR = "ALBUM_PIPELINE_K8S_GPUS"
PROGRESS_VAR = "ALBUM_PIPELINE_PROGRESS"
PROGRESS_SECONDS_VAR = "ALBUM_PIPELINE_PROGRESS_SECONDS"
NAPSTER_SOURCE = "napster"
MUSICBRAINZ_SOURCE = "musicbrainz"
# In the labelled manifest's priority order: among equal copies of a picture the first source's row is kept.
LABELLED_SOURCE_NAMES = (NAPSTER_SOURCE, MUSICBRAINZ_SOURCE)

DEFAULT_HOME = ".album_pipeline"
DEFAULT_NAPSTER_URL = "https://api.napster.com"
DEFAULT_OMACIR_URL = "https://archive.org"


class ConfigurationError(RuntimeError):
    """A setting is missing or wrong; the message names the variable to set."""


@dataclass(frozen=True)
class SourceSelection:
    """The labelled sources a run preflights, crawls and builds the labelled manifest from."""

    labelled: tuple[str, ...] = field(
        default=LABELLED_SOURCE_NAMES,
        metadata={
            "doc": "Enabled labelled sources, any of napster and musicbrainz (`LABELLED_SOURCES`, "
            "comma-separated). A disabled source is neither checked nor crawled, and the labelled manifest "
            "leaves it out; what it fetched earlier stays on disk."
        },
    )

    def __post_init__(self) -> None:
        names = [name.strip().lower() for name in self.labelled]
        unknown = sorted({name for name in names if name not in LABELLED_SOURCE_NAMES})
        if unknown:
            raise ValueError(
                f"unknown labelled sources {unknown}; choose from {', '.join(LABELLED_SOURCE_NAMES)}"
            )
        if not names:
            raise ValueError(
                f"no labelled source is enabled; enable at least one of {', '.join(LABELLED_SOURCE_NAMES)} "
                "(to build only the unlabelled set, select the unlabelled assets instead)"
            )
        # Priority order, whatever order they were given in, so that equal selections compare equal.
        object.__setattr__(self, "labelled", tuple(n for n in LABELLED_SOURCE_NAMES if n in names))

    @classmethod
    def from_text(cls, text: str, variable: str = LABELLED_SOURCES_VAR) -> SourceSelection:
        """A comma-separated list (``napster,musicbrainz``); a bad one names ``variable``."""
        try:
            return cls(tuple(name for name in text.split(",") if name.strip()))
        except ValueError as error:
            raise ConfigurationError(f"{variable}={text!r}: {error}.") from None

    def enabled(self, source: str) -> bool:
        return source in self.labelled

    @property
    def disabled(self) -> tuple[str, ...]:
        return tuple(name for name in LABELLED_SOURCE_NAMES if name not in self.labelled)


@dataclass(frozen=True)
class Settings:
    home: Path
    napster_api_url: str
    napster_image_hosts: tuple[str, ...]
    omacir_url: str
    mlflow_tracking_uri: str
    musicbrainz_url: str = DEFAULT_MUSICBRAINZ_URL
    musicbrainz_user_agent: str = DEFAULT_USER_AGENT
    coverart_url: str = DEFAULT_COVERART_URL
    coverart_image_hosts: tuple[str, ...] = DEFAULT_COVERART_IMAGE_HOSTS
    # Hosts archive.org's download redirects may lead to; the OMACIR_URL host is always allowed.
    omacir_download_hosts: tuple[str, ...] = DEFAULT_OMACIR_DOWNLOAD_HOSTS
    sources: SourceSelection = SourceSelection()
    retrain: RetrainPolicy = RetrainPolicy()
    execution: ExecutionSettings = ExecutionSettings()

    def __post_init__(self) -> None:
        # A wrong scheme is a typo in the environment; refusing it here names the variable before any work
        # rather than when a crawl reaches it. MLFLOW_TRACKING_URI is the registry's to judge (many schemes).
        problems = [
            problem
            for value, variable, local in (
                (self.napster_api_url, NAPSTER_URL_VAR, False),
                (self.omacir_url, OMACIR_URL_VAR, True),
                (self.musicbrainz_url, MUSICBRAINZ_URL_VAR, False),
                (self.coverart_url, COVERART_URL_VAR, False),
            )
            if (problem := _url_problem(value, variable, local_allowed=local))
        ]
        if problems:
            raise ConfigurationError(" ".join(problems))

    def check_home(self, *, writable: bool) -> None:
        """Refuse a home that is not a folder (or, when the command writes there, cannot be written)."""
        home = self.home
        if home.exists() and not home.is_dir():
            raise ConfigurationError(
                f"{HOME_VAR}={home} is not a folder; point {HOME_VAR} at a folder (it is created if missing)."
            )
        if not writable:
            return
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigurationError(
                f"cannot create the pipeline home {home} ({error.strerror}); set {HOME_VAR} to a folder you "
                "can write to."
            ) from None
        # access() also reports a read-only file system, even to root.
        if not os.access(home, os.W_OK | os.X_OK):
            raise ConfigurationError(
                f"the pipeline home {home} is not writable; make it writable or set {HOME_VAR} to a folder "
                "you can write to."
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        home = Path(environ.get(HOME_VAR) or DEFAULT_HOME).expanduser().resolve()
        return cls(
            home=home,
            napster_api_url=(environ.get(NAPSTER_URL_VAR) or DEFAULT_NAPSTER_URL).rstrip("/"),
            napster_image_hosts=_hosts(environ.get(NAPSTER_IMAGE_HOSTS_VAR), DEFAULT_IMAGE_HOSTS),
            omacir_url=(environ.get(OMACIR_URL_VAR) or DEFAULT_OMACIR_URL).rstrip("/"),
            mlflow_tracking_uri=environ.get(MLFLOW_URI_VAR) or default_tracking_uri(home),
            musicbrainz_url=(environ.get(MUSICBRAINZ_URL_VAR) or DEFAULT_MUSICBRAINZ_URL).rstrip("/"),
            musicbrainz_user_agent=environ.get(MUSICBRAINZ_USER_AGENT_VAR) or DEFAULT_USER_AGENT,
            coverart_url=(environ.get(COVERART_URL_VAR) or DEFAULT_COVERART_URL).rstrip("/"),
            coverart_image_hosts=_hosts(environ.get(COVERART_IMAGE_HOSTS_VAR), DEFAULT_COVERART_IMAGE_HOSTS),
            omacir_download_hosts=_hosts(
                environ.get(OMACIR_DOWNLOAD_HOSTS_VAR), DEFAULT_OMACIR_DOWNLOAD_HOSTS
            ),
            sources=_parsed(environ, LABELLED_SOURCES_VAR, SourceSelection.from_text, SourceSelection()),
            retrain=_parsed(environ, RETRAIN_GROWTH_VAR, _retrain_policy, RetrainPolicy()),
            execution=_execution(environ),
        )


def _url_problem(value: str, variable: str, *, local_allowed: bool) -> str | None:
    """A sentence saying what is wrong with a source URL, or None when its scheme is one we speak."""
    scheme = urlsplit(value).scheme.lower() if "://" in value else ""
    if scheme in ("http", "https") and urlsplit(value).netloc:
        return None
    if local_allowed and (scheme == "file" or not scheme):
        return None
    allowed = "an http(s) URL, a file:// URL or a folder" if local_allowed else "an http:// or https:// URL"
    # Only the scheme is echoed: the rest of a URL may carry credentials.
    shown = f"{scheme}://..." if scheme else repr(value[:40])
    return f"{variable} ({shown}) must be {allowed}; fix or unset {variable}."


def _parsed(environ: Mapping[str, str], variable: str, parse: Callable[[str, str], T], default: T) -> T:
    """``parse(value, variable)`` of a set variable; ``default`` when it is unset or blank, like every setting."""
    text = environ.get(variable, "").strip()
    return parse(text, variable) if text else default


def progress_settings(environ: Mapping[str, str] | None = None) -> ProgressSettings:
    """Progress bars (``ALBUM_PIPELINE_PROGRESS``: auto, on, off) and the seconds between progress lines in a
    step's log (``ALBUM_PIPELINE_PROGRESS_SECONDS``); read where progress starts, so it needs no Settings."""
    environ = os.environ if environ is None else environ
    default = ProgressSettings()
    try:
        return ProgressSettings(
            bars=_parsed(environ, PROGRESS_VAR, lambda text, _: text, default.bars),
            log_seconds=_parsed(environ, PROGRESS_SECONDS_VAR, _seconds, default.log_seconds),
        )
    except ValueError as error:
        raise ConfigurationError(
            f"{error}; set {PROGRESS_VAR} to auto, on or off and {PROGRESS_SECONDS_VAR} to seconds (e.g. 30), "
            "or unset them."
        ) from None


def _seconds(text: str, variable: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigurationError(
            f"{variable}={text!r} is not a number of seconds; set it to e.g. 30."
        ) from None


def _retrain_policy(text: str, variable: str) -> RetrainPolicy:
    try:
        return RetrainPolicy.from_text(text, variable)
    except RetrainPolicyError as error:
        raise ConfigurationError(str(error)) from None


def _execution(environ: Mapping[str, str]) -> ExecutionSettings:
    default = ExecutionSettings()
    try:
        return ExecutionSettings(
            executor=_parsed(environ, EXECUTOR_VAR, executor_name, default.executor),
            max_concurrent=_parsed(environ, MAX_CONCURRENT_VAR, positive_count, default.max_concurrent),
            k8s_image=_parsed(environ, K8S_IMAGE_VAR, _text, default.k8s_image),
            k8s_namespace=_parsed(environ, K8S_NAMESPACE_VAR, _text, default.k8s_namespace),
            gpus_per_step=_parsed(environ, K8S_GPUS_VAR, positive_count, default.gpus_per_step),
        )
    except ExecutionSettingsError as error:
        raise ConfigurationError(str(error)) from None


def _text(text: str, variable: str) -> str:
    return text


def _hosts(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated host list from the environment, or the default when unset."""
    return tuple(host.strip() for host in (value or ",".join(default)).split(",") if host.strip())


def default_tracking_uri(home: Path) -> str:
    # Four slashes: sqlite:/// followed by an absolute path.
    return f"sqlite:///{HomeLayout(home).mlflow_db.as_posix()}"
