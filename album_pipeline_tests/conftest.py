import os

import pytest

from album_pipeline import settings

# Keep torch from oversubscribing the two cores when several tests spawn work.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# Every variable the pipeline reads (settings names each one *_VAR), and Dagster's own home.
PIPELINE_ENVIRONMENT = tuple(
    sorted(
        value for name, value in vars(settings).items() if name.endswith("_VAR") and isinstance(value, str)
    )
) + ("DAGSTER_HOME",)


@pytest.fixture(autouse=True)
def _no_stray_outputs(tmp_path, monkeypatch):
    """Run every test from an empty folder, with none of the pipeline's variables set from outside, so that
    nothing (mlruns/, .album_pipeline/) lands in the checkout and no test reaches a real service."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for name in PIPELINE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    yield workdir
