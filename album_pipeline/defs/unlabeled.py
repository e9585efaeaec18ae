"""Unlabelled covers: OMACIR archives chosen, then downloaded and extracted one partition per archive, merged.

``omacir_archives`` reads the item's file list, chooses archives and registers one dynamic partition for each.
``omacir_archive_images`` downloads and extracts archives: one per run in a backfill (so archives go in
parallel and a failed one is retried alone), or all the chosen ones when the whole pipeline runs at once.
``unlabeled_manifest`` merges what was extracted, dropping placeholders repeated across archives.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from album_pipeline.atomic import atomic_path
from album_pipeline.data.manifest import (
    EXTRACTED_SCHEMA,
    FAILURES_SCHEMA,
    read_manifest,
    read_manifest_table,
    write_manifest,
    write_table,
)
from album_pipeline.data.storage import ImageStore
from album_pipeline.data.unlabeled import (
    ExtractOptions,
    download_archive,
    ensure_free_space,
    extract_archive,
    merge_extracted,
    select_archives,
    space_needed,
)
from album_pipeline.defs.checks import manifest_contract_checks
from album_pipeline.defs.labeled import SplitConfig, labeled_manifest
from album_pipeline.defs.metadata import counts_table, manifest_metadata
from album_pipeline.defs.resources import OmacirArchive, PipelineHome
from album_pipeline.layout import HomeLayout
from album_pipeline.sources.http import SourceError
from album_pipeline.sources.omacir import DEFAULT_MAX_MEMBER_BYTES, ArchiveChecksumError, ArchiveFile

omacir_archive_partitions = dg.DynamicPartitionsDefinition(name="omacir_archive")


class OmacirArchivesConfig(dg.Config):
    archives: list[str] = Field(
        default_factory=list,
        description="Archive file names (album_covers_s.tar) or letters (s); empty: in listed order until "
        "max_images is covered at about estimated_bytes_per_image.",
    )
    max_images: int = Field(250_000, description="Unlabelled images wanted (seed: 250,000).")
    estimated_bytes_per_image: int = Field(150_000, description="OMACIR averages ~148 GB / 1M images.")


class OmacirExtractConfig(dg.Config):
    max_member_bytes: int = Field(
        DEFAULT_MAX_MEMBER_BYTES, description="Tar members larger than this are refused unread."
    )
    max_pixels: int = Field(
        40_000_000, description="Images with more pixels are refused (decompression bombs)."
    )
    min_side: int = Field(32, description="Images with a shorter side are dropped as too small.")
    max_aspect_ratio: float = Field(3.0, description="More elongated images are dropped (banners, strips).")
    convert_to_jpeg: bool = Field(False, description="Store GIF and PNG covers re-encoded as JPEG.")
    delete_archive_after_extract: bool = Field(
        False, description="Delete a downloaded tar once its images are extracted and recorded."
    )
    parallel_archives: int = Field(
        2, description="Archives downloaded and extracted at once when one run handles several."
    )

    def options(self) -> ExtractOptions:
        return ExtractOptions(
            max_member_bytes=self.max_member_bytes,
            max_pixels=self.max_pixels,
            min_side=self.min_side,
            max_aspect_ratio=self.max_aspect_ratio,
            convert_to_jpeg=self.convert_to_jpeg,
        )


class UnlabeledManifestConfig(SplitConfig):
    max_images: int = Field(250_000, description="Keep the first this many clean images (seed: 250,000).")
    placeholder_min_repeats: int = Field(
        3, description="A picture (same bytes or near-identical) seen this often is a placeholder."
    )


@dg.asset(group_name="unlabeled", kinds={"json"})
def omacir_archives(
    context: dg.AssetExecutionContext, config: OmacirArchivesConfig, home: PipelineHome, omacir: OmacirArchive
) -> dg.MaterializeResult:
    """The OMACIR archives to ingest, from the item's file list (names, sizes, md5), one partition each."""
    layout = home.layout
    client = omacir.client()
    available = client.list_archives()
    chosen = select_archives(
        available,
        config.archives or None,
        max_images=config.max_images,
        bytes_per_image=config.estimated_bytes_per_image,
    )
    needed = sum(
        space_needed(a, layout.omacir_downloads_dir, local=client.local_dir is not None) for a in chosen
    )
    ensure_free_space(layout.omacir_downloads_dir, needed, f"the {len(chosen)} chosen OMACIR archives")
    new = [a.name for a in chosen if not context.instance.has_dynamic_partition(partitions_name(), a.name)]
    if new:
        context.instance.add_dynamic_partitions(partitions_name(), new)
    listing = [{"name": a.name, "size": a.size, "md5": a.md5} for a in chosen]
    with atomic_path(_listing_path(layout)) as tmp:
        tmp.write_text(json.dumps(listing, indent=2))
    return dg.MaterializeResult(
        metadata={
            "archives": len(chosen),
            "bytes": sum(a.size or 0 for a in chosen),
            "names": ", ".join(a.name for a in chosen),
            "available_archives": len(available),
            "new_partitions": len(new),
        }
    )


def partitions_name() -> str:
    return omacir_archive_partitions.name


@dg.asset(
    group_name="unlabeled",
    kinds={"parquet"},
    deps=[omacir_archives],
    partitions_def=omacir_archive_partitions,  # a backfill runs one archive per run (Dagster's default)
)
def omacir_archive_images(
    context: dg.AssetExecutionContext, config: OmacirExtractConfig, home: PipelineHome, omacir: OmacirArchive
) -> dg.MaterializeResult:
    """One OMACIR archive downloaded (resumable, md5-verified) and its images extracted, checked and stored.

    Without a partition (the whole pipeline in one run) it handles every archive omacir_archives chose.
    """
    layout = home.layout
    chosen = {item["name"]: ArchiveFile(item["name"], item["size"], item["md5"]) for item in _listing(layout)}
    names = (
        list(context.partition_keys) if context.has_partition_key or context.has_partition_key_range else []
    )
    names = names or list(chosen)
    unknown = [name for name in names if name not in chosen]
    if unknown:
        raise ValueError(
            f"archives {unknown} are not among those omacir_archives chose ({sorted(chosen)}); materialize "
            "omacir_archives with them in its `archives` config first"
        )
    client = omacir.client()
    store = ImageStore(layout.root)

    def ingest(name: str) -> dict:
        return _ingest_archive(context, client, store, layout, chosen[name], config)

    workers = max(1, min(config.parallel_archives, len(names)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omacir-archive") as pool:
        outcomes = list(pool.map(_catching(ingest), names))
    failed = {
        name: outcome for name, outcome in zip(names, outcomes, strict=True) if isinstance(outcome, Exception)
    }
    done = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
    if failed:
        lines = "\n".join(f"- {name}: {error}" for name, error in failed.items())
        raise SourceError(
            f"{len(failed)} of {len(names)} OMACIR archives failed (the others are extracted and kept):\n{lines}"
        )
    return dg.MaterializeResult(
        metadata={
            "archives": ", ".join(names),
            "members": sum(d["members"] for d in done),
            "valid_images": sum(d["valid_members"] for d in done),
            "bytes_downloaded": sum(d["bytes_downloaded"] for d in done),
            "per_archive": dg.MetadataValue.md(_per_archive_table(done)),
        }
    )


def _catching(function):
    def call(argument):
        try:
            return function(argument)
        except Exception as error:  # reported per archive; one bad archive never hides the others' results
            return error

    return call


def _ingest_archive(
    context, client, store: ImageStore, layout: HomeLayout, archive: ArchiveFile, config
) -> dict:
    """Download and extract one archive, unless its extraction is already recorded for these bytes."""
    summary_path = _extracted_path(layout, archive.name, "json")
    options = config.options()
    fingerprint = {"md5": archive.md5, "size": archive.size, "options": repr(options)}
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("fingerprint") == fingerprint and _extracted_path(layout, archive.name).exists():
            context.log.info(f"omacir: {archive.name} already extracted; reusing it")
            return {**summary["stats"], "bytes_downloaded": 0}
    try:
        path, fetched = download_archive(client, archive, layout.omacir_downloads_dir, log=context.log.info)
    except ArchiveChecksumError as error:
        raise ArchiveChecksumError(f"{error} (nothing from this archive was kept)") from None
    extracted = extract_archive(path, archive.name, store, options, log=context.log.info)
    write_table(extracted.rows, _extracted_path(layout, archive.name), EXTRACTED_SCHEMA)
    write_table(
        extracted.failures, _extracted_path(layout, archive.name, "failures.parquet"), FAILURES_SCHEMA
    )
    with atomic_path(summary_path) as tmp:  # written last: its presence means the archive is fully recorded
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "stats": extracted.stats}, indent=2))
    if config.delete_archive_after_extract and client.local_dir is None:
        path.unlink(missing_ok=True)
        context.log.info(f"omacir: deleted {path} (its images are extracted and recorded)")
    return {**extracted.stats, "bytes_downloaded": fetched}


def _per_archive_table(done: list[dict]) -> str:
    header = "| archive | members | valid | MB | MB/s | images/s |\n|---|---:|---:|---:|---:|---:|\n"
    return header + "\n".join(
        f"| {d['archive']} | {d['members']:,} | {d['valid_members']:,} | {d['bytes'] / 1e6:,.1f} | "
        f"{d['mb_per_second']} | {d['images_per_second']} |"
        for d in done
    )


@dg.asset(
    group_name="unlabeled",
    kinds={"parquet"},
    deps=[omacir_archive_images, labeled_manifest],
    check_specs=[dg.AssetCheckSpec("no_labeled_images", asset="unlabeled_manifest", blocking=True)],
)
def unlabeled_manifest(
    context: dg.AssetExecutionContext, config: UnlabeledManifestConfig, home: PipelineHome
) -> dg.MaterializeResult:
    """Clean unlabelled covers from every extracted archive: placeholders and repeats across archives removed,
    and every labelled image and its near-duplicates left out, so that pretraining never sees a test cover."""
    layout = home.layout
    labelled = (
        read_manifest_table(layout.labeled_manifest).select(["image_id", "picture_hash"]).to_pandas()
        if layout.labeled_manifest.exists()
        else None
    )
    if labelled is None:
        context.log.warning("no labelled manifest yet: the unlabelled covers cannot be checked against it")
    names = [item["name"] for item in _listing(layout)]
    extracted = [name for name in names if _extracted_path(layout, name, "json").exists()]
    missing = [name for name in names if name not in extracted]
    if not extracted:
        raise FileNotFoundError(
            f"none of the chosen OMACIR archives ({names}) is extracted yet: materialize omacir_archive_images "
            "(all partitions) first"
        )
    if missing:
        context.log.warning(
            f"archives not extracted yet, left out: {missing}; backfill omacir_archive_images"
        )
    manifest, merge_failures, stats = merge_extracted(
        [read_manifest(_extracted_path(layout, name)) for name in extracted],
        max_images=config.max_images,
        placeholder_min_repeats=config.placeholder_min_repeats,
        split_fractions=config.fractions(),
        exclude=labelled,
    )
    failures = pd.concat(
        [read_manifest(_extracted_path(layout, name, "failures.parquet")) for name in extracted]
        + [merge_failures],
        ignore_index=True,
    )
    write_manifest(manifest, layout.unlabeled_manifest)
    write_table(failures, layout.unlabeled_failures, FAILURES_SCHEMA)
    metadata = manifest_metadata(manifest, layout.unlabeled_manifest)
    metadata["per_archive"] = counts_table(manifest["archive"].value_counts(), "archive")
    metadata["dropped"] = len(failures)
    metadata["drop_reasons"] = counts_table(failures["reason"].value_counts(), "reason", "items")
    metadata["placeholder_pictures"] = stats["placeholder_pictures"]
    metadata["archives_not_extracted"] = ", ".join(missing) or "none"
    metadata["overlaps_labeled_removed"] = stats["overlaps_labeled"]
    shared = 0 if labelled is None else int(manifest["image_id"].isin(set(labelled["image_id"])).sum())
    check = dg.AssetCheckResult(
        check_name="no_labeled_images",
        passed=labelled is not None and shared == 0,
        severity=dg.AssetCheckSeverity.ERROR if labelled is not None else dg.AssetCheckSeverity.WARN,
        metadata={
            "labeled_images_in_unlabeled": shared,
            "near_duplicates_removed": stats["overlaps_labeled"],
        },
        description="no labelled manifest to check against: materialize labeled_manifest"
        if labelled is None
        else "no labelled image, nor a near-duplicate of one, is in the unlabelled set",
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


def _listing_path(layout: HomeLayout) -> Path:
    return layout.omacir_downloads_dir / "archives.json"


def _listing(layout: HomeLayout) -> list[dict]:
    path = _listing_path(layout)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialize omacir_archives first")
    return json.loads(path.read_text())


def _extracted_path(layout: HomeLayout, archive: str, suffix: str = "parquet") -> Path:
    return layout.extracted_dir("omacir") / f"{archive}.{suffix}"


assets = [omacir_archives, omacir_archive_images, unlabeled_manifest]
checks = [manifest_contract_checks("unlabeled_manifest", lambda layout: layout.unlabeled_manifest)]
