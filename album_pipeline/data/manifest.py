"""The manifests: one Parquet row per stored image, under one schema shared by the labelled and unlabelled sets.

``MANIFEST_SCHEMA`` is the contract every reader relies on. Each field carries its description in the
Parquet file itself (field metadata ``description``), and ``write_manifest`` refuses to write a table that
breaks the schema or the manifest invariants (``manifest_problems``): unique ``image_id``, known splits, and
near-duplicates (one ``duplicate_group``) never in two splits. Fields that do not apply to a source are null:
album metadata for archive covers, ``archive``/``member`` for crawled ones.

The per-source stage tables that the manifests are merged from have their own schemas below
(``CRAWL_SCHEMA``, ``EXTRACTED_SCHEMA``): they may repeat images, which a manifest may not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from album_pipeline.atomic import atomic_path
from album_pipeline.recovery import set_aside

SPLITS = ("train", "val", "test")
MANIFEST_VERSION = "2"


def _field(name: str, type_: pa.DataType, nullable: bool, description: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": description})


_IDENTITY_FIELDS = [
    _field("image_id", pa.string(), False, "sha256 (64 hex digits) of the stored image bytes; the row id"),
    _field("path", pa.string(), False, "the stored image, relative to ALBUM_PIPELINE_HOME, forward slashes"),
    _field("source", pa.string(), False, "where the image came from: napster, musicbrainz, omacir"),
    _field(
        "source_id", pa.string(), False, "the source's id: album id, release-group MBID or archive/member"
    ),
    _field("genre", pa.string(), True, "the training class (a genre map class); null when unlabelled"),
]
_PICTURE_FIELDS = [
    _field("width", pa.int32(), False, "pixels"),
    _field("height", pa.int32(), False, "pixels"),
    _field("format", pa.string(), False, "Pillow format name: JPEG, PNG, GIF, ..."),
]
_SPLIT_FIELD = _field(
    "split", pa.string(), False, "train, val or test, derived from duplicate_group (stable across recrawls)"
)
_ALBUM_FIELDS = [
    _field("album_name", pa.string(), True, "album title (crawled sources)"),
    _field("artist", pa.string(), True, "album artist (crawled sources)"),
    _field("released", pa.string(), True, "release date as the source gives it (crawled sources)"),
    _field("genres", pa.list_(pa.string()), True, "every class the image was found under, in class order"),
    _field(
        "fetched_at", pa.timestamp("us", tz="UTC"), True, "when the image was downloaded (crawled sources)"
    ),
]
_ARCHIVE_FIELDS = [
    _field("archive", pa.string(), True, "the OMACIR tar the image was extracted from (archive sources)"),
    _field("member", pa.string(), True, "the member's path inside that tar (archive sources)"),
]
_PICTURE_HASH_FIELD = _field(
    "picture_hash", pa.string(), False, "256-bit perceptual hash (64 hex digits) of the picture"
)

MANIFEST_SCHEMA = pa.schema(
    _IDENTITY_FIELDS
    + _PICTURE_FIELDS
    + [
        _PICTURE_HASH_FIELD,
        _field(
            "duplicate_group",
            pa.string(),
            False,
            "near-duplicate group: the least picture_hash of the pictures within NEAR_IDENTICAL_BITS of this one",
        ),
        _SPLIT_FIELD,
    ]
    + _ALBUM_FIELDS
    + _ARCHIVE_FIELDS,
    metadata={"album_pipeline.manifest_version": MANIFEST_VERSION},
)

# One crawl's stored covers: a row per (album, image), before the sources are merged and deduplicated.
CRAWL_SCHEMA = pa.schema(_IDENTITY_FIELDS + _PICTURE_FIELDS + [_SPLIT_FIELD] + _ALBUM_FIELDS)

# What extracting one archive yields: every valid member (copies included) with its picture's perceptual
# hash, so that placeholders repeated across archives can be found when the archives are merged.
EXTRACTED_SCHEMA = pa.schema(
    _IDENTITY_FIELDS + _PICTURE_FIELDS + [_SPLIT_FIELD] + _ARCHIVE_FIELDS + [_PICTURE_HASH_FIELD]
)

FAILURES_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
    ]
)


@dataclasses.dataclass(frozen=True)
class SplitFractions:
    """Relative split sizes, normalised to sum to 1; each near-duplicate group lands in one split."""

    train: float = dataclasses.field(default=0.8, metadata={"doc": "Relative size of the train split."})
    val: float = dataclasses.field(default=0.1, metadata={"doc": "Relative size of the validation split."})
    test: float = dataclasses.field(
        default=0.1, metadata={"doc": "Relative size of the test split (evaluation)."}
    )

    def __post_init__(self) -> None:
        values = self.as_mapping()
        if (
            not all(math.isfinite(value) and value >= 0 for value in values.values())
            or sum(values.values()) <= 0
        ):
            raise ValueError(f"split fractions must be non-negative and sum above 0, got {values}")

    def as_mapping(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


DEFAULT_SPLIT_FRACTIONS: Mapping[str, float] = SplitFractions().as_mapping()


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
    table = _to_table(rows, schema)
    _write(table, path)
    return table


def _to_table(rows: Iterable[Mapping] | pd.DataFrame, schema: pa.Schema) -> pa.Table:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=schema.names)
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ValueError(f"manifest rows lack columns {missing}; expected {schema.names}")
    frame = frame[schema.names].copy()
    for field in schema:
        if field.nullable and len(frame) and frame[field.name].isna().all():
            # A column that is null throughout (album fields of archive covers) comes as float NaN from
            # pandas, which pyarrow cannot convert to strings, lists or timestamps.
            frame[field.name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        elif pa.types.is_timestamp(field.type) and isinstance(frame[field.name].dtype, pd.DatetimeTZDtype):
            # pyarrow reads naive values as UTC under a tz-aware schema; handing it tz-aware ones trips a
            # pandas deprecation inside pyarrow's conversion.
            frame[field.name] = frame[field.name].dt.tz_convert("UTC").dt.tz_localize(None)
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def _write(table: pa.Table, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)


def _existing(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"manifest {path} does not exist; materialize the asset that writes it first "
            "(for example `album-pipeline run --select labeled_manifest`)"
        )
    return path


class UnreadableTableError(ValueError):
    """A table on disk that no longer loads (truncated, overwritten, not Parquet): the message names the file
    and the asset that rebuilds it; ``reason`` is what the Parquet reader said."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _read(path: Path, rebuilt_by: str | None) -> pa.Table:
    path = _existing(path)
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        asset = rebuilt_by or "the asset that writes it"
        command = f" (`album-pipeline run --select {rebuilt_by}`)" if rebuilt_by else ""
        raise UnreadableTableError(
            f"{path} could not be read ({_first_sentence(str(error))}); rematerialize {asset}{command} to "
            "rebuild it",
            str(error),
        ) from None


def _first_sentence(text: str, limit: int = 120) -> str:
    """The reader's own reason, short: pyarrow's messages repeat the path and add advice of their own."""
    sentence = text.split(". ")[0].strip().rstrip(".")
    return sentence if len(sentence) <= limit else sentence[:limit] + "..."


def read_manifest(path: Path, rebuilt_by: str | None = None) -> pd.DataFrame:
    """A Parquet table as a frame; ``rebuilt_by`` names the asset to rematerialize if it no longer loads."""
    return _read(path, rebuilt_by).to_pandas()


# -- the manifest contract ------------------------------------------------------------------------------------

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest breaks MANIFEST_SCHEMA or one of its invariants."""


def manifest_problems(table: pa.Table) -> dict[str, list[str]]:
    """What is wrong with a manifest table, per invariant: ``schema``, ``image_id_unique``, ``splits_disjoint``.

    Empty lists mean the table is a valid manifest. Each problem names examples, so a failed asset check
    says what to look at.
    """
    problems: dict[str, list[str]] = {"schema": [], "image_id_unique": [], "splits_disjoint": []}
    expected = {field.name: field for field in MANIFEST_SCHEMA}
    actual = {field.name: field for field in table.schema}
    missing = [name for name in expected if name not in actual]
    extra = [name for name in actual if name not in expected]
    if missing:
        problems["schema"].append(f"missing columns {missing}")
    if extra:
        problems["schema"].append(f"unexpected columns {extra}")
    for name in expected.keys() & actual.keys():
        if not _same_type(actual[name].type, expected[name].type):
            problems["schema"].append(f"{name} is {actual[name].type}, expected {expected[name].type}")
        elif not expected[name].nullable and table.column(name).null_count:
            problems["schema"].append(f"{name} has {table.column(name).null_count} null(s)")
    if problems["schema"]:
        return problems  # the other invariants need the columns to be what they claim

    frame = table.select(["image_id", "picture_hash", "duplicate_group", "split"]).to_pandas()
    for column in ("image_id", "picture_hash", "duplicate_group"):
        malformed = frame.loc[~frame[column].str.fullmatch(_HEX_DIGEST), column]
        if len(malformed):
            problems["schema"].append(
                f"{len(malformed)} {column} value(s) are not 64 lowercase hex digits, e.g. {malformed.iloc[0]!r}"
            )
    unknown = sorted(set(frame["split"]) - set(SPLITS))
    if unknown:
        problems["schema"].append(f"unknown split values {unknown}; expected {list(SPLITS)}")

    repeated = frame.loc[frame["image_id"].duplicated(), "image_id"]
    if len(repeated):
        problems["image_id_unique"].append(f"{len(repeated)} repeated image_id(s), e.g. {repeated.iloc[0]}")
    splits_per_group = frame.groupby("duplicate_group")["split"].nunique()
    straddling = splits_per_group[splits_per_group > 1]
    if len(straddling):
        problems["splits_disjoint"].append(
            f"{len(straddling)} near-duplicate group(s) span several splits, e.g. {straddling.index[0]}"
        )
    return problems


def _same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    # Parquet names a list's items "element" where pyarrow says "item"; the values are what matter.
    if pa.types.is_list(actual) and pa.types.is_list(expected):
        return _same_type(actual.value_type, expected.value_type)
    return actual.equals(expected)


def write_manifest(rows: pd.DataFrame, path: Path) -> pa.Table:
    """Write a manifest atomically, refusing (``ManifestError``, old file kept) one that breaks the contract."""
    table = _to_table(rows, MANIFEST_SCHEMA)
    failed = [f"{name}: {'; '.join(found)}" for name, found in manifest_problems(table).items() if found]
    if failed:
        raise ManifestError(
            f"refusing to write {path}, it breaks the manifest contract: {' | '.join(failed)}. "
            "This is a bug in the step that built it; please report it with this message"
        )
    _write(table, path)
    return table


def read_manifest_table(path: Path, rebuilt_by: str | None = None) -> pa.Table:
    """A manifest as written, with a clear error for a manifest written before this schema version or one
    that no longer loads (``UnreadableTableError``, naming ``rebuilt_by``)."""
    table = _read(path, rebuilt_by)
    version = (table.schema.metadata or {}).get(b"album_pipeline.manifest_version", b"1").decode()
    if version != MANIFEST_VERSION:
        raise ManifestError(
            f"{path} has manifest version {version}, this code writes version {MANIFEST_VERSION}; "
            "rematerialize the asset that writes it (labeled_manifest or unlabeled_manifest)"
        )
    return table


def replace_manifest(
    manifest: pd.DataFrame,
    failures: pd.DataFrame,
    path: Path,
    failures_path: Path,
    *,
    refused: bool,
    log: Callable[[str], None] | None = None,
) -> bool:
    """Write a manifest and its failures table, unless its blocking checks ``refused`` it while an earlier
    manifest is on disk: that one is kept (nothing built from it is lost to a bad rebuild). True when written.

    With no earlier manifest (or one that no longer loads, set aside first) the refused one is written all the
    same, so that there is something to inspect and the contract checks have a file to read; the failed
    blocking check still stops what is built from it.
    """
    if refused and Path(path).exists():
        try:
            _read(path, None)
            return False
        except UnreadableTableError as error:
            set_aside(path, error.reason, log)
    write_manifest(manifest, path)
    write_table(failures, failures_path, FAILURES_SCHEMA)
    return True
