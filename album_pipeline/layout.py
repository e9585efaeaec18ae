"""Where every output lives under the pipeline home (``ALBUM_PIPELINE_HOME``).

Assets hand data to each other through these paths rather than through Dagster's IO managers, so that
everything fetched or trained stays on disk, readable without Dagster, and survives a lost Dagster instance.
One short property per path, alike by design: every name of the home's own files is here.
Two formats name their own inner files, since they are read wherever they lie: a training shard set's
(``data/shards/format.py``) and an interrupted download's ``.partial`` file (``sources/omacir.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# File names inside the folders below. The core writes them (a training run into its checkpoint folder, an
# evaluation into its output folder), so they are constants here rather than literals there.
LATEST_CHECKPOINT = "latest.pt"  # rewritten while a run trains; resumed after a kill
PREVIOUS_CHECKPOINT = "previous.pt"  # the latest.pt before the current one; resumed if that one is damaged
FINAL_CHECKPOINT = "final.pt"  # written once when a run finishes
# Beside a stage's checkpoints: the MLflow run that tracks its training, so that a resumed stage continues it.
TRAINING_RUN_FILE = "mlflow_run.json"
CLASSIFIER_CHECKPOINT = "classifier.pt"
METRICS_FILE = "metrics.json"
GRID_FILE = "grid.png"
NEAR_COPIES_GRID_FILE = "near_copies.png"  # each near-copy beside its nearest training cover
PER_GENRE_TABLE_FILE = "per_genre.json"  # the per-genre table (pandas "split" orient), also logged to MLflow
FEATURE_CACHE_DIR = "feature_cache"  # real covers' features, keyed by content (see metrics.feature_cache)
CHAMPION_SAMPLES_DIR = "champion_samples"  # what `album-pipeline demo` draws: covers and grid.png
# Inside the folder `album-pipeline generate --out` names: one PNG per cover, grid.png, one traversal per genre.
COVER_FILE = "{genre}_{index:03d}.png"
TRAVERSAL_FILE = "traversal_{genre}.png"
BESIDE_REAL_FILE = (
    "beside_real.png"  # `generate --beside-real`: a row per genre, generated then held-out covers
)
OMACIR_LISTING_FILE = "archives.json"
MLFLOW_DB_FILE = "mlflow.db"
DAGSTER_DIR = "dagster"
DAGSTER_INSTANCE_FILE = "dagster.yaml"
# Held while a Dagster instance is created and its storage initialised, so concurrent first runs take turns.
DAGSTER_LOCK_FILE = "instance.lock"  # inside whichever Dagster home is used (DAGSTER_HOME may be elsewhere)


@dataclass(frozen=True)
class HomeLayout:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    # Content-addressed image files shared by every source: images/ab/abcdef....jpg
    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def labeled_manifest(self) -> Path:
        return self.manifests_dir / "labeled.parquet"

    @property
    def unlabeled_manifest(self) -> Path:
        return self.manifests_dir / "unlabeled.parquet"

    @property
    def labeled_failures(self) -> Path:
        return self.manifests_dir / "labeled_failures.parquet"

    @property
    def unlabeled_failures(self) -> Path:
        return self.manifests_dir / "unlabeled_failures.parquet"

    # Raw per-source crawl tables; the labelled manifest is built from all of them.
    @property
    def crawls_dir(self) -> Path:
        return self.root / "crawls"

    def crawl_table(self, source: str) -> Path:
        return self.crawls_dir / f"{source}.parquet"

    def crawl_failures(self, source: str) -> Path:
        return self.crawls_dir / f"{source}_failures.parquet"

    def extracted_dir(self, source: str) -> Path:
        """Per-archive extraction tables of an archive source (e.g. OMACIR), merged into its manifest."""
        return self.root / "extracted" / source

    def extracted_images(self, source: str, archive: str) -> Path:
        """One archive's valid members with their perceptual hashes."""
        return self.extracted_dir(source) / f"{archive}.parquet"

    def extracted_failures(self, source: str, archive: str) -> Path:
        """One archive's refused or dropped members with their reasons."""
        return self.extracted_dir(source) / f"{archive}.failures.parquet"

    def extracted_summary(self, source: str, archive: str) -> Path:
        """One archive's extraction summary, written last: its presence means the archive is fully recorded."""
        return self.extracted_dir(source) / f"{archive}.json"

    def crawl_state(self, source: str) -> Path:
        """The source's fetch journal: what a recrawl or a resumed crawl need not fetch again."""
        return self.crawls_dir / f"{source}_state.sqlite"

    @property
    def downloads_dir(self) -> Path:
        return self.root / "downloads"

    @property
    def omacir_downloads_dir(self) -> Path:
        return self.downloads_dir / "omacir"

    @property
    def omacir_listing(self) -> Path:
        """The archives ``omacir_archives`` chose (name, size, md5), read by the download and the merge."""
        return self.omacir_downloads_dir / OMACIR_LISTING_FILE

    @property
    def training_data_dir(self) -> Path:
        return self.root / "training_data"

    def training_data(self, name: str) -> Path:
        """Training shards of one dataset (``index.parquet``, ``shards/r{R}/``): ``labeled`` or ``unlabeled``."""
        return self.training_data_dir / name

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint_dir(self, stage: str) -> Path:
        """Checkpoints of one training stage: ``pretrained``, ``finetuned`` or ``genre_classifier``."""
        return self.checkpoints_dir / stage

    def final_checkpoint(self, stage: str) -> Path:
        """The finished checkpoint of a GAN training stage (``pretrained`` or ``finetuned``)."""
        return self.checkpoint_dir(stage) / FINAL_CHECKPOINT

    def latest_checkpoint(self, stage: str) -> Path:
        return self.checkpoint_dir(stage) / LATEST_CHECKPOINT

    def training_run_record(self, stage: str) -> Path:
        """The MLflow run id (and run key) of a GAN training stage's run, beside its checkpoints."""
        return self.checkpoint_dir(stage) / TRAINING_RUN_FILE

    @property
    def genre_classifier_checkpoint(self) -> Path:
        return self.checkpoint_dir("genre_classifier") / CLASSIFIER_CHECKPOINT

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def evaluation_metrics(self) -> Path:
        return self.evaluation_dir / METRICS_FILE

    @property
    def evaluation_grid(self) -> Path:
        return self.evaluation_dir / GRID_FILE

    @property
    def evaluation_near_copies_grid(self) -> Path:
        return self.evaluation_dir / NEAR_COPIES_GRID_FILE

    @property
    def evaluation_per_genre_table(self) -> Path:
        return self.evaluation_dir / PER_GENRE_TABLE_FILE

    @property
    def feature_cache_dir(self) -> Path:
        return self.evaluation_dir / FEATURE_CACHE_DIR

    @property
    def generated_dir(self) -> Path:
        return self.root / "generated"

    @property
    def champion_samples(self) -> Path:
        """The folder `album-pipeline demo` draws covers into from the registered champion (with grid.png)."""
        return self.generated_dir / CHAMPION_SAMPLES_DIR

    @property
    def emulator_cache_dir(self) -> Path:
        """Archives the demo's archive.org emulator builds once and serves again on later runs."""
        return self.root / "emulator_cache"

    @property
    def mlflow_db(self) -> Path:
        return self.root / MLFLOW_DB_FILE

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def dagster_home(self) -> Path:
        return self.root / DAGSTER_DIR

    @property
    def dagster_instance_config(self) -> Path:
        return self.dagster_home / DAGSTER_INSTANCE_FILE

    def relative(self, path: Path) -> str:
        """A path as stored in manifests: relative to the home, with forward slashes."""
        return Path(path).resolve().relative_to(self.root).as_posix()
