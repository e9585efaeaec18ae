"""Labelled covers: the Napster and MusicBrainz crawls and the labelled manifest built from both."""

import dagster as dg
import pandas as pd
from pydantic import Field

from album_pipeline.data.covers import CrawlOptions, earlier_crawl, failure_ratio
from album_pipeline.data.crawl_state import CrawlState
from album_pipeline.data.labeled import ManifestSources, merge_labeled_sources
from album_pipeline.data.manifest import (
    CRAWL_SCHEMA,
    FAILURES_SCHEMA,
    ManifestError,
    SplitFractions,
    UnreadableTableError,
    read_manifest,
    read_manifest_table,
    replace_manifest,
    write_table,
)
from album_pipeline.data.musicbrainz_covers import MUSICBRAINZ, MusicBrainzCrawlOptions, crawl_musicbrainz
from album_pipeline.data.napster_covers import NAPSTER, NapsterCrawlOptions, crawl_napster
from album_pipeline.data.overlap import picture_hashes
from album_pipeline.data.results import FailureLog, IngestResult, frame_of
from album_pipeline.data.storage import ImageStore
from album_pipeline.defs.checks import manifest_contract_checks
from album_pipeline.defs.config import CoreConfig, core_field
from album_pipeline.defs.instance import CRAWL_POOL
from album_pipeline.defs.metadata import counts_table, manifest_metadata
from album_pipeline.defs.operations import (
    LABELED_FRESHNESS_POLICY,
    NETWORK_RETRY_POLICY,
    OWNERS,
    retried_only_when_transient,
)
from album_pipeline.defs.resources import (
    GenreTaxonomy,
    LabelledSources,
    MusicBrainzApi,
    NapsterApi,
    PipelineHome,
)
from album_pipeline.recovery import set_aside
from album_pipeline.settings import LABELLED_SOURCES_VAR, NAPSTER_KEY_VAR
from album_pipeline.sources.musicbrainz import MUSICBRAINZ_REQUESTS_PER_SECOND
from album_pipeline.sources.napster import NAPSTER_REQUESTS_PER_SECOND

LABELED_SOURCES = (NAPSTER, MUSICBRAINZ)
CRAWL_ASSET = {NAPSTER: "napster_covers", MUSICBRAINZ: "musicbrainz_covers"}
FAILURE_RATIO_CHECK = "failure_ratio_under_limit"


class CrawlConfig(CoreConfig):
    """Settings every labelled-cover crawl shares."""

    core_types = (CrawlOptions,)
    # Crawl rows get a provisional split only: labeled_manifest assigns the real one per near-duplicate group
    # from its own SplitConfig, so a crawl setting here would have no effect.
    fixed_core_fields = frozenset({"split_fractions"})

    download_workers: int = core_field(CrawlOptions, "download_workers")
    min_stored_side: int = core_field(CrawlOptions, "min_stored_side")
    placeholder_min_albums: int = core_field(CrawlOptions, "placeholder_min_albums")
    recheck_missing: bool = core_field(CrawlOptions, "recheck_missing")
    max_consecutive_unavailable: int = core_field(CrawlOptions, "max_consecutive_unavailable")
    max_failure_ratio: float = Field(
        0.2, description="Asset check: share of albums that may fail (no cover at all is not a failure)."
    )


class NapsterCrawlConfig(CrawlConfig):
    core_types = (NapsterCrawlOptions,)

    albums_per_genre: int = core_field(NapsterCrawlOptions, "albums_per_genre")
    preferred_image_side: int = core_field(NapsterCrawlOptions, "preferred_image_side")
    page_size: int = core_field(NapsterCrawlOptions, "page_size")
    # The rate belongs to the client the shell builds, not to what the crawl collects.
    api_requests_per_second: float = Field(
        NAPSTER_REQUESTS_PER_SECOND,
        description="Client-side limit on Napster API calls (its documented default key limit is 5/s).",
    )
    require_key: bool = Field(
        False,
        description="Fail when NAPSTER_API_KEY is unset; by default the crawl is skipped (Napster no longer "
        "issues keys) and MusicBrainz feeds the labelled set.",
    )


class MusicBrainzCrawlConfig(CrawlConfig):
    core_types = (MusicBrainzCrawlOptions,)

    albums_per_genre: int = core_field(MusicBrainzCrawlOptions, "albums_per_genre")
    thumbnail_size: int = core_field(MusicBrainzCrawlOptions, "thumbnail_size")
    excluded_secondary_types: list[str] = core_field(MusicBrainzCrawlOptions, "excluded_secondary_types")
    # The rate belongs to the clients the shell builds, not to what the crawl collects.
    api_requests_per_second: float = Field(
        MUSICBRAINZ_REQUESTS_PER_SECOND,
        description="Client-side limit on MusicBrainz calls: its published limit is 1/s per IP; 5% under it "
        "leaves room for jitter.",
    )


def _pooled_connections(config: CrawlConfig) -> int:
    """One pooled connection per download worker, never fewer than a client's default of 16."""
    return max(16, config.download_workers)


def _crawl_asset(name: str):
    """The asset decorator of a labelled crawl: its group, pool and retries, and the check it reports."""
    asset = dg.asset(
        group_name="labeled",
        kinds={"python"},
        owners=OWNERS,
        pool=CRAWL_POOL,
        retry_policy=NETWORK_RETRY_POLICY,
        check_specs=[dg.AssetCheckSpec(FAILURE_RATIO_CHECK, asset=name)],
    )
    return lambda crawl: asset(retried_only_when_transient()(crawl))


class SplitConfig(CoreConfig):
    """Relative split sizes (normalised to sum to 1); each near-duplicate group lands in one split."""

    core_types = (SplitFractions,)

    train: float = core_field(SplitFractions, "train")
    val: float = core_field(SplitFractions, "val")
    test: float = core_field(SplitFractions, "test")


class LabeledManifestConfig(SplitConfig):
    min_covers_per_genre: int = Field(
        500, description="Blocking asset check: every class needs at least this many covers to train on."
    )


@_crawl_asset("napster_covers")
def napster_covers(
    context: dg.AssetExecutionContext,
    config: NapsterCrawlConfig,
    home: PipelineHome,
    napster: NapsterApi,
    genres: GenreTaxonomy,
    labelled_sources: LabelledSources,
) -> dg.MaterializeResult:
    """Genre-labelled covers from the Napster API's top albums, validated and stored by content.

    Resumable and incremental: the crawl state remembers every album's outcome, so a rerun after a kill or a
    weekly recrawl fetches only albums it has not seen.
    """
    layout = home.layout
    if not labelled_sources.selection.enabled(NAPSTER):
        return _disabled_crawl(context, layout, NAPSTER, config, labelled_sources)
    if not napster.api_key and not config.require_key:
        context.log.warning(
            f"{NAPSTER_KEY_VAR} is not set: skipping the Napster crawl (set it, or require_key=true to fail)"
        )
        return _skipped_crawl(context, layout, NAPSTER, config, f"{NAPSTER_KEY_VAR} unset")
    options = config.to_core(NapsterCrawlOptions)
    client = napster.client(config.api_requests_per_second, connections=_pooled_connections(config))
    with CrawlState(layout.crawl_state(NAPSTER), log=context.log.warning) as state:
        store = ImageStore(layout.root)
        result = crawl_napster(client, store, state, genres.genre_map, options=options, log=context.log.info)
    # Which class each (sub-)genre id on the albums fed, through which top-level genre, for how many albums.
    mapping = dg.MetadataValue.json(result.stats.get("genre_mapping", []))
    return _crawl_result(layout, NAPSTER, result, config, source_metadata={"genre_mapping": mapping})


def _disabled_crawl(
    context, layout, source: str, config: CrawlConfig, labelled_sources: LabelledSources
) -> dg.MaterializeResult:
    enabled = ", ".join(labelled_sources.selection.labelled)
    why = f"disabled: the labelled_sources resource ({LABELLED_SOURCES_VAR}) enables only {enabled}"
    context.log.info(f"{source}: {why}; not crawling it (what an earlier crawl stored is kept)")
    return _skipped_crawl(context, layout, source, config, why)


def _skipped_crawl(context, layout, source: str, config: CrawlConfig, why: str) -> dg.MaterializeResult:
    """A crawl that did not run keeps what an earlier one stored; with nothing stored yet it writes empty
    tables, so that the asset's files exist like any materialization's and the manifest reads them as such."""
    kept = earlier_crawl(
        source, layout.crawl_table(source), layout.crawl_failures(source), log=context.log.warning
    )
    if kept is None:
        empty = IngestResult(rows=frame_of([], CRAWL_SCHEMA), failures=FailureLog(source).frame())
        return _crawl_result(layout, source, empty, config, skipped=why)
    context.log.info(f"{source}: keeping the earlier crawl table ({len(kept.rows):,} covers)")
    return _crawl_result(layout, source, kept, config, skipped=why, write=False)


def _crawl_result(
    layout,
    source: str,
    result: IngestResult,
    config: CrawlConfig,
    skipped: str | None = None,
    write: bool = True,
    source_metadata: dict | None = None,
) -> dg.MaterializeResult:
    if write:
        write_table(result.rows, layout.crawl_table(source), CRAWL_SCHEMA)
        write_table(result.failures, layout.crawl_failures(source), FAILURES_SCHEMA)
    ratio = failure_ratio(result.failures["reason"].value_counts().to_dict(), result.stats.get("albums", 0))
    metadata = {
        "covers": len(result.rows),
        "albums": result.stats.get("albums", 0),
        "reused_from_earlier_crawls": result.stats.get("reused", 0),
        "fetched": result.stats.get("fetched", 0),
        "failures": len(result.failures),
        "failure_ratio": ratio,
        "per_genre": counts_table(result.rows["genre"].value_counts(), "genre"),
        "failure_reasons": counts_table(result.failures["reason"].value_counts(), "reason", "items"),
        "crawl_table": dg.MetadataValue.path(str(layout.crawl_table(source))),
    }
    metadata.update(source_metadata or {})
    if skipped:
        metadata["skipped"] = skipped
        metadata["kept_earlier_crawl"] = not write
    check = dg.AssetCheckResult(
        check_name=FAILURE_RATIO_CHECK,
        passed=ratio <= config.max_failure_ratio,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"failure_ratio": ratio, "max_failure_ratio": config.max_failure_ratio},
        description="Share of albums whose cover failed (download, validation, placeholder, duplicate).",
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


@_crawl_asset("musicbrainz_covers")
def musicbrainz_covers(
    context: dg.AssetExecutionContext,
    config: MusicBrainzCrawlConfig,
    home: PipelineHome,
    musicbrainz: MusicBrainzApi,
    genres: GenreTaxonomy,
    labelled_sources: LabelledSources,
) -> dg.MaterializeResult:
    """Genre-labelled covers: MusicBrainz album release groups found by tag, fronts from the Cover Art Archive.

    Resumable and incremental like the Napster crawl; release groups without art are recorded, not errors.
    """
    layout = home.layout
    if not labelled_sources.selection.enabled(MUSICBRAINZ):
        return _disabled_crawl(context, layout, MUSICBRAINZ, config, labelled_sources)
    options = config.to_core(MusicBrainzCrawlOptions)
    musicbrainz_client, coverart_client = musicbrainz.clients(
        config.api_requests_per_second, connections=_pooled_connections(config)
    )
    with CrawlState(layout.crawl_state(MUSICBRAINZ), log=context.log.warning) as state:
        store = ImageStore(layout.root)
        result = crawl_musicbrainz(
            musicbrainz_client,
            coverart_client,
            store,
            state,
            genres.genre_map,
            options=options,
            log=context.log.info,
        )
    excluded = result.stats["excluded_secondary_types"]
    metadata = {
        "excluded_by_secondary_type": counts_table(excluded, "secondary type", "release groups"),
        "without_tag_votes": result.stats["without_tag_votes"],
    }
    return _crawl_result(layout, MUSICBRAINZ, result, config, source_metadata=metadata)


@dg.asset(
    group_name="labeled",
    kinds={"parquet"},
    owners=OWNERS,
    freshness_policy=LABELED_FRESHNESS_POLICY,
    deps=[napster_covers, musicbrainz_covers],
    check_specs=[
        dg.AssetCheckSpec("covers_per_genre_at_least_minimum", asset="labeled_manifest", blocking=True),
    ],
)
def labeled_manifest(
    context: dg.AssetExecutionContext,
    config: LabeledManifestConfig,
    home: PipelineHome,
    genres: GenreTaxonomy,
    labelled_sources: LabelledSources,
) -> dg.MaterializeResult:
    """One row per distinct picture from every enabled labelled source (MANIFEST_SCHEMA), split by content.

    Exact copies and near-duplicates, within a source or across sources, keep one row: the largest copy, then
    the first source (in LABELED_SOURCES order). The others go to the failures table as ``duplicate`` or
    ``near_duplicate``. A source the ``labelled_sources`` resource disables is left out, though its crawl
    table stays on disk.
    """
    layout = home.layout
    selection = labelled_sources.selection
    present = [source for source in selection.labelled if layout.crawl_table(source).exists()]
    if not present:
        assets = " or ".join(CRAWL_ASSET[source] for source in selection.labelled)
        raise FileNotFoundError(
            f"no labelled crawl table of the enabled sources ({', '.join(selection.labelled)}) under "
            f"{layout.crawls_dir}: materialize {assets} first (for example `album-pipeline run --select "
            f"{CRAWL_ASSET[selection.labelled[-1]]}`)"
        )
    tables = [read_manifest(layout.crawl_table(s), rebuilt_by=CRAWL_ASSET[s]) for s in present]
    sources = ManifestSources.of(selection, {s: len(table) for s, table in zip(present, tables, strict=True)})
    if sources.not_crawled:
        context.log.warning(f"no crawl table yet for {list(sources.not_crawled)}; building from {present}")
    known = _known_hashes(layout, context.log.warning)
    hashes = picture_hashes(ImageStore(layout.root), pd.concat(tables, ignore_index=True), known=known)
    manifest, duplicates = merge_labeled_sources(
        tables, hashes, config.to_core(SplitFractions).as_mapping(), class_order=genres.genres
    )
    failures = pd.concat(
        [
            read_manifest(layout.crawl_failures(s), rebuilt_by=CRAWL_ASSET[s])
            for s in present
            if layout.crawl_failures(s).exists()
        ]
        + [duplicates],
        ignore_index=True,
    )
    per_genre = {genre: int((manifest["genre"] == genre).sum()) for genre in genres.genres}
    short = {genre: count for genre, count in per_genre.items() if count < config.min_covers_per_genre}
    # The blocking check is decided before anything is written: a manifest it refuses never replaces one
    # that passed (a skipped or shrunken crawl would otherwise cost what training was built from).
    written = replace_manifest(
        manifest,
        failures,
        layout.labeled_manifest,
        layout.labeled_failures,
        refused=bool(short),
        log=context.log.warning,
    )
    on_disk = manifest if written else read_manifest(layout.labeled_manifest, rebuilt_by="labeled_manifest")
    metadata = manifest_metadata(on_disk, layout.labeled_manifest)
    metadata["duplicates_removed"] = counts_table(duplicates["reason"].value_counts(), "reason", "rows")
    metadata["kept_previous_manifest"] = not written
    metadata["rows_built"] = len(manifest)
    metadata.update(_sources_metadata(context, sources))
    description = "every class has enough covers"
    if short:
        description = (
            f"classes under {config.min_covers_per_genre} covers: {short}; crawl more albums or lower "
            "labeled_manifest.min_covers_per_genre"
        )
        if not written:
            description += f". The previous manifest ({len(on_disk):,} rows) was kept, not replaced"
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="covers_per_genre_at_least_minimum",
                passed=not short,
                metadata={"min_covers_per_genre": config.min_covers_per_genre, **per_genre},
                description=description,
            ),
        ],
    )


def _sources_metadata(context: dg.AssetExecutionContext, sources: ManifestSources) -> dict:
    """Which sources fed the manifest, and why the others did not (a skipped crawl's own reason)."""
    skipped = {}
    for source in (*sources.used, *sources.empty):
        event = context.instance.get_latest_materialization_event(dg.AssetKey(CRAWL_ASSET[source]))
        reason = event.asset_materialization.metadata.get("skipped") if event else None
        if reason is not None:
            skipped[source] = reason.value
    return {
        "sources_used": dg.MetadataValue.json(list(sources.used)),
        "sources_without_covers": dg.MetadataValue.json(list(sources.empty)),
        "sources_not_crawled": dg.MetadataValue.json(list(sources.not_crawled)),
        "sources_disabled": dg.MetadataValue.json(list(sources.disabled)),
        "sources_skipped": dg.MetadataValue.json(skipped),
    }


def _known_hashes(layout, log) -> dict[str, str]:
    """Picture hashes of the previous labelled manifest, so a rebuild decodes only new images.

    Only a cache: a previous manifest of an older version is ignored (the rebuild replaces it), and one that
    no longer loads is set aside (``recovery.set_aside``) so that it cannot block its own rebuild.
    """
    path = layout.labeled_manifest
    try:
        previous = read_manifest_table(path).select(["image_id", "picture_hash"])
    except (FileNotFoundError, ManifestError):
        return {}
    except UnreadableTableError as error:
        set_aside(path, error.reason, log)
        return {}
    return dict(zip(previous["image_id"].to_pylist(), previous["picture_hash"].to_pylist(), strict=True))


assets = [napster_covers, musicbrainz_covers, labeled_manifest]
checks = [manifest_contract_checks("labeled_manifest", lambda layout: layout.labeled_manifest)]
