"""The manifest: one Parquet row per stored image (and, for labelled data, per source album).

Both manifests share the core columns below; the labelled manifest adds album metadata and the unlabelled one
adds the archive member it came from. The schema is enforced on write so that a reader can rely on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from album_pipeline.atomic import atomic_path

SPLITS = ("train", "val", "test")

CORE_FIELDS = [
    pa.field("image_id", pa.string(), nullable=False),  # sha256 hex of the stored image bytes
    pa.field("path", pa.string(), nullable=False),  # relative to ALBUM_PIPELINE_HOME, forward slashes
    pa.field("source", pa.string(), nullable=False),  # "napster", "omacir", ...
    pa.field("source_id", pa.string(), nullable=False),  # album id or "archive/member"
    pa.field("genre", pa.string(), nullable=True),  # the training class; null when unlabelled
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("format", pa.string(), nullable=False),  # Pillow format name: JPEG, PNG, ...
    pa.field("split", pa.string(), nullable=False),  # train / val / test
]

LABELED_SCHEMA = pa.schema(
    CORE_FIELDS
    + [
        pa.field("album_name", pa.string(), nullable=True),
        pa.field("artist", pa.string(), nullable=True),
        pa.field("released", pa.string(), nullable=True),
        pa.field("genres", pa.list_(pa.string()), nullable=True),  # every target class the album feeds
        pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=True),
    ]
)

UNLABELED_SCHEMA = pa.schema(
    CORE_FIELDS
    + [
        pa.field("archive", pa.string(), nullable=True),
        pa.field("member", pa.string(), nullable=True),
    ]
)

# What extracting one archive yields: every valid member (copies included) with its picture's perceptual
# hash, so that placeholders repeated across archives can be found when the archives are merged.
EXTRACTED_SCHEMA = pa.schema(
    list(UNLABELED_SCHEMA) + [pa.field("picture_hash", pa.string(), nullable=False)]  # 256-bit pHash, 64 hex
)

# The perceptual hash of every labelled image, written with the labelled manifest so that what is built from
# it (the unlabelled set's overlap check) need not decode every labelled image again.
PICTURE_HASHES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("picture_hash", pa.string(), nullable=False),
    ]
)

FAILURES_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

DEFAULT_SPLIT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


def assign_split(image_id: str, fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS) -> str:
    """A split derived from the content hash alone, so it never changes across recrawls or reorderings."""
    total = sum(fractions.values())
    if total <= 0 or any(value < 0 for value in fractions.values()):
        raise ValueError(f"split fractions must be non-negative and sum above 0, got {dict(fractions)}")
    # Re-hash so the split is independent of how image ids are bucketed in storage paths.
    position = int(hashlib.sha256(b"split:" + image_id.encode()).hexdigest()[:12], 16) / float(16**12)
    cumulative = 0.0
    for name in SPLITS:
        cumulative += fractions.get(name, 0.0) / total
        if position < cumulative:
            return name
    return SPLITS[-1]


def write_table(rows: Iterable[Mapping] | pd.DataFrame, path: Path, schema: pa.Schema) -> pa.Table:
    """Write rows as Parquet under ``schema`` atomically: readers see the old file or the new one, never half."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=schema.names)
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ValueError(f"manifest rows lack columns {missing}; expected {schema.names}")
    frame = frame[schema.names].copy()
    for field in schema:
        if pa.types.is_timestamp(field.type) and isinstance(frame[field.name].dtype, pd.DatetimeTZDtype):
            # pyarrow reads naive values as UTC under a tz-aware schema; handing it tz-aware ones trips a
            # pandas deprecation inside pyarrow's conversion.
            frame[field.name] = frame[field.name].dt.tz_convert("UTC").dt.tz_localize(None)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)
    return table


def read_manifest(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"manifest {path} does not exist; materialize the asset that writes it first "
            "(for example `album-pipeline run --select labeled_manifest`)"
        )
    return pq.read_table(path).to_pandas()
