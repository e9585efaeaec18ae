"""Choosing OMACIR archives, recording the choice, and downloading each one verified after a free-disk check."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from album_pipeline.atomic import atomic_path
from album_pipeline.data.results import Log, safe_log
from album_pipeline.layout import HomeLayout
from album_pipeline.progress import Progress
from album_pipeline.recovery import set_aside
from album_pipeline.sources.http import SourceError
from album_pipeline.sources.omacir import ArchiveFile, OmacirClient, partial_download


class InsufficientDiskSpace(SourceError):
    """Not enough free disk for what a step is about to write; the message gives the numbers."""


@dataclass(frozen=True)
class ArchiveSelection:
    """Which OMACIR archives to ingest."""

    archives: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "Archive file names (album_covers_s.tar) or letters (s); empty: in listed order until "
            "max_images is covered at about estimated_bytes_per_image."
        },
    )
    max_images: int | None = field(
        default=250_000, metadata={"doc": "Unlabelled images wanted (seed: 250,000); None: every archive."}
    )
    estimated_bytes_per_image: int = field(
        default=150_000, metadata={"doc": "OMACIR averages ~148 GB / 1M images."}
    )

    def __post_init__(self) -> None:
        if self.estimated_bytes_per_image < 1:
            raise ValueError(
                f"estimated_bytes_per_image must be positive, got {self.estimated_bytes_per_image}"
            )


def select_archives(
    available: Sequence[ArchiveFile], selection: ArchiveSelection | None = None
) -> list[ArchiveFile]:
    """The archives to ingest: those named (``album_covers_s.tar`` or just ``s``), in the order given; or,
    when none are named, the listed ones in order until about ``max_images`` images are covered at
    ``estimated_bytes_per_image`` (OMACIR averages ~148 KB an image); or all of them."""
    selection = selection or ArchiveSelection()
    if selection.archives:
        by_name = {archive.name: archive for archive in available}
        chosen, unknown = [], []
        for name in selection.archives:
            full = name if name in by_name else f"album_covers_{name}.tar"
            (chosen if full in by_name else unknown).append(by_name.get(full, name))
        if unknown:
            raise ValueError(f"unknown OMACIR archives {unknown}; the item has: {', '.join(sorted(by_name))}")
        return chosen
    if selection.max_images is None:
        return list(available)
    chosen, covered = [], 0
    for archive in available:
        if covered >= selection.max_images:
            break
        chosen.append(archive)
        covered += max(1, (archive.size or 0) // selection.estimated_bytes_per_image)
    return chosen


def choose_archives(
    client: OmacirClient, layout: HomeLayout, selection: ArchiveSelection | None = None
) -> tuple[list[ArchiveFile], list[ArchiveFile]]:
    """The chosen archives and all that the item lists; checks the disk has room for the chosen ones and
    records them (name, size, md5) in ``layout.omacir_listing`` for the download and the merge."""
    available = client.list_archives()
    chosen = select_archives(available, selection)
    downloads = layout.omacir_downloads_dir
    needed = sum(space_needed(a, downloads, local=client.local_dir is not None) for a in chosen)
    ensure_free_space(downloads, needed, f"the {len(chosen)} chosen OMACIR archives")
    listing = [{"name": a.name, "size": a.size, "md5": a.md5} for a in chosen]
    with atomic_path(layout.omacir_listing) as tmp:
        tmp.write_text(json.dumps(listing, indent=2))
    return chosen, available


def chosen_archives(layout: HomeLayout, *, log: Log | None = None) -> dict[str, ArchiveFile]:
    """The archives ``choose_archives`` recorded, by name, in the order chosen.

    A record that no longer loads is set aside (``recovery.set_aside``) and counts as missing: rematerializing
    omacir_archives writes it again.
    """
    path = layout.omacir_listing
    missing = FileNotFoundError(
        f"{path} is missing: materialize omacir_archives first (`album-pipeline run --select omacir_archives`)"
    )
    if not path.exists():
        raise missing
    try:
        return {
            item["name"]: ArchiveFile(item["name"], item["size"], item["md5"])
            for item in json.loads(path.read_text())
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        set_aside(path, f"not a list of chosen archives: {type(error).__name__}: {error}", log)
        raise missing from None


def ensure_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Raise InsufficientDiskSpace unless ``folder``'s file system has ``needed_bytes`` free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise InsufficientDiskSpace(
            f"{what} needs {needed_bytes / 1e9:,.2f} GB but only {free / 1e9:,.2f} GB is free under {probe}; "
            "free some space, point ALBUM_PIPELINE_HOME at a bigger disk, or ingest fewer archives"
        )


def space_needed(archive: ArchiveFile, download_dir: Path, *, local: bool) -> int:
    """Bytes an archive still needs on disk: what is left to download plus about as much again for the
    images it holds (stored by content, so the two are similar)."""
    size = archive.size or 0
    if local:
        return size
    partial = partial_download(download_dir, archive.name)
    final = Path(download_dir) / archive.name
    on_disk = final.stat().st_size if final.exists() else partial.stat().st_size if partial.exists() else 0
    return max(0, size - on_disk) + size


# The ingest steps share one signature shape (inputs, store, options, *, log, progress_bar) so they compose.
def download_archive(
    client: OmacirClient,
    archive: ArchiveFile,
    download_dir: Path,
    *,
    log: Log | None = None,
    progress_bar: bool | None = None,
) -> tuple[Path, int]:
    """The verified archive and the bytes fetched over the network for it (0 when already complete).

    Checks free disk space first. An interrupted download resumes from its ``.partial`` file; a size or md5
    mismatch deletes the bad file and raises ArchiveChecksumError, leaving nothing half-written.
    """
    say = safe_log(log)
    download_dir = Path(download_dir)
    ensure_free_space(
        download_dir,
        space_needed(archive, download_dir, local=client.local_dir is not None),
        f"{archive.name} ({(archive.size or 0) / 1e9:,.2f} GB, then its images)",
    )
    partial = partial_download(download_dir, archive.name)
    previous = [partial.stat().st_size if partial.exists() else 0]
    fetched = [0]
    shown = Progress(
        f"omacir: download {archive.name}",
        archive.size,
        unit="B",
        log=say,
        progress_bar=progress_bar,
        initial=previous[0],
    )

    def progress(done: int, total: int | None) -> None:
        # ``done`` counts bytes on disk; a restart from zero (server ignored Range) makes it drop.
        fetched[0] += done - previous[0] if done >= previous[0] else done
        previous[0] = done
        shown.reach(done)

    with shown:
        path = client.download(archive, download_dir, progress=progress)
    return path, fetched[0]
