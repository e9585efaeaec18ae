"""Operations: who owns the assets, how network steps are retried, how fresh the labelled set should be, and
a summary of every failed run that says which step failed, why, and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
import requests

from album_pipeline.sources.http import BodyError, SourceUnavailableError

# Shown in the catalog for every asset, and what its owner filter finds.
OWNERS = ("team:album-pipeline",)

# A whole step retried: for a source that is down or refusing for minutes. Single requests are already retried
# by the HTTP clients (urllib3's Retry, seconds apart), so a step only fails when those have given up. With
# Dagster's exponential backoff the waits are 1, 3 and 7 minutes (each +-1 minute of jitter, so that parallel
# runs do not all come back at once): about 11 minutes of outage before the run fails. A retried crawl or
# download resumes from its state on disk (crawl state, partial archives), so a retry costs only what is left.
NETWORK_STEP_RETRIES = 3
NETWORK_STEP_RETRY_DELAY_SECONDS = 60
NETWORK_RETRY_POLICY = dg.RetryPolicy(
    max_retries=NETWORK_STEP_RETRIES,
    delay=NETWORK_STEP_RETRY_DELAY_SECONDS,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
# What a later attempt may cure: a service down or answering garbage. A refused key, a bad setting or a
# checksum mismatch fails the same way every time (a mismatched OMACIR archive would be downloaded whole again
# on each retry), so those fail at once with their own message.
TRANSIENT_ERRORS = (
    SourceUnavailableError,
    BodyError,
    ConnectionError,
    TimeoutError,
    requests.ConnectionError,
    requests.Timeout,
)

# The weekly recrawl (definitions.weekly_labeled_recrawl) rebuilds the labelled manifest every 7 days: a day
# late is a warning (a slow or retried crawl), two days late a failure (the recrawl failed, or is turned off).
LABELED_RECRAWL_PERIOD = timedelta(days=7)
LABELED_FRESHNESS_POLICY = dg.FreshnessPolicy.time_window(
    fail_window=LABELED_RECRAWL_PERIOD + timedelta(days=2),
    warn_window=LABELED_RECRAWL_PERIOD + timedelta(days=1),
)


@contextmanager
def retried_only_when_transient() -> Iterator[None]:
    """Around a network step's work: the retry policy acts on TRANSIENT_ERRORS, any other error fails now."""
    try:
        yield
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error


FAILURE_SUMMARY_TAG = "album_pipeline/failure_summary"
FAILED_STEPS_TAG = "album_pipeline/failed_steps"
# Run tags are shown whole in the run list; a longer first line stays readable in the run's event log.
MAX_TAG_CHARS = 300
RERUN_ADVICE = (
    "Rerun from failure: open the run in the UI and choose Re-execute > From failure (steps that succeeded "
    "are kept; a crawl or download continues from its saved state), or `album-pipeline run --select {steps}`"
)


@dataclass(frozen=True)
class StepFailure:
    step: str
    error: str  # the error's first line, as ``Type: message``


@dataclass(frozen=True)
class FailureSummary:
    job: str
    run_id: str
    steps: tuple[StepFailure, ...]
    run_error: str  # Dagster's message for the run; the only cause shown when no step failed

    def text(self) -> str:
        if not self.steps:
            return f"run {self.run_id} of {self.job} failed: {self.run_error}. {self._advice()}"
        failures = "; ".join(f"step {failure.step} failed with {failure.error}" for failure in self.steps)
        return f"run {self.run_id} of {self.job} failed: {failures}. {self._advice()}"

    def tags(self) -> dict[str, str]:
        first = f"{self.steps[0].step}: {self.steps[0].error}" if self.steps else self.run_error
        return {
            FAILED_STEPS_TAG: ",".join(failure.step for failure in self.steps) or "none",
            FAILURE_SUMMARY_TAG: _shortened(first),
        }

    def _advice(self) -> str:
        steps = ",".join(failure.step for failure in self.steps) or "<the assets>"
        return RERUN_ADVICE.format(steps=steps)


def _shortened(text: str) -> str:
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 3] + "..."


def _first_line(error) -> str:
    """The innermost cause's first line: Dagster wraps a step's own exception in an execution error."""
    while error.cause is not None:
        error = error.cause
    lines = error.message.strip().splitlines()
    if not lines:
        return error.cls_name or "an error without a message"
    qualified, separator, message = lines[0].partition(": ")
    if separator and error.cls_name and qualified.endswith(error.cls_name):  # the module path is noise here
        return f"{error.cls_name}: {message}"
    return lines[0]


def summarize_failure(context: dg.RunFailureSensorContext) -> FailureSummary:
    steps = tuple(
        StepFailure(event.step_key or "?", _first_line(event.event_specific_data.error))
        for event in context.get_step_failure_events()
    )
    run = context.dagster_run
    return FailureSummary(run.job_name, run.run_id, steps, context.failure_event.message or "no message")


@dg.run_failure_sensor(
    name="run_failure_summary",
    # It only reports (logs, tags, an event in the failed run's log) and never launches a run, so it is on.
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes a summary of every failed run (which step, its error's first line, how to rerun) "
    f"to the sensor's log, the run's tags ({FAILED_STEPS_TAG}, {FAILURE_SUMMARY_TAG}) and the run's event log.",
)
def run_failure_summary(context: dg.RunFailureSensorContext) -> None:
    summary = summarize_failure(context)
    context.log.error(summary.text())
    context.instance.add_run_tags(summary.run_id, summary.tags())
    context.instance.report_engine_event(summary.text(), context.dagster_run)
