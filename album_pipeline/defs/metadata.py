"""Small helpers that turn core results into Dagster metadata (tables and pictures as markdown)."""

from __future__ import annotations

import base64
import numbers
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import pandas as pd


def counts_table(
    counts: Mapping[str, object] | pd.Series, key: str, value: str = "images"
) -> dg.MetadataValue:
    """A two-column markdown table; integers get thousands separators."""
    rows = "\n".join(
        f"| {name} | {count:,} |" if isinstance(count, numbers.Integral) else f"| {name} | {count} |"
        for name, count in dict(counts).items()
    )
    return dg.MetadataValue.md(f"| {key} | {value} |\n|---|---:|\n{rows}\n")


def preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "(empty)")


def png_markdown(path: Path, caption: str) -> dg.MetadataValue:
    # Dagster has no image metadata type; an inline data URI renders in the UI's markdown view.
    encoded = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{caption}](data:image/png;base64,{encoded})")


def manifest_metadata(manifest: pd.DataFrame, path: Path) -> dict:
    """What a manifest asset shows: row count, counts per genre, source and split, a preview, its path."""
    return {
        "dagster/row_count": len(manifest),
        "per_genre": counts_table(manifest["genre"].fillna("(unlabelled)").value_counts(), "genre"),
        "per_source": counts_table(manifest["source"].value_counts(), "source"),
        "per_split": counts_table(manifest["split"].value_counts(), "split"),
        "preview": preview(
            manifest[["image_id", "path", "source", "source_id", "genre", "width", "height", "split"]]
        ),
        "path": dg.MetadataValue.path(str(path)),
    }
