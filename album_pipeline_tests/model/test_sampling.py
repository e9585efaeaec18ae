"""Covers on demand: genre mixes, codes, determinism, traversal grids, PNG bytes and the cover folder."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from album_pipeline.metrics.evaluate import OutputRefused
from album_pipeline.model.architectures import build_generator
from album_pipeline.model.networks import GanArchitecture, Generator, generate_covers, sample_inputs
from album_pipeline.model.sampling import (
    GRID_PADDING,
    NOISE_DIRECTIONS,
    NOISE_SWEEP,
    TRAVERSAL_STEPS,
    _render,
    draw_covers,
    encode_png,
    parse_genre_mix,
    traversal_grid,
    write_cover_folder,
)

GENRES = ("rock", "jazz", "pop", "rap-hip-hop")
ARCH = GanArchitecture(num_genres=len(GENRES), noise_dim=8, latent_dim=3, generator_width=16)


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    model = Generator(ARCH)
    # Non-trivial batch-norm statistics, so that eval mode differs visibly from a fresh module.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def one_hot(index: int, count: int) -> np.ndarray:
    return np.tile(np.eye(len(GENRES))[index], (count, 1))


def test_a_genre_name_is_one_hot_and_a_mix_is_normalised():
    assert parse_genre_mix("jazz", GENRES).tolist() == [0, 1, 0, 0]
    assert parse_genre_mix(" jazz : 1 , rock:3", GENRES).tolist() == [0.75, 0.25, 0, 0]
    assert parse_genre_mix("pop:2,pop:2", GENRES).tolist() == [0, 0, 1, 0]
    assert parse_genre_mix("a:b", ["a:b", "c"]).tolist() == [1, 0]  # a genre's name may hold a colon


def test_an_unknown_genre_names_the_valid_ones():
    with pytest.raises(
        ValueError, match="unknown genre 'polka'; the model knows rock, jazz, pop, rap-hip-hop"
    ):
        parse_genre_mix("jazz:0.5,polka:0.5", GENRES)


@pytest.mark.parametrize("spec", ["jazz:x", "jazz:-1", "jazz:nan", "jazz:inf", "jazz:0", "", "jazz,,rock"])
def test_bad_weights_or_empty_parts_are_refused_with_the_way_to_write_a_mix(spec):
    with pytest.raises(ValueError, match=r"weight|names no genre|add up to 0"):
        parse_genre_mix(spec, GENRES)


def test_a_pure_genre_draws_what_generate_covers_draws_for_its_index(generator):
    for index in range(len(GENRES)):
        expected = generate_covers(generator, [index] * 7, seed=11).numpy()
        assert np.array_equal(draw_covers(generator, one_hot(index, 7), seed=11), expected)


def test_draws_are_deterministic_in_the_seed_and_independent_of_the_batch_size(generator):
    mixes = np.tile(parse_genre_mix("jazz:0.3,pop:0.7", GENRES), (9, 1))
    first = draw_covers(generator, mixes, seed=5)
    assert np.array_equal(first, draw_covers(generator, mixes, seed=5, batch_size=2))
    assert not np.array_equal(first, draw_covers(generator, mixes, seed=6))
    assert first.dtype == np.uint8 and first.shape == (9, 64, 64, 3)


def test_mixing_is_linear_in_the_genre_embedding(generator):
    """A mix conditions the generator on the same mix of the genre embeddings, fed through its own forward."""
    count, weights = 4, parse_genre_mix("rock:0.25,rap-hip-hop:0.75", GENRES)
    embedding = 0.25 * generator.genre_embedding.weight[0] + 0.75 * generator.genre_embedding.weight[3]
    latent, noise = sample_inputs(
        ARCH, torch.zeros(count, dtype=torch.long), torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        features = torch.cat([embedding.expand(count, -1), latent, noise], dim=1)
        projected = generator.project(features).view(-1, ARCH.generator_width, 4, 4)
        expected = ((generator.upsample(projected).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    drawn = draw_covers(generator, np.tile(weights, (count, 1)), seed=3)
    assert np.array_equal(drawn, expected.permute(0, 2, 3, 1).numpy())
    assert not np.array_equal(drawn, draw_covers(generator, one_hot(0, count), seed=3))


def test_codes_replace_the_random_codes_and_keep_the_noise(generator):
    mixes = one_hot(1, 3)
    codes = np.array([[-1.0, 0.0, 1.0], [0.5, 0.5, 0.5], [0.0, -0.25, 1.0]])
    _, noise = sample_inputs(ARCH, torch.zeros(3, dtype=torch.long), torch.Generator().manual_seed(8))
    expected = _render(
        generator, torch.tensor(mixes, dtype=torch.float32), torch.tensor(codes).float(), noise, 8
    )
    assert np.array_equal(draw_covers(generator, mixes, seed=8, codes=codes), expected)
    one_row = draw_covers(generator, mixes, seed=8, codes=[0.5, 0.5, 0.5])
    assert np.array_equal(one_row[1], expected[1])
    for bad in ([[2.0, 0, 0]] * 3, [0.1, 0.2], [[np.nan, 0, 0]] * 3):
        with pytest.raises(ValueError, match="codes"):
            draw_covers(generator, mixes, seed=8, codes=bad)


def test_a_seed_torch_cannot_take_is_refused(generator):
    for seed in (-1, 2**63, 1.5):
        with pytest.raises(ValueError, match="seed must be a whole number"):
            draw_covers(generator, one_hot(0, 1), seed=seed)


def test_a_traversal_has_a_row_per_code_sweeping_it_from_minus_one_to_one(generator):
    grid = traversal_grid(generator, 2, seed=4)
    step = 64 + GRID_PADDING
    assert grid.shape == (GRID_PADDING + ARCH.latent_dim * step, GRID_PADDING + TRAVERSAL_STEPS * step, 3)

    def cover(row: int, column: int) -> np.ndarray:
        top, left = GRID_PADDING + row * step, GRID_PADDING + column * step
        return grid[top : top + 64, left : left + 64]

    rng = torch.Generator().manual_seed(4)
    noise = torch.randn(1, ARCH.noise_dim, generator=rng)
    for code in range(ARCH.latent_dim):
        for column, value in ((0, -1.0), (TRAVERSAL_STEPS - 1, 1.0)):
            latent = torch.zeros(1, ARCH.latent_dim)
            latent[0, code] = value
            mix = torch.tensor(np.eye(len(GENRES))[2:3], dtype=torch.float32)
            assert np.array_equal(cover(code, column), _render(generator, mix, latent, noise, 1)[0])
        assert not np.array_equal(cover(code, 0), cover(code, TRAVERSAL_STEPS - 1))
    assert np.array_equal(traversal_grid(generator, 2, seed=4), grid)


def test_a_generator_without_codes_is_traversed_along_noise_directions():
    torch.manual_seed(0)
    arch = GanArchitecture(architecture="projection", num_genres=len(GENRES), noise_dim=8, generator_width=32)
    generator = build_generator(arch).eval()
    grid = traversal_grid(generator, 1, seed=4)
    step = 64 + GRID_PADDING
    assert grid.shape == (GRID_PADDING + NOISE_DIRECTIONS * step, GRID_PADDING + TRAVERSAL_STEPS * step, 3)

    def cover(row: int, column: int) -> np.ndarray:
        top, left = GRID_PADDING + row * step, GRID_PADDING + column * step
        return grid[top : top + 64, left : left + 64]

    rng = torch.Generator().manual_seed(4)
    base = torch.randn(1, arch.noise_dim, generator=rng)
    directions = torch.randn(NOISE_DIRECTIONS, arch.noise_dim, generator=rng)
    mix = torch.tensor(np.eye(len(GENRES))[1:2], dtype=torch.float32)
    for row in range(NOISE_DIRECTIONS):
        unit = directions[row] / directions[row].norm()
        for column, sign in ((0, -1.0), (TRAVERSAL_STEPS - 1, 1.0)):
            noise = base + sign * NOISE_SWEEP * unit
            assert np.array_equal(cover(row, column), _render(generator, mix, torch.zeros(1, 0), noise, 1)[0])
        assert not np.array_equal(cover(row, 0), cover(row, TRAVERSAL_STEPS - 1))


def test_png_encoding_is_lossless_and_repeatable(generator):
    cover = draw_covers(generator, one_hot(0, 1), seed=0)[0]
    data = encode_png(cover)
    assert data.startswith(b"\x89PNG") and data == encode_png(cover.copy())
    with Image.open(io.BytesIO(data)) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), cover)


def test_a_cover_folder_holds_every_cover_the_grid_and_the_traversals(generator, tmp_path):
    rows = [(genre, parse_genre_mix(genre, GENRES)) for genre in GENRES[:2]]
    written = write_cover_folder(generator, rows, tmp_path / "out", count=3, seed=2, traverse=True)
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == sorted(path.name for path in written)
    assert names == sorted(
        ["grid.png", "traversal_rock.png", "traversal_jazz.png"]
        + [f"{genre}_{index:03d}.png" for genre in ("rock", "jazz") for index in range(3)]
    )
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in written)
    with Image.open(tmp_path / "out" / "jazz_002.png") as image:
        assert np.array_equal(np.asarray(image), draw_covers(generator, one_hot(1, 3), seed=2)[2])


def test_a_cover_folder_never_follows_a_link(generator, tmp_path):
    rows = [("rock", parse_genre_mix("rock", GENRES))]
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OutputRefused, match="symbolic link"):
        write_cover_folder(generator, rows, tmp_path / "link", count=1, seed=0)
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    (real / "rock_000.png").symlink_to(target)
    with pytest.raises(OutputRefused, match="symbolic link"):
        write_cover_folder(generator, rows, real, count=1, seed=0)
    assert target.read_bytes() == b"keep me" and os.path.islink(real / "rock_000.png")
