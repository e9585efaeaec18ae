"""`dagster dev` on the project's instance settings, serving the real definitions against the loopback
emulators: the asset graph shows the labelled crawls with their kinds, owners and descriptions, a crawl
launched from its page runs to success, and its counts per genre render as a table."""

from __future__ import annotations

import re

import pytest

from album_pipeline.defs.labeled import napster_covers
from album_pipeline.defs.operations import OWNERS
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.settings import HOME_VAR
from album_pipeline.testing.emulators.composition import running_emulators
from album_pipeline_tests.browser.browsing import PLAYWRIGHT_MISSING, screenshot
from album_pipeline_tests.dagster_dev import dagster_dev, stand_in_home
from album_pipeline_tests.registry.mlflow_process import free_port

sync_api = pytest.importorskip("playwright.sync_api", reason=PLAYWRIGHT_MISSING)
expect = sync_api.expect

pytestmark = pytest.mark.integration

LOCATION = "album_pipeline.definitions"  # workspace.yaml's module and location name
ASSET = "napster_covers"  # one crawl: seconds against the emulators with its default config
ALBUMS_PER_GENRE = 4
# Launching a run starts a process that imports the definitions (torch, mlflow) before the crawl begins.
RUN_TIMEOUT_MS = 240_000


@pytest.fixture
def dagster_ui(tmp_path, monkeypatch) -> str:
    """The webserver's address, `dagster dev` running on a temporary home with the pipeline pointed at the
    emulators."""
    home = stand_in_home(tmp_path / "dagster_home")
    # The community sign-up dialog a first visit on localhost shows, as if already dismissed.
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    monkeypatch.chdir(home)  # the instance's storage is relative to where dagster dev runs
    with running_emulators(
        tmp_path / "emulator_cache",
        albums_per_genre=ALBUMS_PER_GENRE,
        archive_letters=("a",),
        images_per_archive=10,
        release_groups_per_genre=ALBUMS_PER_GENRE,
        musicbrainz_rate_limit=None,
    ) as emulators:
        environment = {**emulators.environment(), HOME_VAR: str(tmp_path / "pipeline_home")}
        port = free_port()
        with dagster_dev(home, 240, module=LOCATION, port=port, environment=environment):
            yield f"http://127.0.0.1:{port}"


def test_the_asset_graph_launches_a_crawl_that_succeeds_and_shows_its_metadata(dagster_ui, page):
    page.goto(f"{dagster_ui}/locations/{LOCATION}/asset-groups/labeled")
    for name in ("napster_covers", "musicbrainz_covers", "labeled_manifest"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("Python", exact=True).first).to_be_visible()  # the crawls' kind
    expect(page.get_by_text("Parquet", exact=True).first).to_be_visible()  # the manifest's
    expect(page.get_by_text("Never materialized").first).to_be_visible()  # asset status loaded
    screenshot(page, "dagster-asset-graph")

    page.goto(f"{dagster_ui}/assets/{ASSET}")
    (spec,) = napster_covers.specs
    expect(page.get_by_text(spec.description.splitlines()[0])).to_be_visible()
    expect(page.get_by_text(OWNERS[0].removeprefix("team:"), exact=True)).to_be_visible()
    expect(page.get_by_text("Python", exact=True)).to_be_visible()
    screenshot(page, "dagster-asset")

    page.get_by_role("button", name=re.compile(r"Materialize$")).click()
    launched = page.get_by_text(re.compile(r"^Launched run \w+$"))
    expect(launched).to_be_visible()
    short_run_id = launched.inner_text().split()[-1]
    page.goto(f"{dagster_ui}/runs")
    page.get_by_role("link", name=short_run_id).first.click()
    expect(page.get_by_text(short_run_id).first).to_be_visible()
    outcome = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(outcome).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert outcome.inner_text() == "Success", "the run did not succeed: see the failure screenshot"
    expect(page.get_by_text("RUN_SUCCESS")).to_be_visible()
    screenshot(page, "dagster-run")

    page.goto(f"{dagster_ui}/assets/{ASSET}")
    per_genre = page.get_by_role("row").filter(has=page.get_by_role("cell", name="per_genre", exact=True))
    table = per_genre.get_by_role("table")
    expect(table.get_by_role("columnheader", name="genre")).to_be_visible()
    for genre in DEFAULT_GENRES:
        expect(table.get_by_role("row", name=f"{genre} {ALBUMS_PER_GENRE}", exact=True)).to_be_visible()
    per_genre.scroll_into_view_if_needed()
    screenshot(page, "dagster-asset-metadata")
