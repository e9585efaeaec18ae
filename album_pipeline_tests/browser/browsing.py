"""What the browser tests share: where chromium is, why they skip, and where their screenshots go."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from album_pipeline_tests.dagster_dev import REPOSITORY

# A chromium other than the one on PATH (Debian's `chromium` package, which `.ci/run` installs).
CHROMIUM_VAR = "ALBUM_PIPELINE_CHROMIUM"
# Files for people to look at; the folder is gitignored.
SCREENSHOTS = REPOSITORY / "test-artifacts" / "browser"
PLAYWRIGHT_MISSING = "Playwright is not installed (it comes with `pip install -e '.[test]'`)"
# Pages of a server still importing torch and mlflow on a busy two-core machine take a while to fill in.
UI_TIMEOUT_MS = 90_000


def chromium_executable() -> str | None:
    """The chromium to drive: $ALBUM_PIPELINE_CHROMIUM when set (it must exist), else `chromium` on PATH."""
    chosen = os.environ.get(CHROMIUM_VAR, "").strip()
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise FileNotFoundError(
                f"{CHROMIUM_VAR}={chosen!r} is not an executable; unset it or fix the path"
            )
        return found
    return shutil.which("chromium")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return PLAYWRIGHT_MISSING
    if chromium_executable() is None:
        return (
            "no chromium on PATH: install Debian's `chromium` package (as `.ci/run` does) or point "
            f"{CHROMIUM_VAR} at a chromium executable"
        )
    return None


def screenshot(page, name: str) -> Path:
    """A full-window screenshot as test-artifacts/browser/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
