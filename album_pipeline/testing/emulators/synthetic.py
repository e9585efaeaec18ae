"""Procedurally drawn album covers: a deterministic stand-in for real Napster and OMACIR images.

Each genre has a dominant palette *and* a layout motif, both coarse enough to survive a downscale to 64x64, so
that a small GAN can learn them in a few hundred steps and a trivial classifier can tell them apart. Shapes
are placed in unit coordinates and scaled to the requested size, so one album drawn at 70x70 and at 600x600
shows the same picture, as the real image server's sizes of one cover do.
"""

from __future__ import annotations

import colorsys
import io
import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from album_pipeline.genres import DEFAULT_GENRES

RGB = tuple[int, int, int]
Point = tuple[float, float]

# Share of OMACIR-like covers drawn in one of the genre styles; the rest use the neutral "other" style.
UNLABELED_GENRE_SHARE = 0.8
OTHER_STYLE = "other"


class _Canvas:
    """An ImageDraw wrapper that takes unit coordinates, so motifs are written once for every size."""

    def __init__(self, size: int, background: RGB | Image.Image) -> None:
        self.size = size
        if isinstance(background, Image.Image):
            self.image = background
        else:
            self.image = Image.new("RGB", (size, size), background)
        self.draw = ImageDraw.Draw(self.image)

    def px(self, value: float) -> float:
        return value * self.size

    def width(self, value: float) -> int:
        return max(1, round(value * self.size))

    def points(self, points: list[Point]) -> list[Point]:
        return [(x * self.size, y * self.size) for x, y in points]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        # ImageDraw needs x1 >= x0 and y1 >= y0 even after rounding at tiny sizes.
        s = self.size
        return (x0 * s, y0 * s, max(x0 * s, x1 * s), max(y0 * s, y1 * s))

    def circle_box(self, cx: float, cy: float, radius: float) -> tuple[float, float, float, float]:
        return self.box(cx - radius, cy - radius, cx + radius, cy + radius)


def _jitter(rng: random.Random, color: RGB, amount: int) -> RGB:
    return tuple(min(255, max(0, channel + rng.randint(-amount, amount))) for channel in color)  # type: ignore[return-value]


def _hsv(hue_degrees: float, saturation: float, value: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb((hue_degrees % 360) / 360.0, saturation, value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _draw_rock(canvas: _Canvas, rng: random.Random) -> None:
    """Near-black with red/orange jagged bands running diagonally, like torn stage lighting."""
    # Bands run bottom-left to top-right; their start slides along the left/bottom edges with the seed.
    for _ in range(rng.randint(2, 4)):
        offset = rng.uniform(-0.45, 0.45)
        start, end = (0.0 + offset, 1.05 + offset * 0.2), (1.05 + offset * 0.2, 0.0 + offset)
        steps = rng.randint(6, 9)
        half_width = rng.uniform(0.05, 0.1)
        upper: list[Point] = []
        lower: list[Point] = []
        for step in range(steps + 1):
            t = step / steps
            x = start[0] + (end[0] - start[0]) * t
            y = start[1] + (end[1] - start[1]) * t
            # Normal of the diagonal is (1, 1)/sqrt(2); alternating offsets make the zigzag edge.
            zig = (0.06 if step % 2 else -0.06) * rng.uniform(0.5, 1.2)
            spread_up = (half_width + zig) * 0.7071
            spread_down = (half_width - zig) * 0.7071
            upper.append((x - spread_up, y - spread_up))
            lower.append((x + spread_down, y + spread_down))
        color = _hsv(rng.uniform(0, 32), rng.uniform(0.85, 1.0), rng.uniform(0.8, 1.0))
        canvas.draw.polygon(canvas.points(upper + lower[::-1]), fill=color)
    # A few sharp shards keep the texture jagged without diluting the palette.
    for _ in range(rng.randint(1, 3)):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.04, 0.09)
        shard = [(cx - r, cy + r), (cx + r * 1.4, cy - r * 1.2), (cx + r * 0.2, cy + r * 0.3)]
        canvas.draw.polygon(canvas.points(shard), fill=_hsv(rng.uniform(5, 40), 0.9, 1.0))


def _draw_jazz(canvas: _Canvas, rng: random.Random) -> None:
    """Deep blue with large smooth gold circles and arcs."""
    gold_base = (222, 178, 64)
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
    radius = rng.uniform(0.22, 0.33)
    canvas.draw.ellipse(canvas.circle_box(cx, cy, radius), fill=_jitter(rng, gold_base, 18))
    # Concentric rings around the disc read as a record or a spotlight.
    for ring in range(rng.randint(1, 2)):
        ring_radius = radius + 0.07 + 0.07 * ring + rng.uniform(0.0, 0.02)
        canvas.draw.ellipse(
            canvas.circle_box(cx, cy, ring_radius),
            outline=_jitter(rng, gold_base, 22),
            width=canvas.width(rng.uniform(0.018, 0.03)),
        )
    for _ in range(rng.randint(1, 2)):
        ax, ay, ar = rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0), rng.uniform(0.25, 0.45)
        start = rng.uniform(0, 360)
        canvas.draw.arc(
            canvas.circle_box(ax, ay, ar),
            start=start,
            end=start + rng.uniform(70, 160),
            fill=_jitter(rng, (236, 196, 96), 20),
            width=canvas.width(rng.uniform(0.02, 0.035)),
        )
    # A small dark-blue hole in the disc, like a record label.
    canvas.draw.ellipse(canvas.circle_box(cx, cy, radius * 0.18), fill=_jitter(rng, (18, 32, 110), 10))


_POP_COLORS: tuple[RGB, ...] = ((255, 92, 180), (255, 226, 46), (40, 214, 236))


def _draw_pop(canvas: _Canvas, rng: random.Random) -> None:
    """Bright pink, yellow or cyan background covered in big dots of the other bright colours."""
    # The background colour was chosen by the caller; dots use the other two plus white.
    background = canvas.image.getpixel((0, 0))
    others = [
        color for color in _POP_COLORS if max(abs(a - b) for a, b in zip(color, background, strict=True)) > 60
    ]
    dot_colors = others + [(255, 255, 255)]
    columns = rng.randint(3, 4)
    cell = 1.0 / columns
    for row in range(columns):
        for column in range(columns):
            if rng.random() < 0.2:
                continue
            cx = (column + 0.5) * cell + rng.uniform(-0.12, 0.12) * cell
            cy = (row + 0.5) * cell + rng.uniform(-0.12, 0.12) * cell
            radius = cell * rng.uniform(0.28, 0.44)
            canvas.draw.ellipse(
                canvas.circle_box(cx, cy, radius), fill=_jitter(rng, rng.choice(dot_colors), 15)
            )


def _pop_background(rng: random.Random) -> RGB:
    return _jitter(rng, rng.choice(_POP_COLORS), 12)


def _draw_rap(canvas: _Canvas, rng: random.Random) -> None:
    """Black with bold gold horizontal bars, like stacked title blocks."""
    bar_count = rng.randint(2, 4)
    slots = sorted(rng.sample(range(7), bar_count))
    for slot in slots:
        top = 0.06 + slot * 0.13 + rng.uniform(-0.02, 0.02)
        height = rng.uniform(0.08, 0.12)
        left = rng.uniform(0.0, 0.1)
        right = rng.uniform(0.75, 1.0)
        canvas.draw.rectangle(
            canvas.box(left, top, right, top + height), fill=_jitter(rng, (214, 172, 48), 20)
        )
    # A thin white rule under the title blocks, as on a parental-advisory style cover.
    rule_top = rng.uniform(0.88, 0.93)
    canvas.draw.rectangle(
        canvas.box(rng.uniform(0.05, 0.2), rule_top, rng.uniform(0.6, 0.95), rule_top + 0.02),
        fill=_jitter(rng, (235, 235, 235), 15),
    )


def _draw_classical(canvas: _Canvas, rng: random.Random) -> None:
    """Ivory with a thin dark frame and a small centred ornament."""
    ink = _jitter(rng, (52, 36, 30), 14)
    inset = rng.uniform(0.05, 0.08)
    canvas.draw.rectangle(
        canvas.box(inset, inset, 1 - inset, 1 - inset),
        outline=ink,
        width=canvas.width(rng.uniform(0.008, 0.014)),
    )
    if rng.random() < 0.5:  # a second, inner frame line
        inner = inset + rng.uniform(0.02, 0.03)
        canvas.draw.rectangle(
            canvas.box(inner, inner, 1 - inner, 1 - inner), outline=ink, width=canvas.width(0.005)
        )
    cx, cy = 0.5 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.03, 0.03)
    radius = rng.uniform(0.07, 0.11)
    ornament_color = _jitter(rng, rng.choice([(120, 28, 40), (52, 36, 30), (150, 112, 40)]), 12)
    sides = rng.choice([4, 6, 8])
    canvas.draw.regular_polygon(
        (cx * canvas.size, cy * canvas.size, radius * canvas.size),
        sides,
        rotation=rng.uniform(0, 45),
        fill=ornament_color,
    )
    canvas.draw.ellipse(canvas.circle_box(cx, cy, radius * 0.4), fill=_jitter(rng, (244, 238, 222), 6))
    # Title and composer lines: thin rules above and below the ornament.
    for line_y in (cy - radius - 0.12, cy + radius + 0.1):
        half = rng.uniform(0.15, 0.28)
        canvas.draw.rectangle(canvas.box(0.5 - half, line_y, 0.5 + half, line_y + 0.012), fill=ink)


def _draw_other(canvas: _Canvas, rng: random.Random) -> None:
    """The neutral style: muted rectangles and triangles over a muted gradient (no genre's motif)."""
    for _ in range(rng.randint(1, 4)):
        color = _hsv(rng.uniform(60, 200), rng.uniform(0.15, 0.45), rng.uniform(0.35, 0.8))
        x0, y0 = rng.uniform(0, 0.7), rng.uniform(0, 0.7)
        x1, y1 = x0 + rng.uniform(0.1, 0.4), y0 + rng.uniform(0.1, 0.4)
        if rng.random() < 0.5:
            canvas.draw.rectangle(canvas.box(x0, y0, x1, y1), fill=color)
        else:
            canvas.draw.polygon(canvas.points([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)]), fill=color)


def _gradient(size: int, top: RGB, bottom: RGB) -> Image.Image:
    """A vertical two-colour gradient, vectorised so it costs far less than the JPEG encoding."""
    weights = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    column = (1 - weights) * np.asarray(top, np.float32) + weights * np.asarray(bottom, np.float32)
    pixels = np.broadcast_to(column, (size, size, 3)).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


_BackgroundFactory = Callable[[random.Random, int], "RGB | Image.Image"]

# genre -> (background factory, motif painter)
_STYLES: dict[str, tuple[_BackgroundFactory, Callable[[_Canvas, random.Random], None]]] = {
    "rock": (lambda rng, size: _jitter(rng, (20, 12, 12), 10), _draw_rock),
    "jazz": (
        lambda rng, size: _gradient(size, _jitter(rng, (16, 30, 104), 12), _jitter(rng, (8, 16, 64), 8)),
        _draw_jazz,
    ),
    "pop": (lambda rng, size: _pop_background(rng), _draw_pop),
    "rap-hip-hop": (lambda rng, size: _jitter(rng, (10, 10, 10), 8), _draw_rap),
    "classical": (lambda rng, size: _jitter(rng, (244, 238, 220), 6), _draw_classical),
    OTHER_STYLE: (
        lambda rng, size: _gradient(
            size,
            _hsv(rng.uniform(60, 220), rng.uniform(0.05, 0.35), rng.uniform(0.45, 0.8)),
            _hsv(rng.uniform(60, 220), rng.uniform(0.05, 0.35), rng.uniform(0.3, 0.65)),
        ),
        _draw_other,
    ),
}

assert set(DEFAULT_GENRES) <= set(_STYLES), "every default genre needs a drawing style"


def _draw_style(style: str, rng: random.Random, size: int) -> Image.Image:
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"cover size must be an integer of at least 8 pixels, got {size!r}")
    make_background, paint = _STYLES[style]
    canvas = _Canvas(size, make_background(rng, size))
    paint(canvas, rng)
    return canvas.image


def draw_cover(genre: str, seed: int, size: int = 300) -> Image.Image:
    """A square RGB cover in ``genre``'s style; the same (genre, seed, size) always gives the same pixels."""
    if genre not in DEFAULT_GENRES:
        raise ValueError(f"no cover style for genre {genre!r}; known genres: {', '.join(DEFAULT_GENRES)}")
    # String seeds are hashed with SHA-512 by random.Random, so this is stable across processes.
    return _draw_style(genre, random.Random(f"cover/{genre}/{seed}"), size)


def unlabeled_cover_style(seed: int) -> str:
    """The style ``draw_unlabeled_cover(seed)`` uses: one of DEFAULT_GENRES or ``"other"`` (ground truth)."""
    return _unlabeled_choice(seed)[0]


def _unlabeled_choice(seed: int) -> tuple[str, int]:
    rng = random.Random(f"unlabeled/{seed}")
    style = rng.choice(DEFAULT_GENRES) if rng.random() < UNLABELED_GENRE_SHARE else OTHER_STYLE
    return style, rng.randrange(2**31)


def draw_unlabeled_cover(seed: int, size: int = 300) -> Image.Image:
    """An OMACIR-like cover: mostly one of the genre styles (chosen by the seed), sometimes a neutral one."""
    style, style_seed = _unlabeled_choice(seed)
    return _draw_style(style, random.Random(f"cover/{style}/{style_seed}"), size)


def encode_image(image: Image.Image, format: str = "JPEG", quality: int = 90) -> bytes:
    """The image's file bytes in ``format`` (any Pillow format name; quality applies to JPEG and WebP)."""
    buffer = io.BytesIO()
    options: dict[str, object] = {}
    if format.upper() in {"JPEG", "JPG", "WEBP"}:
        options["quality"] = quality
    if format.upper() in {"JPEG", "JPG"} and image.mode not in {"RGB", "L", "CMYK"}:
        image = image.convert("RGB")  # JPEG has no alpha or palette
    if format.upper() == "GIF":
        # GIF is palette based; converting explicitly keeps the output independent of Pillow's defaults.
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    image.save(buffer, format="JPEG" if format.upper() == "JPG" else format.upper(), **options)
    return buffer.getvalue()
