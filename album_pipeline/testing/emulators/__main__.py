"""``python -m album_pipeline.testing.emulators``: serve the three loopback emulators until Ctrl-C.

Napster, MusicBrainz with the Cover Art Archive, and archive.org's OMACIR item, at the demo's scale by default
(``album_pipeline.profiles``), so that ``album-pipeline run --profile demo`` against them crawls what the demo
crawls.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
import threading
from pathlib import Path

from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.profiles import (
    DEMO_ALBUMS_PER_GENRE,
    DEMO_ARCHIVE_LETTERS,
    DEMO_IMAGES_PER_ARCHIVE,
    DEMO_RELEASE_GROUPS_PER_GENRE,
)
from album_pipeline.testing.emulators.composition import running_emulators
from album_pipeline.testing.emulators.napster import DEFAULT_API_KEY

DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "album_pipeline_emulators"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m album_pipeline.testing.emulators",
        description="Serve loopback emulators of three services: the Napster API v2.2, MusicBrainz with the "
        "Cover Art Archive, and archive.org's OMACIR item.",
    )
    for service, name in (("napster", "Napster"), ("archive", "archive.org"), ("musicbrainz", "MusicBrainz")):
        parser.add_argument(
            f"--{service}-port", type=int, default=0, help=f"port for the {name} emulator (0: any free)"
        )
    # The scale options read alike (argparse's shape), each with its own default from the demo profile.
    parser.add_argument(
        "--albums-per-genre",
        type=int,
        default=DEMO_ALBUMS_PER_GENRE,
        help=f"synthetic Napster albums per genre (default {DEMO_ALBUMS_PER_GENRE})",
    )
    parser.add_argument(
        "--release-groups-per-genre",
        type=int,
        default=DEMO_RELEASE_GROUPS_PER_GENRE,
        help=f"synthetic MusicBrainz album release groups per genre (default {DEMO_RELEASE_GROUPS_PER_GENRE})",
    )
    parser.add_argument(
        "--genres",
        default=",".join(DEFAULT_GENRES),
        help="comma-separated genre shortcuts (default: all five)",
    )
    parser.add_argument(
        "--letters",
        default=",".join(DEMO_ARCHIVE_LETTERS),
        help=f"comma-separated OMACIR archive letters (default {','.join(DEMO_ARCHIVE_LETTERS)})",
    )
    parser.add_argument(
        "--images-per-archive",
        type=int,
        default=DEMO_IMAGES_PER_ARCHIVE,
        help=f"images in each tar (default {DEMO_IMAGES_PER_ARCHIVE})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic catalogue and archives")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the API key the Napster emulator accepts")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help=f"where the tars are built (default {DEFAULT_CACHE_DIR})",
    )
    return parser


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None, stop: threading.Event | None = None) -> int:
    """Serve until Ctrl-C (or until ``stop`` is set, which lets tests run this in a thread)."""
    args = build_parser().parse_args(argv)
    print(
        f"building the synthetic OMACIR archives under {args.cache_dir} (reused when unchanged) ...",
        flush=True,
    )
    try:
        context = running_emulators(
            args.cache_dir,
            albums_per_genre=args.albums_per_genre,
            genres=_split(args.genres),
            archive_letters=_split(args.letters),
            images_per_archive=args.images_per_archive,
            seed=args.seed,
            api_key=args.api_key,
            napster_port=args.napster_port,
            archive_port=args.archive_port,
            musicbrainz_port=args.musicbrainz_port,
            release_groups_per_genre=args.release_groups_per_genre,
        )
        with context as emulators:
            print("emulators running; export these to point the pipeline at them:", flush=True)
            for name, value in emulators.environment().items():
                print(f"export {name}={shlex.quote(value)}", flush=True)
            print("press Ctrl-C to stop", flush=True)
            waiter = stop or threading.Event()
            try:
                # Short waits keep the main thread responsive to Ctrl-C.
                while not waiter.wait(0.5):
                    pass
            except KeyboardInterrupt:
                print("stopping", flush=True)
    except (ValueError, OSError) as error:
        print(f"error: {error}", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
