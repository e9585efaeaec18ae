"""Data-parallel training: two CPU processes (torchrun, gloo) train as one process does on the same global batch.

On CPU each process normalises with its own share's batch statistics (torch's SyncBatchNorm is CUDA-only), so
a two-process step is exactly a one-process step whose batch norms see each half of the batch separately: the
exact comparison is with such a one-process run (``per_share_batch_norm``), within float rounding. Against a
plain one-process run (statistics over the whole batch of 8) the tiny networks' total losses differ by up to
6% over 3 steps and their parts by up to 23% (the latent head's error; measured), so the test allows 15% on
the totals: that is the statistics of 4 images against 8, not an error, and on CUDA SyncBatchNorm removes it.
Weights are not compared with the plain run: Adam's first steps move each weight by about the learning rate
whatever its gradient's size, so a small change in a gradient can flip a whole step. Instance noise and
dropout are off: each process draws them for its own share.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from album_pipeline.data.shards import load_shards
from album_pipeline.defs.resources import GenreTaxonomy, MlflowTracking, PipelineHome
from album_pipeline.defs.training import pretrained_generator
from album_pipeline.layout import HomeLayout
from album_pipeline.model.checkpoint import GENERATOR_EMA, load_checkpoint
from album_pipeline.model.networks import Discriminator, GanArchitecture, Generator
from album_pipeline.registry.mlflow_registry import sqlite_tracking_uri
from album_pipeline.testing.shards import write_shard_set_from_arrays
from album_pipeline.training import entry, loop
from album_pipeline.training.distributed import ProcessGroupInfo
from album_pipeline.training.loop import TrainingConfig, train_gan
from album_pipeline_tests.training.conftest import GENRES

CONFIG = TrainingConfig(
    steps=3, batch_size=8, log_every=1, checkpoint_every=2, precision="fp32", threads=1, instance_noise=0.0
)
ARCH = GanArchitecture(num_genres=5, noise_dim=8, generator_width=16, discriminator_width=4, dropout=0.0)
LOSSES = ("loss_d", "loss_g", "d_adversarial", "d_genre_fake", "d_latent", "g_adversarial", "g_genre")
# The child processes import this checkout's package, installed or not.
CHILD_ENV = {
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(entry.__file__).parents[2]), os.environ.get("PYTHONPATH")])
    )
}


def make_home(root: Path) -> HomeLayout:
    layout = HomeLayout(root)
    images = np.random.default_rng(0).integers(0, 256, (32, 64, 64, 3), dtype=np.uint8)
    write_shard_set_from_arrays(layout.training_data("unlabeled"), images, np.full(32, -1), GENRES)
    return layout


def torchrun_pretraining(layout: HomeLayout, processes: int) -> str:
    settings = entry.changed_settings(CONFIG, ARCH)
    command = entry.training_command(sys.executable, "pretrain", layout.root, processes, settings)
    done = subprocess.run(
        command, env={**os.environ, **CHILD_ENV}, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def per_share_batch_norm(module: nn.Module, shares: int) -> nn.Module:
    """``module`` with each batch norm applied to each of ``shares`` contiguous parts of its batch apart."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            whole = layer.forward
            layer.forward = lambda x, whole=whole: torch.cat([whole(part) for part in x.chunk(shares)])
    return module


def weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Running statistics are not used in training, and rank 0 keeps only its own share's.
    return {
        name: value for name, value in state.items() if "running" not in name and "num_batches" not in name
    }


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[HomeLayout, str]:
    """A home where torchrun pretrained in 2 processes, and what it printed."""
    layout = make_home(tmp_path_factory.mktemp("two-processes"))
    return layout, torchrun_pretraining(layout, processes=2)


def test_two_processes_train_as_one_whose_batch_norms_see_each_share_apart(
    two_processes, tmp_path, monkeypatch
):
    two, stdout = two_processes
    assert stdout.count("step=1 ") == 1  # rank 0 alone logs
    distributed = load_checkpoint(two.final_checkpoint("pretrained"))

    monkeypatch.setattr(loop, "build_generator", lambda arch: per_share_batch_norm(Generator(arch), 2))
    monkeypatch.setattr(
        loop, "build_discriminator", lambda arch: per_share_batch_norm(Discriminator(arch), 2)
    )
    data = load_shards(two.training_data("unlabeled"))
    reference = train_gan(data, ARCH, CONFIG, tmp_path / "reference", use_labels=False)
    single = load_checkpoint(reference.checkpoint_path)

    assert distributed["run_key"] == single["run_key"] and distributed["step"] == 3
    for ours, theirs in zip(distributed["history"], single["history"], strict=True):
        for name in LOSSES:
            assert ours[name] == pytest.approx(theirs[name], rel=1e-5, abs=1e-6), (ours["step"], name)
    for network in ("generator", "discriminator", GENERATOR_EMA):
        ours, theirs = weights(distributed[network]), weights(single[network])
        assert ours.keys() == theirs.keys()  # the unwrapped modules' names, no DDP "module." prefix
        for name in ours:
            torch.testing.assert_close(
                ours[name], theirs[name], rtol=1e-4, atol=1e-5, msg=f"{network}.{name}"
            )


def test_two_processes_stay_near_one_process_with_whole_batch_statistics(two_processes, tmp_path, capsys):
    two, one = two_processes[0], make_home(tmp_path)
    # The same entry without torchrun's environment trains in this one process.
    assert entry.main(["--stage", "pretrain", "--home", str(one.root), *_set_arguments()]) == 0
    assert '"steps": 3' in capsys.readouterr().out
    distributed = load_checkpoint(two.final_checkpoint("pretrained"))["history"]
    single = load_checkpoint(one.final_checkpoint("pretrained"))["history"]
    worst = max(
        abs(ours[name] / theirs[name] - 1)
        for ours, theirs in zip(distributed, single, strict=True)
        for name in ("loss_d", "loss_g")
    )
    assert 0 < worst < 0.15


def _set_arguments() -> list[str]:
    command = entry.training_command("python", "pretrain", "home", 1, entry.changed_settings(CONFIG, ARCH))
    return command[command.index("--home") + 2 :]


def test_the_command_line_carries_every_changed_setting():
    config, arch_settings = entry.parse_settings([a for a in _set_arguments() if a != "--set"], "pretrain")
    assert config == CONFIG
    assert GanArchitecture(**arch_settings, num_genres=5, resolution=64) == ARCH
    parsed, _ = entry.parse_settings(["betas=[0.5, 0.9]", "ema_rampup=null", "device=cpu"], "finetune")
    assert parsed.betas == (0.5, 0.9) and parsed.ema_rampup is None and parsed.device == "cpu"
    with pytest.raises(ValueError, match="finetuning keeps the pretrained architecture"):
        entry.parse_settings(["generator_width=32"], "finetune")
    with pytest.raises(ValueError, match="num_genres is fixed by the training shards"):
        entry.parse_settings(["num_genres=3"], "pretrain")


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, dataset):
    with pytest.raises(
        ValueError, match="does not split evenly over 3 processes; set batch_size to a multiple"
    ):
        train_gan(dataset(), ARCH, CONFIG, tmp_path, use_labels=True, process_group=ProcessGroupInfo(0, 3))
    with pytest.raises(ValueError, match="batch norm needs at least 2; raise batch_size to at least 16"):
        ProcessGroupInfo(0, 8).local_batch_size(8)
    assert ProcessGroupInfo(1, 2).local_share(torch.arange(8), None)[0].tolist() == [4, 5, 6, 7]


def test_the_pretraining_asset_launches_torchrun_through_pipes(tmp_path):
    layout = make_home(tmp_path)
    settings = {**entry.changed_settings(CONFIG, ARCH), "processes": 2}
    result = dg.materialize(
        [pretrained_generator],
        run_config={"ops": {"pretrained_generator": {"config": settings}}},
        resources={
            "home": PipelineHome(root=str(layout.root)),
            "genres": GenreTaxonomy(),
            "mlflow": MlflowTracking(tracking_uri=sqlite_tracking_uri(layout.mlflow_db)),
            "pipes_subprocess_client": dg.PipesSubprocessClient(env=CHILD_ENV),
        },
    )
    assert result.success
    metadata = result.asset_materializations_for_node("pretrained_generator")[0].metadata
    assert metadata["steps"].value == 3 and metadata["device"].value == "cpu"
    assert metadata["checkpoint"].value == str(layout.final_checkpoint("pretrained"))
    assert "final_loss_d" in metadata
    assert load_checkpoint(layout.final_checkpoint("pretrained"))["step"] == 3
    # rank 0 logged the stage's MLflow run, as the in-process asset does
    client = mlflow.MlflowClient(sqlite_tracking_uri(layout.mlflow_db))
    (run,) = client.search_runs([client.get_experiment_by_name("album_pipeline").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["config.steps"] == "3"
    assert [point.step for point in client.get_metric_history(run.info.run_id, "loss_d")] == [1, 2, 3]
