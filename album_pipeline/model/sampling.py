"""Covers on demand: genre mixes, latent codes, traversal grids and PNG bytes, shared by the CLI and the pyfunc.

A genre mix is a weight vector over the generator's genres; the generator is conditioned on the same mix of
its genre embeddings (``weights @ genre_embedding.weight``), so a pure genre is exactly that genre's embedding
and ``draw_covers`` then reproduces ``generate_covers``. Every random input of a draw is taken from one
``torch.Generator`` seeded with ``seed`` before any image is made, so the covers depend on the seed and the
request only, never on the batch size the network runs at.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid

from album_pipeline.atomic import atomic_path
from album_pipeline.layout import COVER_FILE, GRID_FILE, TRAVERSAL_FILE
from album_pipeline.model.networks import Generator, sample_inputs
from album_pipeline.model.pixels import check_image_batch, to_uint8

# Covers one request may ask for (per genre on the command line, per row of a serving request): every cover of
# a request is held in memory at once, and a served model must not be made to draw without bound.
MAX_COUNT = 256
TRAVERSAL_STEPS = 8  # columns of a traversal grid: each code at 8 evenly spaced values from -1 to 1
# Without codes, a traversal's rows follow random unit directions of the noise: as many rows as the seed has
# codes, each 2 standard deviations either side of the shared noise (a noise vector's coordinates are N(0, 1)).
NOISE_DIRECTIONS = 2
NOISE_SWEEP = 2.0
GRID_PADDING = 2  # pixels between covers in a grid, as in the evaluation's grid

_MIX_HELP = "give one genre (e.g. jazz) or weights for several (e.g. jazz:0.5,rock:0.5)"


def parse_genre_mix(spec: str, genres: Sequence[str]) -> np.ndarray:
    """Weights over ``genres`` (float64, summing to 1) for "jazz" or "jazz:0.5,rock:0.5"; else ValueError."""
    genres = list(genres)
    parts = [part.strip() for part in str(spec).split(",")]
    if not spec or not all(parts):
        raise ValueError(f"genre {spec!r} names no genre; {_MIX_HELP}")
    weights = np.zeros(len(genres), dtype=np.float64)
    for part in parts:
        name, has_weight, weight_text = (text.strip() for text in part.rpartition(":"))
        if not has_weight or part in genres:  # a genre's own name may hold a colon
            name, weight_text = part, "1"
        if name not in genres:
            raise ValueError(f"unknown genre {name!r}; the model knows {', '.join(genres)}")
        try:
            weight = float(weight_text)
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"the weight of {name!r} in {spec!r} must be a number >= 0, got {weight_text!r}")
        weights[genres.index(name)] += weight
    total = weights.sum()
    if total <= 0:
        raise ValueError(f"the weights in {spec!r} add up to 0; give at least one positive weight")
    return weights / total


def check_seed(seed: int) -> int:
    """``seed`` as an int, if it is a whole number torch accepts as a seed (0 to 2**63 - 1)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    return int(seed)


def check_codes(codes: np.ndarray | Sequence, count: int, latent_dim: int) -> torch.Tensor:
    """Latent codes as a float32 (count, latent_dim) tensor in [-1, 1]; one row of codes is used for all."""
    try:
        array = np.asarray(codes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"codes must be numbers in [-1, 1], one per latent code, got {codes!r}") from None
    given = array.shape
    if array.ndim == 1:
        array = np.broadcast_to(array, (count, array.shape[0]))
    if array.shape != (count, latent_dim):
        raise ValueError(
            f"codes must be {latent_dim} numbers (one per latent code) or a ({count}, {latent_dim}) array, "
            f"got shape {given}"
        )
    if not np.all(np.isfinite(array)) or np.abs(array).max(initial=0) > 1:
        raise ValueError("codes must lie in [-1, 1], the range the generator was trained on")
    return torch.tensor(array, dtype=torch.float32)


@contextmanager
def _genre_embeddings(generator: Generator, embeddings: torch.Tensor) -> Iterator[None]:
    """Make the generator's embedding layer output ``embeddings`` (one row per image) instead of a lookup.

    A forward hook, so that the mixed images come from Generator.forward itself and cannot drift from it.
    """
    handle = generator.genre_embedding.register_forward_hook(lambda module, inputs, output: embeddings)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _render(
    generator: Generator, mixes: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor, batch_size: int
) -> np.ndarray:
    """uint8 (N, H, W, 3) images for per-image genre weights, codes and noise, in eval mode."""
    device = next(generator.parameters()).device
    # The genres' rows (a projection generator has one more, its "any cover" class, mixed into none).
    table = generator.genre_embedding.weight[: generator.arch.num_genres]
    was_training = generator.training
    generator.eval()
    chunks = []
    try:
        for start in range(0, len(mixes), batch_size):
            batch = slice(start, start + batch_size)
            embeddings = mixes[batch].to(device, table.dtype) @ table
            placeholder = torch.zeros(len(embeddings), dtype=torch.long, device=device)
            with _genre_embeddings(generator, embeddings):
                images = generator(placeholder, latent[batch].to(device), noise[batch].to(device)).float()
            chunks.append(to_uint8(images).permute(0, 2, 3, 1).cpu().numpy())
    finally:
        generator.train(was_training)
    side = generator.arch.resolution
    return np.concatenate(chunks) if chunks else np.empty((0, side, side, 3), dtype=np.uint8)


def _check_mixes(mixes: np.ndarray, num_genres: int) -> torch.Tensor:
    array = np.asarray(mixes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != num_genres:
        raise ValueError(f"mixes must be an (N, {num_genres}) array of genre weights, got {array.shape}")
    if not np.all(np.isfinite(array)) or (array < 0).any():
        raise ValueError("mixes must hold finite weights >= 0 (see parse_genre_mix)")
    return torch.tensor(array, dtype=torch.float32)


def draw_covers(
    generator: Generator,
    mixes: np.ndarray,
    *,
    seed: int,
    codes: np.ndarray | Sequence | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """uint8 (N, H, W, 3) covers, one per row of ``mixes`` (N, num_genres), deterministic in ``seed``.

    ``codes`` fixes the latent codes ((N, latent_dim), or one row for all, in [-1, 1]); the noise is the same
    as without them, so fixing the codes changes only what the codes control. Without codes, a one-hot row
    gives the covers ``generate_covers`` gives for that genre index (up to its batch size of 256).
    """
    arch = generator.arch
    weights = _check_mixes(mixes, arch.num_genres)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rng = torch.Generator(device="cpu").manual_seed(check_seed(seed))
    latent, noise = sample_inputs(arch, torch.zeros(len(weights), dtype=torch.long), generator=rng)
    if codes is not None:
        latent = check_codes(codes, len(weights), arch.latent_dim)
    return _render(generator, weights, latent, noise, batch_size)


def traversal_grid(generator: Generator, genre: int | np.ndarray, *, seed: int = 0) -> np.ndarray:
    """A uint8 (H, W, 3) grid: row k sweeps latent code k over [-1, 1] (``TRAVERSAL_STEPS`` columns).

    ``genre`` is a genre index or a weight vector (``parse_genre_mix``). Every cover shares one noise vector
    and the other codes stay at 0, so a row shows what its code alone changes. A generator without codes
    (the projection GAN's default) is swept along ``NOISE_DIRECTIONS`` random directions of its noise instead,
    from ``-NOISE_SWEEP`` to ``+NOISE_SWEEP`` standard deviations around that shared vector.
    """
    arch = generator.arch
    mix = np.eye(arch.num_genres)[genre] if isinstance(genre, int | np.integer) else np.asarray(genre)
    sweep = torch.linspace(-1, 1, TRAVERSAL_STEPS)
    rng = torch.Generator(device="cpu").manual_seed(check_seed(seed))
    base = torch.randn(1, arch.noise_dim, generator=rng)
    if arch.latent_dim > 0:
        count = arch.latent_dim * TRAVERSAL_STEPS
        latent = torch.zeros(count, arch.latent_dim)
        for code in range(arch.latent_dim):
            latent[code * TRAVERSAL_STEPS : (code + 1) * TRAVERSAL_STEPS, code] = sweep
        noise = base.expand(count, -1)
    else:
        count = NOISE_DIRECTIONS * TRAVERSAL_STEPS
        latent = torch.zeros(count, 0)
        directions = torch.randn(NOISE_DIRECTIONS, arch.noise_dim, generator=rng)
        directions = directions / directions.norm(dim=1, keepdim=True)
        offsets = NOISE_SWEEP * sweep[None, :, None] * directions[:, None, :]  # (directions, steps, noise)
        noise = (base + offsets).reshape(count, arch.noise_dim)
    weights = _check_mixes(np.broadcast_to(mix, (count, arch.num_genres)), arch.num_genres)
    covers = _render(generator, weights, latent, noise, batch_size=256)
    return cover_grid(covers, columns=TRAVERSAL_STEPS)


def cover_grid(covers: np.ndarray, columns: int) -> np.ndarray:
    """uint8 (H, W, 3): the covers in rows of ``columns``, ``GRID_PADDING`` black pixels between them."""
    check_image_batch(covers, "covers")
    if len(covers) == 0:
        raise ValueError("a grid needs at least one cover")
    batch = torch.from_numpy(np.ascontiguousarray(covers)).permute(0, 3, 1, 2)
    return make_grid(batch, nrow=columns, padding=GRID_PADDING).permute(1, 2, 0).numpy()


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of one uint8 (H, W, 3) image; the same pixels always give the same bytes."""
    from PIL import Image

    check_image_batch(np.asarray(image)[None], "image")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def file_stem(label: str) -> str:
    """A file name part for a genre or a mix: letters, digits, '-' and '_' only (e.g. jazz-0.5_rock-0.5)."""
    stem = re.sub(r"[^\w.-]+", "-", label.replace(",", "_").replace(":", "-")).strip("-._")
    return stem or "genre"


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write ``image`` as a PNG at ``path`` atomically; only a new path or a regular file is replaced.

    The check runs again just before the rename: a link, folder, device or FIFO that appeared meanwhile is
    refused, never followed or replaced.
    """
    from album_pipeline.metrics.evaluate import check_output_file

    path = Path(path)
    check_output_file(path)
    data = encode_png(image)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
        check_output_file(path)
    return path


def check_output_dir(folder: Path) -> None:
    """Refuse a folder path that is a symlink or anything but a folder; a path that does not exist is fine."""
    from album_pipeline.metrics.evaluate import OutputRefused

    try:
        is_link, exists = Path(folder).is_symlink(), os.path.lexists(folder)
    except OSError as error:
        raise OutputRefused(f"cannot inspect {folder}: {error.strerror}") from None
    if is_link:
        raise OutputRefused(f"{folder} is a symbolic link; give a new folder or a real one")
    if exists and not Path(folder).is_dir():
        raise OutputRefused(f"{folder} is not a folder; give a new folder or an existing one")


def _unique_stems(labels: Sequence[str]) -> list[str]:
    stems = [file_stem(label) for label in labels]
    # Two genres whose names differ only in punctuation keep apart by their row number.
    return [stem if stems.count(stem) == 1 else f"{stem}-{row}" for row, stem in enumerate(stems)]


def write_cover_folder(
    generator: Generator,
    rows: Sequence[tuple[str, np.ndarray]],
    folder: Path,
    *,
    count: int,
    seed: int,
    traverse: bool = False,
) -> list[Path]:
    """For each (label, genre weights) row: ``count`` covers as PNGs, then grid.png (a row each) and, with
    ``traverse``, a traversal grid per row. Every row draws with the same ``seed``, so column j of each row
    shares its noise and codes, and one genre drawn alone gives the covers it has among all of them."""
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be between 1 and {MAX_COUNT}, got {count}")
    check_output_dir(folder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_output_dir(folder)  # again: a link may have taken the new folder's place
    written, drawn = [], []
    for (_label, mix), stem in zip(rows, _unique_stems([label for label, _ in rows]), strict=True):
        covers = draw_covers(generator, np.tile(mix, (count, 1)), seed=seed)
        drawn.append(covers)
        for index, cover in enumerate(covers):
            written.append(write_png(folder / COVER_FILE.format(genre=stem, index=index), cover))
        if traverse:
            written.append(
                write_png(
                    folder / TRAVERSAL_FILE.format(genre=stem), traversal_grid(generator, mix, seed=seed)
                )
            )
    written.append(write_png(folder / GRID_FILE, cover_grid(np.concatenate(drawn), columns=count)))
    return written


def heldout_examples(
    covers, genres: Sequence[str], wanted: Sequence[str], count: int, *, seed: int, resolution: int
) -> list[np.ndarray]:
    """``count`` real covers of each ``wanted`` genre (uint8 (count, R, R, 3) each), drawn without replacement
    by ``seed`` from ``covers`` (a ShardSet or any ``metrics.samples.LabelledCovers`` whose labels index
    ``genres``), resized to ``resolution`` where the covers were stored at another side."""
    rng = np.random.default_rng(check_seed(seed))
    labels = np.asarray(covers.labels)
    examples = []
    for genre in wanted:
        rows = np.flatnonzero(labels == list(genres).index(genre))
        if len(rows) < count:
            raise ValueError(
                f"genre {genre!r} has {len(rows)} held-out covers, fewer than the {count} asked for; ask for "
                f"{len(rows)} or fewer"
            )
        chosen = np.sort(rng.choice(rows, size=count, replace=False))
        examples.append(_resized(np.asarray(covers.read(chosen)), resolution))
    return examples


def _resized(images: np.ndarray, side: int) -> np.ndarray:
    if images.shape[1] == side:
        return images
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    resized = torch.nn.functional.interpolate(pixels, size=(side, side), mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def beside_real_grid(generated: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> np.ndarray:
    """A uint8 (H, W, 3) grid of one row per genre: its generated covers, a white tile, then its real ones."""
    rows = []
    for made, actual in zip(generated, real, strict=True):
        check_image_batch(made, "generated covers")
        if made.shape != actual.shape:
            raise ValueError(
                f"each genre needs as many real covers as generated, of one size: {made.shape} "
                f"against {actual.shape}"
            )
        rows.append(np.concatenate([made, np.full_like(made[:1], 255), actual]))
    if not rows:
        raise ValueError("a grid needs at least one genre")
    return cover_grid(np.concatenate(rows), columns=2 * len(generated[0]) + 1)
