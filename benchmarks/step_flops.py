"""FLOPs of one training step (bench train's: D step + G step, finetuning losses) and what they mean on GPUs.

    .venv/bin/python benchmarks/step_flops.py                 # seed widths, batch 128: about a minute on 2 cores
    .venv/bin/python benchmarks/step_flops.py --widths demo --batch 64

Counts with ``torch.utils.flop_counter.FlopCounterMode`` while one step of ``bench.project_step`` runs on the
CPU in fp32 (the count is the same in bf16 and on any device: it counts matrix products and convolutions, the
step's arithmetic, not elementwise work). The GPU table divides the count by each GPU class's published dense
bf16 tensor throughput at an assumed utilisation: ESTIMATES, not measurements. Measure with
``album-pipeline bench train --device cuda``.
"""

from __future__ import annotations

import argparse

from torch.utils.flop_counter import FlopCounterMode

from album_pipeline.training.bench import architecture, project_step, real_batches
from album_pipeline.training.compute import select_compute
from album_pipeline.training.config import TrainingConfig

# Dense (no structured sparsity) bf16 tensor-core TFLOP/s from NVIDIA's data sheets, fp32 accumulation.
GPU_BF16_TFLOPS = {
    "L4": 121,
    "A10": 125,
    "RTX 4090": 165,
    "A100": 312,
    "L40S": 362,
    "H100 SXM / H200": 989,
}
# Small convolutions (4x4 to 64x64 feature maps, a 64-wide D) and batch norm keep a GPU far from its peak.
UTILISATIONS = (0.1, 0.3)


def count_step_flops(widths: str, batch: int) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one step, and per operator."""
    arch = architecture(widths)
    config = TrainingConfig(batch_size=batch, precision="fp32", device="cpu")
    compute = select_compute(config)
    step = project_step(arch, config, compute)
    real, labels = real_batches(batch, arch.num_genres, compute)[0]
    step(real, labels)  # Adam's state and oneDNN's kernels are made outside the count
    counter = FlopCounterMode(display=False)
    with counter:
        step(real, labels)
    per_operator = {str(op): count for op, count in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), per_operator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="seed", choices=("seed", "demo"))
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    total, per_operator = count_step_flops(args.widths, args.batch)
    print(
        f"widths {args.widths}, batch {args.batch}: {total / 1e9:.1f} GFLOP per step, "
        f"{total / args.batch / 1e9:.3f} GFLOP per image"
    )
    for op, count in sorted(per_operator.items(), key=lambda item: -item[1]):
        print(f"  {op}: {count / 1e9:.1f} GFLOP ({count / total:.0%})")
    print()
    columns = " | ".join(f"images/s at {u:.0%} (estimate)" for u in UTILISATIONS)
    print(f"| GPU | dense bf16 TFLOP/s | {columns} |")
    print("|---|---|" + "---|" * len(UTILISATIONS))
    for gpu, tflops in GPU_BF16_TFLOPS.items():
        speeds = " | ".join(f"{tflops * 1e12 * u / (total / args.batch):,.0f}" for u in UTILISATIONS)
        print(f"| {gpu} | {tflops} | {speeds} |")


if __name__ == "__main__":
    main()
