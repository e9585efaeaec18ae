"""The `album-pipeline` command: clear failures, asset selection, persistent history, registry lookups."""

import dagster as dg
import numpy as np
import pandas as pd
from PIL import Image

from album_pipeline.cli import dagster_home, main, resolve_selection
from album_pipeline.definitions import defs
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.layout import HomeLayout
from album_pipeline.model.networks import GanArchitecture, Generator
from album_pipeline.model.sampling import GRID_PADDING
from album_pipeline.settings import Settings
from album_pipeline.testing.shards import write_shard_set_from_arrays
from album_pipeline_tests.registry.gate_metrics import passing_metrics


def test_run_without_a_napster_key_skips_that_crawl_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NAPSTER_API_URL", "http://127.0.0.1:9")  # never contacted
    assert main(["run", "--profile", "demo", "--select", "napster_covers"]) == 0
    assert pd.read_parquet(tmp_path / "home" / "crawls" / "napster.parquet").empty
    home = dagster_home(Settings.from_environ())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("napster_covers"))
        assert event.asset_materialization.metadata["skipped"].value == "NAPSTER_API_KEY unset"


def test_selection_accepts_names_and_dagster_selection_strings():
    names = resolve_selection(defs, "napster_covers,labeled_manifest")
    assert [key.to_user_string() for key in names] == ["napster_covers", "labeled_manifest"]
    downstream = {key.to_user_string() for key in resolve_selection(defs, "key:genre_classifier+")}
    assert downstream == {"genre_classifier", "generator_evaluation", "registered_generator"}
    assert len(resolve_selection(defs, None)) == len(defs.resolve_asset_graph().get_all_asset_keys())


def test_unknown_asset_names_are_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    assert main(["run", "--profile", "demo", "--select", "napster_cover"]) == 2
    assert "unknown assets ['napster_cover']" in capsys.readouterr().err


def test_a_bad_progress_setting_is_refused_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ALBUM_PIPELINE_PROGRESS", "loud")
    assert main(["run", "--profile", "demo", "--select", "napster_covers"]) == 2
    assert "ALBUM_PIPELINE_PROGRESS to auto, on or off" in capsys.readouterr().err


def test_cli_runs_persist_in_the_instance_the_ui_opens(monkeypatch, tmp_path, capsys):
    from album_pipeline.testing.emulators.composition import running_emulators

    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    with running_emulators(
        tmp_path / "cache", albums_per_genre=6, archive_letters=("a",), images_per_archive=20
    ) as em:
        for name, value in em.environment().items():
            monkeypatch.setenv(name, value)
        selection = ["--select", "napster_covers,labeled_manifest"]
        minimum = ["--set", "labeled_manifest.min_covers_per_genre=6"]
        assert main(["run", "--profile", "demo", *selection, *minimum]) == 0
    # The crawl's progress reaches the step's log (the console here; no bar: stderr is no terminal).
    logged = capsys.readouterr().err
    assert "napster: list top albums: done, " in logged and "napster: fetch covers: done, " in logged
    assert "|" not in "".join(line for line in logged.splitlines() if "napster: fetch covers" in line)
    labeled = pd.read_parquet(tmp_path / "home" / "manifests" / "labeled.parquet")
    assert set(labeled["genre"]) == set(DEFAULT_GENRES)
    # A fresh instance object on the same folder (as after restarting `album-pipeline ui`) sees the run.
    home = dagster_home(Settings.from_environ())
    assert home == tmp_path / "home" / "dagster"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].job_name == "demo_pipeline"
        assert instance.get_latest_materialization_event(dg.AssetKey("labeled_manifest")) is not None


def register_tiny_champion(home) -> None:
    """A tiny generator registered as the champion in ``home``'s MLflow store (shared with the probes)."""
    from album_pipeline.registry.mlflow_registry import log_and_register
    from album_pipeline.settings import default_tracking_uri

    artifact = home.parent / "note.txt"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_text("tiny")
    log_and_register(
        tracking_uri=default_tracking_uri(home),
        experiment_name="album_pipeline",
        artifact_location=home / "mlartifacts",
        model_name="album_cover_generator",
        generator=Generator(GanArchitecture(generator_width=16)),
        genres=DEFAULT_GENRES,
        params={},
        metrics=passing_metrics(),
        artifacts=[artifact],
    )


def test_generate_draws_from_the_registered_champion(monkeypatch, tmp_path, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(home))
    register_tiny_champion(home)
    out = tmp_path / "jazz"
    assert main(["generate", "--genre", "jazz", "-n", "3", "--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "grid.png",
        "jazz_000.png",
        "jazz_001.png",
        "jazz_002.png",
    ]
    with Image.open(out / "grid.png") as image:
        assert image.width >= 3 * 64 and 64 <= image.height < 2 * 64
    with Image.open(out / "jazz_001.png") as image:
        assert image.size == (64, 64) and image.format == "PNG"
    assert main(["generate", "--genre", "polka", "--out", str(tmp_path / "polka")]) == 2
    assert "unknown genre 'polka'; the model knows rock, jazz, pop" in capsys.readouterr().err
    assert not (tmp_path / "polka").exists()


def test_generate_without_a_genre_draws_every_genre_and_traverses_the_codes(monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(home))
    register_tiny_champion(home)
    out = tmp_path / "all"
    assert main(["generate", "--count", "2", "--traverse", "--out", str(out)]) == 0
    expected = {"grid.png"} | {f"{genre}_{index:03d}.png" for genre in DEFAULT_GENRES for index in range(2)}
    expected |= {f"traversal_{genre}.png" for genre in DEFAULT_GENRES}
    assert {path.name for path in out.iterdir()} == expected
    with Image.open(out / "grid.png") as image:
        assert image.height >= len(DEFAULT_GENRES) * 64
    with Image.open(out / "traversal_jazz.png") as image:  # one row per latent code, 8 steps each
        assert image.width >= 8 * 64 and 2 * 64 <= image.height < 3 * 64


def test_generate_is_deterministic_in_its_seed_and_mixes_genres(monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(home))
    register_tiny_champion(home)

    def draw(name: str, *args: str) -> dict[str, bytes]:
        assert main(["generate", "--count", "2", "--out", str(tmp_path / name), *args]) == 0
        return {path.name: path.read_bytes() for path in (tmp_path / name).iterdir()}

    first, again, other = draw("a", "--seed", "5"), draw("b", "--seed", "5"), draw("c", "--seed", "6")
    assert first == again and first["jazz_000.png"] != other["jazz_000.png"]
    assert draw("jazz", "--seed", "5", "--genre", "jazz")["jazz_001.png"] == first["jazz_001.png"]
    mixed = draw("mix", "--seed", "5", "--genre", "jazz:0.5,rock:0.5")
    assert sorted(mixed) == ["grid.png", "jazz-0.5_rock-0.5_000.png", "jazz-0.5_rock-0.5_001.png"]
    assert mixed["jazz-0.5_rock-0.5_000.png"] not in (first["jazz_000.png"], first["rock_000.png"])


def test_generate_beside_real_draws_a_row_per_genre_of_generated_then_held_out_covers(
    monkeypatch, tmp_path, capsys
):
    home = tmp_path / "home"
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(home))
    register_tiny_champion(home)
    out = tmp_path / "beside"
    assert main(["generate", "--count", "2", "--beside-real", "--out", str(out)]) == 2
    assert "--beside-real needs the home's labelled training shards" in capsys.readouterr().err

    # Held-out covers of one flat colour per genre (index * 40), so each row's real half is recognisable.
    genres = list(DEFAULT_GENRES)
    labels = np.repeat(np.arange(len(genres)), 3)
    images = np.repeat((labels * 40).astype(np.uint8), 64 * 64 * 3).reshape(-1, 64, 64, 3)
    write_shard_set_from_arrays(
        HomeLayout(home).training_data("labeled"), images, labels, genres, splits=["test"] * len(labels)
    )
    assert main(["generate", "--count", "2", "--beside-real", "--out", str(out)]) == 0
    with Image.open(out / "beside_real.png") as image:
        grid = np.asarray(image.convert("RGB"))
    step = 64 + GRID_PADDING
    assert grid.shape == (GRID_PADDING + len(genres) * step, GRID_PADDING + 5 * step, 3)

    def cover(row: int, column: int) -> np.ndarray:
        top, left = GRID_PADDING + row * step, GRID_PADDING + column * step
        return grid[top : top + 64, left : left + 64]

    for row, genre in enumerate(genres):
        with Image.open(out / f"{genre}_000.png") as generated:
            assert np.array_equal(cover(row, 0), np.asarray(generated))
        assert (cover(row, 2) == 255).all()  # the white tile between generated and real
        assert (cover(row, 3) == row * 40).all() and (cover(row, 4) == row * 40).all()
    assert main(["generate", "--count", "4", "--beside-real", "--out", str(tmp_path / "x")]) == 2
    assert "has 3 held-out covers, fewer than the 4 asked for" in capsys.readouterr().err


def test_generate_without_a_registered_model_says_what_to_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    assert main(["generate", "--out", str(tmp_path / "covers")]) == 2
    assert "album_cover_generator" in capsys.readouterr().err


def test_overrides_set_config_values_and_reject_malformed_ones(monkeypatch, tmp_path, capsys):
    from album_pipeline.profiles import apply_overrides, run_config_for

    config = apply_overrides(
        run_config_for("demo"),
        ["finetuned_generator.steps=5", "finetuned_generator.precision=fp32", "genre_classifier.epochs=2"],
    )
    assert config["ops"]["finetuned_generator"]["config"]["steps"] == 5
    assert config["ops"]["finetuned_generator"]["config"]["precision"] == "fp32"
    assert config["ops"]["finetuned_generator"]["config"]["fake_genre_weight_labelled"] == 0.0
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(tmp_path / "home"))
    assert main(["run", "--profile", "demo", "--select", "genre_classifier", "--set", "steps=5"]) == 2
    assert "asset.field=value" in capsys.readouterr().err
    assert (
        main(
            ["run", "--profile", "demo", "--select", "genre_classifier", "--set", "genre_classifier.epoch=2"]
        )
        == 2
    )
    assert "epoch" in capsys.readouterr().err


def test_a_selection_that_matches_nothing_or_does_not_parse_is_an_error():
    import pytest

    from album_pipeline.settings import ConfigurationError

    for selection in ("key:nope", "group:nope", ",", " ", "nope+", "key:", "napster_covers,group:nope"):
        with pytest.raises(ConfigurationError, match="--select"):
            resolve_selection(defs, selection)
    mixed = resolve_selection(defs, "napster_covers,key:genre_classifier+")
    assert mixed[0] == dg.AssetKey("napster_covers") and len(mixed) == 4


def test_the_instance_is_created_once_and_reopened(tmp_path):
    from album_pipeline.defs.instance import INSTANCE_YAML, open_instance

    with open_instance(tmp_path / "dagster") as first:
        assert first.get_runs() == []
    with open_instance(tmp_path / "dagster") as again:
        assert again.get_runs() == []
    assert (tmp_path / "dagster" / "dagster.yaml").read_text() == INSTANCE_YAML
