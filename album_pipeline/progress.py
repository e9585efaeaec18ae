"""Progress of long work: a bar on a terminal, and log lines at a steady time cadence.

Every long step (crawls, OMACIR downloads and extractions, shard building, training) counts its work in one
``Progress``. On a terminal (`album-pipeline run` and `demo` materialize in this process) it draws a tqdm bar
with the count, the rate and the time left; in a log or under `dagster dev` the bar stays silent. Its ``log``
(the Dagster step's log) gets a line when the work starts, when it ends, and in between at most every
``log_seconds`` however fast the counts come, so a long step shows it is alive without burying its other lines.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TypeVar

from tqdm import tqdm

Log = Callable[[str], None]
T = TypeVar("T")
BAR_CHOICES = ("auto", "on", "off")
# Two lines a minute: a long step visibly moves in the Dagster run view, while a two-hour training adds about
# 240 lines, few beside its loss entries.
DEFAULT_LOG_SECONDS = 30.0


@dataclass(frozen=True)
class ProgressSettings:
    """How progress shows: the bars (``ALBUM_PIPELINE_PROGRESS``) and the log cadence."""

    bars: str = field(
        default="auto",
        metadata={
            "doc": "Progress bars: auto (on a terminal only, never in logs or under Dagster), on, or off "
            "(`ALBUM_PIPELINE_PROGRESS`)."
        },
    )
    log_seconds: float = field(
        default=DEFAULT_LOG_SECONDS,
        metadata={
            "doc": "Seconds between progress lines in a step's log, besides its first and last "
            "(`ALBUM_PIPELINE_PROGRESS_SECONDS`)."
        },
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "bars", str(self.bars).strip().lower())
        if self.bars not in BAR_CHOICES:
            raise ValueError(f"progress bars must be one of {', '.join(BAR_CHOICES)}, got {self.bars!r}")
        if not self.log_seconds > 0:
            raise ValueError(
                f"the progress log cadence must be a positive number of seconds, got {self.log_seconds}"
            )

    def bar_shown(self, requested: bool | None) -> bool | None:
        """A caller's explicit choice wins; else the setting, where None lets tqdm look for a terminal."""
        if requested is not None:
            return requested
        return {"auto": None, "on": True, "off": False}[self.bars]


def current_settings() -> ProgressSettings:
    # Imported here: album_pipeline.settings imports this module for ProgressSettings.
    from album_pipeline.settings import progress_settings

    return progress_settings()


def terminal_bar(
    total: int | None,
    description: str,
    shown: bool | None,
    *,
    unit: str = "it",
    initial: int = 0,
    file: IO[str] | None = None,
) -> tqdm:
    """A tqdm bar (count, rate, time left); ``unit="B"`` counts bytes in kB/MB/GB. ``shown`` None: the
    ``ALBUM_PIPELINE_PROGRESS`` setting, by default on a terminal only."""
    shown = current_settings().bar_shown(shown)
    if file is None and isinstance(sys.stderr, _LinesAboveBars):
        file = sys.stderr.terminal  # the bar draws itself; only other writers' lines go above it
    return tqdm(
        total=total,
        initial=initial,
        unit=unit,
        unit_scale=unit == "B",
        desc=description,
        disable=None if shown is None else not shown,
        leave=False,  # the step's log keeps the summary; finished bars would pile up above the running ones
        file=file,
        dynamic_ncols=True,
    )


@contextmanager
def lines_above_bars() -> Iterator[None]:
    """While it lasts, whole lines written to stderr (Dagster's console log under `album-pipeline run`) are
    printed above the progress bars rather than onto the end of a bar's line."""
    original = sys.stderr
    # Dagster captures each step's output by pointing file descriptor 2 at a pipe into its compute log, so
    # stderr stops being a terminal inside a step. Lines and bars go to a copy of the terminal's descriptor
    # taken now, which the capture leaves alone.
    terminal = _own_copy(original) if _is_terminal(original) else None
    sys.stderr = above = _LinesAboveBars(terminal or original, captured=original)
    try:
        yield
    finally:
        above.flush()
        sys.stderr = original
        if terminal is not None:
            terminal.close()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and stream.fileno() >= 0
    except (AttributeError, OSError, ValueError):  # pytest's capture, StringIO: not a terminal
        return False


def _own_copy(stream: IO[str]) -> IO[str]:
    stream.flush()
    return open(os.dup(stream.fileno()), "w", buffering=1, encoding=stream.encoding, errors="replace")  # noqa: SIM115


class _LinesAboveBars(io.TextIOBase):
    """stderr that clears the bars, writes a line and draws them again (tqdm.external_write_mode)."""

    def __init__(self, terminal: IO[str], captured: IO[str]) -> None:
        self.terminal = terminal
        # What Dagster's capture redirects (it asks sys.stderr for its descriptor): the original stderr, so
        # that the copy in ``terminal`` stays on the terminal.
        self.captured = captured
        self._inside = threading.local()
        self._pending = ""  # the start of a line (print writes the newline on its own)

    def write(self, text: str) -> int:
        # A bar of some other library drawing through stderr (a '\r' first) or a write made while clearing
        # the bars goes straight through: clearing again would recurse.
        if text.startswith("\r") or getattr(self._inside, "writing", False):
            return self.terminal.write(text)
        lines, _, self._pending = (self._pending + text).rpartition("\n")
        if lines:
            self._inside.writing = True
            try:
                with tqdm.external_write_mode(file=self.terminal):
                    self.terminal.write(lines + "\n")
            finally:
                self._inside.writing = False
        return len(text)

    def flush(self) -> None:
        pending, self._pending = self._pending, ""
        if pending:
            self.terminal.write(pending)
        self.terminal.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def fileno(self) -> int:
        return self.captured.fileno()


class Progress:
    """Work done toward ``total`` (None: unknown), shown as a bar and as log lines at a steady cadence.

    ``unit`` names what is counted (plural, e.g. "covers"; "B" for bytes); ``rate_of=("images", 128)`` reports
    the rate in another unit, here 128 images per counted step; ``detail()`` adds a phrase to every line (such
    as how many members were valid). ``clock`` is for tests. Use it as a context manager, or ``close`` it.
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        unit: str,
        log: Log | None = None,
        progress_bar: bool | None = None,
        initial: int = 0,
        rate_of: tuple[str, float] | None = None,
        detail: Callable[[], str] | None = None,
        settings: ProgressSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        file: IO[str] | None = None,
    ) -> None:
        settings = settings or current_settings()
        self.description, self.total, self.unit = description, total, unit
        self.done = self.initial = initial
        self.rate_of, self.detail = rate_of, detail
        # Nothing to do (every cover already stored, no image to decode, training finished): nothing to show.
        idle = total is not None and initial >= total
        self._log, self._every, self._clock = None if idle else log, settings.log_seconds, clock
        shown = False if idle else settings.bar_shown(progress_bar)
        self._bar = terminal_bar(total, description, shown, unit=unit, initial=initial, file=file)
        self.started = self._logged_at = clock()
        self.closed = False
        self._say(self.line(self.started))

    def advance(self, count: int = 1) -> None:
        self.reach(self.done + count)

    def reach(self, done: int) -> None:
        """The work done is now ``done`` (it may drop, when a download restarts from zero)."""
        self._bar.update(done - self.done)
        self.done = done
        if not self._bar.disable and (self.rate_of or self.detail):
            self._bar.set_postfix_str(self._extras(self.rate(), bar=True), refresh=False)
        now = self._clock()
        if now - self._logged_at >= self._every:
            self._logged_at = now
            self._say(self.line(now))

    def counting(self, items: Iterable[T], each: int = 1) -> Iterator[T]:
        """``items``, counting ``each`` as done once the loop's body has run for one (the body may ``reach``
        part of its share meanwhile); closes at the end, as stopped when the loop breaks or raises."""
        with self:
            start = self.done
            for index, item in enumerate(items):
                yield item
                self.reach(start + (index + 1) * each)

    def rate(self, now: float | None = None) -> float | None:
        """Units per second since the start (what was done before, e.g. a resumed download, not counted)."""
        elapsed = (self._clock() if now is None else now) - self.started
        return (self.done - self.initial) / elapsed if elapsed > 0 else None

    def seconds_left(self, now: float | None = None) -> float | None:
        rate = self.rate(now)
        if self.total is None or not rate or rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def line(self, now: float | None = None, *, ended: str | None = None) -> str:
        """``description: done of total unit (percent), rate, time left; detail``; ``ended`` for the last."""
        now = self._clock() if now is None else now
        counted = _amount(self.done, self.unit)
        if self.total is not None:
            percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            counted = (
                f"{_amount(self.done, self.unit, named=False)} of {_amount(self.total, self.unit)}{percent}"
            )
        parts = [counted]
        if ended:
            parts[0] = f"{ended} {counted} in {_duration(now - self.started)}"
        rate = self.rate(now)
        extras = self._extras(rate)
        if extras:
            parts.append(extras)
        left = self.seconds_left(now)
        if not ended and left is not None and self.done > self.initial:
            parts.append(f"about {_duration(left)} left")
        return f"{self.description}: {', '.join(parts)}"

    def close(self, failed: bool = False) -> None:
        """Remove the bar and log the last line; ``failed``: the work stopped before its end."""
        if self.closed:
            return
        self.closed = True
        self._bar.refresh()  # the bar's final count and rate, even when the last updates came too fast to draw
        self._bar.close()
        self._say(self.line(ended="stopped at" if failed else "done,"))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(failed=kind is not None)

    def _extras(self, rate: float | None, *, bar: bool = False) -> str:
        """The rate (in ``rate_of``'s unit, or the bar's own when drawing) and the detail phrase."""
        parts = []
        if self.rate_of is not None and rate is not None:
            noun, per_unit = self.rate_of
            parts.append(f"{_number(rate * per_unit)} {noun}/s")
        elif rate is not None and not bar:
            parts.append(f"{_amount(rate, self.unit, rate=True)}/s")
        if self.detail is not None:
            parts.append(self.detail())
        return ", ".join(part for part in parts if part)

    def _say(self, message: str) -> None:
        if self._log is not None:
            self._log(message)


def _amount(value: float, unit: str, *, named: bool = True, rate: bool = False) -> str:
    """``12.3 MB`` for bytes; ``1,234 covers`` (a rate: ``10.4 covers``) for counts; ``named=False`` drops the unit."""
    if unit == "B":  # with its unit always: 12.3MB of 1.20GB
        return f"{value:.0f}B" if value < 1000 else f"{tqdm.format_sizeof(value, divisor=1000)}B"
    text = _number(value) if rate else f"{int(value):,}"
    return f"{text} {unit}" if named else text


def _number(value: float) -> str:
    """A rate: three figures or so (``2.35``, ``41.7``, ``1,234``)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min 05 s``, ``2 h 10 min``: the time left as a person says it."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
