"""Covers/s of the labelled crawl against emulators that add latency to every response, beside the bound.

    .venv/bin/python benchmarks/crawl_latency.py            # about 2 minutes on 2 cores

Each row crawls into a fresh temporary home with a fresh crawl state (nothing is reused), over a catalogue
whose images the emulator has already rendered. The emulator's request log gives the calls made. The bound is
the least time latency and concurrency allow: API calls run one after another, each starting at least
max(latency, 1 / rate limit) after the one before and the last taking the latency; cover responses run
``workers`` at a time, each taking at least the latency:

    bound seconds = (api_calls - 1) * max(latency, 1 / rate) + latency + cover_responses * latency / workers

API calls a server refused (MusicBrainz's 503 when two calls fall in one rate window) are shown and not
counted in the bound: they are part of the gap. A Cover Art Archive front costs two responses (a 307 to the
archive, then the image); one without art, one (its 404). Rows with no latency show what the CPU alone allows
(client and emulator share the machine).
Prints two markdown tables: the whole crawl, and the download phase alone (``crawl_covers``'s own timing,
which starts once the album lists and image lookups are done, so its bound is the second term only).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from album_pipeline.data.crawl_state import CrawlState
from album_pipeline.data.musicbrainz_covers import MusicBrainzCrawlOptions, crawl_musicbrainz
from album_pipeline.data.napster_covers import NapsterCrawlOptions, crawl_napster
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import DEFAULT_GENRE_MAP
from album_pipeline.sources.http import make_session
from album_pipeline.sources.musicbrainz import DEFAULT_USER_AGENT as MUSICBRAINZ_USER_AGENT
from album_pipeline.sources.musicbrainz import (
    MUSICBRAINZ_REQUESTS_PER_SECOND,
    CoverArtClient,
    MusicBrainzClient,
)
from album_pipeline.sources.napster import NapsterClient
from album_pipeline.testing.emulators.base import LOOPBACK_HOST
from album_pipeline.testing.emulators.loopback import LoopbackServer
from album_pipeline.testing.emulators.musicbrainz import MusicBrainzEmulator
from album_pipeline.testing.emulators.musicbrainz_catalog import MusicBrainzCatalog
from album_pipeline.testing.emulators.napster import NapsterEmulator
from album_pipeline.testing.emulators.napster_catalog import NapsterCatalog

API_KEY = "benchmark-key"


@dataclass
class Row:
    source: str
    workers: int
    latency_s: float
    rate: float
    albums: int
    covers: int
    api_calls: int
    cover_responses: int
    refused: (
        int  # API answers that were not 200 (a 503 of the server's rate limit): retried, not in the bound
    )
    seconds: float
    download_seconds: float

    def bound_seconds(self) -> float:
        needed = self.api_calls - self.refused
        api_seconds = (needed - 1) * max(self.latency_s, 1 / self.rate) + self.latency_s if needed else 0.0
        return api_seconds + self.download_bound_seconds()

    def download_bound_seconds(self) -> float:
        return self.cover_responses * self.latency_s / self.workers


def napster_row(emulator: NapsterEmulator, workers: int, rate: float, albums_per_genre: int) -> Row:
    emulator.clear_requests()
    with tempfile.TemporaryDirectory(prefix="crawl-latency-") as folder:
        client = NapsterClient(
            emulator.url,
            API_KEY,
            session=make_session(pool_size=max(16, workers)),
            requests_per_second=rate,
            allowed_image_hosts=(LOOPBACK_HOST,),
        )
        started = time.monotonic()
        with CrawlState(Path(folder) / "state" / "napster.sqlite") as state:
            result = crawl_napster(
                client,
                ImageStore(Path(folder)),
                state,
                DEFAULT_GENRE_MAP,
                options=NapsterCrawlOptions(albums_per_genre=albums_per_genre, download_workers=workers),
            )
        seconds = time.monotonic() - started
    log = emulator.requests
    api = [r for r in log if r.path.startswith("/v2.2/")]
    return Row(
        "Napster",
        workers,
        emulator.latency_s,
        rate,
        result.stats["albums"],
        len(result.rows),
        len(api),
        sum(1 for r in log if r.path.startswith("/img/")),
        sum(1 for r in api if r.status != 200),
        seconds,
        result.stats["seconds"],
    )


def musicbrainz_row(emulator: MusicBrainzEmulator, workers: int, rate: float, albums_per_genre: int) -> Row:
    emulator.clear_requests()
    with tempfile.TemporaryDirectory(prefix="crawl-latency-") as folder:
        session = make_session(MUSICBRAINZ_USER_AGENT, pool_size=max(16, workers))
        musicbrainz = MusicBrainzClient(emulator.url, requests_per_second=rate, session=session)
        coverart = CoverArtClient(emulator.url, allowed_image_hosts=(LOOPBACK_HOST,), session=session)
        started = time.monotonic()
        with CrawlState(Path(folder) / "state" / "musicbrainz.sqlite") as state:
            result = crawl_musicbrainz(
                musicbrainz,
                coverart,
                ImageStore(Path(folder)),
                state,
                DEFAULT_GENRE_MAP,
                options=MusicBrainzCrawlOptions(albums_per_genre=albums_per_genre, download_workers=workers),
            )
        seconds = time.monotonic() - started
    log = emulator.requests
    api = [r for r in log if r.path.startswith("/ws/2/")]
    return Row(
        "MusicBrainz",
        workers,
        emulator.latency_s,
        rate,
        result.stats["albums"],
        len(result.rows),
        len(api),
        len(log) - len(api),
        sum(1 for r in api if r.status != 200),
        seconds,
        result.stats["seconds"],
    )


def share_of_bound(bound_seconds: float, seconds: float) -> str:
    """Achieved covers/s over the bound's covers/s, which is the bound's time over the time taken."""
    return f"{100 * bound_seconds / seconds:.0f}%" if bound_seconds else "-"


def per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:.1f}" if seconds else "-"


def print_tables(rows: list[Row]) -> None:
    print("\nWhole crawl (album lists, image lookups, downloads):\n")
    print(
        "| source | workers | latency | API rate | albums | covers | API calls | cover responses | wall s "
        "| covers/s | bound covers/s | achieved / bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        bound = row.bound_seconds()
        retried = f" ({row.refused} refused, retried)" if row.refused else ""
        print(
            f"| {row.source} | {row.workers} | {row.latency_s * 1000:.0f} ms | {row.rate:g}/s | {row.albums} "
            f"| {row.covers} | {row.api_calls}{retried} | {row.cover_responses} | {row.seconds:.2f} "
            f"| {row.covers / row.seconds:.1f} | {per_second(row.covers, bound)} "
            f"| {share_of_bound(bound, row.seconds)} |"
        )
    print("\nDownload phase alone (`crawl_covers`: fetch, validate, store, record):\n")
    print(
        "| source | workers | latency | covers | download s | covers/s | bound covers/s | achieved / bound |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        bound = row.download_bound_seconds()
        print(
            f"| {row.source} | {row.workers} | {row.latency_s * 1000:.0f} ms | {row.covers} "
            f"| {row.download_seconds:.2f} | {row.covers / row.download_seconds:.1f} "
            f"| {per_second(row.covers, bound)} | {share_of_bound(bound, row.download_seconds)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every response")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8, 16, 32], help="download workers")
    parser.add_argument("--albums-per-genre", type=int, default=200, help="Napster albums per genre (5)")
    parser.add_argument("--api-rate", type=float, default=20.0, help="Napster API requests/s (client)")
    parser.add_argument(
        "--no-latency-workers", type=int, nargs="*", default=[1, 16], help="rows without latency (CPU bound)"
    )
    parser.add_argument(
        "--musicbrainz-workers", type=int, nargs="*", default=[16], help="MusicBrainz rows (none: skip)"
    )
    parser.add_argument("--musicbrainz-albums-per-genre", type=int, default=100)
    parser.add_argument(
        "--musicbrainz-rate",
        type=float,
        default=MUSICBRAINZ_REQUESTS_PER_SECOND,
        help="MusicBrainz client requests/s (default: the crawl's, just under the server's 1/s)",
    )
    args = parser.parse_args()

    rows: list[Row] = []
    catalog = NapsterCatalog(albums_per_genre=args.albums_per_genre)
    started = time.monotonic()
    catalog.expected_covers()  # renders every cover the crawl will fetch, so no row pays for drawing
    print(
        f"Napster catalogue: {len(catalog.albums)} albums, covers rendered in {time.monotonic() - started:.1f}s"
    )
    emulators: list[tuple[LoopbackServer, float]] = [
        (NapsterEmulator(catalog, api_key=API_KEY, latency_s=args.latency), args.latency),
        (NapsterEmulator(catalog, api_key=API_KEY), 0.0),
    ]
    for emulator, latency in emulators:
        with emulator:
            for workers in args.workers if latency else args.no_latency_workers:
                rows.append(napster_row(emulator, workers, args.api_rate, args.albums_per_genre))
                print(f"  napster, {workers} workers, latency {latency}: {rows[-1].seconds:.1f}s", flush=True)
    if args.musicbrainz_workers:
        mb_catalog = MusicBrainzCatalog(release_groups_per_genre=args.musicbrainz_albums_per_genre)
        mb_catalog.expected_covers()
        with MusicBrainzEmulator(mb_catalog, rate_limit_per_second=1.0, latency_s=args.latency) as emulator:
            for workers in args.musicbrainz_workers:
                rows.append(
                    musicbrainz_row(
                        emulator, workers, args.musicbrainz_rate, args.musicbrainz_albums_per_genre
                    )
                )
                print(f"  musicbrainz, {workers} workers: {rows[-1].seconds:.1f}s", flush=True)
    print_tables(rows)


if __name__ == "__main__":
    main()
