"""Log an evaluated generator to MLflow, register it, and keep the ``champion`` alias on the best version.

The tracking store is whatever ``tracking_uri`` names: an sqlite file (a home's own ``mlflow.db``), whose
artifacts go to the experiment's explicit ``artifact_location`` and never to ``./mlruns``, or a tracking server
(``http://host:port``), which keeps artifacts wherever its ``--artifacts-destination`` says. Every registered
version is tagged with its metrics, its primary metric and the floors' verdicts; ``models:/NAME@challenger`` is
always the newest version, and ``models:/NAME@champion`` the one the champion gate (``registry.gate``) chose.

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
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import torch

from album_pipeline.layout import HomeLayout
from album_pipeline.model.networks import Generator
from album_pipeline.registry.champion import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    RegistrationResult,
    apply_gate,
)
from album_pipeline.registry.gate import ChampionPolicy
from album_pipeline.registry.store import adopt_moved_artifacts, home_artifacts_dir, store_session
from album_pipeline.settings import ConfigurationError

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "album_cover_generator"
GENERATOR_ARTIFACT = "generator"
GENRES_KEY = "genres"  # run param and model version tag: JSON list, index i = genre i


class ModelNotRegistered(ConfigurationError, LookupError):
    """The registered model, or the alias asked for, does not exist in the registry."""


class NoChampionYet(ModelNotRegistered):
    """Versions are registered, but the champion gate has let none of them through (``challenger`` exists)."""


class InvalidModelURI(ConfigurationError, ValueError):
    """A model URI that names no generator this project logged."""


# The model URIs ``load_champion`` accepts besides a local folder; anything else is refused before a download.
_REGISTRY_URI = re.compile(r"models:/[^/@\s]+(@[\w.-]+|/\d+)|runs:/[0-9a-f]{32}/\S+")
_ACCEPTED = (
    "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/generator or a folder holding a generator that "
    "album_pipeline logged (with its MLmodel file)"
)


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


def experiment_id_for(client: MlflowClient, name: str, artifact_location: Path | None) -> str:
    """The experiment's id, created if need be; ``artifact_location`` None leaves artifacts to the server."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        if artifact_location is None:
            return client.create_experiment(name)
        artifact_location = Path(artifact_location).expanduser().resolve()
        artifact_location.mkdir(parents=True, exist_ok=True)
        return client.create_experiment(name, artifact_location=artifact_location.as_uri())
    if experiment.lifecycle_stage != "active":
        raise ValueError(
            f"MLflow experiment {name!r} is deleted; restore it (MlflowClient.restore_experiment"
            f"({experiment.experiment_id!r})) or choose another experiment name"
        )
    if artifact_location is None:
        return experiment.experiment_id
    artifact_location = Path(artifact_location).expanduser().resolve()
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


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; other values become strings (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = str(value)
    return flat


def _check_metrics(metrics: Mapping[str, float], champion: ChampionPolicy) -> dict[str, float]:
    checked = {}
    for name, value in metrics.items():
        try:
            checked[name] = float(value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"metric {name!r} must be a number, got {value!r}") from error
    champion.primary_metric_of(checked)  # refused here, before a run, rather than after logging the model
    return checked


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
    per_genre_table: Path | None = None,
) -> RegistrationResult:
    """One MLflow run with params, metrics, artifacts and the generator; register it as a new version of
    ``model_name``, tagged with its metrics and the floors' verdicts; alias ``challenger`` on it, and
    ``champion`` too when the gate (``champion``) says so.

    ``artifact_location`` is where an sqlite store's artifacts go; a tracking server keeps them where its
    ``--artifacts-destination`` says (served through it, so every machine of a team reads the same ones).
    ``per_genre_table`` (pandas "split" JSON) is logged as an MLflow table when the file exists.
    """
    genres = [str(genre) for genre in genres]
    if len(genres) != generator.arch.num_genres or len(set(genres)) != len(genres):
        raise ValueError(
            f"genres must name each of the generator's {generator.arch.num_genres} classes once, got {genres}"
        )
    checked_metrics = _check_metrics(metrics, champion)
    artifact_paths = [Path(path) for path in artifacts]
    missing = [str(path) for path in artifact_paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"artifacts {missing} do not exist; write them (e.g. run the evaluation) first"
        )
    run_params = flatten_params(params)
    genres_json = json.dumps(genres)
    if run_params.get(GENRES_KEY, genres_json) != genres_json:
        raise ValueError(f"params[{GENRES_KEY!r}] = {run_params[GENRES_KEY]} contradicts genres={genres}")
    run_params[GENRES_KEY] = genres_json
    run_params.update(flatten_params(generator.arch.to_dict(), prefix="generator."))

    local_artifacts = None if is_tracking_server(tracking_uri) else Path(artifact_location)

    import mlflow

    from album_pipeline.registry.packaging import log_generator

    with store_session(tracking_uri, writes=True, artifact_location=local_artifacts):
        if local_artifacts is not None:
            adopt_moved_artifacts(tracking_uri, local_artifacts)
        client = _client(tracking_uri)
        with _using_tracking_uri(tracking_uri):
            if mlflow.active_run() is not None:
                raise RuntimeError(
                    f"an MLflow run ({mlflow.active_run().info.run_id}) is already active in this process; "
                    "end it before registering, so the generator is not logged into an unrelated run"
                )
            experiment_id = experiment_id_for(client, experiment_name, local_artifacts)
            with mlflow.start_run(experiment_id=experiment_id, tags=dict(tags or {})) as run:
                mlflow.log_params(run_params)
                mlflow.log_metrics(checked_metrics)
                _log_per_genre_table(per_genre_table)
                for path in artifact_paths:
                    mlflow.log_artifact(str(path))
                model_info = log_generator(generator, genres, registered_model_name=model_name)
        version = str(model_info.registered_model_version)
        genre_tags = {GENRES_KEY: genres_json}
        return apply_gate(client, model_name, version, run.info.run_id, genre_tags, checked_metrics, champion)


def _log_per_genre_table(path: Path | None) -> None:
    """The evaluation's per-genre table as an MLflow table (shown in the run's UI), if it was written."""
    if path is None:
        return
    if not Path(path).is_file():
        logger.warning("no per-genre table at %s; the MLflow run gets none (rerun the evaluation)", path)
        return
    import mlflow
    import pandas as pd

    table = pd.read_json(path, orient="split")
    if "genre" not in table.columns:  # MLflow drops the index, which names the genres
        table = table.rename_axis("genre").reset_index()
    mlflow.log_table(table, artifact_file=Path(path).name)


def evaluation_artifacts(layout: HomeLayout) -> list[Path]:
    """The evaluation's files that exist, to log beside its metrics (metrics.json is always there)."""
    optional = [layout.evaluation_grid, layout.evaluation_near_copies_grid]
    return [layout.evaluation_metrics, *(path for path in optional if path.is_file())]


def is_tracking_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme.lower() in ("http", "https")


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
        if alias == CHAMPION_ALIAS and CHALLENGER_ALIAS in aliases:
            raise NoChampionYet(
                f"no version of {model_name!r} has passed the quality floors yet, so none is champion (the "
                f"floor.* tags of models:/{model_name}@{CHALLENGER_ALIAS} say why); train a better generator "
                f"and register it, or load models:/{model_name}@{CHALLENGER_ALIAS} explicitly"
            ) from error
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
