"""Deduplication and splits on planted data: exact copies, near-duplicates and cross-source overlaps.

Near-duplicates are checked against brute force (every pair of hashes compared), not against the banded
grouping the code uses.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pandas as pd
import pytest

from album_pipeline.data.dedup import keep_one_per_picture
from album_pipeline.data.images import NEAR_IDENTICAL_BITS, validate_image
from album_pipeline.data.labeled import merge_labeled_sources
from album_pipeline.data.manifest import (
    CRAWL_SCHEMA,
    EXTRACTED_SCHEMA,
    assign_split,
    manifest_problems,
    read_manifest_table,
    write_manifest,
)
from album_pipeline.data.overlap import picture_hashes
from album_pipeline.data.storage import ImageStore
from album_pipeline.data.unlabeled import merge_extracted
from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image
from album_pipeline_tests.data.planted import extracted_row

CLASSES = ("rock", "jazz", "pop")


def _crawl_row(store: ImageStore, data: bytes, source: str, source_id: str, genre: str) -> dict:
    info = validate_image(data)
    stored = store.put(data, info.extension)
    return {
        "image_id": stored.image_id, "path": stored.path, "source": source, "source_id": source_id,
        "genre": genre, "width": info.width, "height": info.height, "format": info.format,
        "split": "train", "album_name": source_id, "artist": "x", "released": "2001", "genres": [genre],
        "fetched_at": datetime.now(UTC),
    }  # fmt: skip


def _near(a: str, b: str) -> bool:
    return (int(a, 16) ^ int(b, 16)).bit_count() <= NEAR_IDENTICAL_BITS


@pytest.fixture
def labelled_sources(tmp_path):
    """Napster and MusicBrainz tables with planted exact, near and cross-source copies."""
    store = ImageStore(tmp_path)
    picture = {seed: draw_cover(CLASSES[seed % 3], seed, 300) for seed in range(12)}
    napster = [
        _crawl_row(store, encode_image(picture[s]), "napster", f"alb.{s}", CLASSES[s % 3]) for s in range(10)
    ]
    napster.append(
        _crawl_row(store, encode_image(picture[5]), "napster", "alb.5-reissue", "jazz")
    )  # same bytes
    musicbrainz = [
        _crawl_row(
            store, encode_image(picture[0]), "musicbrainz", "mb.0", "rock"
        ),  # same bytes, other source
        _crawl_row(
            store, encode_image(picture[1].resize((500, 500))), "musicbrainz", "mb.1", "jazz"
        ),  # larger
        _crawl_row(store, encode_image(picture[2], "PNG"), "musicbrainz", "mb.2", "pop"),  # same size, as PNG
        _crawl_row(store, encode_image(picture[3], quality=70), "musicbrainz", "mb.3", "pop"),  # recompressed
        _crawl_row(store, encode_image(picture[10]), "musicbrainz", "mb.10", "jazz"),
        _crawl_row(store, encode_image(picture[11]), "musicbrainz", "mb.11", "pop"),
    ]
    tables = [pd.DataFrame(rows, columns=CRAWL_SCHEMA.names) for rows in (napster, musicbrainz)]
    return store, tables


def test_labelled_sources_keep_one_row_per_picture(labelled_sources, tmp_path) -> None:
    store, tables = labelled_sources
    hashes = picture_hashes(store, pd.concat(tables, ignore_index=True))
    manifest, dropped = merge_labeled_sources(tables, hashes, class_order=CLASSES)

    assert len(manifest) == 12  # twelve pictures, whatever the copies
    assert manifest["image_id"].is_unique
    kept = list(manifest["picture_hash"])
    assert not any(_near(a, b) for i, a in enumerate(kept) for b in kept[:i])  # brute force: none left
    by_source_id = manifest.set_index("source_id")
    # The largest copy wins across sources; equal sizes go to the first source.
    assert "mb.1" in by_source_id.index and "alb.1" not in by_source_id.index
    assert {"alb.0", "alb.2", "alb.3"} <= set(by_source_id.index)
    # The row kept lists every class any copy was found under, in class order; it trains under its own.
    assert (
        list(by_source_id.loc["mb.1", "genres"]) == ["jazz"] and by_source_id.loc["mb.1", "genre"] == "jazz"
    )
    assert list(by_source_id.loc["alb.3", "genres"]) == ["rock", "pop"]
    assert list(by_source_id.loc["alb.5", "genres"]) == ["jazz", "pop"]
    reasons = dict(zip(dropped["source_id"], dropped["reason"], strict=True))
    assert reasons == {
        "mb.0": "duplicate",
        "alb.5-reissue": "duplicate",
        "alb.1": "near_duplicate",
        "mb.2": "near_duplicate",
        "mb.3": "near_duplicate",
    }
    assert list(manifest["split"]) == [assign_split(group) for group in manifest["duplicate_group"]]
    assert manifest_problems(write_manifest(manifest, tmp_path / "labeled.parquet")) == {
        "schema": [], "image_id_unique": [], "splits_disjoint": []
    }  # fmt: skip


def test_labelled_merge_is_the_same_whatever_the_row_order(labelled_sources) -> None:
    store, tables = labelled_sources
    hashes = picture_hashes(store, pd.concat(tables, ignore_index=True))
    first, _ = merge_labeled_sources(tables, hashes, class_order=CLASSES)
    shuffled = [table.sample(frac=1, random_state=3) for table in tables]
    again, _ = merge_labeled_sources(shuffled, hashes[::-1], class_order=CLASSES)
    assert again.drop(columns="fetched_at").equals(first.drop(columns="fetched_at"))


def test_unlabelled_set_keeps_one_copy_and_nothing_of_the_labelled_pictures(
    labelled_sources, tmp_path
) -> None:
    store, tables = labelled_sources
    hashes = picture_hashes(store, pd.concat(tables, ignore_index=True))
    labelled, _ = merge_labeled_sources(tables, hashes, class_order=CLASSES)
    archive = [
        extracted_row(store, encode_image(draw_cover("rock", 0, 300)), "labelled-copy.jpg"),
        extracted_row(store, encode_image(draw_cover("jazz", 1, 300), quality=60), "labelled-near.jpg"),
        extracted_row(store, encode_image(draw_cover("pop", 40, 300)), "cover.jpg"),
        extracted_row(store, encode_image(draw_cover("pop", 40, 450)), "cover-larger.jpg"),
        extracted_row(store, encode_image(draw_cover("rock", 41, 300)), "other.jpg"),
        extracted_row(store, encode_image(draw_cover("rock", 41, 300)), "other-again.jpg"),
    ]
    extracted = pd.DataFrame(archive, columns=EXTRACTED_SCHEMA.names)
    manifest, failures, _ = merge_extracted([extracted], exclude=labelled[["image_id", "picture_hash"]])

    assert list(manifest["member"]) == ["cover-larger.jpg", "other.jpg"]
    assert dict(zip(failures["source_id"].str.split("/").str[1], failures["reason"], strict=True)) == {
        "labelled-copy.jpg": "overlaps_labeled",
        "labelled-near.jpg": "overlaps_labeled",
        "cover.jpg": "near_duplicate",
        "other-again.jpg": "duplicate",
    }
    # Across the two manifests: no shared image, and no picture near one of the other manifest's.
    assert not set(manifest["image_id"]) & set(labelled["image_id"])
    assert not any(_near(a, b) for a in manifest["picture_hash"] for b in labelled["picture_hash"])
    written = write_manifest(manifest, tmp_path / "unlabeled.parquet")
    assert not any(manifest_problems(written).values())
    assert read_manifest_table(tmp_path / "unlabeled.parquet").num_rows == 2


def test_keep_one_per_picture_prefers_size_then_rank_and_ignores_order() -> None:
    base = "0" * 64
    near = "0" * 62 + "ff"  # 8 bits away
    far = "f" * 64
    rows = pd.DataFrame(
        {
            "image_id": [f"{n:064x}" for n in range(5)],
            "picture_hash": [base, near, near, far, far],
            "width": [100, 100, 200, 50, 50],
            "height": [100, 100, 200, 50, 50],
            "priority": [0, 0, 1, 1, 0],
        }
    )
    result = keep_one_per_picture(rows, rank="priority")
    assert list(result.kept["image_id"]) == [f"{2:064x}", f"{4:064x}"]
    assert set(result.dropped["reason"]) == {"near_duplicate"}
    for seed in range(5):
        order = list(range(5))
        random.Random(seed).shuffle(order)
        again = keep_one_per_picture(rows.iloc[order], rank="priority")
        assert set(again.kept["image_id"]) == set(result.kept["image_id"])
