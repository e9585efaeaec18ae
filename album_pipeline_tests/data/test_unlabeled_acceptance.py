"""Issue 4's acceptance: hostile archives are refused item by item, and kills during transfer or extraction
resume to the same manifest, fetching only the bytes that were missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from album_pipeline.data.storage import ImageStore
from album_pipeline.data.unlabeled import ExtractOptions
from album_pipeline.layout import HomeLayout
from album_pipeline.sources.http import make_session
from album_pipeline.sources.omacir import OmacirClient
from album_pipeline.testing.emulators.archive import ArchiveEmulator
from album_pipeline.testing.emulators.omacir_item import OmacirItem
from album_pipeline.testing.emulators.omacir_members import EXPECTED_REASON, REFUSED_KINDS
from album_pipeline_tests.data.near_duplicate_truth import archive_picture_hashes, checked_look_alikes
from album_pipeline_tests.data.omacir_ingest import ingest_omacir

pytestmark = pytest.mark.integration

OVERSIZED = 300_000
OPTIONS = ExtractOptions(max_member_bytes=OVERSIZED - 1)


@pytest.fixture(scope="module")
def hostile_item(tmp_path_factory) -> OmacirItem:
    return OmacirItem.build(
        tmp_path_factory.mktemp("hostile"),
        letters=("h", "k"),
        images_per_archive=160,
        seed=4,
        hostile_members=True,
        oversized_member_bytes=OVERSIZED,
    )


def _client(server: ArchiveEmulator) -> OmacirClient:
    return OmacirClient(
        server.url,
        session=make_session(backoff_factor=0),
        timeout=10,
        allowed_download_hosts=server.download_hosts,
    )


def test_every_planted_bad_member_is_refused_and_nothing_lands_outside(hostile_item, tmp_path, monkeypatch):
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)  # a relative ``../`` member would land here or above if anything extracted it
    with ArchiveEmulator(hostile_item) as server:
        result = ingest_omacir(_client(server), home, extract=OPTIONS)
    truth = {f"{a.name}/{m.name}": m for a in hostile_item.archives for m in a.members}
    kept = {f"{a.name}/{name}" for a in hostile_item.archives for name in hostile_item.expected_kept(a.name)}
    look_alikes = checked_look_alikes(
        result.rows, result.failures, archive_picture_hashes(hostile_item, kept)
    )
    assert set(result.rows["source_id"]) == kept - look_alikes and len(look_alikes) <= len(kept) // 50
    failures = {
        source_id: reason
        for source_id, reason in zip(result.failures["source_id"], result.failures["reason"], strict=True)
        if source_id not in look_alikes
    }
    expected = {
        source_id: (
            f"unsafe_member:{EXPECTED_REASON[m.kind]}" if m.kind in REFUSED_KINDS else EXPECTED_REASON[m.kind]
        )
        for source_id, m in truth.items()
        if EXPECTED_REASON.get(m.kind) is not None
    }
    assert failures == expected
    assert {m.kind for m in truth.values()} >= set(REFUSED_KINDS) | {"bomb", "truncated", "near_placeholder"}
    # Only the store, the downloads and the pipeline's records (per-archive extractions, the manifest) were
    # written: no escaped, absolute or linked file anywhere.
    written = {p.relative_to(home).parts[0] for p in home.rglob("*") if p.is_file()}
    assert written == {"images", "downloads", "extracted", "manifests"}
    assert not list(outside.rglob("*")) and not list(tmp_path.glob("escape*"))
    assert not any(Path("/tmp").glob("omacir_absolute_*"))


# -- kills -----------------------------------------------------------------------------------------------

_INGEST = """
import sys
from pathlib import Path
from album_pipeline.sources.http import make_session
from album_pipeline.sources.omacir import OmacirClient
from album_pipeline_tests.data.omacir_ingest import ingest_omacir
url, home, hosts = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
client = OmacirClient(url, session=make_session(backoff_factor=0), timeout=10, allowed_download_hosts=hosts)
ingest_omacir(client, home)
"""


def _run_and_kill(server: ArchiveEmulator, home: Path, ready: Callable[[], bool]) -> None:
    """Start an ingest in a child process and SIGKILL it once ``ready()`` holds."""
    child = subprocess.Popen(
        [sys.executable, "-c", _INGEST, server.url, str(home), ",".join(server.download_hosts)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.01)
        assert child.poll() is None, "the ingest ended before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)


def _comparable(result) -> tuple[pd.DataFrame, pd.DataFrame]:
    return result.rows.reset_index(drop=True), result.failures.reset_index(drop=True)


@pytest.fixture(scope="module")
def item(tmp_path_factory) -> OmacirItem:
    return OmacirItem.build(tmp_path_factory.mktemp("item"), letters=("m",), images_per_archive=400, seed=9)


@pytest.fixture(scope="module")
def reference(item, tmp_path_factory):
    home = tmp_path_factory.mktemp("reference")
    with ArchiveEmulator(item) as server:
        return ingest_omacir(_client(server), home)


def test_a_download_killed_mid_transfer_resumes_with_only_the_missing_bytes(
    item, reference, tmp_path
) -> None:
    archive = item.archives[0]
    downloads = HomeLayout(tmp_path).omacir_downloads_dir
    partial = downloads / f"{archive.name}.partial"
    # Small cuts and a little latency stretch the transfer so that the kill lands in the middle of it.
    with ArchiveEmulator(item, drop_every_bytes=64 * 1024, latency_s=0.02) as server:
        _run_and_kill(
            server, tmp_path, lambda: partial.exists() and partial.stat().st_size > archive.size * 0.4
        )
        on_disk = partial.stat().st_size
        assert 0 < on_disk < archive.size and not (downloads / archive.name).exists()
        server.clear_requests()
        resumed = ingest_omacir(_client(server), tmp_path)
        ranges = [r.range for r in server.requests if r.path.startswith("/download/")]
    # The first request after the kill asks for exactly the bytes that were not on disk.
    assert ranges[0] == f"bytes={on_disk}-"
    starts = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges]
    assert starts == sorted(starts) and starts[0] == on_disk
    for got, want in zip(_comparable(resumed), _comparable(reference), strict=True):
        pd.testing.assert_frame_equal(got, want)


def test_an_ingest_killed_mid_extraction_resumes_to_the_same_manifest(item, reference, tmp_path) -> None:
    images = tmp_path / "images"
    with ArchiveEmulator(item) as server:
        _run_and_kill(server, tmp_path, lambda: images.exists() and sum(1 for _ in images.rglob("*.*")) > 80)
        stored_at_kill = sum(1 for _ in images.rglob("*.*"))
        assert 80 < stored_at_kill < len(reference.rows)
        server.clear_requests()
        resumed = ingest_omacir(_client(server), tmp_path)
        downloads = [r for r in server.requests if r.path.startswith("/download/")]
    assert downloads == []  # the verified tar was kept: nothing is fetched again
    for got, want in zip(_comparable(resumed), _comparable(reference), strict=True):
        pd.testing.assert_frame_equal(got, want)
    # No half-written image: every stored file's name is the hash of its bytes.
    store = ImageStore(tmp_path)
    for row in resumed.rows.itertuples():
        assert store.absolute(row.path).exists()
    assert not [p for p in images.rglob("*") if p.is_file() and p.suffix == ".tmp"]
