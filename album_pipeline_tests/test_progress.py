"""Progress: log lines at a steady time cadence (a fake clock, no sleeping), bars, and the settings."""

from __future__ import annotations

import io
import os
import sys

import pytest

from album_pipeline.progress import Progress, ProgressSettings, lines_above_bars
from album_pipeline.settings import PROGRESS_SECONDS_VAR, PROGRESS_VAR, ConfigurationError, progress_settings

EVERY_30_S = ProgressSettings(log_seconds=30)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_start_end_and_every_period_whatever_the_update_rate() -> None:
    clock, lines = FakeClock(), []
    with Progress("crawl", 200, unit="covers", log=lines.append, settings=EVERY_30_S, clock=clock) as shown:
        for _ in range(100):  # 128 updates a second (binary fractions: exact times): no line yet
            clock.now += 1 / 128
            shown.advance()
        assert lines == ["crawl: 0 of 200 covers (0%)"]
        for _ in range(100):  # then one update every 1.5 s: a line every 30 s, not every update
            clock.now += 1.5
            shown.advance()
    assert len(lines) == 1 + 5 + 1  # the start, one each 30 s (150.8 s in all), the end
    assert lines[1] == "crawl: 120 of 200 covers (60%), 3.9 covers/s, about 21 s left"  # at 30.8 s
    assert lines[2].startswith("crawl: 140 of 200 covers (70%)")  # at 60.8 s
    assert lines[-1] == "crawl: done, 200 of 200 covers (100%) in 2 min 31 s, 1.33 covers/s"


def test_rate_and_time_left_leave_out_what_was_done_before() -> None:
    """A resumed download: the bytes already on disk count toward the total, not toward the rate."""
    clock, lines = FakeClock(), []
    shown = Progress(
        "download a.tar", 100_000_000, unit="B", log=lines.append, initial=40_000_000, settings=EVERY_30_S,
        clock=clock,
    )  # fmt: skip
    clock.now += 30
    shown.reach(70_000_000)
    assert shown.rate() == pytest.approx(1_000_000) and shown.seconds_left() == pytest.approx(30)
    assert lines[-1] == "download a.tar: 70.0MB of 100MB (70%), 1.00MB/s, about 30 s left"
    clock.now += 3600 * 2
    shown.close(failed=True)
    assert lines[-1].startswith("download a.tar: stopped at 70.0MB of 100MB (70%) in 2 h 00 min")


def test_a_step_rate_in_images_a_detail_and_an_unknown_total() -> None:
    clock, lines = FakeClock(), []
    members = [0]
    shown = Progress(
        "train", None, unit="steps", log=lines.append, rate_of=("images", 64), settings=EVERY_30_S, clock=clock,
        detail=lambda: f"{members[0]} members",
    )  # fmt: skip
    for _ in range(40):
        clock.now += 1
        members[0] += 2
        shown.advance()
    assert lines[-1] == "train: 30 steps, 64 images/s, 60 members"  # no total: no percentage, no time left


def test_breaking_out_of_a_counted_loop_closes_it_as_stopped() -> None:
    clock, lines = FakeClock(), []
    shown = Progress("pack", 10, unit="images", log=lines.append, settings=EVERY_30_S, clock=clock)
    for number in shown.counting(range(10)):
        if number == 4:
            break
    assert shown.closed and shown.done == 4
    assert lines[-1].startswith("pack: stopped at 4 of 10 images (40%)")


def test_nothing_to_do_shows_nothing() -> None:
    lines, bar = [], io.StringIO()
    with Progress("fetch", 0, unit="covers", log=lines.append, progress_bar=True, file=bar):
        pass
    with Progress("train", 5, unit="steps", log=lines.append, progress_bar=True, file=bar, initial=5):
        pass
    assert lines == [] and bar.getvalue() == ""


def test_the_bar_shows_count_rate_and_time_left_when_asked() -> None:
    bar = io.StringIO()
    with Progress("pretrain", 4, unit="steps", rate_of=("images", 8), progress_bar=True, file=bar) as shown:
        for _ in range(4):
            shown.advance()
    drawn = bar.getvalue()
    assert "pretrain" in drawn and "4/4" in drawn and "images/s" in drawn
    assert "00:00<00:00" in drawn  # elapsed < time left
    silent = io.StringIO()
    with Progress("pretrain", 4, unit="steps", progress_bar=False, file=silent) as shown:
        shown.advance(4)
    assert silent.getvalue() == ""


def test_the_bar_follows_the_setting_unless_asked_and_stays_off_where_no_terminal_is() -> None:
    assert ProgressSettings().bar_shown(None) is None  # tqdm's own rule: only on a terminal
    assert ProgressSettings(bars="on").bar_shown(None) is True
    assert ProgressSettings(bars="OFF").bar_shown(None) is False
    assert ProgressSettings(bars="off").bar_shown(True) is True
    not_a_terminal = io.StringIO()
    with Progress("crawl", 3, unit="covers", file=not_a_terminal, settings=ProgressSettings()) as shown:
        shown.advance(3)
    assert not_a_terminal.getvalue() == ""


def test_progress_settings_come_from_the_environment_and_bad_ones_say_what_to_set() -> None:
    assert progress_settings({}) == ProgressSettings()
    assert progress_settings({PROGRESS_VAR: " ", PROGRESS_SECONDS_VAR: ""}) == ProgressSettings()
    assert progress_settings({PROGRESS_VAR: "on", PROGRESS_SECONDS_VAR: "5"}) == ProgressSettings("on", 5.0)
    with pytest.raises(ConfigurationError, match=f"{PROGRESS_VAR} to auto, on or off"):
        progress_settings({PROGRESS_VAR: "sometimes"})
    with pytest.raises(ConfigurationError, match=f"{PROGRESS_SECONDS_VAR}='soon' is not a number"):
        progress_settings({PROGRESS_SECONDS_VAR: "soon"})
    with pytest.raises(ConfigurationError, match="positive number of seconds"):
        progress_settings({PROGRESS_SECONDS_VAR: "0"})


def test_lines_written_to_stderr_go_above_a_bar_not_onto_its_line(monkeypatch) -> None:
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    with lines_above_bars():
        with Progress("extract a.tar", 10, unit="B", progress_bar=True) as shown:
            shown.advance(5)
            print("INFO - a Dagster log line", file=sys.stderr)
            shown.advance(5)
    assert sys.stderr is terminal
    drawn = terminal.getvalue()
    before, line, after = drawn.partition("INFO - a Dagster log line\n")
    assert line and "extract a.tar" in before and "extract a.tar" in after  # the bar is drawn again below
    assert before.rstrip(" ").endswith("\r")  # the bar's line was cleared before the log line was written


def _terminal(columns: int = 120) -> tuple[int, int]:
    """A pseudo-terminal (its two ends) of a real size, as `album-pipeline run` finds on a user's screen."""
    import fcntl
    import pty
    import struct
    import termios

    reader, writer = pty.openpty()
    fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    os.set_blocking(reader, False)
    return reader, writer


def _drawn(reader: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(reader, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_a_dagster_step_draws_its_bar_on_the_terminal_despite_dagsters_output_capture(monkeypatch, tmp_path):
    # Dagster points the descriptor behind sys.stderr at its compute log while a step runs; the bars must
    # still reach the terminal that `album-pipeline run` was started from.
    import dagster as dg

    reader, writer = _terminal()
    terminal = open(writer, "w", buffering=1)  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stderr", terminal)

    @dg.asset
    def counted() -> None:
        assert sys.stderr.isatty()
        with Progress("pack covers", 8, unit="covers") as shown:
            for _ in range(8):
                shown.advance()

    try:
        with dg.instance_for_test(temp_dir=str(tmp_path)) as instance, lines_above_bars():
            assert dg.materialize([counted], instance=instance).success
        drawn = _drawn(reader)
    finally:
        terminal.close()
        os.close(reader)
    assert "pack covers:" in drawn and "8/8" in drawn
