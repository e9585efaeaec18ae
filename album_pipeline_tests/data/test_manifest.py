"""The lead's manifest module: schema enforcement, atomic writes, deterministic splits."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from album_pipeline import recovery
from album_pipeline.data import manifest
from album_pipeline.data.manifest import (
    CRAWL_SCHEMA,
    EXTRACTED_SCHEMA,
    FAILURES_SCHEMA,
    MANIFEST_SCHEMA,
    ManifestError,
    UnreadableTableError,
    assign_split,
    manifest_problems,
    read_manifest,
    read_manifest_table,
    replace_manifest,
    write_manifest,
    write_table,
)


def _unlabeled_row(n: int) -> dict:
    image_id = hashlib.sha256(str(n).encode()).hexdigest()
    return {
        "image_id": image_id,
        "path": f"images/{image_id[:2]}/{image_id}.jpg",
        "source": "omacir",
        "source_id": f"album_covers_a.tar/{n}.jpg",
        "genre": None,
        "width": 300,
        "height": 300,
        "format": "JPEG",
        "split": assign_split(image_id),
        "archive": "album_covers_a.tar",
        "member": f"{n}.jpg",
        "picture_hash": image_id,
    }


def test_round_trip_keeps_schema(tmp_path: Path) -> None:
    path = tmp_path / "extracted" / "a.parquet"
    rows = [_unlabeled_row(n) for n in range(5)]
    write_table(rows, path, EXTRACTED_SCHEMA)
    assert pq.read_schema(path).equals(EXTRACTED_SCHEMA, check_metadata=False)
    frame = read_manifest(path)
    assert frame["image_id"].tolist() == [row["image_id"] for row in rows]
    assert frame["genre"].isna().all()


def test_labeled_rows_with_lists_and_timestamps(tmp_path: Path) -> None:
    row = _unlabeled_row(1)
    del row["archive"], row["member"], row["picture_hash"]
    row.update(
        source="napster",
        source_id="alb.1",
        genre="rock",
        album_name="A",
        artist="B",
        released="",
        genres=["rock", "jazz"],
        fetched_at=datetime.now(UTC),
    )
    table = write_table([row], tmp_path / "napster.parquet", CRAWL_SCHEMA)
    assert table.column("genres").to_pylist() == [["rock", "jazz"]]


def test_missing_columns_are_refused(tmp_path: Path) -> None:
    row = _unlabeled_row(1)
    del row["split"]
    with pytest.raises(ValueError, match="split"):
        write_table(pd.DataFrame([row]), tmp_path / "x.parquet", EXTRACTED_SCHEMA)


def test_nulls_in_required_columns_are_refused(tmp_path: Path) -> None:
    row = _unlabeled_row(1)
    row["image_id"] = None
    with pytest.raises((ValueError, pa.ArrowInvalid, pa.ArrowTypeError)):
        write_table([row], tmp_path / "manifests" / "x.parquet", EXTRACTED_SCHEMA)
    assert not (tmp_path / "manifests" / "x.parquet").exists()


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "manifests" / "failures.parquet"
    write_table(
        [{"source": "napster", "source_id": "alb.1", "url": None, "reason": "old"}], path, FAILURES_SCHEMA
    )

    def broken_write(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(manifest.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_table(
            [{"source": "napster", "source_id": "alb.2", "url": None, "reason": "new"}], path, FAILURES_SCHEMA
        )
    assert read_manifest(path)["reason"].tolist() == ["old"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["failures.parquet"]  # no temp file left behind


def test_read_missing_manifest_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="materialize"):
        read_manifest(tmp_path / "nope.parquet")


def test_split_is_deterministic_and_close_to_fractions() -> None:
    ids = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(20_000)]
    splits = [assign_split(image_id) for image_id in ids]
    assert splits == [assign_split(image_id) for image_id in ids]
    shares = {name: splits.count(name) / len(ids) for name in ("train", "val", "test")}
    assert shares["train"] == pytest.approx(0.8, abs=0.015)
    assert shares["val"] == pytest.approx(0.1, abs=0.01)
    assert shares["test"] == pytest.approx(0.1, abs=0.01)


def test_split_fractions_are_normalised_and_validated() -> None:
    ids = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(2_000)]
    assert {assign_split(i, {"train": 2.0, "val": 0.0, "test": 0.0}) for i in ids} == {"train"}
    with pytest.raises(ValueError, match="non-negative"):
        assign_split(ids[0], {"train": 1.0, "val": -0.1, "test": 0.1})


def _manifest(count: int = 6) -> pd.DataFrame:
    rows = []
    for n in range(count):
        row = _unlabeled_row(n)
        row.update(duplicate_group=row["picture_hash"], genres=None, album_name=None, artist=None)
        row.update(released=None, fetched_at=None)
        rows.append(row)
    return pd.DataFrame(rows, columns=MANIFEST_SCHEMA.names)


def test_manifest_schema_documents_every_field_and_round_trips(tmp_path: Path) -> None:
    assert all(field.metadata and field.metadata.get(b"description") for field in MANIFEST_SCHEMA)
    table = write_manifest(_manifest(), tmp_path / "m.parquet")
    assert manifest_problems(table) == {"schema": [], "image_id_unique": [], "splits_disjoint": []}
    written = read_manifest_table(tmp_path / "m.parquet")
    assert not any(manifest_problems(written).values())
    assert [(f.name, f.metadata) for f in written.schema] == [(f.name, f.metadata) for f in MANIFEST_SCHEMA]


def test_each_broken_invariant_is_named_and_the_write_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    write_manifest(_manifest(), path)
    repeated = _manifest()
    repeated.loc[1, "image_id"] = repeated.loc[0, "image_id"]
    straddling = _manifest()
    straddling.loc[1, "duplicate_group"] = straddling.loc[0, "duplicate_group"]
    straddling.loc[1, "split"] = "test" if straddling.loc[0, "split"] != "test" else "train"
    bad_split = _manifest().assign(split="holdout")
    bad_hash = _manifest().assign(picture_hash="not-a-hash")
    cases = {
        "image_id_unique": repeated,
        "splits_disjoint": straddling,
        "schema": bad_split,
    }
    for invariant, frame in cases.items():
        problems = manifest_problems(
            pa.Table.from_pandas(frame, schema=MANIFEST_SCHEMA, preserve_index=False)
        )
        assert problems[invariant] and not any(v for k, v in problems.items() if k != invariant), invariant
        with pytest.raises(ManifestError, match=invariant):
            write_manifest(frame, path)
    assert (
        "picture_hash"
        in manifest_problems(pa.Table.from_pandas(bad_hash, schema=MANIFEST_SCHEMA, preserve_index=False))[
            "schema"
        ][0]
    )
    assert manifest_problems(pa.table({"image_id": ["x"]}))["schema"][0].startswith("missing columns")
    assert read_manifest_table(path).num_rows == 6  # every refused write kept the good file


def test_a_manifest_from_an_older_version_asks_to_be_rebuilt(tmp_path: Path) -> None:
    write_table([_unlabeled_row(1)], tmp_path / "old.parquet", EXTRACTED_SCHEMA)
    with pytest.raises(ManifestError, match="rematerialize"):
        read_manifest_table(tmp_path / "old.parquet")


def test_a_table_that_no_longer_loads_names_the_file_and_the_asset_that_rebuilds_it(tmp_path: Path) -> None:
    path = tmp_path / "napster.parquet"
    write_manifest(_manifest(), path)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(UnreadableTableError) as raised:
        read_manifest(path, rebuilt_by="napster_covers")
    assert str(path) in str(raised.value)
    assert "album-pipeline run --select napster_covers" in str(raised.value)
    with pytest.raises(UnreadableTableError, match="labeled_manifest"):
        read_manifest_table(path, rebuilt_by="labeled_manifest")


def test_a_refused_manifest_never_replaces_an_earlier_one(tmp_path: Path) -> None:
    path, failures = tmp_path / "m.parquet", tmp_path / "m.failures.parquet"
    empty_failures = pd.DataFrame(columns=FAILURES_SCHEMA.names)
    # No earlier manifest: the refused one is written, so that there is something to inspect.
    assert replace_manifest(_manifest(6), empty_failures, path, failures, refused=True)
    assert read_manifest_table(path).num_rows == 6 and failures.exists()
    assert not replace_manifest(_manifest(2), empty_failures, path, failures, refused=True)
    assert read_manifest_table(path).num_rows == 6
    assert replace_manifest(_manifest(3), empty_failures, path, failures, refused=False)
    assert read_manifest_table(path).num_rows == 3
    path.write_bytes(b"PAR1 garbage")  # an earlier manifest that no longer loads is worth nothing: replaced
    assert replace_manifest(_manifest(2), empty_failures, path, failures, refused=True)
    assert read_manifest_table(path).num_rows == 2 and recovery.unreadable_copies(path)
