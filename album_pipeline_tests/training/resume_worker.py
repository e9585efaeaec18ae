"""A tiny deterministic training run in a process of its own, for test_resume's SIGKILL test.

``python -m album_pipeline_tests.training.resume_worker SHARDS CHECKPOINTS PACE`` trains on the shard set in
SHARDS, checkpointing into CHECKPOINTS, sleeping PACE seconds after each step's log entry so that the test has
time to kill it mid-run (sleeping changes what is observed, not what is computed), and prints its summary.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from album_pipeline.data.shards import load_shards
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.training.config import TrainingConfig
from album_pipeline.training.loop import train_gan

GENRES = ("rock", "jazz", "pop", "rap-hip-hop", "classical")
TINY = GanArchitecture(num_genres=len(GENRES), noise_dim=8, generator_width=16, discriminator_width=4)
CONFIG = TrainingConfig(
    steps=12,
    batch_size=8,
    log_every=1,
    checkpoint_every=3,
    precision="fp32",
    device="cpu",
    threads=1,
    ema_kimg=0.016,
    ema_rampup=None,
)


def main(shards: Path, checkpoints: Path, pace: float) -> None:
    torch.use_deterministic_algorithms(True)
    summary = train_gan(
        load_shards(shards), TINY, CONFIG, checkpoints, use_labels=True, log=lambda entry: time.sleep(pace)
    )
    print(
        json.dumps({"resumed_from_step": summary.resumed_from_step, "steps_this_run": summary.steps_this_run})
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
