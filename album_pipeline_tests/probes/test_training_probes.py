"""Issue 11 probes of training data and checkpoints, through `album-pipeline run` on a tiny home.

The home holds eight generated JPEGs, a labelled manifest naming them and (for the finetuning probes) a
pretrained checkpoint of a tiny architecture, so each run takes seconds: no crawl, no demo.

Defects: 5 (a shard zeroed inside is reused), 6 (a manifest path leaving the home is decoded), 4 (a garbage
``latest.pt`` blocks finetuning; a garbage pretrained ``final.pt`` passes on torch's weights_only advice).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from album_pipeline.data.shards import build_shards, load_shards
from album_pipeline.data.storage import ImageStore
from album_pipeline.genres import DEFAULT_GENRES
from album_pipeline.layout import HomeLayout
from album_pipeline.model.checkpoint import load_checkpoint
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.recovery import unreadable_copies
from album_pipeline.training.loop import TrainingConfig, train_gan

TINY = GanArchitecture(num_genres=len(DEFAULT_GENRES), noise_dim=8, generator_width=16, discriminator_width=4)
FINETUNE_FAST = [
    *("--set", "finetuned_generator.steps=2", "--set", "finetuned_generator.batch_size=4"),
    *("--set", "finetuned_generator.checkpoint_every=1", "--set", "finetuned_generator.log_every=1"),
    *("--set", "finetuned_generator.precision=fp32"),
]


def _write_manifest(layout: HomeLayout, rows: list[tuple[str, str]]) -> None:
    """The columns the shard build reads; a tampered manifest need not satisfy the rest of the contract."""
    genres = [DEFAULT_GENRES[index % len(DEFAULT_GENRES)] for index in range(len(rows))]
    table = pa.table(
        {
            "image_id": [image_id for image_id, _ in rows],
            "path": [path for _, path in rows],
            "genre": genres,
            "split": ["train"] * len(rows),
        }
    )
    layout.labeled_manifest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, layout.labeled_manifest)


@pytest.fixture
def home(cli) -> HomeLayout:
    """Eight stored 80x80 JPEGs and a labelled manifest of them, as a crawl leaves a home."""
    layout = HomeLayout(cli.home)
    store = ImageStore(layout.root)
    rows = []
    for seed in range(8):
        pixels = np.random.default_rng(seed).integers(0, 256, (80, 80, 3), dtype=np.uint8)
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="JPEG", quality=90)
        stored = store.put(encoded.getvalue(), "jpg")
        rows.append((stored.image_id, stored.path))
    _write_manifest(layout, rows)
    return layout


@pytest.fixture
def pretrained(home: HomeLayout) -> HomeLayout:
    """Labelled training shards and a one-step pretrained checkpoint of the tiny architecture."""
    manifest = pq.read_table(home.labeled_manifest).to_pandas()
    data = build_shards(manifest, home.root, home.training_data("labeled"), DEFAULT_GENRES).shard_set
    config = TrainingConfig(steps=1, batch_size=4, checkpoint_every=1, precision="fp32")
    train_gan(data, TINY, config, home.checkpoint_dir("pretrained"), use_labels=False)
    return home


def _refused(result, *fragments: str) -> str:
    """A failed run whose output says each fragment and never torch's unsafe advice; its stderr."""
    assert result.returncode != 0, result.output
    assert "Traceback" not in result.output, result.output  # the traceback stays in the event log (--debug)
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr[-3000:]}"
    assert "weights_only" not in result.output
    return result.stderr


def test_a_shard_zeroed_inside_is_decoded_again_not_reused(cli, home):
    built = cli("run", "--profile", "demo", "--select", "labeled_training_data")
    assert built.returncode == 0, built.output
    before = load_shards(home.training_data("labeled"))
    pixels = dict(zip(before.image_ids(), before.read_all(), strict=True))
    shard = home.training_data("labeled") / "shards" / "r64" / "shard-000000.npy"
    with open(shard, "r+b") as handle:  # 8 KiB of zeros in the middle, as the 8 MB in a big shard
        handle.seek(shard.stat().st_size // 2)
        handle.write(bytes(8192))

    rebuilt = cli("run", "--profile", "demo", "--select", "labeled_training_data")

    assert rebuilt.returncode == 0, rebuilt.output
    assert "does not match its checksum" in rebuilt.output and "reused 0" in rebuilt.output
    after = load_shards(home.training_data("labeled"))
    for image_id, image in zip(after.image_ids(), after.read_all(), strict=True):
        np.testing.assert_array_equal(image, pixels[image_id])


@pytest.mark.parametrize("path", ["../x.jpg", "/etc/hostname"])
def test_a_manifest_path_outside_the_home_is_a_clear_error_naming_the_row(cli, home, path):
    (home.root.parent / "x.jpg").write_bytes(
        (home.root / pq.read_table(home.labeled_manifest)["path"][0].as_py()).read_bytes()
    )
    rows = pq.read_table(home.labeled_manifest).to_pandas()
    rows.loc[3, "path"] = path
    _write_manifest(home, list(zip(rows["image_id"], rows["path"], strict=True)))

    result = cli("run", "--profile", "demo", "--select", "labeled_training_data")

    _refused(
        result,
        f"image_id {rows['image_id'][3]} with path {path!r}",
        "outside the pipeline home",
        "rebuild the manifest",
    )
    assert not (home.training_data("labeled") / "index.parquet").exists()


def test_a_garbage_latest_checkpoint_is_set_aside_and_finetuning_finishes(cli, pretrained):
    latest = pretrained.latest_checkpoint("finetuned")
    latest.parent.mkdir(parents=True)
    latest.write_bytes(b"not a checkpoint at all" * 40)

    result = cli("run", "--profile", "demo", "--select", "finetuned_generator", *FINETUNE_FAST)

    assert result.returncode == 0, result.output
    [aside] = unreadable_copies(latest)
    assert aside.read_bytes() == b"not a checkpoint at all" * 40
    assert aside.name in result.output and "weights_only" not in result.output
    assert load_checkpoint(pretrained.final_checkpoint("finetuned"))["step"] == 2


def test_a_garbage_pretrained_checkpoint_is_one_sentence_naming_it_and_its_asset(cli, pretrained):
    final = pretrained.final_checkpoint("pretrained")
    final.write_bytes(b"not a checkpoint at all" * 40)

    result = cli("run", "--profile", "demo", "--select", "finetuned_generator", *FINETUNE_FAST)

    stderr = _refused(
        result, f"checkpoint {final} cannot be read: ", "materialize the pretrained_generator asset"
    )
    sentence = next(line for line in stderr.splitlines() if f"checkpoint {final} cannot be read" in line)
    assert len(sentence) < 400 and sentence.count(". ") == 0, sentence
    assert final.read_bytes() == b"not a checkpoint at all" * 40 and unreadable_copies(final) == []
