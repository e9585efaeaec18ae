"""The registered generator is data only: it round-trips, serves covers, and a tampered copy runs nothing.

Each tampering test plants a pickle whose unpickling would create a marker file, and asserts both that loading
fails with a clear InvalidModelURI and that the marker never appears.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from album_pipeline.model.architectures import build_generator
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.model.sampling import draw_covers, parse_genre_mix
from album_pipeline.registry.mlflow_registry import (
    InvalidModelURI,
    load_champion,
    log_and_register,
    sqlite_tracking_uri,
)
from album_pipeline.registry.packaging import DESCRIPTION_FILE, MODEL_DATA, WEIGHTS_FILE, _sha256
from album_pipeline_tests.registry.gate_metrics import passing_metrics

GENRES = ("rock", "jazz", "classical")
MODEL = "packaged_generator"


class Plant:
    """Unpickling this creates ``marker``: proof that loading ran code from the artifact."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def register_tiny_generator(
    root: Path, model_name: str, seed: int = 0, arch: GanArchitecture | None = None
) -> tuple[str, nn.Module, Path]:
    """A tiny generator (the seed's unless ``arch`` says otherwise) registered as champion in an sqlite store
    under ``root``: (tracking URI, the generator, the logged model's folder in the artifact store)."""
    note = root / "note.txt"
    note.write_text("evaluation stand-in")
    torch.manual_seed(seed)
    arch = arch or GanArchitecture(num_genres=len(GENRES), generator_width=8, noise_dim=16)
    generator = build_generator(arch).eval()
    uri = sqlite_tracking_uri(root / "mlflow.db")
    log_and_register(
        tracking_uri=uri,
        experiment_name="packaging",
        artifact_location=root / "mlartifacts",
        model_name=model_name,
        generator=generator,
        genres=GENRES,
        params={},
        metrics=passing_metrics(),
        artifacts=[note],
    )
    (folder,) = [path.parent for path in (root / "mlartifacts").rglob("MLmodel")]
    return uri, generator, folder


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    return register_tiny_generator(tmp_path_factory.mktemp("packaging"), MODEL)


@pytest.fixture
def copy(registered, tmp_path) -> Path:
    """A copy of the logged model folder, for a test to tamper with."""
    return Path(shutil.copytree(registered[2], tmp_path / "model"))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code_ran"


def test_the_artifact_holds_weights_and_a_description_and_no_pickle(registered):
    folder = registered[2]
    data = folder / MODEL_DATA
    assert sorted(path.name for path in data.iterdir()) == [DESCRIPTION_FILE, WEIGHTS_FILE]
    assert not [path for path in folder.rglob("*") if path.suffix in (".pkl", ".pth", ".pt")]
    description = json.loads((data / DESCRIPTION_FILE).read_text())
    assert description["genres"] == list(GENRES) and description["arch"]["generator_width"] == 8
    assert description["weights_sha256"] == _sha256(data / WEIGHTS_FILE)
    flavors = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]
    assert set(flavors) == {"python_function"}
    assert flavors["python_function"]["loader_module"] == "album_pipeline.registry.packaging"


def test_the_champion_round_trips_through_the_registry(registered):
    uri, generator, _ = registered
    loaded, genres = load_champion(uri, MODEL)
    assert genres == GENRES and not loaded.training
    expected, actual = generator.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_the_pyfunc_serves_covers_as_base64_pngs(registered):
    import mlflow.pyfunc

    generator = registered[1]
    model = mlflow.pyfunc.load_model(str(registered[2]))
    request = pd.DataFrame(
        [
            {"genre": "jazz", "count": 2, "seed": 3, "codes": []},
            {"genre": "rock:0.5,classical:0.5", "count": 1, "seed": 4, "codes": [0.25, -1.0]},
        ]
    )
    covers = model.predict(request)
    assert covers[["request", "genre", "seed", "cover"]].values.tolist() == [
        [0, "jazz", 3, 0],
        [0, "jazz", 3, 1],
        [1, "rock:0.5,classical:0.5", 4, 0],
    ]
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(text)))) for text in covers["png_base64"]]
    jazz = draw_covers(generator, np.tile(parse_genre_mix("jazz", GENRES), (2, 1)), seed=3)
    mix = draw_covers(
        generator, parse_genre_mix("rock:0.5,classical:0.5", GENRES)[None], seed=4, codes=[0.25, -1]
    )
    assert np.array_equal(np.stack(images), np.concatenate([jazz, mix]))
    assert model.predict(request)["png_base64"].tolist() == covers["png_base64"].tolist()  # same seeds


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"genre": "polka", "count": 1}, "unknown genre 'polka'; the model knows rock, jazz, classical"),
        ({"genre": "jazz", "count": 0}, "count must be a whole number from 1 to 256"),
        ({"genre": "jazz", "count": 1, "codes": [3.0, 0.0]}, "codes must lie in [-1, 1]"),
    ],
)
def test_a_bad_request_is_one_sentence(registered, row, message):
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(registered[2]))
    with pytest.raises(MlflowException) as raised:
        model.predict(pd.DataFrame([row]))
    assert message in raised.value.message and raised.value.error_code == "INVALID_PARAMETER_VALUE"


def assert_refused(folder: Path, marker: Path, *fragments: str) -> None:
    """load_champion and MLflow's own pyfunc loader both refuse the folder; nothing planted ran."""
    import mlflow.pyfunc

    with pytest.raises(InvalidModelURI) as raised:
        load_champion("unused", MODEL, model_uri=str(folder))
    message = str(raised.value)
    assert all(fragment in message for fragment in fragments), message
    assert "register the generator again" in message and len(message) < 600
    if (
        yaml.safe_load((folder / "MLmodel").read_text())["flavors"]
        .get("python_function", {})
        .get("loader_module")
        == "album_pipeline.registry.packaging"
    ):
        with pytest.raises(InvalidModelURI):
            mlflow.pyfunc.load_model(str(folder))
    assert not marker.exists(), "loading ran code planted in the artifact"


def test_the_plant_would_run_if_unpickled(tmp_path):
    """The planted pickle is a real threat: the tests below mean something."""
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(Plant(marker)))
    assert marker.exists()


def test_tampered_weights_fail_their_hash(copy, marker):
    weights = copy / MODEL_DATA / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert_refused(copy, marker, "does not match the sha256")


@pytest.mark.parametrize("update_hash", [False, True])
def test_a_pickle_in_place_of_the_weights_is_never_unpickled(copy, marker, update_hash):
    data = copy / MODEL_DATA
    torch.save({"generator": Plant(marker)}, data / WEIGHTS_FILE)
    if update_hash:  # someone who can rewrite the weights can rewrite the JSON too
        description = json.loads((data / DESCRIPTION_FILE).read_text())
        description["weights_sha256"] = _sha256(data / WEIGHTS_FILE)
        (data / DESCRIPTION_FILE).write_text(json.dumps(description))
    assert_refused(copy, marker, "is not a safetensors file" if update_hash else "does not match the sha256")


def test_a_description_naming_another_loader_is_refused(copy, marker):
    path = copy / MODEL_DATA / DESCRIPTION_FILE
    description = json.loads(path.read_text())
    description["loader_module"] = "mlflow.pyfunc.model"
    path.write_text(json.dumps(description))
    assert_refused(copy, marker, "names the loader 'mlflow.pyfunc.model'")


def test_an_mlmodel_naming_another_loader_is_refused_before_it_is_imported(copy, marker):
    """The PythonModel route: MLmodel points at mlflow's cloudpickle loader and a planted python_model.pkl."""
    (copy / "python_model.pkl").write_bytes(pickle.dumps(Plant(marker)))
    mlmodel = yaml.safe_load((copy / "MLmodel").read_text())
    mlmodel["flavors"]["python_function"].update(
        loader_module="mlflow.pyfunc.model", python_model="python_model.pkl"
    )
    (copy / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    assert_refused(copy, marker, "names the loader 'mlflow.pyfunc.model'")


def test_a_weights_file_that_is_a_link_is_refused(copy, marker, tmp_path):
    weights = copy / MODEL_DATA / WEIGHTS_FILE
    real = tmp_path / "elsewhere.safetensors"
    shutil.move(weights, real)
    weights.symlink_to(real)
    assert_refused(copy, marker, "is not a regular file")


def test_a_version_registered_as_a_pickled_module_is_refused_with_the_way_out(registered, tmp_path):
    """What earlier releases registered: MLflow's pytorch flavour with the pickled Generator."""
    import mlflow.pytorch

    folder = tmp_path / "old"
    mlflow.pytorch.save_model(
        registered[1], str(folder), serialization_format="pickle", metadata={"genres": list(GENRES)}
    )
    with pytest.raises(InvalidModelURI, match="pickled PyTorch module.*register the generator again"):
        load_champion("unused", MODEL, model_uri=str(folder))


def test_the_registry_refuses_a_tampered_champion(registered, marker):
    uri, _, folder = registered
    weights = folder / MODEL_DATA / WEIGHTS_FILE
    original = weights.read_bytes()
    try:
        torch.save(Plant(marker), weights)
        with pytest.raises(InvalidModelURI, match="does not match the sha256"):
            load_champion(uri, MODEL)
    finally:
        weights.write_bytes(original)
    assert not marker.exists()
