import os

import pytest

# Keep torch from oversubscribing the two cores when several tests spawn work.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _no_stray_outputs(tmp_path, monkeypatch):
    """Run every test from an empty folder so nothing (mlruns/, .album_pipeline/) lands in the checkout."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for name in (
        "ALBUM_PIPELINE_HOME",
        "NAPSTER_API_URL",
        "NAPSTER_API_KEY",
        "OMACIR_URL",
        "NAPSTER_IMAGE_HOSTS",
        "MLFLOW_TRACKING_URI",
        "DAGSTER_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    yield workdir
