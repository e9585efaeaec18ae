"""The seed project's own float32 training step (bsmith175/album-gen), rebuilt to time it beside ours.

`album-pipeline bench train --compare-seed` loads this file and times ``SeedLoop.step`` in the same process
as the project's step, on the same pre-generated batches. Run alone, it prints the seed step's images/s:

    PYTHONPATH=. .venv/bin/python benchmarks/seed_loop.py [--batch 128] [--steps 5]

What comes from ``shared/reference/seed-project.md`` (the seed's description):
- Generator: the genre *index* through a dense layer 1 -> 10 (its "embedding"), concatenated with 2 latent
  codes and 100 noise values (112 inputs); dense 112 -> 512*4*4; four transposed convs, kernel 5, stride 2,
  padding 2, output padding 1, 512 -> 256 -> 128 -> 64 -> 3, batch norm and ReLU between, tanh out.
- Discriminator: four convs, kernel 5, stride 2, padding 2, 3 -> 64 -> 128 -> 256 -> 512, batch norm and
  LeakyReLU(0.1), dropout, then three dense heads on the 8192 features: real/fake (1), genre (5), latent (2).
- Adam with betas (0.5, 0.999), lr 2e-4 for G and 1e-5 for D; batch 128; float32 throughout; instance noise
  on everything D sees; one-sided label smoothing (real target 0.9); class losses weighted x10; latent codes
  regressed with MSE; fake genres drawn with ``randint(0, 5 - 1)`` (the last genre never drawn: kept, it costs
  nothing); the whole data set held in memory as float32 (here: batches pre-generated on the device).

What had to be assumed (the description is silent), each choice the project's own or the cheaper one, so
that an assumption never makes the seed slower than it was and so never flatters the ratio:
- One step is one D step then one G step, every step. The fakes are generated once per step and reused: D
  judges them detached, then the G step judges the same tensor again. D judges real and fake images in two
  separate forward passes (so batch norm sees each batch alone), as in the project.
- In the G step D's parameters keep ``requires_grad`` (nothing in the seed turns them off), so the G step's
  backward also computes D's weight gradients, which the next D step's ``zero_grad`` discards. This is the
  one deliberate difference in work from the project's step, which switches them off.
- Batch norm follows the dense layer and each of the first three transposed convs in G, and convs 2-4 in D
  (not D's first conv: DCGAN's and the project's placement, and the cheaper reading of "with batch norm").
  Layers keep PyTorch's default biases. Dropout 0.3 after the flattened features (the project's rate).
- Losses, in the labelled (finetuning) branch with the seed's defect fixed: D: BCE-with-logits real (0.9) and
  fake (0), + 10 x (cross entropy of the real covers' genres + of the fakes' genres) + MSE of the fakes' codes;
  G: BCE-with-logits of its fakes against 1 + 10 x genre cross entropy + code MSE. Instance noise std 0.1
  (its decay changes no cost while it is above 0). Latent codes uniform in [-1, 1], noise standard normal.
- Loss tensors are not kept in Python lists with their graphs (the seed's memory leak grows memory, not the
  work of a step), and nothing is read back to the host inside the step.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

SEED_BATCH = 128
NUM_GENRES = 5
LATENT_DIM = 2
NOISE_DIM = 100
GENRE_FEATURES = 10
GENERATOR_WIDTH = 512
DISCRIMINATOR_WIDTH = 64
INSTANCE_NOISE = 0.1
REAL_LABEL = 0.9
CLASS_WEIGHT = 10.0


def _transposed(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class SeedGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        width = GENERATOR_WIDTH
        self.genre_dense = nn.Linear(1, GENRE_FEATURES)  # the seed's "embedding" of the genre index
        self.dense = nn.Linear(GENRE_FEATURES + LATENT_DIM + NOISE_DIM, width * 4 * 4)
        self.dense_norm = nn.BatchNorm2d(width)
        self.convs = nn.Sequential(
            _transposed(width, width // 2),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(),
            _transposed(width // 2, width // 4),
            nn.BatchNorm2d(width // 4),
            nn.ReLU(),
            _transposed(width // 4, width // 8),
            nn.BatchNorm2d(width // 8),
            nn.ReLU(),
            _transposed(width // 8, 3),
        )

    def forward(self, genres: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        genre_features = self.genre_dense(genres.float().unsqueeze(1))
        projected = self.dense(torch.cat([genre_features, latent, noise], dim=1))
        projected = F.relu(self.dense_norm(projected.view(-1, GENERATOR_WIDTH, 4, 4)))
        return torch.tanh(self.convs(projected))


class SeedDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        width = DISCRIMINATOR_WIDTH
        channels = [3, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for index, (cin, cout) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            layers.append(nn.Conv2d(cin, cout, 5, stride=2, padding=2))
            if index > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.1))
        layers += [nn.Flatten(), nn.Dropout(0.3)]
        self.features = nn.Sequential(*layers)
        features = width * 8 * 4 * 4
        self.real_fake = nn.Linear(features, 1)
        self.genre = nn.Linear(features, NUM_GENRES)
        self.latent = nn.Linear(features, LATENT_DIM)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.features(images)
        return self.real_fake(features), self.genre(features), self.latent(features)


def _noisy(images: torch.Tensor) -> torch.Tensor:
    return images + INSTANCE_NOISE * torch.randn_like(images)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class SeedLoop:
    """The seed's networks and optimisers on ``device``; ``step`` is one D step and one G step."""

    def __init__(self, device: torch.device | str = "cpu", seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.generator = SeedGenerator().to(self.device).train()
        self.discriminator = SeedDiscriminator().to(self.device).train()
        self.optimizer_generator = torch.optim.Adam(self.generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optimizer_discriminator = torch.optim.Adam(
            self.discriminator.parameters(), lr=1e-5, betas=(0.5, 0.999)
        )

    def step(self, real: torch.Tensor, labels: torch.Tensor) -> None:
        count = real.shape[0]
        fake_genres = torch.randint(0, NUM_GENRES - 1, (count,), device=self.device)
        latent = torch.rand(count, LATENT_DIM, device=self.device) * 2 - 1
        noise = torch.randn(count, NOISE_DIM, device=self.device)
        fake = self.generator(fake_genres, latent, noise)

        self.optimizer_discriminator.zero_grad()
        real_logit, real_genre, _ = self.discriminator(_noisy(real))
        fake_logit, fake_genre, fake_latent = self.discriminator(_noisy(fake.detach()))
        d_loss = (
            _bce(real_logit, REAL_LABEL)
            + _bce(fake_logit, 0.0)
            + CLASS_WEIGHT * (F.cross_entropy(real_genre, labels) + F.cross_entropy(fake_genre, fake_genres))
            + F.mse_loss(fake_latent, latent)
        )
        d_loss.backward()
        self.optimizer_discriminator.step()

        self.optimizer_generator.zero_grad()
        judged_logit, judged_genre, judged_latent = self.discriminator(_noisy(fake))
        g_loss = (
            _bce(judged_logit, 1.0)
            + CLASS_WEIGHT * F.cross_entropy(judged_genre, fake_genres)
            + F.mse_loss(judged_latent, latent)
        )
        g_loss.backward()
        self.optimizer_generator.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=SEED_BATCH)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    loop = SeedLoop()
    real = torch.rand(args.batch, 3, 64, 64) * 2 - 1
    labels = torch.randint(0, NUM_GENRES, (args.batch,))
    for _ in range(args.warmup):
        loop.step(real, labels)
    started = time.perf_counter()
    for _ in range(args.steps):
        loop.step(real, labels)
    elapsed = time.perf_counter() - started
    print(f"seed loop: {args.steps * args.batch / elapsed:.1f} images/s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
