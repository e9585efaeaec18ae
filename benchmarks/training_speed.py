"""Images/s of `train_gan` steps (D step + G step, finetune losses) on random 64x64 data, side by side.

    .venv/bin/python benchmarks/training_speed.py            # about a minute on 2 cores

Prints a markdown table; the first two logged steps of each case are dropped (oneDNN builds its bf16 kernels).
"""

import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from album_pipeline.data.shards import ShardSet
from album_pipeline.model.networks import GanArchitecture
from album_pipeline.testing.shards import write_shard_set_from_arrays
from album_pipeline.training.loop import TrainingConfig, train_gan

# (generator width, discriminator width, batch, precision, channels_last, threads, steps)
CASES = [
    (512, 64, 128, "fp32", False, None, 4),
    (512, 64, 128, "bf16", False, None, 5),
    (512, 64, 128, "bf16", True, None, 5),
    (128, 32, 64, "fp32", False, None, 12),
    (128, 32, 64, "bf16", False, None, 12),
    (128, 32, 64, "bf16", False, 1, 12),
    (128, 16, 64, "bf16", False, None, 16),
]


def main() -> None:
    rng = np.random.default_rng(0)
    count = 512
    with tempfile.TemporaryDirectory() as shard_folder:
        data = write_shard_set_from_arrays(
            Path(shard_folder),
            rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8),
            rng.integers(0, 5, count),
            ("a", "b", "c", "d", "e"),
        )
        _run_cases(data)


def _run_cases(data: ShardSet) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| G width | D width | batch | precision | channels_last | threads | images/s | s/step |")
    print("|---|---|---|---|---|---|---|---|")
    for g_width, d_width, batch, precision, channels_last, threads, steps in CASES:
        speeds: list[float] = []
        config = TrainingConfig(
            steps=steps,
            batch_size=batch,
            precision=precision,
            channels_last=channels_last,
            threads=threads,
            log_every=1,
            checkpoint_every=10**6,
        )
        with tempfile.TemporaryDirectory() as folder:
            train_gan(
                data,
                GanArchitecture(generator_width=g_width, discriminator_width=d_width),
                config,
                Path(folder),
                use_labels=True,
                log=lambda record, speeds=speeds: speeds.append(record["images_per_second"]),
            )
        torch.set_num_threads(2)
        speed = statistics.median(speeds[2:])
        print(
            f"| {g_width} | {d_width} | {batch} | {precision} | {channels_last} | {threads or 2} | "
            f"{speed:.1f} | {batch / speed:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
