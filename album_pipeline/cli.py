"""`album-pipeline`: a thin command-line shell over the same core and asset graph as `dagster dev`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from album_pipeline.cli_generate import generate
from album_pipeline.layout import HomeLayout
from album_pipeline.progress import lines_above_bars
from album_pipeline.settings import (
    HOME_VAR,
    LABELLED_SOURCES_VAR,
    NAPSTER_URL_VAR,
    OMACIR_URL_VAR,
    ConfigurationError,
    Settings,
    SourceSelection,
    progress_settings,
)

# Shown when no assets match; a selection is names separated by commas or Dagster's selection syntax.
SELECTION_HELP = (
    "give asset names separated by commas (e.g. napster_covers,labeled_manifest) or a Dagster selection such "
    "as key:genre_classifier+ or group:training"
)


def dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME if set, else `<pipeline home>/dagster` (the instance `dagster dev` uses per the README)."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    return HomeLayout(settings.home).dagster_home


def open_dagster_instance(settings: Settings):
    """The persistent instance, created under a lock, with runs a killed process left STARTED marked failed."""
    from album_pipeline.defs.instance import fail_interrupted_runs, open_instance

    home = dagster_home(settings)
    try:
        instance = open_instance(home)
    except OSError as error:
        raise ConfigurationError(
            f"cannot open the Dagster instance in {home} ({error.strerror}); make that folder writable."
        ) from None
    for run_id in fail_interrupted_runs(instance):
        print(f"run {run_id} was interrupted (its process is gone); marked it failed", file=sys.stderr)
    return instance


def resolve_selection(defs, select: str | None) -> list:
    """Asset keys for a selection: names or Dagster selection strings (`key:a+`, `group:training`) separated
    by commas; all assets when None. A selection that matches nothing is an error, never "everything"."""
    import dagster as dg

    graph = defs.resolve_asset_graph()
    known = {key.to_user_string() for key in graph.get_all_asset_keys()}
    if select is None:
        return sorted(graph.get_all_asset_keys())
    parts = [part.strip() for part in select.split(",") if part.strip()]
    if not parts:
        raise ConfigurationError(f"--select {select!r} names no assets; {SELECTION_HELP}.")
    syntax = [part for part in parts if any(mark in part for mark in ":+*() ")]
    unknown = sorted(set(parts) - known - set(syntax))
    if unknown:
        raise ConfigurationError(f"unknown assets {unknown}; known assets: {', '.join(sorted(known))}")
    named = list(dict.fromkeys(dg.AssetKey(part) for part in parts if part in known))
    selected: set = set()
    for part in syntax:
        selected |= _resolve_selection_string(dg, graph, part, known)
    return named + sorted(selected - set(named))


def _resolve_selection_string(dg, graph, part: str, known: set[str]) -> set:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dagster's BetaWarnings about its own selection parser
        try:
            keys = set(dg.AssetSelection.from_string(part).resolve(graph))
        except dg.DagsterError:
            keys = None
    if not keys:
        problem = "is not a valid selection" if keys is None else "matches no assets"
        raise ConfigurationError(
            f"--select {part!r} {problem}; {SELECTION_HELP} (assets: {', '.join(sorted(known))})."
        )
    return keys


def _step_error(error, debug: bool) -> str:
    """A failed step's own error in a line or two: Dagster's wrappers peeled off, the traceback only with
    --debug (it stays in the Dagster event log either way)."""
    if debug:
        return error.to_string()
    while error.cause is not None and error.cls_name and error.cls_name.startswith("Dagster"):
        error = error.cause
    lines = [line for line in error.message.strip().splitlines() if line.strip()]
    text = " ".join(lines[:2])
    # Dagster writes "module.Class: message"; the sentence is what the user needs, not where it was raised.
    qualified, separator, message = text.partition(": ")
    if separator and error.cls_name and qualified.endswith(error.cls_name) and " " not in qualified:
        text = message
    return text if len(text) <= 600 else text[:600] + "..."


def run_pipeline(
    profile: str,
    select: str | None = None,
    overrides: list[str] | None = None,
    debug: bool = False,
    sources: str | None = None,
) -> int:
    """Materialize the selected assets with a profile's config on the persistent Dagster instance;
    ``sources`` (``--sources``) enables labelled sources in place of ``LABELLED_SOURCES``."""
    import dagster as dg

    from album_pipeline.definitions import build_definitions, profile_job_name
    from album_pipeline.defs.config import run_config_problems
    from album_pipeline.defs.instance import launch_tags
    from album_pipeline.preflight import preflight
    from album_pipeline.profiles import apply_overrides, run_config_for, uses_inception

    settings = Settings.from_environ()
    if sources is not None:
        settings = dataclasses.replace(settings, sources=SourceSelection.from_text(sources, "--sources"))
    settings.check_home(writable=True)
    progress_settings()  # a bad ALBUM_PIPELINE_PROGRESS(_SECONDS) is refused before any work
    try:
        run_config = apply_overrides(run_config_for(profile), overrides or [])
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    defs = build_definitions(settings)
    job = defs.resolve_job_def(profile_job_name(profile))
    keys = resolve_selection(defs, select)
    problems = run_config_problems(job, run_config)
    if problems:
        raise ConfigurationError("invalid settings: " + " ".join(problems))
    evaluation_config = run_config["ops"].get("generator_evaluation", {}).get("config", {})
    preflight(
        settings,
        [key.to_user_string() for key in keys],
        needs_inception=uses_inception(run_config),
        inception_weights=evaluation_config.get("inception_weights"),
    )
    noun = "asset" if len(keys) == 1 else "assets"
    print(f"materializing {len(keys)} {noun} with the `{profile}` profile into {settings.home}", flush=True)
    started = time.monotonic()
    # The steps draw progress bars on a terminal (album_pipeline.progress); the console log goes above them.
    with open_dagster_instance(settings) as instance, lines_above_bars():
        try:
            # The console keeps a failed step's traceback for --debug; the event log always has it.
            console = {"console": {"config": {"tracebacks": debug}}}
            result = job.execute_in_process(
                run_config={**run_config, "loggers": console},
                instance=instance,
                asset_selection=keys,
                raise_on_error=False,
                tags={"profile": profile, **launch_tags()},
            )
        except dg.DagsterInvalidConfigError as error:
            details = "; ".join(item.message for item in error.errors[:5]) or str(error)[:300]
            raise ConfigurationError(f"invalid configuration: {details}") from None
    elapsed = time.monotonic() - started
    if not result.success:
        for event in result.all_events:
            is_check = event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
            check = event.asset_check_evaluation_data if is_check else None
            if check is not None and not check.passed and check.description:
                # A failed check's description says what was kept and what to do; the step error only names it.
                name = f"{check.asset_key.to_user_string()}:{check.check_name}"
                print(f"check {name} failed: {check.description}", file=sys.stderr)
            if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
                message = _step_error(event.step_failure_data.error, debug)
                print(f"step {event.step_key} failed: {message}", file=sys.stderr)
        print(
            f"run {result.run_id} failed after {elapsed:.0f}s; outputs already written are kept in "
            f"{settings.home} (the tracebacks are in the Dagster event log: `album-pipeline ui`, or rerun "
            "with --debug)",
            file=sys.stderr,
        )
        return 1
    print(f"run {result.run_id} succeeded in {elapsed:.0f}s", flush=True)
    return 0


@contextmanager
def demo_emulators(settings: Settings) -> Iterator[dict[str, str]]:
    """The bundled emulators at the demo's scale; yields the environment that points the pipeline at them."""
    from album_pipeline.testing.emulators.composition import running_emulators

    # running_emulators defaults to the demo's scale (album_pipeline.profiles).
    with running_emulators(HomeLayout(settings.home).emulator_cache_dir) as emulators:
        yield emulators.environment()


def run_demo(
    home: str | None, overrides: list[str] | None = None, debug: bool = False, sources: str | None = None
) -> int:
    """Start the bundled emulators on loopback, point the configuration at them, and run the demo profile."""
    if home:
        os.environ[HOME_VAR] = home
    settings = Settings.from_environ()
    settings.check_home(writable=True)
    started = time.monotonic()
    with demo_emulators(settings) as environment:
        os.environ.update(environment)
        print(
            f"emulators: Napster at {environment[NAPSTER_URL_VAR]}, archive.org at {environment[OMACIR_URL_VAR]}"
        )
        status = run_pipeline("demo", overrides=overrides, debug=debug, sources=sources)
    if status == 0:
        status = _draw_demo_samples(HomeLayout(settings.home).champion_samples)
        print_outputs(Settings.from_environ(), time.monotonic() - started)
    return status


def _draw_demo_samples(out: Path) -> int:
    """The champion's covers; when the gate has let no version through, the challenger's, saying why."""
    from album_pipeline.registry.mlflow_registry import CHALLENGER_ALIAS, DEFAULT_MODEL_NAME, NoChampionYet

    try:
        return generate(genre=None, count=8, out=out)
    except NoChampionYet as error:
        print(f"note: {error}. The samples below come from @{CHALLENGER_ALIAS}.", flush=True)
        return generate(
            genre=None, count=8, out=out, model_uri=f"models:/{DEFAULT_MODEL_NAME}@{CHALLENGER_ALIAS}"
        )


def print_outputs(settings: Settings, elapsed: float) -> None:
    from album_pipeline.metrics import names
    from album_pipeline.metrics.evaluate import load_metrics
    from album_pipeline.registry.mlflow_registry import DEFAULT_MODEL_NAME

    layout = HomeLayout(settings.home)
    metrics = load_metrics(layout.evaluation_metrics)["metrics"]
    lines = [
        "",
        f"Demo finished in {elapsed / 60:.1f} minutes. Outputs under {layout.root}:",
        f"  labelled manifest     {layout.labeled_manifest}",
        f"  unlabelled manifest   {layout.unlabeled_manifest}",
        f"  pretrained generator  {layout.final_checkpoint('pretrained')}",
        f"  finetuned generator   {layout.final_checkpoint('finetuned')}",
        f"  evaluation            {layout.evaluation_metrics}",
        f"  genre grid            {layout.evaluation_grid}",
        f"  champion samples      {layout.champion_samples}",
        f"  MLflow store          {settings.mlflow_tracking_uri}  (model: models:/{DEFAULT_MODEL_NAME}@champion)",
        "",
        f"Evaluation, overall (per genre: {layout.evaluation_per_genre_table}); generated covers beside the real "
        "held-out ones judged the same way:",
    ]
    for name in sorted(metrics):
        if "/" not in name and isinstance(metrics[name], int | float):
            heldout = metrics.get(names.heldout(name))
            beside = "" if heldout is None else f"{heldout:12.4g}"
            lines.append(f"  {name:24s} {metrics[name]:12.4g}{beside}")
    lines += [
        "",
        "Browse: `album-pipeline ui` (Dagster, http://127.0.0.1:3000) and "
        f"`mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}` (http://127.0.0.1:5000)",
    ]
    print("\n".join(lines), flush=True)


def run_ui(with_emulators: bool, port: int) -> int:
    """`dagster dev` on the persistent instance, so run history survives restarts."""
    settings = Settings.from_environ()
    settings.check_home(writable=True)
    # Created here under the lock (and cleared of interrupted runs) so `dagster dev` finds it ready.
    open_dagster_instance(settings).dispose()
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home(settings)))
    command = [sys.executable, "-m", "dagster", "dev", "-m", "album_pipeline.definitions", "-p", str(port)]
    if not with_emulators:
        return subprocess.call(command, env=env)
    with demo_emulators(settings) as environment:
        env.update(environment)
        print("emulators running; launch the `demo_pipeline` job in the UI", flush=True)
        return subprocess.call(command, env=env)


def _add_debug(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show the traceback of an error as well"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="album-pipeline", description=__doc__)
    _add_debug(parser, False)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="materialize the asset graph against the configured sources")
    run.add_argument("--profile", choices=["demo", "full"], default="full")
    run.add_argument("--select", help="assets: names separated by commas, or a Dagster selection string")
    set_help = "override one config value, e.g. finetuned_generator.steps=2000 (repeatable)"
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="ASSET.FIELD=VALUE", help=set_help
    )
    sources_help = (
        f"labelled sources to crawl, e.g. napster or musicbrainz (default ${LABELLED_SOURCES_VAR} or "
        "napster,musicbrainz)"
    )
    run.add_argument("--sources", metavar="NAME[,NAME]", help=sources_help)

    demo = commands.add_parser("demo", help="run the whole pipeline offline against the bundled emulators")
    demo.add_argument("--home", help=f"pipeline home (default ${HOME_VAR} or ./.album_pipeline)")
    demo.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="ASSET.FIELD=VALUE", help=set_help
    )
    demo.add_argument("--sources", metavar="NAME[,NAME]", help=sources_help)

    ui = commands.add_parser("ui", help="start `dagster dev` on the persistent instance")
    ui.add_argument(
        "--with-emulators", action="store_true", help="also serve the emulators and point at them"
    )
    ui.add_argument("--port", type=int, default=3000)

    gen = commands.add_parser("generate", help="draw covers with the registered champion generator")
    gen.add_argument(
        "--genre", help="a genre, or a mix such as jazz:0.5,rock:0.5 (default: every genre, one at a time)"
    )
    gen.add_argument("-n", "--count", type=int, default=8, help="covers per genre, 1 to 256 (default 8)")
    gen.add_argument(
        "--out",
        type=Path,
        default=Path("covers"),
        help="a new folder or an existing one (not a link) for one PNG per cover and grid.png",
    )
    gen.add_argument("--model-uri", help="an MLflow model URI (default models:/NAME@champion)")
    gen.add_argument("--seed", type=int, default=0, help="the same seed draws the same covers")
    gen.add_argument(
        "--traverse",
        action="store_true",
        help="also write traversal_GENRE.png: each latent code (without codes, a noise direction) swept",
    )
    gen.add_argument(
        "--beside-real",
        action="store_true",
        help="also write beside_real.png: a row per genre, the generated covers then as many real held-out "
        "covers (the home's labelled test split)",
    )

    serve = commands.add_parser(
        "emulators",
        help="serve the Napster, MusicBrainz (with the Cover Art Archive) and archive.org emulators at the "
        "demo's scale until Ctrl-C",
    )
    bench = commands.add_parser("bench", help="measure the training step's speed on this device")
    benches = bench.add_subparsers(dest="bench", required=True)
    train = benches.add_parser("train", help="images/s of the training step (D + G step)")
    train.add_argument("--batch", type=int, default=128)
    train.add_argument("--steps", type=int, default=5, help="timed steps per measurement (default 5)")
    train.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    train.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (default auto, as training)")
    train.add_argument("--compile", action="store_true", help="torch.compile the networks first")
    train.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode; reduce-overhead: CUDA graphs (CUDA only)",
    )
    train.add_argument(
        "--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto, as training)"
    )
    train.add_argument("--widths", default="seed", help="seed (G 512, D 64) or demo (the demo's widths)")
    train.add_argument("--architecture", default="seed", help="seed (default) or projection")
    train.add_argument(
        "--blocks", default="residual", help="projection's blocks: residual (default) or plain"
    )
    train.add_argument(
        "--resolution", type=int, default=64, help="image side: 64 (default), or 128, 256 with projection"
    )
    train.add_argument(
        "--compare-seed",
        action="store_true",
        help="also time benchmarks/seed_loop.py, alternating; the ratio",
    )
    for command in (run, demo, ui, gen, serve, bench, train):
        # SUPPRESS: a subcommand's default must not undo a --debug given before the subcommand.
        _add_debug(command, argparse.SUPPRESS)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return run_pipeline(args.profile, args.select, args.overrides, debug=args.debug, sources=args.sources)
    if args.command == "demo":
        return run_demo(args.home, args.overrides, debug=args.debug, sources=args.sources)
    if args.command == "ui":
        return run_ui(args.with_emulators, args.port)
    if args.command == "generate":
        return generate(
            args.genre, args.count, args.out, args.model_uri, args.seed, args.traverse, args.beside_real
        )
    if args.command == "bench":
        from album_pipeline.training.bench import BenchSettings, run_bench

        options = [setting.name for setting in dataclasses.fields(BenchSettings)]
        run_bench(BenchSettings(**{name: getattr(args, name) for name in options}))
        return 0
    if args.command == "emulators":
        from album_pipeline.testing.emulators.__main__ import main as serve_emulators

        return serve_emulators([]) or 0
    return 0


def main(argv: list[str] | None = None) -> int:
    """Errors a user can cause are one or two sentences (exit 2); anything else names itself in a line and
    points at --debug (exit 1). --debug adds the traceback."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigurationError as error:
        if args.debug:
            traceback.print_exc()
        print(f"album-pipeline: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("album-pipeline: interrupted; outputs already written are kept", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        first = (str(error).strip().splitlines() or [""])[0][:300]
        print(
            f"album-pipeline: {type(error).__name__}: {first} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
