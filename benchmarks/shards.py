"""Training shards: build speed, the loader's memory over a huge shard set, loader speed against training.

    .venv/bin/python benchmarks/shards.py build --images 100000   # decode speed, 1 worker and all cores
    .venv/bin/python benchmarks/shards.py rss --images 1000000    # peak RSS of one epoch (12 GB in --dir)
    .venv/bin/python benchmarks/shards.py speed                   # loader images/s vs seed-scale training

Each prints a markdown table. ``build`` first writes the synthetic 300x300 JPEGs (gradients, shapes and
grain, quality 90) with every core, then times ``build_shards`` into a fresh folder: one worker with the
decoder's read-ahead turned off, then one worker and every core with it. Before each build it drops the
page cache (as root), so the JPEGs come from disk, as a million covers would. Last it adds 1% new images and
times the incremental rebuild. ``rss`` writes a 64x64 shard set from random pixels into
a temporary folder under ``--dir`` (deleted afterwards) and iterates one full epoch with ``iterate_batches``
(batch 128, cpu) in a fresh subprocess, which reports its peak RSS (VmHWM, and ``ru_maxrss``, which also
counts the parent's RSS at the fork, as Linux carries it over). ``speed`` times the
loader alone and then ``train_gan`` at the seed's scale (generator width 512, discriminator width 64, batch
128, bf16) on the same shard set, in one run.

torch is imported only by the subcommands that need it, so the decode pool of ``build`` starts quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from album_pipeline.data.shards import build_shards, load_shards
from album_pipeline.data.shards import decode as shard_decode
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.testing.shards import write_shard_set_from_arrays

SIDE = 300


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build_shards images/s on synthetic JPEGs")
    build.add_argument("--images", type=int, default=100_000)
    build.add_argument("--workers", default=f"1,{len(os.sched_getaffinity(0))}", help="comma-separated")
    build.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    build.add_argument(
        "--keep-page-cache", action="store_true", help="do not drop the page cache (a shared machine)"
    )
    rss = commands.add_parser("rss", help="peak RSS of one loader epoch over a large shard set")
    rss.add_argument("--images", type=int, default=1_000_000)
    rss.add_argument("--batch", type=int, default=128)
    rss.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    speed = commands.add_parser("speed", help="loader images/s against seed-scale training images/s")
    speed.add_argument("--images", type=int, default=20_000)
    speed.add_argument("--batch", type=int, default=128)
    speed.add_argument("--loader-batches", type=int, default=300)
    speed.add_argument("--steps", type=int, default=6, help="training steps; the first two are dropped")
    speed.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    epoch = commands.add_parser("_epoch", help=argparse.SUPPRESS)  # the fresh subprocess of `rss`
    epoch.add_argument("shard_set", type=Path)
    epoch.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    {"build": bench_build, "rss": bench_rss, "speed": bench_speed, "_epoch": one_epoch}[args.command](args)


# -- build -------------------------------------------------------------------------------------------------


def bench_build(args: argparse.Namespace) -> None:
    extra = max(1, args.images // 100)
    worker_counts = [int(value) for value in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="shards-bench-", dir=args.dir) as folder:
        home = Path(folder) / "home"
        started = time.perf_counter()
        manifest = write_synthetic_jpegs(home, args.images + extra)
        generated = time.perf_counter() - started
        size = sum((home / path).stat().st_size for path in manifest["path"][:1000]) / min(
            1000, len(manifest)
        )
        print(
            f"{args.images + extra:,} synthetic {SIDE}x{SIDE} JPEGs (mean {size / 1024:.1f} KiB) written in "
            f"{generated:.0f} s; {len(os.sched_getaffinity(0))} cores\n"
        )
        print("| build | workers | images decoded | seconds | images/s | images/s per core |")
        print("|---|---:|---:|---:|---:|---:|")
        first = manifest.iloc[: args.images]
        cases = [(1, False)] + [(workers, True) for workers in worker_counts]
        for workers, read_ahead in cases:
            out_dir = Path(folder) / f"w{workers}{'' if read_ahead else '-no-read-ahead'}"
            cold = _drop_page_cache(args.keep_page_cache)
            with _read_ahead_enabled(read_ahead):
                result = build_shards(first, home, out_dir, DEFAULT_GENRES, workers=workers)
            note = "" if read_ahead else ", read-ahead off"
            _build_row(f"full, {args.images:,} images{note}{cold}", workers, result)
        out_dir = Path(folder) / f"w{worker_counts[-1]}"
        cold = _drop_page_cache(args.keep_page_cache)
        result = build_shards(manifest, home, out_dir, DEFAULT_GENRES)  # workers as the asset picks them
        label = f"incremental, +{extra:,} new ({result.reused:,} reused){cold}"
        _build_row(label, "auto", result)
        # Nothing new: what remains is reading the id lists, checking every reused shard, writing the index.
        cold = _drop_page_cache(args.keep_page_cache)
        result = build_shards(manifest, home, out_dir, DEFAULT_GENRES)
        print(f"| unchanged, {result.reused:,} reused{cold} | auto | 0 | {result.seconds:.2f} | - | - |")


def _drop_page_cache(keep: bool = False) -> str:
    """Start a build with the JPEGs on disk only, as a million covers would be; '' if it could be done."""
    if keep:
        return " (page cache kept)"
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return " (page cache not dropped: needs root)"
    return ""


@contextlib.contextmanager
def _read_ahead_enabled(enabled: bool):
    """Turn the decoder's read-ahead off in this process (the one-worker build decodes in-process)."""
    original = shard_decode.read_ahead
    if not enabled:
        shard_decode.read_ahead = lambda paths: None
    try:
        yield
    finally:
        shard_decode.read_ahead = original


def _build_row(label: str, workers: int | str, result) -> None:
    rate = result.decoded / result.seconds
    per_core = f"{rate / workers:,.0f}" if isinstance(workers, int) else "-"
    print(
        f"| {label} | {workers} | {result.decoded:,} | {result.seconds:.2f} | {rate:,.0f} | {per_core} |",
        flush=True,
    )


def write_synthetic_jpegs(home: Path, count: int) -> pd.DataFrame:
    """``count`` varied 300x300 JPEGs under ``home``/images, and their manifest (random genres and splits)."""
    image_ids = [hashlib.sha256(f"synthetic-cover-{index}".encode()).hexdigest() for index in range(count)]
    paths = [f"images/{image_id[:2]}/{image_id}.jpg" for image_id in image_ids]
    for prefix in {path.split("/")[1] for path in paths}:
        (home / "images" / prefix).mkdir(parents=True, exist_ok=True)
    jobs = [(str(home / path), index) for index, path in enumerate(paths)]
    with multiprocessing.get_context("forkserver").Pool(len(os.sched_getaffinity(0))) as pool:
        for _ in pool.imap_unordered(_write_cover, jobs, chunksize=64):
            pass
    rng = np.random.default_rng(0)
    genres = [*DEFAULT_GENRES, None]
    return pd.DataFrame(
        {
            "image_id": image_ids,
            "path": paths,
            "genre": [genres[index] for index in rng.integers(0, len(genres), count)],
            "split": rng.choice(["train", "val", "test"], count, p=[0.8, 0.1, 0.1]),
        }
    )


def _write_cover(job: tuple[str, int]) -> None:
    path, seed = job
    rng = np.random.default_rng(seed)
    # A gradient between two random colours in a random direction, shapes on top, then film-like grain.
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-1, 1, SIDE, dtype=np.float32)
    weight = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None] + 1.5) / 3
    start, end = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    image = Image.fromarray((start + weight[..., None] * (end - start)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 9)):
        box = (
            sorted(rng.integers(-50, SIDE + 50, 2).tolist()),
            sorted(rng.integers(-50, SIDE + 50, 2).tolist()),
        )
        corners = [box[0][0], box[1][0], box[0][1], box[1][1]]
        colour = tuple(rng.integers(0, 256, 3).tolist())
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse(corners, fill=colour)
        elif shape == 1:
            draw.rectangle(corners, fill=colour)
        else:
            draw.polygon([tuple(point) for point in rng.integers(0, SIDE, (5, 2)).tolist()], fill=colour)
    grain = rng.standard_normal((SIDE, SIDE, 1), dtype=np.float32) * rng.uniform(2, 12)
    noisy = np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, format="JPEG", quality=90)


# -- rss ---------------------------------------------------------------------------------------------------


def bench_rss(args: argparse.Namespace) -> None:
    chunk = 8192
    with tempfile.TemporaryDirectory(prefix="shards-rss-", dir=args.dir) as folder:
        out_dir = Path(folder) / "shards"
        started = time.perf_counter()
        labels = np.random.default_rng(0).integers(-1, len(DEFAULT_GENRES), args.images)
        chunks = (
            np.random.default_rng(start).integers(
                0, 256, (min(chunk, args.images - start), 64, 64, 3), np.uint8
            )
            for start in range(0, args.images, chunk)
        )
        write_shard_set_from_arrays(out_dir, chunks, labels, DEFAULT_GENRES)
        written = time.perf_counter() - started
        on_disk = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file())
        print(f"wrote {args.images:,} images ({on_disk / 2**30:.1f} GiB) in {written:.0f} s\n")
        report = subprocess.run(
            [sys.executable, __file__, "_epoch", str(out_dir), "--batch", str(args.batch)],
            check=True,
            capture_output=True,
            text=True,
        )
        numbers = json.loads(report.stdout.strip().splitlines()[-1])
    print(
        "| images | batch | peak RSS after imports | after load_shards | after one epoch | ru_maxrss | images/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.images:,} | {args.batch} | {numbers['imports_mib']:.0f} MiB | {numbers['loaded_mib']:.0f} MiB "
        f"| {numbers['peak_mib']:.0f} MiB | {numbers['ru_maxrss_mib']:.0f} MiB "
        f"| {numbers['images_per_second']:,.0f} |"
    )


def one_epoch(args: argparse.Namespace) -> None:
    """One epoch over the shard set in a process of its own; prints its memory figures as JSON."""
    from album_pipeline.data.loader import iterate_batches

    imports = _peak_rss_mib()
    data = load_shards(args.shard_set)
    loaded = _peak_rss_mib()
    batches = iterate_batches(data, args.batch, device="cpu", seed=0, labels=False)
    steps = len(data) // args.batch
    started = time.perf_counter()
    for _ in range(steps):
        next(batches)
    seconds = time.perf_counter() - started
    batches.close()
    print(
        json.dumps(
            {
                "imports_mib": imports,
                "loaded_mib": loaded,
                "peak_mib": _peak_rss_mib(),
                "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "images_per_second": steps * args.batch / seconds,
            }
        )
    )


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). ru_maxrss would also count the parent's RSS when it forked us."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- speed -------------------------------------------------------------------------------------------------


def bench_speed(args: argparse.Namespace) -> None:
    import torch

    from album_pipeline.data.loader import iterate_batches
    from album_pipeline.model.networks import GanArchitecture
    from album_pipeline.training.loop import TrainingConfig, train_gan

    folder = Path(tempfile.mkdtemp(prefix="shards-speed-", dir=args.dir))
    try:
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
        labels = rng.integers(0, len(DEFAULT_GENRES), args.images)
        data = write_shard_set_from_arrays(folder / "shards", pixels, labels, DEFAULT_GENRES)
        del pixels

        batches = iterate_batches(data, args.batch, device="cpu", seed=0)
        for _ in range(5):  # starts the reader thread
            next(batches)
        started = time.perf_counter()
        for _ in range(args.loader_batches):
            next(batches)
        loader_speed = args.loader_batches * args.batch / (time.perf_counter() - started)
        batches.close()

        speeds: list[float] = []
        config = TrainingConfig(
            steps=args.steps,
            batch_size=args.batch,
            precision="bf16",
            log_every=1,
            checkpoint_every=10**6,
        )
        train_gan(
            data,
            GanArchitecture(num_genres=len(DEFAULT_GENRES), generator_width=512, discriminator_width=64),
            config,
            folder / "checkpoints",
            use_labels=True,
            log=lambda record: speeds.append(record["images_per_second"]),
        )
        training_speed = statistics.median(speeds[2:] or speeds)  # oneDNN builds its bf16 kernels first
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images:,} images of 64x64\n")
    print("| loader images/s | training images/s (G 512, D 64, batch 128, bf16) | loader / training |")
    print("|---:|---:|---:|")
    print(f"| {loader_speed:,.0f} | {training_speed:.1f} | {loader_speed / training_speed:,.0f}x |")


if __name__ == "__main__":
    main()
