"""The Dagster entry point: ``dagster dev`` (via workspace.yaml) loads ``defs`` from here."""

from __future__ import annotations

import logging

import dagster as dg

from album_pipeline.defs import evaluation, labeled, registration, training, unlabeled
from album_pipeline.defs.automation import build_retrain_sensor, retrain_job
from album_pipeline.defs.deployment import build_executor
from album_pipeline.defs.operations import run_failure_summary
from album_pipeline.defs.resources import build_resources
from album_pipeline.profiles import PROFILES
from album_pipeline.settings import Settings

all_assets = [*labeled.assets, *unlabeled.assets, *training.assets, *evaluation.assets, *registration.assets]
all_asset_checks = [*labeled.checks, *unlabeled.checks]


def profile_job_name(profile: str) -> str:
    return f"{profile}_pipeline"


class _FirstParagraph(logging.Formatter):
    """Keeps a log line's first paragraph: Dagster appends an event's traceback after a blank line."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return self.inner.format(record).split("\n\n", 1)[0]


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO"),
        "name": dg.Field(str, is_required=False, default_value="dagster"),
        "tracebacks": dg.Field(
            bool,
            is_required=False,
            default_value=True,
            description="Print failed steps' tracebacks (the event log keeps them either way).",
        ),
    },
    description="Dagster's colored console logger; `album-pipeline run` turns its tracebacks off without --debug.",
)
def console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = dg.colored_console_logger.logger_fn(init_context)
    if not init_context.logger_config["tracebacks"]:
        for handler in logger.handlers:
            handler.setFormatter(_FirstParagraph(handler.formatter))
    return logger


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The whole asset graph, with resources configured from ``settings`` (default: the environment)."""
    settings = settings or Settings.from_environ()
    profile_jobs = [
        dg.define_asset_job(
            profile_job_name(name),
            selection=dg.AssetSelection.all(),
            config=run_config,
            description=f"The whole pipeline with the `{name}` profile (album_pipeline.profiles).",
        )
        for name, run_config in PROFILES.items()
    ]
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_asset_checks,
        resources=build_resources(settings),
        jobs=[*profile_jobs, labeled_recrawl_job, retrain_job],
        schedules=[weekly_labeled_recrawl],
        sensors=[build_retrain_sensor(settings.retrain), run_failure_summary],
        loggers={"console": console_logger},
        executor=build_executor(settings.execution, all_assets),
    )


# Crawl state makes a recrawl fetch only albums it has not seen; the manifest is rebuilt from all of them.
labeled_recrawl_job = dg.define_asset_job(
    "labeled_recrawl",
    selection=dg.AssetSelection.assets(*labeled.assets),
    description="Recrawl the labelled sources (only new albums are fetched) and rebuild the labelled manifest.",
)

weekly_labeled_recrawl = dg.ScheduleDefinition(
    name="weekly_labeled_recrawl",
    job=labeled_recrawl_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00, in execution_timezone
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,  # one click (or `dagster schedule start`) turns it on
    description="Weekly labelled recrawl; off until turned on in the UI's Automation tab.",
)


defs = build_definitions()
