"""A team's instance (deploy/dagster-team.yaml): runs, event logs and schedules in PostgreSQL, still there when
another process opens the instance. Needs a PostgreSQL server (ALBUM_PIPELINE_TEST_POSTGRES_URL; `.ci/run`
starts one); each test gets a database of its own, dropped afterwards."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.code_location import InProcessCodeLocation
from dagster._core.scheduler.instigation import InstigatorStatus
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from psycopg2 import sql

from album_pipeline.defs.instance import (
    POOL_LIMITS,
    POSTGRES_URL_VAR,
    set_pool_limits,
    team_instance_settings,
)
from album_pipeline_tests.dagster_dev import REPOSITORY

TEAM_YAML = REPOSITORY / "deploy" / "dagster-team.yaml"
SERVER_VAR = "ALBUM_PIPELINE_TEST_POSTGRES_URL"
PSYCOPG2_SCHEME = "postgresql+psycopg2"
needs_postgres = pytest.mark.skipif(
    not os.environ.get(SERVER_VAR),
    reason=f"{SERVER_VAR} is unset: point it at a PostgreSQL server whose user may create databases "
    "(.ci/run starts one and sets it)",
)


def test_the_checked_in_team_yaml_says_what_team_instance_settings_says():
    assert yaml.safe_load(TEAM_YAML.read_text()) == team_instance_settings()


@pytest.fixture
def team_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server, dropped (connections and all) afterwards."""
    server = os.environ[SERVER_VAR]
    name = f"album_pipeline_team_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dagster-postgres brings psycopg2.
        yield urlsplit(server)._replace(scheme=PSYCOPG2_SCHEME, path=f"/{name}").geturl()
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


@pytest.fixture
def team_home(tmp_path, team_database, monkeypatch) -> Path:
    """A Dagster home holding the checked-in team dagster.yaml, its URL variable set to the test database."""
    home = tmp_path / "team_home"
    home.mkdir()
    shutil.copy(TEAM_YAML, home / "dagster.yaml")
    monkeypatch.setenv(POSTGRES_URL_VAR, team_database)
    return home


@dg.asset
def stand_in_covers() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"covers": 3})


@dg.asset(deps=[stand_in_covers])
def stand_in_manifest() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 3})


def _start_weekly_recrawl(instance: dg.DagsterInstance) -> tuple[str, str]:
    """Starts the project's weekly recrawl schedule as the UI's toggle does; returns its state's ids."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="album_pipeline.definitions", attribute="defs"),
        location_name="album_pipeline",
    )
    with InProcessCodeLocation(origin, instance=instance) as location:
        (repository,) = location.get_repositories().values()
        schedule = repository.get_schedule("weekly_labeled_recrawl")
        instance.start_schedule(schedule)
        return schedule.get_remote_origin_id(), schedule.selector_id


@needs_postgres
def test_runs_materializations_schedules_and_pools_outlive_the_instance_that_wrote_them(team_home):
    with dg.DagsterInstance.from_config(str(team_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        set_pool_limits(instance)
        run_id = dg.materialize([stand_in_covers, stand_in_manifest], instance=instance).run_id
        schedule_ids = _start_weekly_recrawl(instance)

    with dg.DagsterInstance.from_config(str(team_home)) as reopened:
        assert reopened.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        for key, name, value in (("stand_in_covers", "covers", 3), ("stand_in_manifest", "rows", 3)):
            event = reopened.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None and event.run_id == run_id, key
            assert event.asset_materialization.metadata[name].value == value
        state = reopened.get_instigator_state(*schedule_ids)
        assert state is not None and state.status == InstigatorStatus.RUNNING
        explicit = {
            p.name: p.limit for p in reopened.event_log_storage.get_pool_limits() if not p.from_default
        }
        assert explicit == POOL_LIMITS
        assert reopened.get_concurrency_config().run_queue_config.max_concurrent_runs == 4


def test_an_unset_postgres_url_is_refused_naming_the_variable(tmp_path, monkeypatch):
    home = tmp_path / "team_home"
    home.mkdir()
    shutil.copy(TEAM_YAML, home / "dagster.yaml")
    monkeypatch.delenv(POSTGRES_URL_VAR, raising=False)
    with pytest.raises(Exception, match=POSTGRES_URL_VAR):
        dg.DagsterInstance.from_config(str(home))
