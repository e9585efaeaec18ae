"""`mlflow server` on a store where the pipeline's own registration asset registered a generator as champion:
the model registry shows the model with its `champion` alias, and the run that version came from shows the
evaluation's grid in its artifacts."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.layout import HomeLayout
from album_pipeline.metrics.grids import save_genre_grid
from album_pipeline.model.checkpoint import load_generator
from album_pipeline.registry.champion import CHAMPION_ALIAS
from album_pipeline.registry.mlflow_registry import sqlite_tracking_uri
from album_pipeline_tests.browser.browsing import PLAYWRIGHT_MISSING, screenshot
from album_pipeline_tests.registry.gate_metrics import passing_metrics
from album_pipeline_tests.registry.mlflow_process import (
    free_port,
    mlflow_cli,
    running,
    tracking_server_arguments,
)
from album_pipeline_tests.registry.test_registration_asset import materialize, write_home

sync_api = pytest.importorskip("playwright.sync_api", reason=PLAYWRIGHT_MISSING)
expect = sync_api.expect

pytestmark = [
    pytest.mark.integration,
    # The registration runs in process while Playwright's event loop runs in this thread; Dagster's cleanup
    # of its own loop then steps aside, as its comment there says, leaving this warning.
    pytest.mark.filterwarnings("ignore:coroutine 'BaseEventLoop.shutdown_asyncgens' was never awaited"),
]


@pytest.fixture
def registered(tmp_path) -> tuple[HomeLayout, dict]:
    """A home whose evaluation drew a real grid, registered through the `registered_generator` asset."""
    layout = write_home(tmp_path / "home")
    generator = load_generator(layout.final_checkpoint("finetuned"))
    save_genre_grid(generator, DEFAULT_GENRES, layout.evaluation_grid, columns=4)
    metadata = materialize(layout, passing_metrics())
    assert metadata["is_champion"], metadata["champion_decision"]
    return layout, metadata


@pytest.fixture
def mlflow_ui(registered, tmp_path) -> str:
    command = mlflow_cli()
    if command is None:
        pytest.skip("the `mlflow` command is not installed (it comes with `pip install mlflow`)")
    layout, _ = registered
    port = free_port()
    arguments = tracking_server_arguments(command, sqlite_tracking_uri(layout.mlflow_db), port)
    url = f"http://127.0.0.1:{port}"
    with running(arguments, ready_url=f"{url}/health", log=tmp_path / "mlflow_server.log", cwd=tmp_path):
        yield url


def _take_up_the_new_registry_ui(page) -> None:
    """MLflow's first-visit dialog about the new registry UI, taken up wherever it shows: that UI has aliases."""
    page.add_locator_handler(
        page.get_by_role("dialog").filter(has_text="new Model Registry UI"),
        lambda dialog: dialog.get_by_role("button", name="Try it now").click(),
    )


def _close_the_assistant(page) -> None:
    """MLflow's assistant side panel, closed so that the screenshots show the page. Not a locator handler: one
    handler's click would wait on the dialog above while handlers cannot nest."""
    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.is_visible():
        close.click()


def test_the_registry_shows_the_champion_and_its_runs_grid(mlflow_ui, registered, page):
    layout, metadata = registered
    model_name, version = re.fullmatch(r"models:/(.+)/(\d+)", metadata["model_uri"]).groups()
    _take_up_the_new_registry_ui(page)

    page.goto(f"{mlflow_ui}/#/models")
    page.get_by_role("link", name=model_name, exact=True).click()
    version_link = page.get_by_role("link", name=f"Version {version}", exact=True)
    version_row = page.get_by_role("row").filter(has=version_link)
    expect(version_row.get_by_text(re.compile(rf"^@\s*{CHAMPION_ALIAS}$"))).to_be_visible()
    _close_the_assistant(page)
    screenshot(page, "mlflow-champion")

    version_link.click()
    page.locator(f'a[href*="/runs/{metadata["mlflow_run_id"]}"]').first.click()
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text(layout.evaluation_grid.name, exact=True).click()
    preview = page.get_by_role("img", name=layout.evaluation_grid.name)
    expect(preview).to_be_visible()
    # The preview shows the grid itself, loaded in full: its decoded width is the file's.
    expect(preview).to_have_js_property("complete", True)
    with Image.open(layout.evaluation_grid) as grid:
        assert preview.evaluate("image => image.naturalWidth") == grid.width
    screenshot(page, "mlflow-run-grid")
