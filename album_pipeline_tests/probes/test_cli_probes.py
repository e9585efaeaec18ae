"""Issue 11's probes of the CLI itself: selections, the Dagster instance, `generate`'s output, settings, runs.

Most refusals happen before any work, so these need no emulators; the sources point at a closed loopback port
that nothing ever contacts.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from album_pipeline.defs.instance import instance_lock, launch_tags
from album_pipeline.layout import HomeLayout
from album_pipeline_tests.probes.conftest import assert_clear_error, run_cli
from album_pipeline_tests.test_cli import register_tiny_champion

NOWHERE = "http://127.0.0.1:9"  # a closed port: a probe that reached a source would fail loudly
SOURCES = {
    "NAPSTER_API_URL": NOWHERE,
    "OMACIR_URL": NOWHERE,
    "MUSICBRAINZ_URL": NOWHERE,
    "COVERART_URL": NOWHERE,
}
# Without a key the Napster crawl is skipped: a real run that finishes in seconds and touches no network.
SKIPPED_CRAWL = ("run", "--profile", "demo", "--select", "napster_covers")


def _nothing_ran(home) -> None:
    layout = HomeLayout(home)
    assert not layout.crawls_dir.exists() and not layout.dagster_home.exists()


# Defect 2: a selection that matches nothing ran everything.
@pytest.mark.parametrize("selection", ["key:nope", "group:nope", ",", "nope+", "key:"])
def test_a_selection_that_matches_nothing_is_refused_before_anything_runs(cli, selection):
    result = cli("run", "--profile", "demo", "--select", selection, env=SOURCES)
    assert_clear_error(result, "--select", "key:genre_classifier+")
    assert "materializing" not in result.output
    _nothing_ran(cli.home)


# Defect 3: two first runs at once corrupted runs.db.
def test_concurrent_first_runs_leave_one_ready_instance(tmp_path):
    for trial in range(3):
        home = tmp_path / f"home{trial}"
        env = {**os.environ, "ALBUM_PIPELINE_HOME": str(home), **SOURCES}
        env.pop("NAPSTER_API_KEY", None)
        env.pop("DAGSTER_HOME", None)
        command = [sys.executable, "-m", "album_pipeline.cli", *SKIPPED_CRAWL]
        processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)
        ]
        outputs = [process.communicate(timeout=300)[0] for process in processes]
        assert [process.returncode for process in processes] == [0, 0], outputs
        runs_db = HomeLayout(home).dagster_home / "history" / "runs.db"
        with sqlite3.connect(runs_db) as connection:
            assert connection.execute("select count(*) from alembic_version").fetchone() == (1,)
        with dg.DagsterInstance.from_config(str(HomeLayout(home).dagster_home)) as instance:
            assert len(instance.get_runs()) == 2


def test_a_first_run_waits_while_another_process_creates_the_instance(cli):
    dagster_home = HomeLayout(cli.home).dagster_home
    env = {**os.environ, "ALBUM_PIPELINE_HOME": str(cli.home), **SOURCES}
    env.pop("NAPSTER_API_KEY", None)
    with instance_lock(dagster_home):
        process = subprocess.Popen(
            [sys.executable, "-m", "album_pipeline.cli", *SKIPPED_CRAWL],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # "materializing" is printed just before the instance is opened.
        assert "materializing" in process.stdout.readline()
        time.sleep(2)
        assert process.poll() is None and not (dagster_home / "history").exists()
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output


# Defect 8: `generate --out` replaced whatever was at the path, and bad arguments gave tracebacks.
@pytest.mark.parametrize("count", ["0", "-3", "257"])
def test_generate_refuses_a_count_outside_its_range_before_loading_a_model(cli, tmp_path, count):
    result = cli("generate", "--count", count, "--out", str(tmp_path / "covers"))
    assert_clear_error(result, "--count must be between 1 and 256")


def test_generate_refuses_an_out_folder_that_is_a_link_a_file_or_a_fifo(cli, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    file = tmp_path / "file"
    file.write_bytes(b"keep me")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for out, kind in ((link, "symbolic link"), (file, "not a folder"), (fifo, "not a folder")):
        assert_clear_error(cli("generate", "--out", str(out)), str(out), kind)
    assert link.is_symlink() and file.read_bytes() == b"keep me" and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert list(real.iterdir()) == []


@pytest.fixture(scope="module")
def registered_home(tmp_path_factory):
    """A home with a tiny generator registered as the champion."""
    home = tmp_path_factory.mktemp("registered") / "home"
    register_tiny_champion(home)
    return home


def test_generate_never_follows_or_replaces_a_link_or_a_fifo_inside_its_folder(registered_home, tmp_path):
    target = tmp_path / "precious.png"
    target.write_bytes(b"keep me")
    out = tmp_path / "covers"
    out.mkdir()
    (out / "jazz_000.png").symlink_to(target)
    os.mkfifo(out / "grid.png")
    result = run_cli("generate", "--genre", "jazz", "--count", "1", "--out", str(out), home=registered_home)
    assert_clear_error(result, "jazz_000.png", "symbolic link")
    assert target.read_bytes() == b"keep me" and (out / "jazz_000.png").is_symlink()
    (out / "jazz_000.png").unlink()
    result = run_cli("generate", "--genre", "jazz", "--count", "1", "--out", str(out), home=registered_home)
    assert_clear_error(result, "grid.png", "not a file")
    assert stat.S_ISFIFO(os.lstat(out / "grid.png").st_mode)


def test_generate_writes_pngs_only_and_replaces_its_own_regular_files(registered_home, tmp_path):
    out = tmp_path / "covers"
    out.mkdir()
    (out / "jazz_000.png").write_bytes(b"old")
    result = run_cli("generate", "--genre", "jazz", "--count", "2", "--out", str(out), home=registered_home)
    assert result.returncode == 0, result.output
    files = sorted(out.iterdir())
    assert [path.name for path in files] == ["grid.png", "jazz_000.png", "jazz_001.png"]
    for path in files:
        assert stat.S_ISREG(os.lstat(path).st_mode) and path.read_bytes().startswith(b"\x89PNG")


def test_generate_into_a_place_it_cannot_write_is_one_sentence(registered_home):
    # /proc refuses new files and folders even to root.
    result = run_cli("generate", "--count", "1", "--out", "/proc/covers", home=registered_home)
    assert_clear_error(result, "/proc")
    assert ".tmp" not in result.stderr  # not a hidden temporary file's name


# Defect 10: tracebacks where a sentence belongs.
def test_a_home_that_is_a_file_or_cannot_be_created_is_one_sentence(tmp_path):
    file_home = tmp_path / "home"
    file_home.write_text("not a folder")
    assert_clear_error(
        run_cli(*SKIPPED_CRAWL, home=file_home, env=SOURCES), "ALBUM_PIPELINE_HOME", "not a folder"
    )
    assert_clear_error(run_cli(*SKIPPED_CRAWL, home=Path("/proc/home"), env=SOURCES), "ALBUM_PIPELINE_HOME")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_home_is_one_sentence(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    try:
        assert_clear_error(run_cli(*SKIPPED_CRAWL, home=home, env=SOURCES), "not writable")
    finally:
        home.chmod(0o755)


@pytest.mark.parametrize("variable", ["OMACIR_URL", "NAPSTER_API_URL", "MUSICBRAINZ_URL", "COVERART_URL"])
def test_a_source_url_of_an_unsupported_scheme_is_one_sentence(cli, variable):
    result = cli("run", "--profile", "demo", env={**SOURCES, variable: "ftp://user:secret@x/covers"})
    assert_clear_error(result, variable, "ftp://")
    assert "secret" not in result.output
    _nothing_ran(cli.home)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("a.b=", "`a` is not an asset with settings"),
        ("finetuned_generator.stepz=5", "did you mean `steps`?"),
        ("finetuned_generator.steps=-3", "steps must be at least 1"),
        ("pretrained_generator.batch_size=1", "batch_size must be at least 2"),
        ("genre_classifier.epochs=many", "`genre_classifier.epochs`: Input should be a valid integer"),
    ],
)
def test_a_bad_setting_is_refused_before_the_run_starts(cli, override, expected):
    result = cli("run", "--profile", "demo", "--select", "napster_covers", "--set", override, env=SOURCES)
    assert_clear_error(result, expected)
    _nothing_ran(cli.home)


@pytest.mark.parametrize("where", ["global", "subcommand"])
def test_debug_shows_the_traceback(cli, where):
    args = ["run", "--select", "key:nope"]
    result = cli(*(["--debug", *args] if where == "global" else [*args, "--debug"]), env=SOURCES)
    assert result.returncode == 2 and "Traceback" in result.stderr and "matches no assets" in result.stderr


def test_a_failed_step_is_named_with_its_error_in_a_sentence(cli):
    result = cli("run", "--profile", "demo", "--select", "labeled_manifest", env=SOURCES)
    assert result.returncode == 1
    assert (
        "step labeled_manifest failed: no labelled crawl table" in result.stderr
    )  # the sentence, no class name
    assert "Traceback" not in result.output and "Stack Trace" not in result.output


# Defect 11: a SIGKILLed run stayed STARTED for ever.
def test_a_killed_run_is_marked_failed_on_the_next_start_and_a_live_one_is_left_alone(cli):
    dagster_home = HomeLayout(cli.home).dagster_home
    # A process that records a STARTED run with the CLI's launch tags, then dies by SIGKILL.
    killed = textwrap.dedent(
        f"""
        import os, signal
        import dagster as dg
        from album_pipeline.defs.instance import launch_tags, open_instance
        from pathlib import Path
        instance = open_instance(Path({str(dagster_home)!r}))
        instance.add_run(dg.DagsterRun(job_name="demo_pipeline", run_id="killed",
                                       status=dg.DagsterRunStatus.STARTED, tags=launch_tags()))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    subprocess.run([sys.executable, "-c", killed], check=False, timeout=120)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_run(
            dg.DagsterRun(
                job_name="demo_pipeline",
                run_id="alive",
                status=dg.DagsterRunStatus.STARTED,
                tags=launch_tags(),
            )
        )
    result = cli(*SKIPPED_CRAWL, env=SOURCES)
    assert result.returncode == 0, result.output
    assert "run killed was interrupted" in result.stderr
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_run_by_id("killed").status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id("alive").status == dg.DagsterRunStatus.STARTED
        failure = instance.all_logs("killed", of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "interrupted" in failure[0].message
