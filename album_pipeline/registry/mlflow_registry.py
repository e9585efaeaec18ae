"""Log an evaluated generator to MLflow, register it, and keep the ``champion`` alias on the best version.

The tracking store is whatever ``tracking_uri`` names (sqlite in this project) and artifacts go to the
experiment's explicit ``artifact_location``, never to ``./mlruns``. ``models:/NAME@champion`` always resolves
to the version with the best ``champion_metric``: a new version takes the alias only if it beats the current
champion (ties keep the incumbent).

The generator is stored as data only (safetensors weights and a JSON description) inside an MLflow pyfunc
model whose loader is ``album_pipeline.registry.packaging``: loading it never unpickles or imports anything
the registry holds, so write access to a shared tracking server does not give code execution on the machines
that load the champion. Loading needs ``album_pipeline`` installed; versions logged by earlier releases as
pickled modules are refused with a sentence saying to register them again.

Every call runs inside ``store.store_session``: bounded waits, the store checked first, failures a user can
cause as one sentence, and the artifacts of a copied or moved home read from the copy.

mlflow is imported inside the functions: importing it costs seconds, and Dagster imports this module at load.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import torch

from album_pipeline.model.networks import Generator
from album_pipeline.registry.store import adopt_moved_artifacts, home_artifacts_dir, store_session
from album_pipeline.settings import ConfigurationError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_MODEL_NAME = "album_cover_generator"
CHAMPION_ALIAS = "champion"
GENERATOR_ARTIFACT = "generator"
GENRES_KEY = "genres"  # run param and model version tag: JSON list, index i = genre i
CHAMPION_METRIC_TAG = "champion_metric"


class ModelNotRegistered(ConfigurationError, LookupError):
    """The registered model, or the alias asked for, does not exist in the registry."""


class InvalidModelURI(ConfigurationError, ValueError):
    """A model URI that names no generator this project logged."""


# The model URIs ``load_champion`` accepts besides a local folder; anything else is refused before a download.
_REGISTRY_URI = re.compile(r"models:/[^/@\s]+(@[\w.-]+|/\d+)|runs:/[0-9a-f]{32}/\S+")
_ACCEPTED = (
    "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/generator or a folder holding a generator that "
    "album_pipeline logged (with its MLmodel file)"
)


@dataclass(frozen=True)
class ChampionPolicy:
    """Which registered version holds the ``champion`` alias: the best by one metric; ties keep the incumbent."""

    champion_metric: str = field(
        default="genre_accuracy", metadata={"doc": "Metric deciding which version is `champion`."}
    )
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        if not self.champion_metric:
            raise ValueError("champion_metric must name one of the logged metrics, e.g. 'genre_accuracy'")

    def beats(self, candidate: float, incumbent: float | None) -> bool:
        if incumbent is None or not math.isfinite(incumbent):
            return True
        return candidate > incumbent if self.greater_is_better else candidate < incumbent


@dataclass(frozen=True)
class RegistrationResult:
    run_id: str
    model_version: str
    model_uri: str  # models:/NAME/VERSION of the version just registered
    is_champion: bool  # whether the new version holds the champion alias now
    champion_version: str
    champion_metric_value: float | None  # None when the champion's run lacks the metric


def sqlite_tracking_uri(db_path: Path | str) -> str:
    """``sqlite:////abs/path/mlflow.db`` for a database file (absolute, so the CWD never matters)."""
    return "sqlite:///" + Path(db_path).expanduser().resolve().as_posix()


@contextmanager
def _using_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (runs, log_model, models:/ URIs) at ``tracking_uri`` for the block only.

    mlflow.set_tracking_uri/set_registry_uri are process-global and also export environment variables; the
    previous values are put back so that callers (and other assets in the same process) are unaffected.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        registry_utils._registry_uri = saved_registry
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _client(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else uri).resolve()
    raise ValueError(f"artifact location {uri} is not a local folder")


def _experiment_id(client: MlflowClient, name: str, artifact_location: Path) -> str:
    artifact_location = Path(artifact_location).expanduser().resolve()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifact_location.mkdir(parents=True, exist_ok=True)
        return client.create_experiment(name, artifact_location=artifact_location.as_uri())
    if experiment.lifecycle_stage != "active":
        raise ValueError(
            f"MLflow experiment {name!r} is deleted; restore it (MlflowClient.restore_experiment"
            f"({experiment.experiment_id!r})) or choose another experiment name"
        )
    existing = experiment.artifact_location
    try:
        same_place = _uri_to_path(existing) == artifact_location
    except ValueError:
        same_place = False
    if not same_place:
        raise ValueError(
            f"MLflow experiment {name!r} stores artifacts at {existing}, not at {artifact_location}; "
            "use the artifact location it was created with, or another experiment name"
        )
    return experiment.experiment_id


def _flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; other values become strings (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = str(value)
    return flat


def _check_metrics(metrics: Mapping[str, float], champion_metric: str) -> dict[str, float]:
    checked = {}
    for name, value in metrics.items():
        try:
            checked[name] = float(value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"metric {name!r} must be a number, got {value!r}") from error
    if champion_metric not in checked:
        raise ValueError(
            f"champion_metric {champion_metric!r} is not among the metrics {sorted(checked)}; "
            "pass it in metrics or choose another champion_metric"
        )
    if not math.isfinite(checked[champion_metric]):
        raise ValueError(
            f"champion metric {champion_metric!r} is {checked[champion_metric]}; it must be finite"
        )
    return checked


def _current_champion(client: MlflowClient, model_name: str, metric: str) -> tuple[str | None, float | None]:
    """(version, metric value) of the current champion, or (None, None) when no version holds the alias."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        return None, None
    value = client.get_run(version.run_id).data.metrics.get(metric) if version.run_id else None
    return str(version.version), value  # the registry hands versions back as int or str depending on the call


def log_and_register(
    *,
    tracking_uri: str,
    experiment_name: str,
    artifact_location: Path,
    model_name: str,
    generator: Generator,
    genres: Sequence[str],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifacts: Sequence[Path],
    champion: ChampionPolicy = ChampionPolicy(),
    tags: Mapping[str, str] | None = None,
) -> RegistrationResult:
    """One MLflow run with params, metrics, artifacts and the generator; register it as a new version of
    ``model_name``; move the ``champion`` alias to it only if it beats the current champion."""
    genres = [str(genre) for genre in genres]
    if len(genres) != generator.arch.num_genres or len(set(genres)) != len(genres):
        raise ValueError(
            f"genres must name each of the generator's {generator.arch.num_genres} classes once, got {genres}"
        )
    checked_metrics = _check_metrics(metrics, champion.champion_metric)
    artifact_paths = [Path(path) for path in artifacts]
    missing = [str(path) for path in artifact_paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"artifacts {missing} do not exist; write them (e.g. run the evaluation) first"
        )
    run_params = _flatten_params(params)
    genres_json = json.dumps(genres)
    if run_params.get(GENRES_KEY, genres_json) != genres_json:
        raise ValueError(f"params[{GENRES_KEY!r}] = {run_params[GENRES_KEY]} contradicts genres={genres}")
    run_params[GENRES_KEY] = genres_json
    run_params.update(_flatten_params(generator.arch.to_dict(), prefix="generator."))

    import mlflow

    from album_pipeline.registry.packaging import log_generator

    with store_session(tracking_uri, writes=True, artifact_location=artifact_location):
        adopt_moved_artifacts(tracking_uri, artifact_location)
        client = _client(tracking_uri)
        with _using_tracking_uri(tracking_uri):
            if mlflow.active_run() is not None:
                raise RuntimeError(
                    f"an MLflow run ({mlflow.active_run().info.run_id}) is already active in this process; "
                    "end it before registering, so the generator is not logged into an unrelated run"
                )
            experiment_id = _experiment_id(client, experiment_name, artifact_location)
            with mlflow.start_run(experiment_id=experiment_id, tags=dict(tags or {})) as run:
                mlflow.log_params(run_params)
                mlflow.log_metrics(checked_metrics)
                for path in artifact_paths:
                    mlflow.log_artifact(str(path))
                model_info = log_generator(generator, genres, registered_model_name=model_name)
        version = str(model_info.registered_model_version)
        client.set_model_version_tag(model_name, version, GENRES_KEY, genres_json)
        client.set_model_version_tag(model_name, version, CHAMPION_METRIC_TAG, champion.champion_metric)

        candidate = checked_metrics[champion.champion_metric]
        champion_version, champion_value = _current_champion(client, model_name, champion.champion_metric)
        if champion_version is None or champion.beats(candidate, champion_value):
            client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
            champion_version, champion_value = version, candidate
        return RegistrationResult(
            run_id=run.info.run_id,
            model_version=version,
            model_uri=f"models:/{model_name}/{version}",
            is_champion=champion_version == version,
            champion_version=champion_version,
            champion_metric_value=champion_value,
        )


def _version_for_alias(client: MlflowClient, tracking_uri: str, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # a store that fails is not a missing model (store_session words it)
        known = sorted(model.name for model in client.search_registered_models())
        raise ModelNotRegistered(
            f"no registered model {model_name!r} in {tracking_uri} (registered: {known}); "
            "train, evaluate and register a generator first"
        ) from error
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as error:
        aliases = sorted(client.get_registered_model(model_name).aliases)
        raise ModelNotRegistered(
            f"registered model {model_name!r} has no alias {alias!r} (aliases: {aliases}); "
            "register a version with log_and_register, which sets the champion alias"
        ) from error


def load_champion(
    tracking_uri: str,
    model_name: str,
    alias: str = CHAMPION_ALIAS,
    *,
    model_uri: str | None = None,
    device: str | torch.device = "cpu",
    artifact_location: Path | None = None,
) -> tuple[Generator, tuple[str, ...]]:
    """The generator holding ``alias`` (in eval mode, on ``device``) and its genre names (index i = genre i).

    ``model_uri`` loads another logged generator instead (``models:/NAME/3``, ``runs:/RUN_ID/generator``, or a
    folder holding one); any other URI is an InvalidModelURI before anything is fetched. ``artifact_location``
    is where the store's artifacts belong (default: ``mlartifacts/`` beside an sqlite store in a home), so a
    copied home reads its own copies.
    """
    local_model = check_model_uri(model_uri) if model_uri is not None else None
    if local_model is not None:
        return _load_generator(local_model, str(model_uri), None, device)
    with store_session(tracking_uri, writes=False):
        location = artifact_location or home_artifacts_dir(tracking_uri)
        if location is not None:
            adopt_moved_artifacts(tracking_uri, location)
        return _load_registered(tracking_uri, model_name, alias, model_uri, device)


def check_model_uri(model_uri: str) -> Path | None:
    """None for a registry URI load_champion accepts, the folder for a local model; else InvalidModelURI."""
    if _REGISTRY_URI.fullmatch(model_uri):
        return None
    parsed = urlparse(model_uri)
    if parsed.scheme in ("", "file"):
        folder = Path(unquote(parsed.path) if parsed.scheme else model_uri).expanduser()
        if _logged_by_us(folder):
            return folder.resolve()
    raise InvalidModelURI(f"--model-uri {model_uri!r} names no album_pipeline generator; give {_ACCEPTED}")


def _logged_by_us(folder: Path) -> bool:
    """Whether ``folder`` holds an MLmodel with the genre names log_and_register adds (this release's data-only
    model, or an earlier pickled one that loading refuses with a sentence); nothing in it is loaded here."""
    from mlflow.models import Model

    if not (folder / "MLmodel").is_file():
        return False
    try:
        model = Model.load(str(folder))
    except Exception:  # an MLmodel that does not parse is simply not one of ours
        return False
    return bool((model.metadata or {}).get(GENRES_KEY))


def _load_registered(
    tracking_uri: str, model_name: str, alias: str, model_uri: str | None, device: str | torch.device
) -> tuple[Generator, tuple[str, ...]]:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    tagged_genres = None
    if model_uri is None:
        version = _version_for_alias(client, tracking_uri, model_name, alias)
        tagged_genres = version.tags.get(GENRES_KEY)
        # The exact version the alias resolved to above, so the model and its genre tag cannot come from two
        # different versions if the alias moves in between.
        model_uri = f"models:/{model_name}/{version.version}"
    with (
        _using_tracking_uri(tracking_uri),
        tempfile.TemporaryDirectory(prefix="album_pipeline_model_") as tmp,
    ):
        try:
            local_path = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise  # a store that fails (store_session words it)
            raise ModelNotRegistered(
                f"cannot fetch {model_uri} from {tracking_uri}: {error.message}"
            ) from error
        except OSError as error:  # the store names artifacts that are not on disk
            raise ModelNotRegistered(f"cannot fetch {model_uri} from {tracking_uri}: {error}") from None
        return _load_generator(Path(local_path), model_uri, tagged_genres, device)


def _load_generator(
    folder: Path, model_uri: str, tagged_genres: str | None, device: str | torch.device
) -> tuple[Generator, tuple[str, ...]]:
    """The generator of a downloaded model folder on ``device``; checked by ``packaging`` before anything is
    read, and its genres must agree with the version's genre tag (when there is one)."""
    from album_pipeline.registry.packaging import load_generator_model

    if not _logged_by_us(folder):
        raise InvalidModelURI(f"{model_uri} holds no album_pipeline generator; give {_ACCEPTED}")
    generator, genres = load_generator_model(folder, model_uri)
    try:
        tagged = list(genres) if tagged_genres is None else json.loads(tagged_genres)
    except ValueError:
        tagged = None
    if tagged != list(genres):
        raise InvalidModelURI(
            f"{model_uri} names the genres {list(genres)} but its version is tagged {tagged_genres}; "
            "register the generator again"
        )
    return generator.to(device).eval(), genres
