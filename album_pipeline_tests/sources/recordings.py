"""Where the contract tests find the real services' recorded responses.

The recordings are other people's data (see PROVENANCE.md beside them) and are never copied into the project:
they live beside the checkout in ``<repo root>/../shared/reference/real-responses/``. A clone without that
folder skips the contract tests with a reason saying where the folder was looked for."""

import os
from pathlib import Path

import pytest

REAL_RESPONSES_VAR = "ALBUM_PIPELINE_REAL_RESPONSES"
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REAL_RESPONSES = REPOSITORY_ROOT.parent / "shared" / "reference" / "real-responses"


def real_responses_dir() -> Path:
    """The folder of recorded responses (``$ALBUM_PIPELINE_REAL_RESPONSES`` overrides the default); skips the
    calling test when it is absent."""
    override = os.environ.get(REAL_RESPONSES_VAR)
    folder = Path(override) if override else DEFAULT_REAL_RESPONSES
    if not folder.is_dir():
        pytest.skip(
            f"no recorded real responses at {folder}: put the shared reference folder there or set "
            f"{REAL_RESPONSES_VAR} to where it is"
        )
    return folder


def read_recording(relative_path: str) -> bytes:
    """The bytes of one recording, by its path inside the recordings folder (``napster/genres.json``); skips
    the calling test when that file is absent."""
    path = real_responses_dir() / relative_path
    if not path.is_file():
        pytest.skip(f"recording {relative_path} is missing from {path.parent}")
    return path.read_bytes()
