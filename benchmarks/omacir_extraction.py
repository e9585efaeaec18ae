"""Images/s, MB/s and peak memory of ``extract_archive`` on an OMACIR-sized tar, beside plain ``tar -x``.

    .venv/bin/python benchmarks/omacir_extraction.py       # about 5 minutes on 2 cores (2 min of it building)
    .venv/bin/python benchmarks/omacir_extraction.py --gigabytes 0.4 --small-gigabytes 0.1  # a quick look

Needs about 3 times ``--gigabytes`` of free disk under the temporary folder (``--tmp``) at its peak.

Builds, in a temporary folder that is deleted at the end (also on failure), ``album_covers_x.tar`` of about
``--gigabytes`` made of distinct synthetic covers: ``draw_unlabeled_cover`` at 450-600 px with film grain and a
blotchy texture, JPEG quality 90, about 150 KB each (OMACIR averages 148 KB an image), every member a different
picture. While writing it, the first ``--small-gigabytes`` of members also go to ``album_covers_y.tar``, an
exact prefix, to show whether peak memory grows with the archive. Building is streamed (one member at a time)
and its time is reported apart.

Then, for each archive, in the same warm-cache state (both tars were just written and are read once more
before timing, so every run reads them from the page cache):

- ``tar -xf`` (GNU tar) into an empty folder, and the same followed by ``sync`` (``extract_archive`` fsyncs
  every image it stores, plain ``tar -x`` leaves the writing to the kernel), each ``--tar-repeats`` times
  (the median is shown: tar's few seconds vary with the disk's writeback);
- ``extract_archive`` into a fresh ``ImageStore``, in a fresh Python process, whose own peak RSS
  (``ru_maxrss``) is reported after its imports (baseline) and at the end.

Between runs the output is synced and deleted, untimed. Last, a breakdown of where ``extract_archive``'s time
goes, its steps timed one by one on the small archive in another fresh process. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import multiprocessing
import multiprocessing.pool
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

BIG_NAME = "album_covers_x.tar"
SMALL_NAME = "album_covers_y.tar"
JPEG_QUALITY = 90
GRAIN = 22.0  # per-channel film grain (standard deviation, 0-255 scale)
TEXTURE = 25.0  # a smooth luminance texture (bicubic upscale of a 1/16 random field)
GNU_TIME = "/usr/bin/time"


def render_cover(seed: int) -> bytes:
    """One distinct cover, about 100-190 KB as JPEG quality 90: a synthetic cover with texture and grain."""
    from album_pipeline.testing.emulators.synthetic import draw_unlabeled_cover, encode_image

    rng = np.random.default_rng(seed)
    size = int(rng.integers(450, 601))
    pixels = np.asarray(draw_unlabeled_cover(seed, size), np.float32)
    coarse = rng.standard_normal((size // 16 + 1, size // 16 + 1), dtype=np.float32) * TEXTURE
    pixels += np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))[..., None]
    pixels += rng.standard_normal((size, size, 3), dtype=np.float32) * GRAIN
    return encode_image(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), quality=JPEG_QUALITY)


def _add(archive: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def covers(pool: multiprocessing.pool.Pool, batch: int = 64) -> Iterator[bytes]:
    """Covers for seeds 0, 1, 2, ... rendered by the pool a batch at a time (bounded memory)."""
    for start in itertools.count(0, batch):
        yield from pool.map(render_cover, range(start, start + batch), chunksize=4)


def build_archives(folder: Path, big_bytes: int, small_bytes: int) -> tuple[dict, dict, float]:
    """Write the big tar and its prefix, streamed; each one's path, members and bytes, and the build time."""
    big_path, small_path = folder / BIG_NAME, folder / SMALL_NAME
    big = {"path": big_path, "members": 0, "payload": 0}
    small = {"path": small_path, "members": 0, "payload": 0}
    started = time.monotonic()
    mtime = int(time.time())
    seen: set[str] = set()
    with (
        multiprocessing.Pool(os.cpu_count() or 2) as pool,
        tarfile.open(big_path, "w", format=tarfile.GNU_FORMAT) as big_tar,
        tarfile.open(small_path, "w", format=tarfile.GNU_FORMAT) as small_tar,
    ):
        small_open = True
        for data in covers(pool):
            digest = hashlib.md5(data).hexdigest()  # names like the real archives'; all distinct
            if digest in seen:
                raise RuntimeError("two covers encoded to the same bytes")
            seen.add(digest)
            name = f"album_covers_x/{digest}.jpg"
            _add(big_tar, name, data, mtime)
            big["members"] += 1
            big["payload"] += len(data)
            if small_open:
                _add(small_tar, name, data, mtime)
                small["members"] += 1
                small["payload"] += len(data)
                if small["payload"] >= small_bytes:
                    small_tar.close()
                    small_open = False
            if big["payload"] >= big_bytes:
                break
            if big["members"] % 2000 == 0:
                print(f"  built {big['members']:,} members, {big['payload'] / 1e9:.2f} GB", flush=True)
    seconds = time.monotonic() - started
    for archive in (big, small):
        archive["bytes"] = archive["path"].stat().st_size
    return big, small, seconds


def read_through(path: Path) -> None:
    """Read the whole file once, so that every timed run finds it in the page cache."""
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass


def settle(folder: Path) -> None:
    """Flush what the last run wrote and delete it (untimed), so it does not slow the next run down."""
    os.sync()
    shutil.rmtree(folder, ignore_errors=True)
    os.sync()


def run_tar(archive: Path, work: Path, then_sync: bool) -> dict:
    """Time GNU tar extracting into an empty folder; its peak RSS from GNU time (``%M``, KiB), which forks
    tar itself, so the figure is tar's own and not this Python process's (inherited across the exec)."""
    out = work / "tar-out"
    out.mkdir()
    peak_file = work / "tar-peak"
    command = ["tar", "-xf", str(archive), "-C", str(out)]
    if Path(GNU_TIME).exists():
        command = [GNU_TIME, "-f", "%M", "-o", str(peak_file), *command]
    started = time.monotonic()
    subprocess.run(command, check=True)
    if then_sync:
        os.sync()
    seconds = time.monotonic() - started
    settle(out)
    peak = int(peak_file.read_text().split()[-1]) if peak_file.exists() else None
    peak_file.unlink(missing_ok=True)
    return {"seconds": seconds, "peak_kib": peak}


def run_child(mode: str, archive: Path, work: Path) -> dict:
    """Run this script as a fresh process in ``mode`` on ``archive``; its JSON report (the last line)."""
    store_root = work / "store"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--child-{mode}",
        str(archive),
        str(store_root),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    settle(store_root)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_extract(archive: Path, store_root: Path) -> None:
    import resource

    from album_pipeline.data.storage import ImageStore
    from album_pipeline.data.unlabeled import extract_archive

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = extract_archive(archive, "album_covers_x.tar", ImageStore(store_root), progress_bar=False)
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # VmHWM is this address space's own high-water mark; ru_maxrss also counts the parent's RSS at the exec.
    status = Path("/proc/self/status").read_text()
    hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    stats = result.stats
    report = {
        "seconds": seconds,
        "members": stats["members"],
        "valid": stats["valid_members"],
        "failures": stats["failures"],
        "baseline_kib": baseline,
        "peak_kib": peak,
        "vmhwm_kib": hwm,
    }
    print(json.dumps(report))


def child_breakdown(archive: Path, store_root: Path) -> None:
    """Time ``extract_archive``'s steps one by one on every member (the same calls it makes, in order)."""
    from album_pipeline.data.images import validate_image
    from album_pipeline.data.storage import ImageStore, image_id_of
    from album_pipeline.sources.omacir import iter_tar_images

    store = ImageStore(store_root)
    steps = dict.fromkeys(["read tar member", "sha256", "validate + perceptual hash (one full decode)",
                           "store (write + fsync)"], 0.0)  # fmt: skip
    members = 0
    clock = time.perf_counter
    mark = clock()
    for member in iter_tar_images(archive):
        now = clock()
        steps["read tar member"] += now - mark
        image_id_of(member.data)
        mark, now = now, clock()
        steps["sha256"] += now - mark
        info = validate_image(member.data, with_picture_hash=True)
        mark, now = now, clock()
        steps["validate + perceptual hash (one full decode)"] += now - mark
        store.put(member.data, info.extension)
        mark, now = now, clock()
        steps["store (write + fsync)"] += now - mark
        mark = now
        members += 1
    print(json.dumps({"members": members, "steps": steps}))


def mb(kib: int) -> float:
    return kib * 1024 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--gigabytes", type=float, default=2.0, help="size of the big archive (GB, 1e9 bytes)"
    )
    parser.add_argument("--small-gigabytes", type=float, default=0.5, help="size of its prefix archive")
    parser.add_argument("--tar-repeats", type=int, default=3, help="tar runs per row (the median is shown)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to make the temporary folder")
    parser.add_argument("--child-extract", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-breakdown", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_extract:
        child_extract(*args.child_extract)
        return
    if args.child_breakdown:
        child_breakdown(*args.child_breakdown)
        return
    if not 0 < args.small_gigabytes < args.gigabytes:
        parser.error("--small-gigabytes must be positive and below --gigabytes")

    with tempfile.TemporaryDirectory(prefix="omacir-extraction-", dir=args.tmp) as name:
        folder = Path(name)
        print(f"building {args.gigabytes} GB and {args.small_gigabytes} GB archives in {folder}", flush=True)
        big, small, build_seconds = build_archives(
            folder, int(args.gigabytes * 1e9), int(args.small_gigabytes * 1e9)
        )
        for archive in (big, small):
            print(
                f"  {archive['path'].name}: {archive['members']:,} members, {archive['bytes'] / 1e9:.3f} GB, "
                f"{archive['payload'] / archive['members'] / 1e3:.1f} KB an image on average"
            )
        print(f"  build time {build_seconds:.1f} s (not part of the benchmark)", flush=True)
        work = folder / "work"
        work.mkdir()
        os.sync()
        rows = []
        for archive in (small, big):
            read_through(archive["path"])
            label = f"{archive['bytes'] / 1e9:.2f} GB"
            for tool, measure in (
                ("tar -x", lambda a=archive: run_tar(a["path"], work, then_sync=False)),
                ("tar -x + sync", lambda a=archive: run_tar(a["path"], work, then_sync=True)),
                ("extract_archive", lambda a=archive: run_child("extract", a["path"], work)),
            ):
                print(f"  {label}: {tool} ...", flush=True)
                runs = [measure() for _ in range(1 if tool == "extract_archive" else args.tar_repeats)]
                result = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]  # the median run
                rows.append({"label": label, "archive": archive, "tool": tool, **result})
                if len(runs) > 1:
                    times = ", ".join(f"{run['seconds']:.2f}" for run in runs)
                    print(f"    {tool} seconds: {times} (median shown)", flush=True)
                if tool == "extract_archive" and result["members"] != archive["members"]:
                    raise RuntimeError(f"extract_archive read {result['members']} of {archive['members']}")
        print("  breakdown ...", flush=True)
        breakdown = run_child("breakdown", small["path"], work)

    print(
        f"\nBuilt in {build_seconds:.1f} s: {big['members']:,} and {small['members']:,} members, "
        f"{big['payload'] / big['members'] / 1e3:.1f} KB an image on average.\n"
    )
    print("| archive | members | tool | seconds | images/s | MB/s | peak RSS MB | RSS after imports MB |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        archive = row["archive"]
        peak = f"{mb(row['peak_kib']):.0f}" if row["peak_kib"] is not None else ""
        baseline = f"{mb(row['baseline_kib']):.0f}" if "baseline_kib" in row else ""
        print(
            f"| {row['label']} | {archive['members']:,} | {row['tool']} | {row['seconds']:.2f} | "
            f"{archive['members'] / row['seconds']:.0f} | {archive['bytes'] / 1e6 / row['seconds']:.1f} | "
            f"{peak} | {baseline} |"
        )
    print()
    for label in dict.fromkeys(row["label"] for row in rows):
        times = {row["tool"]: row["seconds"] for row in rows if row["label"] == label}
        print(
            f"{label}: extract_archive / tar -x = {times['tar -x'] / times['extract_archive']:.3f} "
            f"(images/s and MB/s alike: same archive), / (tar -x + sync) = "
            f"{times['tar -x + sync'] / times['extract_archive']:.3f}"
        )
    extracts = [row for row in rows if row["tool"] == "extract_archive"]
    for row in extracts:
        print(
            f"{row['label']}: extract_archive ru_maxrss {mb(row['peak_kib']):.1f} MB, its own VmHWM "
            f"{mb(row['vmhwm_kib']):.1f} MB; {row['valid']:,} valid, {row['failures']} failures"
        )
    if len(extracts) == 2:
        low, high = extracts
        growth = (high["peak_kib"] - low["peak_kib"]) * 1024
        per_member = growth / (high["archive"]["members"] - low["archive"]["members"])
        print(
            f"peak RSS {mb(low['peak_kib']):.0f} -> {mb(high['peak_kib']):.0f} MB: "
            f"{growth / 1e6:+.1f} MB for {high['archive']['members'] - low['archive']['members']:,} more "
            f"members ({per_member:+.0f} bytes a member)"
        )
    total = sum(breakdown["steps"].values())
    print(
        f"\nWhere the time goes, steps timed one by one ({breakdown['members']:,} members, {small['path'].name}):\n"
    )
    print("| step | ms an image | share |")
    print("|---|---|---|")
    for step, seconds in breakdown["steps"].items():
        print(f"| {step} | {seconds / breakdown['members'] * 1e3:.2f} | {seconds / total:.0%} |")
    print(f"| total | {total / breakdown['members'] * 1e3:.2f} | 100% |")


if __name__ == "__main__":
    main()
