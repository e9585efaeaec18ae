"""OMACIR in Dagster: one partition per archive; a corrupt archive fails its own partition and nothing else."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from album_pipeline.definitions import build_definitions
from album_pipeline.layout import HomeLayout
from album_pipeline.settings import Settings
from album_pipeline.testing.emulators.archive import ArchiveEmulator
from album_pipeline.testing.emulators.omacir_item import OmacirItem

pytestmark = pytest.mark.integration

BAD = "album_covers_b.tar"


def test_each_archive_is_a_partition_and_a_wrong_md5_fails_only_its_own(tmp_path, monkeypatch):
    item = OmacirItem.build(tmp_path / "item", letters=("a", "b", "c"), images_per_archive=40, seed=2)
    home = HomeLayout(tmp_path / "home")
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(home.root))
    with ArchiveEmulator(item, wrong_md5=[BAD]) as server:
        for name, value in server.environment().items():  # OMACIR_URL and OMACIR_DOWNLOAD_HOSTS
            monkeypatch.setenv(name, value)
        defs = build_definitions(Settings.from_environ())
        everything = defs.resolve_implicit_global_asset_job_def()

        def job(name: str):
            return everything.get_subset(asset_selection={dg.AssetKey(name)})

        (tmp_path / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
            config = {"ops": {"omacir_archives": {"config": {"archives": ["a", "b", "c"]}}}}
            assert job("omacir_archives").execute_in_process(run_config=config, instance=instance).success
            keys = instance.get_dynamic_partitions("omacir_archive")
            assert keys == ["album_covers_a.tar", BAD, "album_covers_c.tar"]

            results = {
                key: job("omacir_archive_images").execute_in_process(
                    instance=instance, partition_key=key, raise_on_error=False
                )
                for key in keys
            }
            assert {key: result.success for key, result in results.items()} == {
                "album_covers_a.tar": True,
                BAD: False,
                "album_covers_c.tar": True,
            }
            error = results[BAD].get_step_failure_events()[0].step_failure_data.error
            message = (error.cause or error).message
            assert "md5" in message and BAD in message and "run again" in message
            materialized = instance.get_materialized_partitions(dg.AssetKey("omacir_archive_images"))
            assert materialized == {"album_covers_a.tar", "album_covers_c.tar"}

            manifest_run = job("unlabeled_manifest").execute_in_process(instance=instance)
            assert manifest_run.success
            event = instance.get_latest_materialization_event(dg.AssetKey("unlabeled_manifest"))
            assert event.asset_materialization.metadata["archives_not_extracted"].value == BAD

            # Retrying a finished archive reuses its recorded extraction: no download, no second extraction.
            server.clear_requests()
            again = job("omacir_archive_images").execute_in_process(
                instance=instance, partition_key="album_covers_a.tar"
            )
            logs = " ".join(entry.user_message for entry in instance.all_logs(again.run_id))
            assert "already extracted" in logs and not server.requests

    # Nothing half-written for the bad archive: no tar, no partial file, no extraction tables.
    leftovers = [p.name for p in home.root.rglob(f"{BAD}*")]
    assert leftovers == []
    manifest = pd.read_parquet(home.unlabeled_manifest)
    assert set(manifest["archive"]) == {"album_covers_a.tar", "album_covers_c.tar"}


def test_a_tar_can_be_deleted_once_its_images_are_recorded(tmp_path, monkeypatch):
    item = OmacirItem.build(tmp_path / "item", letters=("d",), images_per_archive=40, seed=3)
    home = HomeLayout(tmp_path / "home")
    monkeypatch.setenv("ALBUM_PIPELINE_HOME", str(home.root))
    with ArchiveEmulator(item) as server:
        for name, value in server.environment().items():  # OMACIR_URL and OMACIR_DOWNLOAD_HOSTS
            monkeypatch.setenv(name, value)
        job = (
            build_definitions(Settings.from_environ())
            .resolve_implicit_global_asset_job_def()
            .get_subset(
                asset_selection={dg.AssetKey("omacir_archives"), dg.AssetKey("omacir_archive_images")}
            )
        )
        config = {
            "ops": {
                "omacir_archives": {"config": {"archives": ["d"]}},
                "omacir_archive_images": {"config": {"delete_archive_after_extract": True}},
            }
        }
        (tmp_path / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
            assert job.execute_in_process(run_config=config, instance=instance).success
            assert not (home.omacir_downloads_dir / "album_covers_d.tar").exists()
            assert (home.extracted_dir("omacir") / "album_covers_d.tar.parquet").exists()
            server.clear_requests()
            assert job.execute_in_process(run_config=config, instance=instance).success
            # The tar is gone but its extraction is recorded: nothing is downloaded again.
            assert not [r for r in server.requests if r.path.startswith("/download/")]
