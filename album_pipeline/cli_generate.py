"""The ``album-pipeline generate`` command: covers from a registered generator into a folder, and with
``--beside-real`` a grid of them beside the home's real held-out covers. A thin shell over ``model.sampling``
and ``registry.mlflow_registry``, like the rest of the CLI (``album_pipeline.cli``)."""

from __future__ import annotations

import os
from pathlib import Path

from album_pipeline.layout import HomeLayout
from album_pipeline.settings import ConfigurationError, Settings


def check_generate_arguments(count: int, out: Path, seed: int) -> None:
    """Refuse a bad --count, --seed or --out before the model is loaded (which can take a while)."""
    from album_pipeline.metrics.evaluate import OutputRefused
    from album_pipeline.model.sampling import MAX_COUNT, check_output_dir, check_seed

    if not 1 <= count <= MAX_COUNT:
        raise ConfigurationError(
            f"--count must be between 1 and {MAX_COUNT} covers per genre, got {count} (draw again with another "
            "--seed for more)."
        )
    try:
        check_seed(seed)
        check_output_dir(out)
    except ValueError as error:  # OutputRefused is one
        flag = "--out" if isinstance(error, OutputRefused) else "--seed"
        raise ConfigurationError(f"{flag}: {error}.") from None
    folder = next((path for path in (out.absolute(), *out.absolute().parents) if path.exists()), Path("/"))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigurationError(f"--out: cannot write in {folder}; choose a folder you can write to.")


def generate(
    genre: str | None,
    count: int,
    out: Path,
    model_uri: str | None = None,
    seed: int = 0,
    traverse: bool = False,
    beside_real: bool = False,
) -> int:
    """Covers from the registered champion generator (MLflow registry) into the folder ``out``; with
    ``beside_real``, also a grid of them beside real held-out covers of each genre."""
    from album_pipeline.metrics.evaluate import OutputRefused
    from album_pipeline.model.sampling import parse_genre_mix, write_cover_folder
    from album_pipeline.registry.mlflow_registry import (
        DEFAULT_MODEL_NAME,
        ModelNotRegistered,
        NoChampionYet,
        load_champion,
    )

    out = Path(out)
    check_generate_arguments(count, out, seed)
    if beside_real and genre is not None:
        raise ConfigurationError("--beside-real draws a row for every genre; leave out --genre.")
    # MLflow's download progress bars would bury the one line `generate` prints (or its error).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = Settings.from_environ()
    settings.check_home(writable=False)
    try:
        generator, genres = load_champion(
            settings.mlflow_tracking_uri, DEFAULT_MODEL_NAME, model_uri=model_uri
        )
    except NoChampionYet:
        raise  # says what to do already: train a better generator, or load @challenger
    except ModelNotRegistered as error:
        raise ConfigurationError(
            f"{error} (`album-pipeline run` or `album-pipeline demo` registers one)"
        ) from None
    try:
        specs = [genre] if genre is not None else list(genres)
        rows = [(spec, parse_genre_mix(spec, genres)) for spec in specs]
    except ValueError as error:
        raise ConfigurationError(f"--genre: {error}.") from None
    try:
        written = write_cover_folder(generator, rows, out, count=count, seed=seed, traverse=traverse)
    except OutputRefused as error:
        raise ConfigurationError(f"--out: {error}, or choose another --out folder.") from None
    except OSError as error:
        # strerror only: the error's file name may be a hidden temporary file inside --out.
        raise ConfigurationError(
            f"cannot write into {out}: {error.strerror}; choose another --out."
        ) from None
    if beside_real:
        written.append(_write_beside_real(settings, generator, genres, out, count, seed))
    print(f"generated {count} covers for each of {', '.join(specs)}: {len(written)} PNG files in {out}")
    return 0


def _write_beside_real(
    settings: Settings, generator, genres: tuple[str, ...], out: Path, count: int, seed: int
):
    """beside_real.png in ``out``: the covers ``generate`` drew, each genre's row followed by as many of the
    home's real held-out covers of that genre."""
    import numpy as np

    from album_pipeline.data.shards import load_shards
    from album_pipeline.layout import BESIDE_REAL_FILE
    from album_pipeline.model.sampling import beside_real_grid, draw_covers, heldout_examples, write_png

    folder = HomeLayout(settings.home).training_data("labeled")
    try:
        data = load_shards(folder)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigurationError(
            f"--beside-real needs the home's labelled training shards ({error}); run `album-pipeline demo` or "
            "`album-pipeline run` first, or set ALBUM_PIPELINE_HOME to the home that has them."
        ) from None
    missing = [genre for genre in genres if genre not in data.genres]
    if missing:
        raise ConfigurationError(
            f"--beside-real: the home's labelled covers have no genre {', '.join(missing)} (they have "
            f"{', '.join(data.genres)}); set ALBUM_PIPELINE_HOME to the home the model was trained from."
        )
    side = generator.arch.resolution
    try:
        real = heldout_examples(data.subset("test"), data.genres, genres, count, seed=seed, resolution=side)
    except ValueError as error:
        raise ConfigurationError(f"--beside-real: {error} with --count.") from None
    one_hot = np.eye(len(genres))
    generated = [draw_covers(generator, np.tile(row, (count, 1)), seed=seed) for row in one_hot]
    return write_png(out / BESIDE_REAL_FILE, beside_real_grid(generated, real))
