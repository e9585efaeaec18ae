"""The MLflow run of a training stage, against a real sqlite store: written while training, ended by how it ends."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import mlflow
import numpy as np
import pytest
import torch

from album_pipeline.layout import TRAINING_RUN_FILE
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.registry.mlflow_registry import sqlite_tracking_uri
from album_pipeline.registry.training_run import (
    PARENT_RUN_TAG,
    RESUMED_TAG,
    SAMPLES_KEY,
    TrackingStore,
    TrainingTracking,
    registration_tags,
    tracked_training,
    train_tracked,
)
from album_pipeline.testing.shards import write_shard_set_from_arrays
from album_pipeline.training.loop import TrainingConfig, train_gan

GENRES = ("rock", "jazz", "pop")
TINY = GanArchitecture(num_genres=3, noise_dim=8, generator_width=16, discriminator_width=4)
FAST = TrainingConfig(
    steps=4, batch_size=8, log_every=1, checkpoint_every=2, precision="fp32", ema_kimg=1.0, threads=1
)
NO_SYSTEM = TrainingTracking(sample_every=2, sample_columns=2, system_metrics=False)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """One thread is many times faster for these tiny networks on a busy machine; later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
    return write_shard_set_from_arrays(tmp_path_factory.mktemp("shards"), images, np.arange(12) % 3, GENRES)


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory):
    """One store for the module (creating MLflow's schema takes seconds); each test has its own experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    return sqlite_tracking_uri(folder / "mlflow.db"), folder / "mlartifacts"


@pytest.fixture
def store(shared_db, request) -> TrackingStore:
    tracking_uri, artifacts = shared_db
    return TrackingStore(tracking_uri, request.node.name, artifacts)


def _runs(store):
    client = _client(store)
    return client.search_runs([client.get_experiment_by_name(store.experiment_name).experiment_id])


def _client(store):
    return mlflow.MlflowClient(tracking_uri=store.tracking_uri)


def _train(data, store, checkpoint_dir, **kwargs):
    kwargs.setdefault("options", NO_SYSTEM)
    kwargs.setdefault("stage", "finetuned")
    kwargs.setdefault("use_labels", True)
    config = kwargs.pop("config", FAST)
    return train_tracked(data, TINY, config, checkpoint_dir, store=store, **kwargs)


def _metric_steps(client, run_id, key):
    return [metric.step for metric in client.get_metric_history(run_id, key)]


def _image_steps(client, run_id):
    names = [item.path.rsplit("/", 1)[-1] for item in client.list_artifacts(run_id, "images")]
    pattern = re.compile(rf"^{SAMPLES_KEY}\+step\+(\d+)\+.*(?<!\+compressed)\.png$")
    return sorted(int(match.group(1)) for name in names if (match := pattern.match(name)))


def test_a_training_run_shows_params_at_the_start_then_metrics_and_grids_by_step(data, store, tmp_path):
    client = _client(store)
    seen_at_first_entry = {}

    def look_at_mlflow(entry):
        if not seen_at_first_entry:
            (current,) = _runs(store)
            seen_at_first_entry.update(status=current.info.status, params=current.data.params)

    summary, run = _train(data, store, tmp_path / "ckpt", log=look_at_mlflow, tags={"dagster_run_id": "r1"})

    assert seen_at_first_entry["status"] == "RUNNING"
    params = seen_at_first_entry["params"]
    assert params["config.steps"] == "4" and params["config.batch_size"] == "8"
    assert params["arch.generator_width"] == "16" and params["data.images"] == "12"
    assert params["device"] == "cpu" and params["precision"] == "fp32"
    assert params["data.genres"] == '["rock", "jazz", "pop"]'

    finished = client.get_run(run.run_id)
    assert finished.info.status == "FINISHED" and finished.info.run_name == "finetuned"
    assert finished.data.tags["dagster_run_id"] == "r1" and RESUMED_TAG not in finished.data.tags
    for key in ("loss_d", "loss_g", "images_per_second", "instance_noise"):
        assert _metric_steps(client, run.run_id, key) == [1, 2, 3, 4], key
    assert finished.data.metrics["loss_d"] == pytest.approx(summary.history[-1]["loss_d"])
    assert _image_steps(client, run.run_id) == [2, 4]  # every sample_every steps, and the end
    assert (tmp_path / "ckpt" / TRAINING_RUN_FILE).is_file() and run.url is None
    assert run.failed_calls == 0


def test_a_failed_stage_ends_failed_and_its_resume_continues_the_same_run(data, store, tmp_path):
    def fail_at_step_3(entry):
        if entry["step"] == 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _train(data, store, tmp_path / "ckpt", log=fail_at_step_3)
    client = _client(store)
    (failed,) = _runs(store)
    assert failed.info.status == "FAILED"
    assert _metric_steps(client, failed.info.run_id, "loss_d") == [1, 2]

    summary, run = _train(data, store, tmp_path / "ckpt")
    assert summary.resumed_from_step == 2 and run.run_id == failed.info.run_id and run.continued
    resumed = client.get_run(run.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags[RESUMED_TAG] == "true"
    assert _metric_steps(client, run.run_id, "loss_d") == [1, 2, 3, 4]


def test_an_interrupted_stage_is_killed_and_a_lost_run_is_replaced_by_one_tagged_resumed(
    data, store, tmp_path
):
    def interrupt_at_step_3(entry):
        if entry["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(data, store, tmp_path / "ckpt", log=interrupt_at_step_3)
    (killed,) = _runs(store)
    assert killed.info.status == "KILLED"

    _client(store).delete_run(killed.info.run_id)  # lost, as in a store of another machine
    summary, run = _train(data, store, tmp_path / "ckpt")
    assert summary.resumed_from_step == 2 and run.run_id != killed.info.run_id and not run.continued
    assert _client(store).get_run(run.run_id).data.tags[RESUMED_TAG] == "true"


def test_an_mlflow_outage_mid_run_warns_once_and_training_goes_on(data, store, tmp_path, monkeypatch):
    warnings: list[str] = []

    def outage(*args, **kwargs):
        raise ConnectionError("the tracking server went away")

    def break_mlflow_at_step_2(entry):  # called before the entry goes to MLflow
        if entry["step"] == 2:
            monkeypatch.setattr(mlflow.MlflowClient, "log_batch", outage)
            monkeypatch.setattr(mlflow.MlflowClient, "log_image", outage)

    summary, run = _train(data, store, tmp_path / "ckpt", log=break_mlflow_at_step_2, warn=warnings.append)
    assert summary.steps_this_run == 4 and summary.checkpoint_path.is_file()
    assert len(warnings) == 1 and "could not log metrics" in warnings[0] and "training goes on" in warnings[0]
    assert run.failed_calls == 6  # steps 2-4, both grids and the summary tags: dropped while paused
    ended = _client(store).get_run(run.run_id)
    assert ended.info.status == "FINISHED" and _metric_steps(_client(store), run.run_id, "loss_d") == [1]


def test_a_store_that_cannot_be_used_leaves_training_untracked(data, tmp_path):
    warnings: list[str] = []
    store = TrackingStore("nosuchscheme://nowhere", "training", tmp_path / "mlartifacts")
    summary, run = _train(data, store, tmp_path / "ckpt", warn=warnings.append)
    assert summary.steps_this_run == 4 and run.run_id is None
    assert len(warnings) == 1 and "training is not tracked" in warnings[0]


def test_finetuning_is_a_child_of_pretraining_and_registration_of_finetuning(data, store, tmp_path):
    pretrain_config = replace(FAST, steps=2)
    _, pretrain = _train(
        data, store, tmp_path / "pretrained", stage="pretrained", use_labels=False, config=pretrain_config
    )
    _, finetune = _train(
        data, store, tmp_path / "finetuned", init_checkpoint=tmp_path / "pretrained" / "final.pt"
    )
    tags = _client(store).get_run(finetune.run_id).data.tags
    assert tags[PARENT_RUN_TAG] == pretrain.run_id
    assert registration_tags(tmp_path / "finetuned")[PARENT_RUN_TAG] == finetune.run_id
    assert registration_tags(tmp_path / "pretrained")[PARENT_RUN_TAG] == pretrain.run_id
    assert registration_tags(tmp_path / "nothing") == {}


def test_sampling_the_generator_does_not_change_training(data, tmp_path):
    class Sampler:
        def __init__(self):
            self.seen = []

        def samples_due(self, step, total_steps):
            return True

        def on_samples(self, step, generator):
            self.seen.append((step, generator.training))

    sampler = Sampler()
    watched = train_gan(data, TINY, FAST, tmp_path / "a", use_labels=True, observer=sampler)
    alone = train_gan(data, TINY, FAST, tmp_path / "b", use_labels=True)
    assert sampler.seen == [(1, False), (2, False), (3, False), (4, False)]  # the EMA copy, in eval mode

    def losses(history):
        return [{k: v for k, v in entry.items() if k != "images_per_second"} for entry in history]

    assert losses(watched.history) == losses(alone.history)


def test_system_metrics_are_logged_while_the_run_is_open(store, tmp_path, monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    with tracked_training(
        store, stage="pretrained", checkpoint_dir=tmp_path / "ckpt", run_key="k", params={}, num_genres=3
    ) as run:
        time.sleep(0.6)
    metrics = _client(store).get_run(run.run_id).data.metrics
    assert any(name.startswith("system/cpu_utilization") for name in metrics), sorted(metrics)
