"""Procedural clean scenes: unlimited scene diversity without downloads.

The bundled images (scikit-image, scikit-learn) are a few dozen photographs; a desnowing
network trained on them alone learns those scenes. This module paints scenes from a seed:
landscapes (sky, mountain ridges fading with distance, textured ground, trees), towns
(facades with window grids under a sky), textures (1/f fractal noise through a colour
ramp: foliage, rock, water), compositions of shapes, and plain interiors (smooth walls,
the case where a restorer must change nothing). Any of them may be turned into a night
scene (dark, with lamps and their glow) or a low-contrast one (fog, overcast), which are
the scenes a model trained on daylight photographs darkens or tints. Any may also be
sprinkled with small bright points fixed to the scene (stars, distant lights, glints,
speckled gravel): they look like flakes in one frame but move with the camera, and a
restorer that erases them (it did: the Hubble field lost 68 % of its light) harms the scene.

A scene is named ``proc-<kind>-<index>``; the name alone fixes its pixels, so splits that
hold different names hold different scenes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
from scipy import ndimage

SIZE = 512  # scenes are square; render_clean_clip resamples them to the view
KINDS = ("landscape", "town", "texture", "shapes", "interior")
NIGHT_PROBABILITY = 0.2
LOW_CONTRAST_PROBABILITY = 0.2
SPARKLE_PROBABILITY = 0.25
SPARKLE_POINTS = (30, 5000)  # log-uniform count of bright points on the 512-pixel scene
PREFIX = "proc-"


def procedural_names(kinds: tuple[str, ...], start: int, count: int) -> tuple[str, ...]:
    """``count`` scene names cycling through ``kinds``, numbered from ``start`` (disjoint ranges, disjoint scenes)."""
    return tuple(f"{PREFIX}{kinds[i % len(kinds)]}-{start + i}" for i in range(count))


def is_procedural(name: str) -> bool:
    return name.startswith(PREFIX)


def render_procedural(name: str) -> np.ndarray:
    """The float32 RGB scene (SIZE, SIZE, 3) in [0, 1] that ``name`` denotes."""
    kind = name[len(PREFIX):].rsplit("-", 1)[0] if is_procedural(name) else ""
    if kind not in _PAINTERS:
        raise KeyError(f"unknown procedural scene {name!r}: expected {PREFIX}<kind>-<index>, kind one of {KINDS}")
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))
    image = _PAINTERS[kind](rng)
    if rng.random() < NIGHT_PROBABILITY:
        image = _night(rng, image)
    elif rng.random() < LOW_CONTRAST_PROBABILITY:
        mean = image.mean(axis=(0, 1), keepdims=True)
        image = mean + (image - mean) * rng.uniform(0.15, 0.4)
    if rng.random() < SPARKLE_PROBABILITY:
        image = _sparkle(rng, image)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def fractal_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Noise with a 1/f^beta power spectrum (natural images: beta ≈ 2), scaled to [0, 1]."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fy, fx)
    radius[0, 0] = 1.0
    spectrum = (rng.standard_normal(radius.shape) + 1j * rng.standard_normal(radius.shape)) / radius ** (beta / 2)
    spectrum[0, 0] = 0.0
    noise = np.fft.irfft2(spectrum, s=(size, size))
    return (noise - noise.min()) / max(float(np.ptp(noise)), 1e-12)


def _colour(rng: np.random.Generator, hue: tuple[float, float] = (0.0, 1.0), sat: tuple[float, float] = (0.2, 0.8),
            val: tuple[float, float] = (0.2, 0.9)) -> np.ndarray:
    """One RGB colour from ranges of hue, saturation and value."""
    h, s, v = rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return (v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def _ramp(values: np.ndarray, colours: list[np.ndarray]) -> np.ndarray:
    """Map values in [0, 1] through a piecewise-linear colour ramp."""
    stops = np.linspace(0.0, 1.0, len(colours))
    return np.stack([np.interp(values, stops, [c[i] for c in colours]) for i in range(3)], axis=-1)


def _sky(rng: np.random.Generator, size: int) -> np.ndarray:
    """A vertical gradient: clear blue, overcast grey or dusk, with faint clouds."""
    style = rng.integers(3)
    if style == 0:
        top, bottom = _colour(rng, (0.55, 0.62), (0.3, 0.7), (0.6, 0.9)), _colour(rng, (0.55, 0.6), (0.05, 0.3))
    elif style == 1:
        top, bottom = _colour(rng, (0.5, 0.7), (0.0, 0.1), (0.55, 0.85)), _colour(rng, (0.5, 0.7), (0.0, 0.1))
    else:
        top, bottom = _colour(rng, (0.65, 0.8), (0.3, 0.6), (0.3, 0.6)), _colour(rng, (0.02, 0.12), (0.4, 0.8))
    rows = np.linspace(0.0, 1.0, size)[:, None, None]
    clouds = fractal_noise(rng, size, 2.6)[..., None] * rng.uniform(0.0, 0.25)
    return top * (1 - rows) + bottom * rows + clouds


def _landscape(rng: np.random.Generator) -> np.ndarray:
    size = SIZE
    image = _sky(rng, size)
    haze = image[size // 2].mean(axis=0)
    horizon = rng.uniform(0.3, 0.6) * size
    x = np.arange(size)
    ground = _colour(rng, (0.08, 0.35), (0.2, 0.7), (0.15, 0.6))
    for depth in np.linspace(1.0, 0.0, rng.integers(1, 4)):  # far ridges first, fading into the sky colour
        ridge = horizon - (0.05 + 0.25 * depth) * size * fractal_noise(rng, size, 2.2)[0] - 0.05 * size * depth
        colour = _colour(rng, (0.2, 0.7), (0.1, 0.5), (0.15, 0.5)) * (1 - 0.6 * depth) + haze * 0.6 * depth
        mask = np.arange(size)[:, None] > ridge[None, x]
        image[mask] = colour
    texture = fractal_noise(rng, size, rng.uniform(1.6, 2.4))[..., None]
    lower = np.arange(size)[:, None] > horizon + 0.02 * size * np.sin(x / rng.uniform(20, 80))[None, :]
    image[lower] = (ground * (0.6 + 0.8 * texture))[lower]
    rows, cols = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(0, 12)):  # trees: dark triangles standing on the ground
        base_x, base_y = rng.uniform(0, size), rng.uniform(horizon, size)
        height = (base_y - horizon + 10) * rng.uniform(0.3, 1.0)
        width = height * rng.uniform(0.25, 0.5)
        tree = (rows <= base_y) & (rows >= base_y - height) & (np.abs(cols - base_x) < width * (rows - base_y + height)
                                                                / (2 * height))
        image[tree] = _colour(rng, (0.25, 0.45), (0.3, 0.8), (0.05, 0.3))
    return image


def _town(rng: np.random.Generator) -> np.ndarray:
    size = SIZE
    image = _sky(rng, size)
    x = 0
    while x < size:
        width = int(rng.uniform(0.08, 0.3) * size)
        top = int(rng.uniform(0.1, 0.6) * size)
        facade = _colour(rng, (0.0, 0.15), (0.0, 0.4), (0.25, 0.85))
        block = facade * (0.85 + 0.3 * fractal_noise(rng, size, 2.0)[top:, x:x + width, None])
        image[top:, x:x + width] = block[: size - top, : max(0, min(width, size - x))]
        window, gap = int(rng.integers(6, 16)), int(rng.integers(6, 14))
        glass = _colour(rng, (0.5, 0.65), (0.0, 0.3), (0.05, 0.5))
        for wy in range(top + gap, size - window, window + gap):
            for wx in range(x + gap, min(x + width, size) - window, window + gap):
                image[wy:wy + window, wx:wx + window] = glass * rng.uniform(0.7, 1.3)
        x += width + int(rng.integers(0, 12))
    return image


def _texture(rng: np.random.Generator) -> np.ndarray:
    values = fractal_noise(rng, SIZE, rng.uniform(1.2, 3.0))
    hue = rng.uniform(0, 1)
    colours = [_colour(rng, (hue - 0.1, hue + 0.1)) for _ in range(rng.integers(2, 5))]
    return _ramp(values, colours)


def _shapes(rng: np.random.Generator) -> np.ndarray:
    size = SIZE
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * cols + np.sin(angle) * rows)[..., None]
    image = _colour(rng) * (1 - ramp) + _colour(rng) * ramp
    for _ in range(rng.integers(5, 30)):
        cy, cx, ry, rx = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.02, 0.25), rng.uniform(0.02, 0.25)
        if rng.random() < 0.5:
            mask = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1.0
        else:
            mask = (np.abs(rows - cy) < ry) & (np.abs(cols - cx) < rx)
        softness = rng.uniform(0.0, 3.0)
        alpha = ndimage.gaussian_filter(mask.astype(np.float32), softness)[..., None] if softness > 0.5 else \
            mask[..., None].astype(np.float32)
        image = image * (1 - alpha) + _colour(rng) * alpha
    return image


def _interior(rng: np.random.Generator) -> np.ndarray:
    """Smooth walls and a floor under soft light: large flat regions, the hardest do-no-harm case."""
    size = SIZE
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    wall, floor = _colour(rng, sat=(0.0, 0.35), val=(0.3, 0.95)), _colour(rng, sat=(0.1, 0.5), val=(0.15, 0.7))
    corner = rng.uniform(0.3, 0.7)
    light = 1.0 - 0.35 * np.hypot(rows - rng.uniform(0, 0.5), cols - rng.uniform(0, 1))[..., None]
    image = np.where((rows > rng.uniform(0.55, 0.8))[..., None], floor, wall) * light
    image[:, int(corner * size)] *= 0.85  # the edge between two walls
    return image + 0.02 * fractal_noise(rng, size, 2.0)[..., None]


def _night(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Darken (with a cool tint), then add lamps: small bright sources with a soft glow."""
    dark = image * rng.uniform(0.05, 0.3) * np.array([0.8, 0.9, 1.1], np.float32)
    glow = np.zeros(image.shape[:2], np.float32)
    for _ in range(rng.integers(2, 25)):
        glow[rng.integers(SIZE), rng.integers(SIZE)] = rng.uniform(50, 400)
    glow = ndimage.gaussian_filter(glow, rng.uniform(3.0, 10.0))[..., None]
    lamp = _colour(rng, (0.05, 0.15), (0.3, 0.8), (0.9, 1.0))
    return dark + glow * lamp


def _sparkle(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Screen-blend small bright points onto the scene: sharp (stars, glints) or soft (lights), one tint."""
    count = int(np.exp(rng.uniform(*np.log(SPARKLE_POINTS))))
    points = np.zeros(image.shape[:2], np.float32)
    points[rng.integers(0, SIZE, count), rng.integers(0, SIZE, count)] = rng.uniform(0.3, 1.0, count)
    sigma = rng.uniform(0.5, 2.0)  # the gain keeps a point's peak at its drawn brightness
    points = np.minimum(ndimage.gaussian_filter(points, sigma) * (2 * np.pi * sigma**2), 1.0)[..., None]
    tint = _colour(rng, sat=(0.0, 0.3), val=(0.85, 1.0))
    return 1.0 - (1.0 - image) * (1.0 - points * tint)


_PAINTERS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "landscape": _landscape, "town": _town, "texture": _texture, "shapes": _shapes, "interior": _interior,
}
