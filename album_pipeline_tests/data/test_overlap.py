"""Labelled images and their near-duplicates never reach the unlabelled pretraining set."""

from __future__ import annotations

import pandas as pd
from PIL import Image

from album_pipeline.data.manifest import EXTRACTED_SCHEMA
from album_pipeline.data.overlap import overlapping, picture_hashes
from album_pipeline.data.storage import ImageStore
from album_pipeline.data.unlabeled import merge_extracted
from album_pipeline.testing.emulators.synthetic import draw_cover, encode_image
from album_pipeline_tests.data.planted import extracted_row


def test_exact_and_near_copies_of_labelled_images_are_removed_and_look_alikes_kept(tmp_path) -> None:
    store = ImageStore(tmp_path)
    labelled_picture = draw_cover("jazz", 11, 300)
    labelled_bytes = encode_image(labelled_picture)
    labelled = pd.DataFrame([extracted_row(store, labelled_bytes, "labelled.jpg")])[["image_id", "path"]]
    look_alike = encode_image(draw_cover("jazz", 12, 300))  # same style and layout, another cover
    recompressed = encode_image(labelled_picture, quality=70)
    as_png = encode_image(labelled_picture, "PNG")
    unlabelled = pd.DataFrame(
        [
            extracted_row(store, labelled_bytes, "same_bytes.jpg"),
            extracted_row(store, recompressed, "recompressed.jpg"),
            extracted_row(store, as_png, "as_png.png"),
            extracted_row(store, look_alike, "look_alike.jpg"),
        ],
        columns=EXTRACTED_SCHEMA.names,
    )
    reference = picture_hashes(store, labelled)
    assert list(overlapping(unlabelled, reference)) == [True, True, True, False]

    manifest, failures, stats = merge_extracted([unlabelled], exclude=reference)
    assert list(manifest["member"]) == ["look_alike.jpg"]
    assert dict(zip(failures["source_id"], failures["reason"], strict=True)) == {
        "album_covers_t.tar/same_bytes.jpg": "overlaps_labeled",
        "album_covers_t.tar/recompressed.jpg": "overlaps_labeled",
        "album_covers_t.tar/as_png.png": "overlaps_labeled",
    }
    assert stats["overlaps_labeled"] == 3
    with Image.open(store.absolute(manifest["path"][0])) as image:
        assert image.size == (300, 300)


def test_known_hashes_are_reused_without_decoding(tmp_path) -> None:
    store = ImageStore(tmp_path)
    rows = pd.DataFrame(
        [
            extracted_row(store, encode_image(draw_cover("pop", seed, 120)), f"{seed}.jpg")
            for seed in range(3)
        ],
        columns=EXTRACTED_SCHEMA.names,
    )
    first = picture_hashes(store, rows)
    store.absolute(rows["path"][0]).unlink()  # only a known image may be missing
    again = picture_hashes(store, rows, known={rows["image_id"][0]: first["picture_hash"][0]})
    assert again.equals(first)
