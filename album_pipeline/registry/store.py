"""The MLflow store behind the registry: checked before use, bounded in time, and movable with its home.

MLflow left to itself waits minutes on an unreachable server (7 retries with exponential backoff), retries
opening an sqlite file it cannot create for about 100 s, and answers an unknown URI scheme with a traceback.
``store_session`` wraps every registry call: it bounds MLflow's HTTP retries and timeout (only where the user
has not set them), checks the store first, and turns the failures a user can cause into one sentence
(``RegistryStoreError``, a ConfigurationError).

MLflow records artifact locations as absolute ``file://`` URIs in the store, and has no store-relative form
for an sqlite store (only a tracking server's ``mlflow-artifacts:`` proxy is relative). A home copied or moved
elsewhere would keep reading, and writing, the original's ``mlartifacts/``; ``adopt_moved_artifacts`` points
those locations at the home the store now lies in.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from album_pipeline.layout import MLFLOW_DB_FILE, HomeLayout
from album_pipeline.settings import MLFLOW_URI_VAR, ConfigurationError
from album_pipeline.sources.http import redact_url

logger = logging.getLogger(__name__)

# MLflow's own settings (mlflow/environment_variables.py), used only where the user has not set them: a
# refused connection then fails in seconds, a stalled server within a minute, instead of after minutes.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
REACHABLE_TIMEOUT_S = 5.0
# The columns of MLflow 3's sqlite schema that hold artifact locations (measured: nothing else names them).
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)
# What a server that is down behind a proxy, restarting or overloaded answers (RFC 9110, 15.6); a 500 is the
# server's own answer about the request, and stays MLflow's message.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
UNAVAILABLE_ERROR_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED"})
_STATUS_IN_MESSAGE = re.compile(r"failed with error code (\d{3})\b")
_WHAT_TO_DO = f"set {MLFLOW_URI_VAR} to a working store, or unset it to use the home's own mlflow.db"


class RegistryStoreError(ConfigurationError):
    """The MLflow store cannot be used: an unknown scheme, unreachable, read-only or damaged."""


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI (absolute or relative to the CWD); None for other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = unquote(tracking_uri[len("sqlite:///") :].split("?", 1)[0])
    return None if path in ("", ":memory:") else Path(path).resolve()


@contextmanager
def store_session(
    tracking_uri: str, *, writes: bool, artifact_location: Path | None = None
) -> Iterator[None]:
    """Check the store, bound MLflow's waits, and turn store failures inside the block into one sentence.

    ``writes``: the block registers (the store and ``artifact_location`` must be writable), rather than reads.
    """
    saved = {name: os.environ.get(name) for name in HTTP_BOUNDS}
    for name, value in HTTP_BOUNDS.items():
        os.environ.setdefault(name, value)
    try:
        check_store(tracking_uri, writes=writes, artifact_location=artifact_location)
        with translated_store_errors(tracking_uri):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def check_store(tracking_uri: str, *, writes: bool, artifact_location: Path | None = None) -> None:
    """RegistryStoreError unless MLflow can open the store (for ``writes``: write it and the artifacts)."""
    scheme = urlparse(tracking_uri).scheme.lower()
    if scheme == "sqlite":
        database = sqlite_path(tracking_uri)
        if database is not None:
            _check_sqlite(database, writes)
    elif scheme in ("http", "https"):
        _check_reachable(tracking_uri)
    if writes and artifact_location is not None and not _can_create(Path(artifact_location)):
        raise RegistryStoreError(
            f"MLflow artifacts cannot be written to {artifact_location}: the folder is read-only; make it "
            "writable, or set ALBUM_PIPELINE_HOME to a writable folder"
        )


def _can_create(path: Path) -> bool:
    """Whether ``path`` is writable, or could be created under its nearest existing folder."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return os.access(existing, os.W_OK) and (existing.is_dir() or existing == path)


def _check_sqlite(database: Path, writes: bool) -> None:
    folder = database.parent
    if not database.exists():
        if not _can_create(folder):
            raise RegistryStoreError(
                f"the MLflow store {database} cannot be created: {folder} is not a writable folder; make it "
                f"writable, or {_WHAT_TO_DO}"
            )
        return
    if writes and not (os.access(database, os.W_OK) and os.access(folder, os.W_OK)):
        raise RegistryStoreError(
            f"the MLflow store {database} is read-only (sqlite needs to write the file and its folder); make "
            f"both writable, or {_WHAT_TO_DO}"
        )
    try:
        with _open_sqlite(database, read_only=True) as connection:
            connection.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as error:
        raise RegistryStoreError(
            f"the MLflow store {database} cannot be read ({error}); if it is damaged, move it aside to start "
            "an empty registry (registered models are then lost), or restore it from a copy"
        ) from None


@contextmanager
def _open_sqlite(database: Path, *, read_only: bool) -> Iterator[sqlite3.Connection]:
    uri = database.as_uri() + ("?mode=ro" if read_only else "")
    connection = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        yield connection
    finally:
        connection.close()


def _check_reachable(tracking_uri: str) -> None:
    """One quick request: any HTTP answer (even 404) means a server is there; MLflow's calls follow."""
    import requests

    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=REACHABLE_TIMEOUT_S).close()
    except requests.exceptions.SSLError:
        return  # a TLS problem is MLflow's to judge (MLFLOW_TRACKING_INSECURE_TLS, certificates)
    except (requests.ConnectionError, requests.Timeout) as error:
        raise RegistryStoreError(
            f"the MLflow tracking server at {redact_url(tracking_uri)} cannot be reached "
            f"({type(error).__name__}); start it, or {_WHAT_TO_DO}"
        ) from None


def _caused_by_network(error: BaseException) -> bool:
    """A requests/urllib3 error anywhere in the chain: refused, reset, timed out, or retries exhausted."""
    import requests
    import urllib3

    seen = error
    while seen is not None:
        if isinstance(seen, requests.RequestException | urllib3.exceptions.HTTPError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _answered_unavailable(error: BaseException) -> bool:
    """The server (or a proxy before it) kept answering "unavailable" until MLflow's retries ran out.

    MLflow before 3.18 raised the retries' ``requests`` error (seen by ``_caused_by_network``); 3.18 returns
    the last response and raises an MlflowException that names its status in the message and maps 503 and 504
    to an error code (502 maps to INTERNAL_ERROR, so only the message tells it apart from a 500).
    """
    from mlflow.exceptions import MlflowException

    if not isinstance(error, MlflowException):
        return False
    if error.error_code in UNAVAILABLE_ERROR_CODES:
        return True
    answered = _STATUS_IN_MESSAGE.search(str(error.message))
    return answered is not None and int(answered.group(1)) in UNAVAILABLE_STATUSES


@contextmanager
def translated_store_errors(tracking_uri: str) -> Iterator[None]:
    """An unknown scheme, a store that stops answering or refuses a write: one RegistryStoreError."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except UnsupportedModelRegistryStoreURIException:
        # MLflow raises it (or a KeyError in its traceback) when a client is built for an unknown scheme.
        raise RegistryStoreError(
            f"the MLflow store URI {redact_url(tracking_uri)!r} has a scheme MLflow does not support; "
            f"{_WHAT_TO_DO} (e.g. sqlite:////abs/path/mlflow.db or http://host:5000)"
        ) from None
    except MlflowException as error:
        if not (_caused_by_network(error) or _answered_unavailable(error)):
            raise
        raise RegistryStoreError(
            f"the MLflow tracking server at {redact_url(tracking_uri)} stopped answering; check that it is "
            f"up, or {_WHAT_TO_DO}"
        ) from None
    except OperationalError as error:
        raise RegistryStoreError(
            f"the MLflow store {redact_url(tracking_uri)} failed ({error.orig}); check that it is writable "
            f"and not damaged, or {_WHAT_TO_DO}"
        ) from None


def home_artifacts_dir(tracking_uri: str) -> Path | None:
    """The ``mlartifacts/`` beside an sqlite store kept in a pipeline home, where its artifacts belong."""
    database = sqlite_path(tracking_uri)
    if database is None or database.name != MLFLOW_DB_FILE:
        return None
    return HomeLayout(database.parent).mlflow_artifacts_dir


def adopt_moved_artifacts(tracking_uri: str, artifact_location: Path) -> int:
    """Point artifact locations recorded under another folder's ``mlartifacts/`` at ``artifact_location``.

    Only for an sqlite store lying in the same home as ``artifact_location``, and only for an old folder whose
    runs the home holds copies of: the home was copied or moved, rather than a store shared by several homes
    or a copy without its artifacts. Returns how many locations were rewritten.
    """
    database = sqlite_path(tracking_uri)
    artifact_location = Path(artifact_location).resolve()
    if (
        database is None
        or not database.is_file()
        or database.parent != artifact_location.parent
        or not artifact_location.is_dir()
        or not os.access(database, os.W_OK)
    ):
        return 0
    new_root = artifact_location.as_uri()
    with _open_sqlite(database, read_only=False) as connection, connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:
            return 0
        old_roots = {
            location
            for (location,) in connection.execute("SELECT artifact_location FROM experiments")
            if _foreign_root(location, artifact_location)
            and _holds_copies(connection, tables, location, artifact_location)
        }
        rewritten = 0
        for old_root in old_roots:
            for table, column in ARTIFACT_COLUMNS:
                if table in tables:
                    rewritten += connection.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 (fixed names)
                        f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                        (new_root, len(old_root) + 1, old_root, len(old_root) + 1, old_root + "/"),
                    ).rowcount
        if rewritten:
            logger.warning(
                "the MLflow store %s recorded artifacts under %s (the home was copied or moved); "
                "%d locations now point at %s",
                database,
                ", ".join(sorted(old_roots)),
                rewritten,
                artifact_location,
            )
    return rewritten


def _holds_copies(
    connection: sqlite3.Connection, tables: set[str], old_root: str, artifact_location: Path
) -> bool:
    """Whether a run recorded under ``old_root`` has its artifacts under ``artifact_location`` too."""
    if "runs" not in tables:
        return False
    prefix = old_root + "/"
    for (uri,) in connection.execute(
        "SELECT artifact_uri FROM runs WHERE substr(artifact_uri, 1, ?) = ?", (len(prefix), prefix)
    ):
        if (artifact_location / unquote(uri[len(prefix) :])).exists():
            return True
    return False


def _foreign_root(location: str | None, artifact_location: Path) -> bool:
    """Whether ``location`` is a local ``.../mlartifacts`` folder other than ``artifact_location``."""
    if not location:
        return False
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return False
    path = Path(unquote(parsed.path) if parsed.scheme else location)
    return path.name == artifact_location.name and path.resolve() != artifact_location
