"""Projection generators at 128 and 256 px go through the registry as the seed's do (issue 23): registered as
data only, loaded back as the champion, drawn by the pyfunc and served by `mlflow models serve`."""

from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from album_pipeline.model.networks import GanArchitecture
from album_pipeline.model.projection import ProjectionGenerator
from album_pipeline.model.sampling import draw_covers, parse_genre_mix
from album_pipeline.registry.mlflow_registry import load_champion
from album_pipeline_tests.registry.mlflow_process import search_path
from album_pipeline_tests.registry.test_model_serving import post_records, serving
from album_pipeline_tests.registry.test_packaging import GENRES, register_tiny_generator

MODEL = "projection_generator"
REQUEST = [
    {"genre": "jazz", "count": 2, "seed": 3, "codes": []},
    {"genre": "rock:0.5,classical:0.5", "count": 1, "seed": 4, "codes": []},
]


def expected_covers(generator) -> np.ndarray:
    jazz = draw_covers(generator, np.tile(parse_genre_mix("jazz", GENRES), (2, 1)), seed=3)
    mix = draw_covers(generator, parse_genre_mix("rock:0.5,classical:0.5", GENRES)[None], seed=4)
    return np.concatenate([jazz, mix])


def decoded(texts) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(text)))) for text in texts])


@pytest.fixture(scope="module", params=[128, 256], ids=["128px", "256px"])
def registered(request, tmp_path_factory):
    arch = GanArchitecture(
        architecture="projection",
        num_genres=len(GENRES),
        noise_dim=8,
        generator_width=64,
        discriminator_width=4,
        resolution=request.param,
    )
    root = tmp_path_factory.mktemp(f"projection-{request.param}")
    return (request.param, root, *register_tiny_generator(root, MODEL, arch=arch))


def test_the_champion_round_trips_and_the_pyfunc_draws_its_covers(registered):
    import mlflow.pyfunc

    resolution, _, uri, generator, folder = registered
    loaded, genres = load_champion(uri, MODEL)
    assert isinstance(loaded, ProjectionGenerator) and loaded.arch == generator.arch and genres == GENRES
    assert all(
        torch.equal(value, loaded.state_dict()[name]) for name, value in generator.state_dict().items()
    )
    covers = mlflow.pyfunc.load_model(str(folder)).predict(pd.DataFrame(REQUEST))
    images = decoded(covers["png_base64"])
    assert images.shape == (3, resolution, resolution, 3)
    assert np.array_equal(images, expected_covers(generator))


@pytest.mark.integration
def test_mlflow_models_serve_returns_its_covers(registered):
    if shutil.which("mlflow", path=search_path()) is None:
        pytest.skip("the mlflow CLI is not installed")
    resolution, root, uri, generator, _ = registered
    with serving(root, uri, MODEL) as url:
        status, payload = post_records(url, REQUEST)
    assert status == 200, payload
    images = decoded(row["png_base64"] for row in payload["predictions"])
    assert images.shape == (3, resolution, resolution, 3)
    assert np.array_equal(images, expected_covers(generator))
