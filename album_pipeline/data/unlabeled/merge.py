"""Merging the per-archive extractions into the unlabelled manifest, without labelled images or placeholders.

Across archives, a picture seen ``placeholder_min_repeats`` times or more (the same bytes, or a near-identical
re-encoding: ``album_pipeline.data.near_duplicates``) is a dead-link placeholder and gives no row; other exact
copies keep their first occurrence; ``max_images`` keeps the first images in archive and member order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from album_pipeline.data.dedup import keep_one_per_picture
from album_pipeline.data.manifest import (
    DEFAULT_SPLIT_FRACTIONS,
    MANIFEST_SCHEMA,
    assign_split,
    read_manifest,
    read_manifest_table,
    replace_manifest,
)
from album_pipeline.data.near_duplicates import near_duplicate_groups
from album_pipeline.data.overlap import overlapping
from album_pipeline.data.results import FailureLog, Log, frame_of, safe_log
from album_pipeline.data.unlabeled.archives import chosen_archives
from album_pipeline.data.unlabeled.extraction import OMACIR
from album_pipeline.layout import HomeLayout


@dataclass(frozen=True)
class MergeOptions:
    max_images: int | None = field(
        default=250_000,
        metadata={"doc": "Keep the first this many clean images (seed: 250,000); None: all of them."},
    )
    placeholder_min_repeats: int = field(
        default=3,
        metadata={"doc": "A picture (same bytes or near-identical) seen this often is a placeholder."},
    )
    split_fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLIT_FRACTIONS))

    def __post_init__(self) -> None:
        if self.placeholder_min_repeats < 2:
            raise ValueError(
                f"placeholder_min_repeats must be at least 2, got {self.placeholder_min_repeats}"
            )
        if self.max_images is not None and self.max_images < 0:
            raise ValueError(f"max_images must be non-negative, got {self.max_images}")


@dataclass(frozen=True)
class UnlabeledManifest:
    """What ``build_unlabeled_manifest`` wrote, and what it was built from."""

    manifest: pd.DataFrame
    failures: pd.DataFrame  # every archive's extraction failures, then the merge's
    stats: dict[str, Any]  # merge_extracted's
    archives_not_extracted: list[str]  # chosen but not extracted yet: left out
    labelled: pd.DataFrame | None  # image_id and picture_hash of the labelled images; None: no manifest yet
    kept_previous: bool = False  # refused by no_labeled_images, so the earlier manifest on disk was kept

    def labelled_images_kept(self) -> int:
        """Labelled images that are in the unlabelled manifest all the same (0 unless something is wrong)."""
        if self.labelled is None:
            return 0
        return int(self.manifest["image_id"].isin(set(self.labelled["image_id"])).sum())


def build_unlabeled_manifest(
    layout: HomeLayout, options: MergeOptions | None = None, *, log: Log | None = None
) -> UnlabeledManifest:
    """Merge every extracted archive of those chosen, leaving out the labelled images and their
    near-duplicates (so that pretraining never sees a test cover), and write the manifest and its failures."""
    say = safe_log(log)
    labelled = (
        read_manifest_table(layout.labeled_manifest, rebuilt_by="labeled_manifest")
        .select(["image_id", "picture_hash"])
        .to_pandas()
        if layout.labeled_manifest.exists()
        else None
    )
    if labelled is None:
        say("no labelled manifest yet: the unlabelled covers cannot be checked against it")
    names = list(chosen_archives(layout, log=say))
    extracted = [name for name in names if layout.extracted_summary(OMACIR, name).exists()]
    missing = [name for name in names if name not in extracted]
    if not extracted:
        raise FileNotFoundError(
            f"none of the chosen OMACIR archives ({names}) is extracted yet: materialize omacir_archive_images "
            "(all partitions) first"
        )
    if missing:
        say(f"archives not extracted yet, left out: {missing}; backfill omacir_archive_images")
    extraction = f"omacir_archive_images (its partitions {extracted})"
    manifest, merge_failures, stats = merge_extracted(
        [read_manifest(layout.extracted_images(OMACIR, name), rebuilt_by=extraction) for name in extracted],
        options,
        exclude=labelled,
    )
    failures = pd.concat(
        [read_manifest(layout.extracted_failures(OMACIR, name), rebuilt_by=extraction) for name in extracted]
        + [merge_failures],
        ignore_index=True,
    )
    merged = UnlabeledManifest(manifest, failures, stats, missing, labelled)
    # no_labeled_images blocks what is built from this manifest: one it refuses never replaces an earlier one.
    written = replace_manifest(
        manifest,
        failures,
        layout.unlabeled_manifest,
        layout.unlabeled_failures,
        refused=merged.labelled_images_kept() > 0,
        log=say,
    )
    if not written:
        say(
            f"the new unlabelled manifest keeps labelled images: {layout.unlabeled_manifest} was kept as it was"
        )
    return dataclasses.replace(merged, kept_previous=not written)


def merge_extracted(
    tables: Sequence[pd.DataFrame],
    options: MergeOptions | None = None,
    *,
    exclude: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The unlabelled manifest from per-archive extraction tables (in archive order), its failures, stats.

    ``exclude`` (``image_id`` and ``picture_hash`` of the labelled images) removes those images and their
    near-duplicates first (``overlaps_labeled``), so pretraining never sees a test cover.

    A picture with ``placeholder_min_repeats`` or more copies, counting near-identical ones, is a placeholder:
    all its rows become ``placeholder`` failures. Other pictures keep one copy (``dedup.keep_one_per_picture``:
    the largest, then the first), the rest are ``duplicate`` or ``near_duplicate`` failures.
    ``max_images`` keeps the first images; the rest are left out, not failures.
    """
    options = options or MergeOptions()
    max_images = options.max_images
    frames = [table for table in tables if len(table)]
    failures = FailureLog(OMACIR)
    if not frames:
        empty = {"rows": 0, "placeholder_pictures": 0, "overlaps_labeled": 0}
        return frame_of([], MANIFEST_SCHEMA), failures.frame(), empty
    rows = pd.concat(frames, ignore_index=True)
    overlaps = 0
    if exclude is not None and len(exclude):
        labelled = overlapping(rows, exclude)
        overlaps = int(labelled.sum())
        for source_id in rows.loc[labelled, "source_id"]:
            failures.add(source_id, "overlaps_labeled")
        rows = rows[~labelled]
    groups = near_duplicate_groups(rows["picture_hash"])
    group = rows["picture_hash"].map(groups)
    copies = group.map(group.value_counts())
    placeholder = copies >= options.placeholder_min_repeats
    placeholder_pictures = int(group[placeholder].nunique())
    for source_id in rows.loc[placeholder, "source_id"]:
        failures.add(source_id, "placeholder")
    deduplicated = keep_one_per_picture(rows[~placeholder], groups=groups)
    for source_id, reason in zip(
        deduplicated.dropped["source_id"], deduplicated.dropped["reason"], strict=True
    ):
        failures.add(source_id, reason)
    rows = deduplicated.kept
    left_out = 0
    if max_images is not None and len(rows) > max_images:
        left_out = len(rows) - max_images
        rows = rows.iloc[:max_images]
    manifest = rows.assign(genres=None, album_name=None, artist=None, released=None, fetched_at=pd.NaT)[
        MANIFEST_SCHEMA.names
    ].reset_index(drop=True)
    # From the picture, not the bytes, so that a recrawl keeping another copy keeps the split.
    manifest["split"] = [assign_split(key, options.split_fractions) for key in manifest["duplicate_group"]]
    stats = {
        "rows": len(manifest),
        "placeholder_pictures": placeholder_pictures,
        "overlaps_labeled": overlaps,
        "left_out_by_max_images": left_out,
        "rows_per_archive": manifest["archive"].value_counts().to_dict(),
    }
    return manifest, failures.frame(), stats
