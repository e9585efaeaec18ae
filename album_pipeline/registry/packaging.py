"""The registered generator as data only, and this module as the MLflow pyfunc loader that serves it.

MLflow's pytorch flavour pickles the ``nn.Module`` and a pyfunc ``PythonModel`` is pickled too, so whoever can
write to a shared tracking server could run code on every machine that loads the champion. Here the model's
data holds no code: ``generator.safetensors`` (the state dict) and ``generator.json`` (format, loader module,
architecture, genre names, sha256 of the weights), inside a pyfunc model whose ``loader_module`` is this
module; the code comes from the installed album_pipeline. Loading checks MLmodel, the JSON and the hash, then
reads the weights with safetensors (a header and raw tensors; nothing is unpickled or imported) into
``Generator(GanArchitecture(**arch))``.

The hash catches a torn or swapped weights file, not someone who rewrites the JSON as well; what keeps such a
writer from running code is that nothing here unpickles or imports what the artifact names. ``mlflow models
serve`` reads MLmodel itself and imports whichever loader module it names, so a served model is only as
trusted as its registry; album-pipeline's own loaders (``load_champion``, ``generate``) check MLmodel first.

Inner file names live here rather than in ``layout``: the artifact is read wherever MLflow downloads it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from album_pipeline.model.architectures import build_generator
from album_pipeline.model.networks import GanArchitecture, Generator
from album_pipeline.model.sampling import MAX_COUNT, draw_covers, encode_png, parse_genre_mix
from album_pipeline.registry.mlflow_registry import GENERATOR_ARTIFACT, GENRES_KEY, InvalidModelURI

FORMAT = "album_pipeline.generator/1"
LOADER_MODULE = __name__
DATA_DIR = "generator"  # MLflow copies it to data/generator inside the model
MODEL_DATA = f"data/{DATA_DIR}"  # the python_function flavour's `data` entry
WEIGHTS_FILE = "generator.safetensors"
DESCRIPTION_FILE = "generator.json"
MAX_DESCRIPTION_BYTES = 1 << 20  # a description is a few hundred bytes; anything huge is not one
MAX_COVERS_PER_CALL = 4 * MAX_COUNT  # one predict call holds all its covers in memory
OUTPUT_COLUMNS = ("request", "genre", "seed", "cover", "png_base64")
REREGISTER = "register the generator again (album-pipeline run --select registered_generator)"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_generator_data(folder: Path, generator: Generator, genres: Sequence[str]) -> Path:
    """Write the weights and their description into ``folder`` (created); the folder is returned."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # CPU and contiguous: safetensors stores raw buffers, and a loader may have no GPU.
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in generator.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT})
    description = {
        "format": FORMAT,
        "loader_module": LOADER_MODULE,
        "arch": generator.arch.to_dict(),
        GENRES_KEY: [str(genre) for genre in genres],
        "weights_sha256": _sha256(folder / WEIGHTS_FILE),
    }
    (folder / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    return folder


def model_signature(genres: Sequence[str], latent_dim: int):
    """The pyfunc's signature and an input example (a pure genre and a two-genre mix, codes fixed)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    inputs = Schema(
        [
            ColSpec(DataType.string, "genre"),
            ColSpec(DataType.long, "count"),
            ColSpec(DataType.long, "seed", required=False),
            ColSpec(Array(DataType.double), "codes", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(DataType.long, "request"),
            ColSpec(DataType.string, "genre"),
            ColSpec(DataType.long, "seed"),
            ColSpec(DataType.long, "cover"),
            ColSpec(DataType.string, "png_base64"),
        ]
    )
    mix = f"{genres[0]}:0.5,{genres[-1]}:0.5"
    example = pd.DataFrame(
        [
            {"genre": genres[0], "count": 1, "seed": 0, "codes": [0.0] * latent_dim},
            {"genre": mix, "count": 1, "seed": 1, "codes": [0.5] * latent_dim},
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs), example


def _pip_requirements() -> list[str]:
    import mlflow
    import safetensors
    import torchvision

    # Explicit requirements: otherwise MLflow infers them by loading the model in a subprocess (slow).
    pinned = {"torch": torch, "torchvision": torchvision, "mlflow": mlflow, "safetensors": safetensors}
    return [f"{name}=={module.__version__.split('+')[0]}" for name, module in pinned.items()] + [
        "numpy",
        "pandas",
        "pillow",
    ]


def log_generator(generator: Generator, genres: Sequence[str], *, registered_model_name: str):
    """Log the generator into the active MLflow run as a data-only pyfunc model and register it."""
    import mlflow.pyfunc

    signature, example = model_signature(list(genres), generator.arch.latent_dim)
    with tempfile.TemporaryDirectory(prefix="album_pipeline_generator_") as tmp:
        data = write_generator_data(Path(tmp) / DATA_DIR, generator, genres)
        return mlflow.pyfunc.log_model(
            name=GENERATOR_ARTIFACT,
            loader_module=LOADER_MODULE,
            data_path=str(data),
            signature=signature,
            input_example=example,
            registered_model_name=registered_model_name,
            pip_requirements=_pip_requirements(),
            metadata={GENRES_KEY: list(genres), "format": FORMAT},
        )


def _refuse(where: str, reason: str, remedy: str = REREGISTER) -> InvalidModelURI:
    return InvalidModelURI(f"{where} is not a generator album_pipeline loads: {reason}; {remedy}.")


def check_model_folder(folder: Path, where: str) -> Path:
    """The data folder of a model album_pipeline logged, after checking its MLmodel; else InvalidModelURI.

    MLmodel is parsed as YAML data only; nothing it names is imported.
    """
    from mlflow.models import Model

    try:
        flavors = Model.load(str(folder)).flavors
    except Exception:  # any MLmodel that does not parse is refused the same way
        raise _refuse(where, "its MLmodel file is missing or does not parse") from None
    if "pytorch" in flavors:
        raise _refuse(
            where,
            "it was registered by an earlier album_pipeline as a pickled PyTorch module, which is not loaded "
            "because unpickling runs whatever code the file holds",
        )
    conf = flavors.get("python_function") or {}
    if set(flavors) != {"python_function"} or conf.get("loader_module") != LOADER_MODULE:
        raise _refuse(
            where, f"its MLmodel names the loader {conf.get('loader_module')!r}, not {LOADER_MODULE}"
        )
    if conf.get("code") or conf.get("python_model") or conf.get("data") != MODEL_DATA:
        raise _refuse(where, f"its MLmodel adds code or moves the data from {MODEL_DATA}")
    return Path(folder) / MODEL_DATA


def _regular_file(path: Path, where: str) -> Path:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        raise _refuse(where, f"{path.name} is missing") from None
    if not stat.S_ISREG(mode):
        raise _refuse(where, f"{path.name} is not a regular file")
    return path


def _read_description(data: Path, where: str) -> dict[str, Any]:
    path = _regular_file(data / DESCRIPTION_FILE, where)
    if path.stat().st_size > MAX_DESCRIPTION_BYTES:
        raise _refuse(where, f"{DESCRIPTION_FILE} is far larger than a description")
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _refuse(where, f"{DESCRIPTION_FILE} is not JSON") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise _refuse(where, f"{DESCRIPTION_FILE} is not in the format {FORMAT}")
    if description.get("loader_module") != LOADER_MODULE:
        loader = description.get("loader_module")
        raise _refuse(where, f"{DESCRIPTION_FILE} names the loader {loader!r}, not {LOADER_MODULE}")
    return description


def _architecture_and_genres(description: dict[str, Any], where: str) -> tuple[GanArchitecture, tuple]:
    try:
        arch = GanArchitecture(**description["arch"])
    except (KeyError, TypeError, ValueError) as error:
        raise _refuse(where, f"{DESCRIPTION_FILE} records no usable architecture ({error})") from None
    genres = description.get(GENRES_KEY)
    if (
        not isinstance(genres, list)
        or not all(isinstance(genre, str) for genre in genres)
        or len(set(genres)) != len(genres)
        or len(genres) != arch.num_genres
    ):
        raise _refuse(where, f"{DESCRIPTION_FILE} does not name each of the {arch.num_genres} genres once")
    return arch, tuple(genres)


def load_generator_data(data: Path, where: str) -> tuple[Generator, tuple[str, ...]]:
    """The generator (eval mode, CPU) and genre names in a data folder; InvalidModelURI if anything is off."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    data = Path(data)
    description = _read_description(data, where)
    arch, genres = _architecture_and_genres(description, where)
    weights = _regular_file(data / WEIGHTS_FILE, where)
    if _sha256(weights) != description.get("weights_sha256"):
        raise _refuse(where, f"{WEIGHTS_FILE} does not match the sha256 recorded in {DESCRIPTION_FILE}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError):
        raise _refuse(where, f"{WEIGHTS_FILE} is not a safetensors file") from None
    generator = build_generator(arch)
    try:
        generator.load_state_dict(state)
    except RuntimeError:
        raise _refuse(
            where, f"{WEIGHTS_FILE} does not hold the weights of its recorded architecture"
        ) from None
    return generator.eval(), genres


def load_generator_model(folder: Path, where: str) -> tuple[Generator, tuple[str, ...]]:
    """The generator and genre names of a downloaded model folder (MLmodel checked first)."""
    return load_generator_data(check_model_folder(folder, where), where)


class CoverGenerator:
    """The served model: one row per cover for rows of ``genre`` (a name or a mix), ``count``, optional ``seed``
    (default 0) and ``codes`` (one number in [-1, 1] per latent code; random when absent or []).

    MLflow's schema check takes an optional column only when every row has it or none does, so a request that
    fixes the codes of some rows gives the others ``[]``.
    """

    def __init__(self, generator: Generator, genres: Sequence[str]):
        self.generator, self.genres = generator, tuple(genres)

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Columns ``request`` (input row), ``genre``, ``seed``, ``cover`` (0..count-1), ``png_base64``."""
        from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

        try:
            requests = _requests(pd.DataFrame(model_input), self.genres)
            rows = []
            for number, (spec, mix, count, seed, codes) in enumerate(requests):
                covers = draw_covers(self.generator, np.tile(mix, (count, 1)), seed=seed, codes=codes)
                rows += [
                    (number, spec, seed, index, base64.b64encode(encode_png(cover)).decode("ascii"))
                    for index, cover in enumerate(covers)
                ]
        except ValueError as error:  # a request a caller can fix: HTTP 400 with the sentence
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _whole_number(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # pandas holds a column with a missing value as floats
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(value)


def _requests(frame: pd.DataFrame, genres: Sequence[str]) -> list[tuple]:
    """(genre spec, weights, count, seed, codes or None) per input row, every value checked."""
    if "genre" not in frame or "count" not in frame:
        raise ValueError(
            "each request row needs `genre` (a name or a mix such as jazz:0.5,rock:0.5) and `count`"
        )
    requests = []
    for row in frame.to_dict(orient="records"):
        spec, seed, codes = str(row["genre"]), row.get("seed"), row.get("codes")
        count = _whole_number(row["count"], "count", 1, MAX_COUNT)
        seed = 0 if _missing(seed) else _whole_number(seed, "seed", 0, 2**63 - 1)
        # [] asks for random codes: MLflow's schema check wants an optional column in every row or in none.
        codes = None if (np.ndim(codes) == 0 and _missing(codes)) or np.size(codes) == 0 else codes
        requests.append((spec, parse_genre_mix(spec, genres), count, seed, codes))
    if sum(request[2] for request in requests) > MAX_COVERS_PER_CALL:
        raise ValueError(f"one call draws at most {MAX_COVERS_PER_CALL} covers; split the request")
    return requests


def _load_pyfunc(data_path: str, model_config: Any = None) -> CoverGenerator:
    """MLflow's entry point: ``data_path`` is ``<model>/data/generator``; the model's MLmodel is checked too."""
    data = Path(data_path)
    model = data.parent.parent
    checked = check_model_folder(model, str(model))
    if checked.resolve() != data.resolve():
        raise _refuse(str(model), f"its data lies at {data}, not at {MODEL_DATA}")
    return CoverGenerator(*load_generator_data(data, str(model)))
