"""The manifest contract checks read the file on disk and block what is built from a broken one."""

import hashlib

import dagster as dg
import pandas as pd

from album_pipeline.data.manifest import EXTRACTED_SCHEMA, MANIFEST_SCHEMA, write_manifest, write_table
from album_pipeline.data.results import frame_of
from album_pipeline.defs.checks import manifest_contract_checks
from album_pipeline.defs.resources import PipelineHome


def _manifest(count: int = 4) -> pd.DataFrame:
    rows = []
    for n in range(count):
        image_id = hashlib.sha256(str(n).encode()).hexdigest()
        rows.append(
            {
                "image_id": image_id, "path": f"images/{image_id}.jpg", "source": "omacir",
                "source_id": f"a.tar/{n}.jpg", "genre": None, "width": 64, "height": 64, "format": "JPEG",
                "picture_hash": image_id, "duplicate_group": image_id, "split": "train",
                "archive": "a.tar", "member": f"{n}.jpg",
            }
        )  # fmt: skip
    return frame_of(rows, MANIFEST_SCHEMA)


def _run(tmp_path, write) -> dg.ExecuteInProcessResult:
    path = tmp_path / "manifests" / "unlabeled.parquet"

    @dg.asset(name="unlabeled_manifest")
    def manifest() -> None:
        write(path)

    @dg.asset(deps=[manifest])
    def built_from_it() -> None:
        pass

    check = manifest_contract_checks("unlabeled_manifest", lambda layout: layout.manifests_dir / path.name)
    definitions = dg.Definitions(
        assets=[manifest, built_from_it],
        asset_checks=[check],
        resources={"home": PipelineHome(root=str(tmp_path))},
    )
    return definitions.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def _outcomes(result) -> dict[str, bool]:
    return {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}


def test_a_valid_manifest_passes_all_three(tmp_path) -> None:
    result = _run(tmp_path, lambda path: write_manifest(_manifest(), path))
    assert result.success
    assert _outcomes(result) == {
        "manifest_schema_valid": True,
        "image_id_unique": True,
        "splits_disjoint": True,
    }
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert materialized == {"unlabeled_manifest", "built_from_it"}


def test_a_broken_manifest_on_disk_fails_and_blocks_what_is_built_from_it(tmp_path) -> None:
    broken = _manifest()
    broken.loc[1, "image_id"] = broken.loc[0, "image_id"]
    broken.loc[2, ["duplicate_group", "split"]] = [broken.loc[3, "duplicate_group"], "test"]
    result = _run(tmp_path, lambda path: write_table(broken, path, MANIFEST_SCHEMA))  # bypasses the contract
    assert _outcomes(result) == {
        "manifest_schema_valid": True,
        "image_id_unique": False,
        "splits_disjoint": False,
    }
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert materialized == {"unlabeled_manifest"}  # blocking: built_from_it never ran


def test_an_old_manifest_fails_the_schema_check(tmp_path) -> None:
    old = _manifest().drop(columns=["duplicate_group", "genres"])
    result = _run(tmp_path, lambda path: write_table(old, path, EXTRACTED_SCHEMA))
    outcomes = _outcomes(result)
    assert outcomes["manifest_schema_valid"] is False
    description = next(
        e.description
        for e in result.get_asset_check_evaluations()
        if e.asset_check_key.name == "manifest_schema_valid"
    )
    assert "rematerialize" in description


def test_a_manifest_that_no_longer_loads_fails_the_schema_check_and_says_what_to_rebuild(tmp_path) -> None:
    def truncated(path):
        write_manifest(_manifest(), path)
        path.write_bytes(path.read_bytes()[:64])

    result = _run(tmp_path, truncated)
    assert _outcomes(result) == {
        "manifest_schema_valid": False,
        "image_id_unique": False,
        "splits_disjoint": False,
    }
    description = next(
        e.description
        for e in result.get_asset_check_evaluations()
        if e.asset_check_key.name == "manifest_schema_valid"
    )
    assert "could not be read" in description and "--select unlabeled_manifest" in description
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert materialized == {"unlabeled_manifest"}
