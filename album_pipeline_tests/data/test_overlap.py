"""Labelled images and their near-duplicates never reach the unlabelled pretraining set."""

from __future__ import annotations

import pandas as pd
from PIL import Image

from album_pipeline.data.images import validate_image
from album_pipeline.data.manifest import EXTRACTED_SCHEMA
from album_pipeline.data.overlap import overlapping, picture_hashes, split_keys
from album_pipeline.data.storage import ImageStore
from album_pipeline.data.unlabeled import merge_extracted
from album_pipeline.emulators.synthetic import draw_cover, encode_image


def _row(store: ImageStore, data: bytes, member: str) -> dict:
    info = validate_image(data, with_picture_hash=True)
    stored = store.put(data, info.extension)
    return {
        "image_id": stored.image_id, "path": stored.path, "source": "omacir",
        "source_id": f"album_covers_t.tar/{member}", "genre": None, "width": info.width,
        "height": info.height, "format": info.format, "split": "train", "archive": "album_covers_t.tar",
        "member": member, "picture_hash": info.picture_hash,
    }  # fmt: skip


def test_exact_and_near_copies_of_labelled_images_are_removed_and_look_alikes_kept(tmp_path) -> None:
    store = ImageStore(tmp_path)
    labelled_picture = draw_cover("jazz", 11, 300)
    labelled_bytes = encode_image(labelled_picture)
    labelled = pd.DataFrame([_row(store, labelled_bytes, "labelled.jpg")])[["image_id", "path"]]
    look_alike = encode_image(draw_cover("jazz", 12, 300))  # same style and layout, another cover
    recompressed = encode_image(labelled_picture, quality=70)
    as_png = encode_image(labelled_picture, "PNG")
    unlabelled = pd.DataFrame(
        [
            _row(store, labelled_bytes, "same_bytes.jpg"),
            _row(store, recompressed, "recompressed.jpg"),
            _row(store, as_png, "as_png.png"),
            _row(store, look_alike, "look_alike.jpg"),
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


def test_near_duplicates_always_share_a_split_in_both_manifests(tmp_path) -> None:
    from album_pipeline.data.labeled import merge_labeled_sources

    store = ImageStore(tmp_path)
    rows, pairs = [], []
    for seed in range(40):
        picture = draw_cover("rock", seed, 240)
        original, copy = encode_image(picture), encode_image(picture, quality=55)
        rows += [_row(store, original, f"{seed}.jpg"), _row(store, copy, f"{seed}_copy.jpg")]
        pairs.append((f"{seed}.jpg", f"{seed}_copy.jpg"))
    table = pd.DataFrame(rows, columns=EXTRACTED_SCHEMA.names)
    manifest, _, _ = merge_extracted([table])  # two copies of a picture stay under the placeholder count
    split_of = dict(zip(manifest["member"], manifest["split"], strict=True))
    assert all(split_of[a] == split_of[b] for a, b in pairs)
    assert set(split_of.values()) == {"train", "val", "test"}

    labelled = table.assign(source="napster", source_id=table["member"], genre="rock")
    keys = split_keys(picture_hashes(store, labelled))
    merged, _ = merge_labeled_sources([labelled], split_keys=keys)
    labelled_split = dict(zip(merged["source_id"], merged["split"], strict=True))
    assert all(labelled_split[a] == labelled_split[b] for a, b in pairs)
    # Stable: the same content gives the same splits whatever the order or the crawl.
    again, _ = merge_labeled_sources([labelled.iloc[::-1]], split_keys=keys)
    assert dict(zip(again["source_id"], again["split"], strict=True)) == labelled_split
