"""Unlabelled covers: OMACIR archives chosen, then downloaded and extracted one partition per archive, merged.

``omacir_archives`` reads the item's file list, chooses archives and registers one dynamic partition for each.
``omacir_archive_images`` downloads and extracts archives: one per run in a backfill (so archives go in
parallel and a failed one is retried alone), or all the chosen ones when the whole pipeline runs at once.
``unlabeled_manifest`` merges what was extracted, dropping placeholders repeated across archives.
The work is the core's (``album_pipeline.data.unlabeled``); these assets wire config and report metadata.
"""

import dagster as dg

from album_pipeline.data.manifest import SplitFractions
from album_pipeline.data.unlabeled import (
    ArchiveSelection,
    ExtractOptions,
    IngestOptions,
    MergeOptions,
    build_unlabeled_manifest,
    choose_archives,
    ingest_archives,
)
from album_pipeline.defs.checks import manifest_contract_checks
from album_pipeline.defs.config import CoreConfig, core_field
from album_pipeline.defs.instance import CRAWL_POOL
from album_pipeline.defs.labeled import SplitConfig, labeled_manifest
from album_pipeline.defs.metadata import counts_table, manifest_metadata
from album_pipeline.defs.operations import NETWORK_RETRY_POLICY, OWNERS, retried_only_when_transient
from album_pipeline.defs.resources import OmacirArchive, PipelineHome

omacir_archive_partitions = dg.DynamicPartitionsDefinition(name="omacir_archive")


class OmacirArchivesConfig(CoreConfig):
    core_types = (ArchiveSelection,)

    archives: list[str] = core_field(ArchiveSelection, "archives")
    max_images: int = core_field(ArchiveSelection, "max_images")
    estimated_bytes_per_image: int = core_field(ArchiveSelection, "estimated_bytes_per_image")


class OmacirExtractConfig(CoreConfig):
    core_types = (ExtractOptions, IngestOptions)

    max_member_bytes: int = core_field(ExtractOptions, "max_member_bytes")
    max_pixels: int = core_field(ExtractOptions, "max_pixels")
    min_side: int = core_field(ExtractOptions, "min_side")
    max_aspect_ratio: float = core_field(ExtractOptions, "max_aspect_ratio")
    convert_to_jpeg: bool = core_field(ExtractOptions, "convert_to_jpeg")
    delete_archive_after_extract: bool = core_field(IngestOptions, "delete_archive_after_extract")
    parallel_archives: int = core_field(IngestOptions, "parallel_archives")


class UnlabeledManifestConfig(SplitConfig):
    core_types = (MergeOptions, SplitFractions)
    # Set from the train/val/test fields that SplitConfig gives (SplitFractions).
    fixed_core_fields = frozenset({"split_fractions"})

    max_images: int = core_field(MergeOptions, "max_images")
    placeholder_min_repeats: int = core_field(MergeOptions, "placeholder_min_repeats")


# Only the item's file list: retried like any network step, but too small to need a place in the crawl pool.
@dg.asset(group_name="unlabeled", kinds={"json"}, owners=OWNERS, retry_policy=NETWORK_RETRY_POLICY)
@retried_only_when_transient()
def omacir_archives(
    context: dg.AssetExecutionContext, config: OmacirArchivesConfig, home: PipelineHome, omacir: OmacirArchive
) -> dg.MaterializeResult:
    """The OMACIR archives to ingest, from the item's file list (names, sizes, md5), one partition each."""
    chosen, available = choose_archives(omacir.client(), home.layout, config.to_core(ArchiveSelection))
    new = [a.name for a in chosen if not context.instance.has_dynamic_partition(partitions_name(), a.name)]
    if new:
        context.instance.add_dynamic_partitions(partitions_name(), new)
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
    owners=OWNERS,
    pool=CRAWL_POOL,
    retry_policy=NETWORK_RETRY_POLICY,
    deps=[omacir_archives],
    partitions_def=omacir_archive_partitions,  # a backfill runs one archive per run (Dagster's default)
)
@retried_only_when_transient()
def omacir_archive_images(
    context: dg.AssetExecutionContext, config: OmacirExtractConfig, home: PipelineHome, omacir: OmacirArchive
) -> dg.MaterializeResult:
    """One OMACIR archive downloaded (resumable, md5-verified) and its images extracted, checked and stored.

    Without a partition (the whole pipeline in one run) it handles every archive omacir_archives chose.
    """
    partitioned = context.has_partition_key or context.has_partition_key_range
    names = list(context.partition_keys) if partitioned else []
    done = ingest_archives(
        omacir.client(),
        home.layout,
        names or None,
        config.to_core(ExtractOptions),
        config.to_core(IngestOptions),
        log=context.log.info,
        warn=context.log.warning,
    )
    return dg.MaterializeResult(
        metadata={
            "archives": ", ".join(d["archive"] for d in done),
            "members": sum(d["members"] for d in done),
            "valid_images": sum(d["valid_members"] for d in done),
            "bytes_downloaded": sum(d["bytes_downloaded"] for d in done),
            "per_archive": dg.MetadataValue.md(_per_archive_table(done)),
        }
    )


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
    owners=OWNERS,
    deps=[omacir_archive_images, labeled_manifest],
    check_specs=[dg.AssetCheckSpec("no_labeled_images", asset="unlabeled_manifest", blocking=True)],
)
def unlabeled_manifest(
    context: dg.AssetExecutionContext, config: UnlabeledManifestConfig, home: PipelineHome
) -> dg.MaterializeResult:
    """Clean unlabelled covers from every extracted archive: placeholders and repeats across archives removed,
    and every labelled image and its near-duplicates left out, so that pretraining never sees a test cover."""
    layout = home.layout
    merged = build_unlabeled_manifest(
        layout,
        config.to_core(MergeOptions, split_fractions=config.to_core(SplitFractions).as_mapping()),
        log=context.log.warning,
    )
    manifest, failures, stats = merged.manifest, merged.failures, merged.stats
    metadata = manifest_metadata(manifest, layout.unlabeled_manifest)
    metadata["per_archive"] = counts_table(manifest["archive"].value_counts(), "archive")
    metadata["dropped"] = len(failures)
    metadata["drop_reasons"] = counts_table(failures["reason"].value_counts(), "reason", "items")
    metadata["placeholder_pictures"] = stats["placeholder_pictures"]
    metadata["archives_not_extracted"] = ", ".join(merged.archives_not_extracted) or "none"
    metadata["overlaps_labeled_removed"] = stats["overlaps_labeled"]
    metadata["kept_previous_manifest"] = merged.kept_previous
    checked = merged.labelled is not None
    description = (
        "no labelled image, nor a near-duplicate of one, is in the unlabelled set"
        if checked
        else "no labelled manifest to check against: materialize labeled_manifest"
    )
    if merged.labelled_images_kept():
        description = f"{merged.labelled_images_kept()} labelled images are in the unlabelled set"
        if merged.kept_previous:
            description += "; the previous manifest was kept, not replaced"
    check = dg.AssetCheckResult(
        check_name="no_labeled_images",
        passed=checked and merged.labelled_images_kept() == 0,
        severity=dg.AssetCheckSeverity.ERROR if checked else dg.AssetCheckSeverity.WARN,
        metadata={
            "labeled_images_in_unlabeled": merged.labelled_images_kept(),
            "near_duplicates_removed": stats["overlaps_labeled"],
        },
        description=description,
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


assets = [omacir_archives, omacir_archive_images, unlabeled_manifest]
checks = [manifest_contract_checks("unlabeled_manifest", lambda layout: layout.unlabeled_manifest)]
