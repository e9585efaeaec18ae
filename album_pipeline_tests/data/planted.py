"""Rows of planted images for the deduplication and overlap tests: stored for real, hashed for real."""

from __future__ import annotations

from album_pipeline.data.images import validate_image
from album_pipeline.data.storage import ImageStore


def extracted_row(store: ImageStore, data: bytes, member: str) -> dict:
    """The EXTRACTED_SCHEMA row an archive member with these bytes gives, its image put in ``store``."""
    info = validate_image(data, with_picture_hash=True)
    stored = store.put(data, info.extension)
    return {
        "image_id": stored.image_id, "path": stored.path, "source": "omacir",
        "source_id": f"album_covers_t.tar/{member}", "genre": None, "width": info.width,
        "height": info.height, "format": info.format, "split": "train", "archive": "album_covers_t.tar",
        "member": member, "picture_hash": info.picture_hash,
    }  # fmt: skip
