"""A headless chromium for the browser tests, or a skip that says what is missing; a failing test leaves a
screenshot of where it stopped."""

from __future__ import annotations

import pytest

from album_pipeline_tests.browser.browsing import (
    UI_TIMEOUT_MS,
    chromium_executable,
    missing_browser,
    screenshot,
)

CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed


@pytest.fixture(scope="session")
def browser():
    reason = missing_browser()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        # CI runs as root, where chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(
            executable_path=chromium_executable(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        if request.node.stash.get(CALL_FAILED, False):
            screenshot(opened, f"{request.node.name}-failure")
        context.close()
