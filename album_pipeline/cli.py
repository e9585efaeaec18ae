"""`album-pipeline`: a thin command-line shell over the same core and asset graph as `dagster dev`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from album_pipeline.layout import HomeLayout
from album_pipeline.settings import (
    HOME_VAR,
    NAPSTER_URL_VAR,
    OMACIR_URL_VAR,
    ConfigurationError,
    Settings,
)

INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME if set, else `<pipeline home>/dagster` (the instance `dagster dev` uses per the README)."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    layout = HomeLayout(settings.home)
    home = layout.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = layout.dagster_instance_config
    if not config.exists():
        config.write_text(INSTANCE_YAML)
    return home


def resolve_selection(defs, select: str | None) -> list:
    """Asset keys for a Dagster selection string (`a,b`, `key:a+`, `group:training`); all when None."""
    import dagster as dg

    graph = defs.resolve_asset_graph()
    if not select:
        return sorted(graph.get_all_asset_keys())
    names = [part.strip() for part in select.split(",") if part.strip()]
    known = {key.to_user_string() for key in graph.get_all_asset_keys()}
    if all(name in known for name in names):
        return [dg.AssetKey(name) for name in names]
    if any(":" in name or "+" in name or "*" in name for name in names):
        return sorted(dg.AssetSelection.from_string(select).resolve(graph))
    unknown = sorted(set(names) - known)
    raise ConfigurationError(f"unknown assets {unknown}; known assets: {', '.join(sorted(known))}")


def run_pipeline(profile: str, select: str | None = None, overrides: list[str] | None = None) -> int:
    """Materialize the selected assets with a profile's config on the persistent Dagster instance."""
    import dagster as dg

    from album_pipeline.definitions import build_definitions, profile_job_name
    from album_pipeline.preflight import preflight
    from album_pipeline.profiles import apply_overrides, run_config_for, uses_inception

    settings = Settings.from_environ()
    try:
        run_config = apply_overrides(run_config_for(profile), overrides or [])
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    defs = build_definitions(settings)
    keys = resolve_selection(defs, select)
    evaluation_config = run_config["ops"].get("generator_evaluation", {}).get("config", {})
    preflight(
        settings,
        [key.to_user_string() for key in keys],
        needs_inception=uses_inception(run_config),
        inception_weights=evaluation_config.get("inception_weights"),
    )
    instance = dg.DagsterInstance.from_config(str(dagster_home(settings)))
    print(f"materializing {len(keys)} assets with the `{profile}` profile into {settings.home}", flush=True)
    started = time.monotonic()
    try:
        result = defs.resolve_job_def(profile_job_name(profile)).execute_in_process(
            run_config=run_config,
            instance=instance,
            asset_selection=keys,
            raise_on_error=False,
            tags={"profile": profile},
        )
    except dg.DagsterInvalidConfigError as error:
        raise ConfigurationError(f"invalid configuration: {error}") from None
    elapsed = time.monotonic() - started
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
                print(
                    f"\nstep {event.step_key} failed:\n{event.step_failure_data.error.to_string()}",
                    file=sys.stderr,
                )
        print(
            f"run {result.run_id} failed after {elapsed:.0f}s; outputs already written are kept in "
            f"{settings.home}",
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


def run_demo(home: str | None, overrides: list[str] | None = None) -> int:
    """Start the bundled emulators on loopback, point the configuration at them, and run the demo profile."""
    if home:
        os.environ[HOME_VAR] = home
    settings = Settings.from_environ()
    started = time.monotonic()
    with demo_emulators(settings) as environment:
        os.environ.update(environment)
        print(
            f"emulators: Napster at {environment[NAPSTER_URL_VAR]}, archive.org at {environment[OMACIR_URL_VAR]}"
        )
        status = run_pipeline("demo", overrides=overrides)
    if status == 0:
        status = generate(genre=None, count=8, out=HomeLayout(settings.home).champion_samples)
        print_outputs(Settings.from_environ(), time.monotonic() - started)
    return status


def generate(genre: str | None, count: int, out: Path, model_uri: str | None = None, seed: int = 0) -> int:
    """Covers from the registered champion generator (MLflow registry), one row per genre."""
    from album_pipeline.metrics.evaluate import save_genre_grid
    from album_pipeline.registry.mlflow_registry import DEFAULT_MODEL_NAME, ModelNotRegistered, load_champion

    settings = Settings.from_environ()
    try:
        generator, genres = load_champion(
            settings.mlflow_tracking_uri, DEFAULT_MODEL_NAME, model_uri=model_uri
        )
    except ModelNotRegistered as error:
        raise ConfigurationError(
            f"{error} (`album-pipeline run` or `album-pipeline demo` registers one)"
        ) from None
    if genre is not None and genre not in genres:
        raise ConfigurationError(f"unknown genre {genre!r}; the model knows {', '.join(genres)}")
    rows = [genre] if genre else list(genres)
    path = save_genre_grid(generator, genres, Path(out), columns=count, seed=seed, only=rows)
    print(f"generated {count} covers for each of {', '.join(rows)} -> {path}")
    return 0


def print_outputs(settings: Settings, elapsed: float) -> None:
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
        "Evaluation (independent genre classifier; 5 genres, chance 20%):",
    ]
    for name in sorted(metrics):
        if isinstance(metrics[name], int | float):
            lines.append(f"  {name:32s} {metrics[name]:.4g}")
    lines += [
        "",
        "Browse: `album-pipeline ui` (Dagster, http://127.0.0.1:3000) and "
        f"`mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}` (http://127.0.0.1:5000)",
    ]
    print("\n".join(lines), flush=True)


def run_ui(with_emulators: bool, port: int) -> int:
    """`dagster dev` on the persistent instance, so run history survives restarts."""
    settings = Settings.from_environ()
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home(settings)))
    command = [sys.executable, "-m", "dagster", "dev", "-m", "album_pipeline.definitions", "-p", str(port)]
    if not with_emulators:
        return subprocess.call(command, env=env)
    with demo_emulators(settings) as environment:
        env.update(environment)
        print("emulators running; launch the `demo_pipeline` job in the UI", flush=True)
        return subprocess.call(command, env=env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="album-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="materialize the asset graph against the configured sources")
    run.add_argument("--profile", choices=["demo", "full"], default="full")
    run.add_argument("--select", help="assets: names separated by commas, or a Dagster selection string")
    set_help = "override one config value, e.g. finetuned_generator.steps=2000 (repeatable)"
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="ASSET.FIELD=VALUE", help=set_help
    )

    demo = commands.add_parser("demo", help="run the whole pipeline offline against the bundled emulators")
    demo.add_argument("--home", help=f"pipeline home (default ${HOME_VAR} or ./.album_pipeline)")
    demo.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="ASSET.FIELD=VALUE", help=set_help
    )

    ui = commands.add_parser("ui", help="start `dagster dev` on the persistent instance")
    ui.add_argument(
        "--with-emulators", action="store_true", help="also serve the emulators and point at them"
    )
    ui.add_argument("--port", type=int, default=3000)

    gen = commands.add_parser("generate", help="draw covers with the registered champion generator")
    gen.add_argument("--genre", help="one genre (default: a row for every genre)")
    gen.add_argument("--count", type=int, default=8, help="covers per genre")
    gen.add_argument("--out", type=Path, default=Path("covers.png"))
    gen.add_argument("--model-uri", help="an MLflow model URI (default models:/NAME@champion)")
    gen.add_argument("--seed", type=int, default=0)

    commands.add_parser(
        "emulators",
        help="serve the Napster, MusicBrainz (with the Cover Art Archive) and archive.org emulators at the "
        "demo's scale until Ctrl-C",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return run_pipeline(args.profile, args.select, args.overrides)
        if args.command == "demo":
            return run_demo(args.home, args.overrides)
        if args.command == "ui":
            return run_ui(args.with_emulators, args.port)
        if args.command == "generate":
            return generate(args.genre, args.count, args.out, args.model_uri, args.seed)
        if args.command == "emulators":
            from album_pipeline.testing.emulators.__main__ import main as serve_emulators

            return serve_emulators([]) or 0
    except ConfigurationError as error:
        print(f"album-pipeline: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
