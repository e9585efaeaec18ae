"""Decoding covers into new shards: in this process for small builds, else in a forkserver process pool.

Each decode task decodes one chunk of a shard's rows and writes them into the shard file itself, so pixels are
never pickled back to the parent. The kernel is asked to read each chunk's files ahead of the decode.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from album_pipeline.data.shards.format import write_exactly
from album_pipeline.data.shards.writing import NewShard, copy_rows

# A decode process starts in well under a second while one core decodes a few thousand covers a second, so
# a pool only pays off for large inputs.
PARALLEL_THRESHOLD = 20_000
CHUNK_SIZE = 256  # images per decode task


class DecodeTask(NamedTuple):
    """One chunk of a new shard's rows to decode; a plain tuple underneath, so it pickles cheaply."""

    target: str  # the shard file being written (its temporary name)
    data_offset: int  # byte offset of row 0 in ``target``
    resolution: int
    rows: list[int]  # ascending rows of the shard
    paths: list[str]  # the image file of each row


def decode_image(path: Path | str, resolution: int) -> np.ndarray:
    """uint8 (R, R, 3): the image as RGB, centre-cropped and resized by ``ImageOps.fit`` as the seed did."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG" and min(image.size) >= 2 * resolution:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: far faster, still at least resolution².
                image.draft("RGB", (resolution, resolution))
            rgb = image.convert("RGB")
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot decode image {path}: {error}; delete it and re-download it") from error
    fitted = ImageOps.fit(rgb, (resolution, resolution))
    return np.asarray(fitted, dtype=np.uint8)


def decode_new_shards(
    shard_dir: Path,
    resolution: int,
    shards: Sequence[NewShard],
    workers: int | None,
    on_decoded: Callable[[int], None] = lambda images: None,
) -> None:
    """Fill ``shards`` (their copies and decode tasks) and finish each; ``workers`` None: by input size.
    ``on_decoded(images)`` hears of each decoded chunk."""
    task_count = sum(len(shard.decode_tasks) for shard in shards)
    decode_count = sum(len(task.rows) for shard in shards for task in shard.decode_tasks)
    count = worker_count(workers, decode_count, task_count)
    if count > 1:
        decode_in_pool(shard_dir, resolution, shards, count, on_decoded)
        return
    upcoming = [task for shard in shards for task in shard.decode_tasks][1:] + [None]
    for shard in shards:
        copy_rows(shard_dir, resolution, shard)
        for task in shard.decode_tasks:
            following = upcoming.pop(0)
            if following is not None:
                read_ahead(following.paths)  # the disk reads the next chunk while this one decodes
            on_decoded(decode_into_shard(task))
        shard.finish()


def decode_in_pool(
    shard_dir: Path,
    resolution: int,
    shards: Sequence[NewShard],
    workers: int,
    on_decoded: Callable[[int], None] = lambda images: None,
) -> None:
    # forkserver: forking a process that runs torch or Dagster threads can deadlock the children.
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        owners = {}
        tasks = [task for shard in shards for task in shard.decode_tasks]
        # The parent mostly waits: it keeps the disk reading the chunks the workers will take next.
        look_ahead = 2 * workers
        for task in tasks[:look_ahead]:
            read_ahead(task.paths)
        for shard in shards:
            for task in shard.decode_tasks:
                owners[pool.submit(decode_into_shard, task)] = shard
                shard.pending_tasks += 1
        for shard in shards:  # copies and finished shards happen while the pool decodes
            copy_rows(shard_dir, resolution, shard)
            if shard.pending_tasks == 0:
                shard.finish()
        pending = set(owners)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                on_decoded(future.result())  # a worker's error (say, a broken image) stops the build here
                if look_ahead < len(tasks):
                    read_ahead(tasks[look_ahead].paths)
                    look_ahead += 1
                shard = owners[future]
                shard.pending_tasks -= 1
                if shard.pending_tasks == 0:
                    shard.finish()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def worker_count(requested: int | None, image_count: int, task_count: int) -> int:
    if requested is not None:
        return max(1, min(requested, task_count))
    if image_count < PARALLEL_THRESHOLD:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), task_count))


def decode_into_shard(task: DecodeTask) -> int:
    """Decode ``task.paths`` into rows ``task.rows`` of the shard file ``task.target``; runs in a worker too.

    Writing the file from here rather than returning the pixels spares pickling them back to the parent.
    """
    target, data_offset, resolution, rows, paths = task
    # Callers also look ahead, but a pool worker may take this chunk before the parent's look-ahead reaches
    # it; asking again costs a few microseconds per file (measured: without it two workers lost 28-30%).
    read_ahead(paths)
    pixels = np.empty((len(rows), resolution, resolution, 3), dtype=np.uint8)
    for slot, path in enumerate(paths):
        pixels[slot] = decode_image(path, resolution)
    row_array = np.asarray(rows)
    run_starts = np.flatnonzero(np.concatenate(([True], row_array[1:] != row_array[:-1] + 1)))
    run_ends = np.append(run_starts[1:], len(rows))
    fd = os.open(target, os.O_WRONLY)
    try:
        for start, end in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
            write_exactly(fd, pixels[start:end], data_offset + rows[start] * pixels[0].nbytes)
    finally:
        os.close(fd)
    return len(rows)


def read_ahead(paths: list[str]) -> None:
    """Ask the kernel to start reading ``paths`` now, so that decoding one image overlaps reading the next.

    A million covers do not fit in the page cache; without this a decode process waits on the disk for each
    file in turn.
    """
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # decode_image reports it, naming the file
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
