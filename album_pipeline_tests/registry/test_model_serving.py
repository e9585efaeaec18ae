"""`mlflow models serve` serves the registered champion: a real POST on loopback returns PNG covers.

The server runs MLflow's own CLI with ``--env-manager local``, so it imports album_pipeline from this
interpreter's environment (the pyfunc's loader module); the model itself holds only data.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import album_pipeline
from album_pipeline.model.sampling import draw_covers, parse_genre_mix
from album_pipeline_tests.registry.mlflow_process import free_port, running, search_path
from album_pipeline_tests.registry.test_packaging import GENRES, register_tiny_generator

pytestmark = pytest.mark.integration

MODEL = "served_generator"


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    uri, generator, _ = register_tiny_generator(root, MODEL, seed=1)
    return root, uri, generator


@pytest.fixture(scope="module")
def server(champion):
    root, uri, _ = champion
    with serving(root, uri, MODEL) as url:
        yield url


@contextmanager
def serving(root: Path, uri: str, model: str) -> Iterator[str]:
    """`mlflow models serve` of ``models:/MODEL@champion`` in store ``uri`` on a free loopback port: its URL."""
    path = search_path()
    cli = shutil.which("mlflow", path=path)
    if cli is None or shutil.which("uvicorn", path=path) is None:
        pytest.skip("the mlflow CLI (and the uvicorn it serves with) is not installed")
    port = free_port()
    package_root = str(Path(album_pipeline.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": path,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = root / "serve.log"
    command = [cli, "models", "serve", "-m", f"models:/{model}@champion", "--env-manager", "local"]
    url = f"http://127.0.0.1:{port}"
    with running(
        [*command, "-h", "127.0.0.1", "-p", str(port)], ready_url=f"{url}/ping", log=log, cwd=root, env=env
    ):
        yield url


def post_records(url: str, records: list[dict]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_records": records}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_post_returns_the_covers_asked_for_as_pngs(server, champion):
    generator = champion[2]
    records = [
        {"genre": "jazz", "count": 3, "seed": 7, "codes": []},
        {"genre": "rock:0.5,classical:0.5", "count": 2, "seed": 1, "codes": [0.5, -0.5]},
    ]
    status, payload = post_records(server, records)
    assert status == 200, payload
    predictions = payload["predictions"]
    assert [(row["request"], row["cover"]) for row in predictions] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    images = []
    for row in predictions:
        data = base64.b64decode(row["png_base64"])
        assert data.startswith(b"\x89PNG")
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
            images.append(np.asarray(image))
    jazz = draw_covers(generator, np.tile(parse_genre_mix("jazz", GENRES), (3, 1)), seed=7)
    mix = np.tile(parse_genre_mix("rock:0.5,classical:0.5", GENRES), (2, 1))
    expected = np.concatenate([jazz, draw_covers(generator, mix, seed=1, codes=[0.5, -0.5])])
    assert np.array_equal(np.stack(images), expected)  # the served covers are the registered generator's


def test_an_unknown_genre_is_a_400_naming_the_valid_ones(server):
    status, payload = post_records(server, [{"genre": "polka", "count": 1}])
    assert status == 400
    assert "unknown genre 'polka'; the model knows rock, jazz, classical" in payload["message"]
