"""Asset checks shared by both manifests: the file on disk honours the manifest contract.

``write_manifest`` already refuses to write a manifest that breaks it; these checks read back what is on
disk (after a hand edit, a copy from another home, or a manifest from an older version), and block
everything built from it when it does not hold.
"""

from collections.abc import Callable
from pathlib import Path

import dagster as dg

from album_pipeline.data.manifest import (
    ManifestError,
    UnreadableTableError,
    manifest_problems,
    read_manifest_table,
)
from album_pipeline.defs.resources import PipelineHome
from album_pipeline.layout import HomeLayout

# check name -> the manifest_problems key it reports, and what passing means
_CONTRACT = {
    "manifest_schema_valid": (
        "schema",
        "columns, types, nulls, hashes and split values follow MANIFEST_SCHEMA",
    ),
    "image_id_unique": ("image_id_unique", "every image_id appears once"),
    "splits_disjoint": ("splits_disjoint", "no near-duplicate group spans two splits"),
}


def manifest_contract_checks(
    asset: str, manifest_path: Callable[[HomeLayout], Path]
) -> dg.AssetChecksDefinition:
    """The three contract checks of one manifest asset, computed from one read of its file."""

    @dg.multi_asset_check(
        name=f"{asset}_contract",
        specs=[
            dg.AssetCheckSpec(name, asset=asset, blocking=True, description=passing)
            for name, (_, passing) in _CONTRACT.items()
        ],
    )
    def contract(home: PipelineHome):
        path = manifest_path(home.layout)
        try:
            table = read_manifest_table(path, rebuilt_by=asset)
        except (ManifestError, UnreadableTableError) as error:  # a failed check, not a crashed one
            problems = {
                "schema": [str(error)],
                "image_id_unique": ["not checked"],
                "splits_disjoint": ["not checked"],
            }
        else:
            problems = manifest_problems(table)
        for name, (key, passing) in _CONTRACT.items():
            found = problems[key]
            yield dg.AssetCheckResult(
                asset_key=asset,
                check_name=name,
                passed=not found,
                description="; ".join(found) if found else passing,
                metadata={"path": dg.MetadataValue.path(str(path))},
            )

    return contract
