"""The labelled manifest: every source's crawl table merged into one row per distinct picture.

The crawls that write those tables are ``album_pipeline.data.covers`` and its sources (``napster_covers``,
``musicbrainz_covers``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from album_pipeline.data.dedup import keep_one_per_picture
from album_pipeline.data.manifest import DEFAULT_SPLIT_FRACTIONS, MANIFEST_SCHEMA, assign_split
from album_pipeline.data.results import FailureLog, frame_of
from album_pipeline.settings import SourceSelection


@dataclass(frozen=True)
class ManifestSources:
    """Which labelled sources a manifest is built from, and why each other one is not, in priority order."""

    used: tuple[str, ...]  # enabled, with covers in its crawl table
    empty: tuple[str, ...]  # enabled, but its crawl table holds no cover (a skipped crawl, say)
    not_crawled: tuple[str, ...]  # enabled, but never crawled
    disabled: tuple[str, ...]

    @classmethod
    def of(cls, selection: SourceSelection, crawl_rows: Mapping[str, int]) -> ManifestSources:
        """``crawl_rows``: the covers in each enabled source's crawl table, for those that have one."""
        enabled = selection.labelled
        return cls(
            used=tuple(source for source in enabled if crawl_rows.get(source, 0) > 0),
            empty=tuple(source for source in enabled if crawl_rows.get(source) == 0),
            not_crawled=tuple(source for source in enabled if source not in crawl_rows),
            disabled=selection.disabled,
        )


def merge_labeled_sources(
    tables: Sequence[pd.DataFrame],
    hashes: pd.DataFrame,
    split_fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
    class_order: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labelled manifest (MANIFEST_SCHEMA) from per-source crawl tables in priority order, and the rows
    it dropped (FAILURES_SCHEMA).

    ``hashes`` gives the ``picture_hash`` of every ``image_id`` of the tables. Each picture keeps one row, with
    exact copies and near-duplicates across and within sources dropped as ``duplicate`` / ``near_duplicate``
    (see ``dedup.keep_one_per_picture``; among equally large copies the first table wins, then the lowest
    source id). The row kept trains under its own ``genre`` and lists in ``genres`` every class any copy was
    found under, in ``class_order`` (unknown classes last, by name). Splits derive from the near-duplicate
    group. Rows are sorted by class and image.
    """
    frames = [table.assign(_priority=rank) for rank, table in enumerate(tables) if len(table)]
    if not frames:
        return frame_of([], MANIFEST_SCHEMA), FailureLog("").frame()
    merged = pd.concat(frames, ignore_index=True).sort_values(["_priority", "source_id"], ignore_index=True)
    hash_of = dict(zip(hashes["image_id"], hashes["picture_hash"], strict=True))
    unhashed = sorted(set(merged["image_id"]) - hash_of.keys())
    if unhashed:
        raise ValueError(
            f"no picture_hash for {len(unhashed)} image(s), e.g. {unhashed[0]}; hash every image"
        )
    merged["picture_hash"] = merged["image_id"].map(hash_of)
    deduplicated = keep_one_per_picture(merged, rank="_priority")

    rank_of = {name: position for position, name in enumerate(class_order)}
    every_copy = pd.concat([deduplicated.kept, deduplicated.dropped], ignore_index=True)
    classes_per_group: dict[str, set[str]] = defaultdict(set)
    for group, genre, genres in zip(
        every_copy["duplicate_group"], every_copy["genre"], every_copy["genres"], strict=True
    ):
        classes_per_group[group].update([genre, *(genres if genres is not None else [])])
    manifest = deduplicated.kept.drop(columns="_priority").copy()
    manifest["genres"] = [
        sorted(classes_per_group[group], key=lambda name: (rank_of.get(name, len(rank_of)), name))
        for group in manifest["duplicate_group"]
    ]
    manifest["split"] = [assign_split(group, split_fractions) for group in manifest["duplicate_group"]]
    manifest["archive"] = manifest["member"] = None
    manifest = manifest[MANIFEST_SCHEMA.names].sort_values(["genre", "image_id"], ignore_index=True)
    dropped = deduplicated.dropped
    failures = pd.DataFrame(
        {
            "source": dropped["source"],
            "source_id": dropped["source_id"],
            "url": None,
            "reason": dropped["reason"],
        }
    )
    return manifest, failures.reset_index(drop=True)
