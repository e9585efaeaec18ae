"""The unlabelled OMACIR corpus: choose archives, download them verified, extract them safely, merge and clean.

The steps, each its own module, and what the Dagster assets call (one archive per partition):

1. ``archives``: ``choose_archives`` picks archives from the item's listing and records the choice;
   ``download_archive`` is a resumable download (HTTP Range) to a ``.partial`` file, size and md5 verified
   before the file takes its final name, after a free-disk check that gives the numbers.
2. ``extraction``: ``extract_archive`` streams a tar member by member and extracts nothing to disk; the
   result lists every valid member, copies included, with a perceptual hash of its picture; everything
   dropped is a failure row with its reason.
3. ``ingest``: ``ingest_archives`` downloads and extracts the chosen archives a few at a time, records each
   extraction (reused by a later run for the same bytes and options), and reports every archive that failed
   without stopping the others.
4. ``merge``: ``build_unlabeled_manifest`` merges the recorded extractions into the unlabelled manifest:
   labelled images and their near-duplicates, placeholders and copies across archives left out.

Progress goes to the log (and to a progress bar on a terminal).
"""

from album_pipeline.data.unlabeled.archives import (
    ArchiveSelection,
    InsufficientDiskSpace,
    choose_archives,
    chosen_archives,
    download_archive,
    ensure_free_space,
    select_archives,
    space_needed,
)
from album_pipeline.data.unlabeled.extraction import OMACIR, ExtractOptions, extract_archive
from album_pipeline.data.unlabeled.ingest import IngestOptions, ingest_archive, ingest_archives
from album_pipeline.data.unlabeled.merge import (
    MergeOptions,
    UnlabeledManifest,
    build_unlabeled_manifest,
    merge_extracted,
)

__all__ = [
    "OMACIR",
    "ArchiveSelection",
    "ExtractOptions",
    "IngestOptions",
    "InsufficientDiskSpace",
    "MergeOptions",
    "UnlabeledManifest",
    "build_unlabeled_manifest",
    "choose_archives",
    "chosen_archives",
    "download_archive",
    "ensure_free_space",
    "extract_archive",
    "ingest_archive",
    "ingest_archives",
    "merge_extracted",
    "select_archives",
    "space_needed",
]
