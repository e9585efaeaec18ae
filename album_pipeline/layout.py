"""Where every output lives under the pipeline home (``ALBUM_PIPELINE_HOME``).

Assets hand data to each other through these paths rather than through Dagster's IO managers, so that
everything fetched or trained stays on disk, readable without Dagster, and survives a lost Dagster instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def generated_dir(self) -> Path:
        return self.root / "generated"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    def relative(self, path: Path) -> str:
        """A path as stored in manifests: relative to the home, with forward slashes."""
        return Path(path).resolve().relative_to(self.root).as_posix()
