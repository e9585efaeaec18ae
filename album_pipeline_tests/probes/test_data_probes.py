"""Issue 11's data-side probes (defects 1 and 4), rerun as written against the CLI on a tiny labelled home.

The home is built once (both crawls and the labelled manifest, against loopback emulators at a few albums per
genre); each probe works on its own copy of it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from album_pipeline.layout import HomeLayout
from album_pipeline.recovery import unreadable_copies
from album_pipeline.settings import NAPSTER_KEY_VAR
from album_pipeline_tests.probes.conftest import run_cli

SMALL = [
    "--set", "napster_covers.albums_per_genre=6",
    "--set", "napster_covers.api_requests_per_second=100",
    "--set", "musicbrainz_covers.albums_per_genre=4",
    "--set", "musicbrainz_covers.api_requests_per_second=100",
    "--set", "labeled_manifest.min_covers_per_genre=1",
]  # fmt: skip
LABELLED = "napster_covers,musicbrainz_covers,labeled_manifest"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from album_pipeline.testing.emulators.composition import running_emulators

    with running_emulators(
        tmp_path_factory.mktemp("emulator_cache"),
        albums_per_genre=6,
        release_groups_per_genre=4,
        archive_letters=("a",),
        images_per_archive=12,
        musicbrainz_rate_limit=None,
    ) as emulators:
        yield emulators.environment()


@pytest.fixture(scope="module")
def built_home(sources, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("built") / "home"
    result = run_cli("run", "--profile", "demo", "--select", LABELLED, *SMALL, home=home, env=sources)
    assert result.returncode == 0, result.output
    return home


@pytest.fixture
def home(built_home, tmp_path) -> HomeLayout:
    copy = tmp_path / "home"
    shutil.copytree(built_home, copy, symlinks=True)
    return HomeLayout(copy)


def _rows(path: Path) -> int:
    return len(pd.read_parquet(path))


def test_a_skipped_napster_crawl_keeps_both_tables(home, sources):
    napster, manifest = home.crawl_table("napster"), home.labeled_manifest
    before = (_rows(napster), _rows(manifest))
    assert before[0] > 0
    without_key = {name: value for name, value in sources.items() if name != NAPSTER_KEY_VAR}
    result = run_cli(
        "run", "--profile", "demo", "--select", "napster_covers,labeled_manifest", *SMALL,
        home=home.root, env=without_key,
    )  # fmt: skip
    assert result.returncode == 0, result.output
    assert (_rows(napster), _rows(manifest)) == before
    assert f"keeping the earlier crawl table ({before[0]} covers)" in result.output


def test_a_manifest_its_blocking_check_refuses_does_not_replace_the_one_on_disk(home, sources):
    before = pd.read_parquet(home.labeled_manifest)
    result = run_cli(
        "run", "--profile", "demo", "--select", "labeled_manifest", *SMALL,
        "--set", "labeled_manifest.min_covers_per_genre=1000",
        home=home.root, env=sources,
    )  # fmt: skip
    # The blocking check fails the step and names itself, with the new counts; the old manifest stays.
    assert result.returncode != 0 and "Traceback" not in result.output, result.output
    assert "covers_per_genre_at_least_minimum" in result.output
    assert f"The previous manifest ({len(before)} rows) was kept" in result.output
    pd.testing.assert_frame_equal(pd.read_parquet(home.labeled_manifest), before)


def test_a_truncated_labelled_manifest_is_set_aside_and_rebuilt(home, sources):
    manifest = home.labeled_manifest
    rows = _rows(manifest)
    data = manifest.read_bytes()
    manifest.write_bytes(data[: len(data) // 2])
    result = run_cli(
        "run", "--profile", "demo", "--select", "labeled_manifest", *SMALL, home=home.root, env=sources
    )
    assert result.returncode == 0, result.output
    assert _rows(manifest) == rows
    [aside] = unreadable_copies(manifest)
    assert aside.read_bytes() == data[: len(data) // 2]


def test_a_garbage_crawl_state_is_set_aside_and_the_crawl_resumes_afresh(home, sources):
    state = home.crawl_state("musicbrainz")
    before = _rows(home.crawl_table("musicbrainz"))
    state.write_bytes(b"not a database" * 100)
    result = run_cli(
        "run", "--profile", "demo", "--select", "musicbrainz_covers", *SMALL, home=home.root, env=sources
    )
    assert result.returncode == 0, result.output
    assert _rows(home.crawl_table("musicbrainz")) == before
    assert unreadable_copies(state)


def test_an_unreadable_crawl_table_is_one_clear_error_naming_it_and_its_asset(home, sources):
    table = home.crawl_table("napster")
    table.write_bytes(table.read_bytes()[:64])
    result = run_cli(
        "run", "--profile", "demo", "--select", "labeled_manifest", *SMALL, home=home.root, env=sources
    )
    assert result.returncode != 0 and "Traceback" not in result.output, result.output
    assert f"{table} could not be read" in result.output
    assert "`album-pipeline run --select napster_covers`" in result.output
