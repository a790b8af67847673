"""Snow synthesizer: the paper's Eq. 1, ``I = J·T + A·(1 − T) + S``, temporally coherent.

The hazy frame ``H = J·T + A·(1 − T)`` gets snow composited over it, layer by layer
from far to near, each layer with a per-pixel opacity ``α`` and a near-white colour
``w``: ``I ← I·(1 − α) + α·w``. The snow map is then *defined* as ``S := I − H`` (for one
layer ``S = α·(w − H)``), so Eq. 1 holds exactly and ``I`` stays in [0, 1].

Flakes live in depth layers: far flakes are small, faint and slow, near ones big and
fast; a fraction are motion-blurred streaks along their velocity and a few are large,
soft out-of-focus ("bokeh") flakes in front of the lens. Each flake keeps its identity
across frames and moves with its layer's fall speed, the (optionally gusty) wind and a
small sway, wrapping around the frame. Transmission ``T`` falls with a depth proxy (the
top rows and drifting fog patches are far), the atmospheric light ``A`` is a smooth,
slightly blue-grey colour field. All randomness comes from one numpy Generator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from semivdn.config import SnowParams, SnowRandomization

LAYER_BANDS = ((0.0, 0.34), (0.34, 0.67), (0.67, 1.0))  # depth bands of the far, mid and near layers
LAYER_SHARES = (0.5, 0.32, 0.18)  # far flakes are the most numerous
LAYER_FAINTNESS = (0.55, 0.8, 1.0)  # far flakes are attenuated by the air between them and the camera
LAYER_DEFOCUS = (0.3, 0.6, 1.0)  # share of snow.defocus each layer gets: the lens focuses on the scene, beyond them
BOKEH_SIZE = (2.5, 4.0)  # bokeh radius as a multiple of a near flake's radius
BOKEH_OPACITY = 0.45  # bokeh flakes are translucent
BOKEH_EDGE = 0.3  # width of the soft edge, relative to the bokeh radius
MIN_SIGMA = 0.45  # pixels; smaller Gaussians alias, so tiny flakes get fainter instead of thinner
SIZE_JITTER = 0.25  # per-flake relative size variation around the layer's size
SPEED_JITTER = 0.15  # per-flake relative speed variation
SWAY_PIXELS = (0.2, 1.0)  # amplitude of the horizontal flutter
NEAR_DEPTH = 0.35  # depth proxy of the nearest pixel: T = T_far ** depth
KERNEL_STEP = 3  # kernel half sizes are rounded up to multiples of this, to splat flakes in few groups
FOG_CELLS = 4  # coarse grid cells across the frame for the drifting fog patches


@dataclass
class SnowyClip:
    """A snowy clip and its Eq. 1 components, all float32.

    ``snowy``, ``clean``, ``snow`` (S, in [−1, 1]) and ``airlight`` (A) have shape
    (T, H, W, 3); ``transmission`` (T) has shape (T, H, W, 1) and broadcasts over
    colour. ``snowy == clean·transmission + airlight·(1 − transmission) + snow``.
    """

    snowy: np.ndarray
    clean: np.ndarray
    snow: np.ndarray
    transmission: np.ndarray
    airlight: np.ndarray


def synthesize_snow(clean: np.ndarray, params: SnowParams, seed: int | np.random.Generator) -> SnowyClip:
    """Degrade a clean float32 clip (T, H, W, 3) in [0, 1] with haze and moving snow (Eq. 1).

    ``seed`` is an integer or a numpy Generator (used, and advanced, as is); the same seed
    gives the same clip.
    """
    _check_clip(clean)
    rng = np.random.default_rng(seed)
    frames, height, width, _ = clean.shape
    wind = _wind(rng, params, frames)
    drift = np.concatenate([[0.0], np.cumsum(wind[:-1])]).astype(np.float32)
    transmission = _transmission(rng, params, height, width, drift)
    airlight = np.broadcast_to(_airlight(rng, params, height, width), clean.shape)
    hazy = clean * transmission + airlight * (1.0 - transmission)
    snowy = hazy.copy()
    for layer in _flake_layers(rng, params, height, width):
        for t in range(frames):
            alpha = _render_alpha(layer, t, drift[t], wind[t], height, width)
            if layer.blur > 0:  # out of focus: the same light spread wider and fainter
                alpha = ndimage.gaussian_filter(alpha, layer.blur, mode="nearest")
            alpha = alpha[..., None]
            snowy[t] = snowy[t] * (1.0 - alpha) + alpha * layer.colour
    np.clip(snowy, 0.0, 1.0, out=snowy)
    return SnowyClip(snowy=snowy, clean=clean, snow=(snowy - hazy).astype(np.float32),
                     transmission=transmission, airlight=np.ascontiguousarray(airlight))


def randomize_snow(base: SnowParams, spread: SnowRandomization, rng: np.random.Generator) -> SnowParams:
    """One clip's snow style drawn around ``base`` (domain randomization).

    A network trained on one snow style learns that style; drawn per clip, density spans light
    flurries to blizzards, flakes big or small, slow or fast, round or clumped, straight or
    gusty, with or without haze, so the model meets snow it was not tuned on without surprise.
    """
    if spread == SnowRandomization():  # nothing to randomize: leave the random stream untouched
        return base

    def scaled(pair: tuple[float, float], factor: float) -> tuple[float, float]:
        return pair[0] * factor, pair[1] * factor

    low, high = np.log(spread.density_scale)
    params = dataclasses.replace(
        base, flakes_per_megapixel=base.flakes_per_megapixel * float(np.exp(rng.uniform(low, high))),
        size_range=scaled(base.size_range, rng.uniform(*spread.size_scale)),
        speed_range=scaled(base.speed_range, rng.uniform(*spread.speed_scale)))
    if spread.vary_style:
        far_haze = float(rng.uniform(base.haze_range[0], 1.0))
        params = dataclasses.replace(
            params, streak_fraction=float(rng.uniform(0.0, 0.8)), bokeh_fraction=float(rng.uniform(0.0, 0.15)),
            aspect_range=(1.0, float(rng.uniform(1.0, 2.5))), gust=float(rng.uniform(0.0, 0.8)),
            wind_range=scaled(base.wind_range, rng.uniform(0.3, 2.0)), haze_range=(far_haze, far_haze))
    if rng.random() < spread.no_haze_fraction:
        params = dataclasses.replace(params, haze_range=(1.0, 1.0))
    if spread.haze_gradient != (1.0, 1.0):  # drawn only when asked: older data keeps its random stream
        params = dataclasses.replace(params, haze_gradient=float(rng.uniform(*spread.haze_gradient)))
    if spread.opacity_scale != (1.0, 1.0):  # likewise
        params = dataclasses.replace(params, opacity_range=scaled(
            base.opacity_range, float(np.exp(rng.uniform(*np.log(spread.opacity_scale))))))
    if spread.defocus != (0.0, 0.0):  # likewise
        params = dataclasses.replace(params, defocus=float(rng.uniform(*spread.defocus)))
    if spread.haze_only_fraction > 0 and rng.random() < spread.haze_only_fraction:  # likewise
        # haze without flakes: a clip drawn without haze takes the base haze, or it would be its own truth
        haze = base.haze_range if params.haze_range == (1.0, 1.0) else params.haze_range
        params = dataclasses.replace(params, flakes_per_megapixel=0.0, haze_range=haze)
    return params


def _check_clip(clean: np.ndarray) -> None:
    if clean.dtype != np.float32:
        raise ValueError(f"synthesize_snow: clean clip must be float32, got {clean.dtype}")
    if clean.ndim != 4 or clean.shape[3] != 3 or 0 in clean.shape:
        raise ValueError(f"synthesize_snow: clean clip must have shape (T, H, W, 3), none empty, got {clean.shape}")
    if clean.min() < 0.0 or clean.max() > 1.0:
        raise ValueError(f"synthesize_snow: clean clip must lie in [0, 1], got [{clean.min()}, {clean.max()}]")


def _lerp(pair: tuple[float, float], t: np.ndarray | float) -> np.ndarray:
    return np.asarray(pair[0] + (pair[1] - pair[0]) * np.asarray(t), dtype=np.float32)


def _wind(rng: np.random.Generator, params: SnowParams, frames: int) -> np.ndarray:
    """Horizontal wind (pixels per frame, felt fully by the nearest flakes) at each frame."""
    base = rng.uniform(*params.wind_range)
    period = rng.uniform(6.0, 20.0)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    return (base * (1.0 + params.gust * np.sin(2.0 * np.pi * np.arange(frames) / period + phase))).astype(np.float32)


def _value_noise(rng: np.random.Generator, cells: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Smooth periodic noise in [0, 1] at coordinates given in cell units (smoothstep-interpolated grid)."""
    grid = rng.random((cells, cells), dtype=np.float32)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    y0, x0, y1, x1 = y0 % cells, x0 % cells, (y0 + 1) % cells, (x0 + 1) % cells
    top = grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx
    bottom = grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _transmission(rng: np.random.Generator, params: SnowParams, height: int, width: int,
                  drift: np.ndarray) -> np.ndarray:
    """T = T_far ** depth; depth grows towards the top rows and inside fog patches drifting with the wind.

    ``haze_gradient`` g blends that depth with the far end, 1 − g·(1 − depth): g = 0 is a uniform
    veil of T_far over the whole frame, the look of snow falling between the camera and the scene.
    """
    far = rng.uniform(*params.haze_range)
    rows = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
    cell = max(height, width) / FOG_CELLS
    ys = np.arange(height, dtype=np.float32)[None, :, None] / cell
    xs = (np.arange(width, dtype=np.float32)[None, None, :] - 0.3 * drift[:, None, None]) / cell
    fog = _value_noise(rng, FOG_CELLS * 4, ys + rng.uniform(0, FOG_CELLS), xs + rng.uniform(0, FOG_CELLS))
    depth = NEAR_DEPTH + (1.0 - NEAR_DEPTH) * (0.65 * rows + 0.35 * fog)
    if params.haze_gradient != 1.0:
        depth = 1.0 - np.float32(params.haze_gradient) * (1.0 - depth)
    return np.power(np.float32(far), depth, dtype=np.float32)[..., None]


def _airlight(rng: np.random.Generator, params: SnowParams, height: int, width: int) -> np.ndarray:
    """A smooth (H, W, 3) atmospheric light: brighter at the top, blue-grey tint, slow variation."""
    level = rng.uniform(*params.airlight_range)
    tint = np.array([rng.uniform(0.94, 0.99), rng.uniform(0.97, 1.0), 1.0], dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None] * 2.0 / max(height, width)
    xs = np.arange(width, dtype=np.float32)[None, :] * 2.0 / max(height, width)
    variation = 0.06 * (_value_noise(rng, 8, ys, xs) - 0.5) + 0.04 * np.linspace(0.5, -0.5, height)[:, None]
    return np.clip(level * (1.0 + variation)[..., None] * tint, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class _FlakeLayer:
    """One depth layer of flakes; per-flake arrays of length N (positions in pixels)."""

    x0: np.ndarray
    y0: np.ndarray
    fall: np.ndarray  # pixels per frame, downwards
    wind_gain: np.ndarray  # share of the near-layer wind drift this flake feels (parallax)
    sway: np.ndarray
    sway_freq: np.ndarray
    sway_phase: np.ndarray
    sigma: np.ndarray  # Gaussian width along the flake's short axis (bokeh: disk radius)
    aspect: np.ndarray
    angle: np.ndarray
    opacity: np.ndarray
    streak: np.ndarray  # exposure in frames: a streak is the flake smeared along its velocity
    bokeh: bool
    half: np.ndarray  # kernel half size in pixels, in steps of KERNEL_STEP
    pad: int  # the largest half size: flakes wrap around the frame padded by it
    colour: np.ndarray  # (3,) near white
    blur: float = 0.0  # σ in pixels of the lens blur over the whole layer (snow.defocus)


def _flake_layers(rng: np.random.Generator, params: SnowParams, height: int, width: int) -> list[_FlakeLayer]:
    """The far, mid and near layers, then the bokeh layer in front of them (painted in this order)."""
    total = params.flakes_per_megapixel * height * width / 1e6
    counts = [int(rng.poisson(total * share)) for share in LAYER_SHARES]
    bokeh_count = int(rng.poisson(counts[2] * params.bokeh_fraction))
    shutter = rng.uniform(0.6, 1.0)
    layers = [dataclasses.replace(_make_layer(rng, params, n, band, faint, shutter, height, width, bokeh=False),
                                  blur=params.defocus * share)
              for n, band, faint, share in zip(counts, LAYER_BANDS, LAYER_FAINTNESS, LAYER_DEFOCUS, strict=True)]
    layers.append(_make_layer(rng, params, bokeh_count, (1.0, 1.0), 1.0, shutter, height, width, bokeh=True))
    return [layer for layer in layers if layer.x0.size]


def _make_layer(rng: np.random.Generator, params: SnowParams, count: int, band: tuple[float, float],
                faintness: float, shutter: float, height: int, width: int, bokeh: bool) -> _FlakeLayer:
    depth = rng.uniform(*band, size=count).astype(np.float32)
    radius = _lerp(params.size_range, depth) * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER, count)
    fall = _lerp(params.speed_range, depth) * rng.uniform(1 - SPEED_JITTER, 1 + SPEED_JITTER, count)
    wind_gain = fall / max(params.speed_range[1], 1e-6)
    opacity = _lerp(params.opacity_range, rng.random(count, dtype=np.float32)) * faintness
    aspect = _lerp(params.aspect_range, rng.random(count, dtype=np.float32))
    sway = rng.uniform(*SWAY_PIXELS, size=count).astype(np.float32) * (0.5 + depth)
    sway_freq = rng.uniform(0.2, 0.8, count).astype(np.float32)
    if bokeh:
        sigma = radius * rng.uniform(*BOKEH_SIZE, size=count)
        opacity, streak, aspect = opacity * BOKEH_OPACITY, np.zeros(count, np.float32), np.ones(count, np.float32)
        reach = sigma + 1.0
    else:
        sigma = np.maximum(radius * 0.6, MIN_SIGMA)
        opacity = opacity * np.minimum(1.0, (radius * 0.6 / MIN_SIGMA) ** 2)  # sub-pixel flakes cover less
        streak = np.where(rng.random(count) < params.streak_fraction, shutter, 0.0).astype(np.float32)
        wind_extent = max(abs(params.wind_range[0]), abs(params.wind_range[1])) * (1 + params.gust)
        reach = 3.0 * sigma * aspect + 0.5 * streak * (fall + wind_extent * wind_gain + sway * sway_freq)
    half = (KERNEL_STEP * np.ceil((reach + 1.0) / KERNEL_STEP)).astype(np.int64)
    pad = int(half.max(initial=0))
    brightness = rng.uniform(0.9, 1.0)
    return _FlakeLayer(
        x0=rng.uniform(-pad, width + pad, count).astype(np.float32),
        y0=rng.uniform(-pad, height + pad, count).astype(np.float32),
        fall=fall.astype(np.float32), wind_gain=wind_gain.astype(np.float32),
        sway=sway, sway_freq=sway_freq, sway_phase=rng.uniform(0, 2 * np.pi, count).astype(np.float32),
        sigma=sigma.astype(np.float32), aspect=aspect, angle=rng.uniform(0, np.pi, count).astype(np.float32),
        opacity=np.clip(opacity, 0.0, 0.98).astype(np.float32), streak=streak, bokeh=bokeh, half=half, pad=pad,
        colour=np.array([brightness * 0.97, brightness * 0.985, brightness], dtype=np.float32),
    )


def _render_alpha(layer: _FlakeLayer, t: int, drift: float, wind: float, height: int, width: int) -> np.ndarray:
    """The layer's opacity (H, W) at frame t: splat every flake's small kernel, combine as optical depth.

    Flakes are splatted in groups of equal kernel size, so a few big flakes do not make every kernel big.
    """
    pad = layer.pad
    span_x, span_y = width + 2 * pad, height + 2 * pad
    sway = layer.sway * np.sin(layer.sway_freq * t + layer.sway_phase)
    x = (layer.x0 + layer.wind_gain * drift + sway + pad) % span_x
    y = (layer.y0 + layer.fall * t + pad) % span_y
    velocity_x = layer.wind_gain * wind + layer.sway * layer.sway_freq * np.cos(layer.sway_freq * t + layer.sway_phase)
    canvas = np.zeros(span_x * span_y)
    for half in np.unique(layer.half):
        group = np.flatnonzero(layer.half == half)
        offsets = np.arange(-half, half + 1)
        ix, iy = np.floor(x[group]).astype(np.int64), np.floor(y[group]).astype(np.int64)
        dx = offsets[None, None, :] - (x[group] - ix)[:, None, None]  # (N, 1, K) pixel centre minus flake centre
        dy = offsets[None, :, None] - (y[group] - iy)[:, None, None]  # (N, K, 1)
        kernel = _kernel(layer, group, dx.astype(np.float32), dy.astype(np.float32), velocity_x[group])
        density = -np.log1p(-kernel)  # opacities of overlapping flakes combine as 1 − Π(1 − a)
        cols = ix[:, None, None] + offsets[None, None, :]
        rows = iy[:, None, None] + offsets[None, :, None]
        inside = (cols >= 0) & (cols < span_x) & (rows >= 0) & (rows < span_y)
        flat = np.broadcast_to(rows * span_x + cols, kernel.shape)
        canvas += np.bincount(flat[inside], weights=density[inside], minlength=span_x * span_y)
    canvas = canvas.reshape(span_y, span_x)[pad:pad + height, pad:pad + width]
    return (-np.expm1(-canvas)).astype(np.float32)


def _kernel(layer: _FlakeLayer, group: np.ndarray, dx: np.ndarray, dy: np.ndarray,
            velocity_x: np.ndarray) -> np.ndarray:
    """Opacity (N, K, K) of the flakes in ``group``: a soft disk for bokeh, else an (elongated) Gaussian
    smeared along the flake's motion during the exposure."""

    def pick(values: np.ndarray) -> np.ndarray:
        return values[group][:, None, None]

    sigma, opacity = pick(layer.sigma), pick(layer.opacity)
    if layer.bokeh:
        distance = np.sqrt(dx * dx + dy * dy)
        disk = np.clip((sigma - distance) / (BOKEH_EDGE * sigma), 0.0, 1.0)
        rim = 0.85 + 0.15 * (distance / sigma) ** 2  # out-of-focus disks have a slightly brighter rim
        return np.minimum(opacity * disk * rim, 0.98)
    seg_x = pick(layer.streak) * velocity_x[:, None, None]
    seg_y = pick(layer.streak * layer.fall)
    length_sq = seg_x * seg_x + seg_y * seg_y
    along = np.clip((dx * seg_x + dy * seg_y) / np.maximum(length_sq, 1e-6), -0.5, 0.5)
    ex, ey = dx - along * seg_x, dy - along * seg_y  # offset from the nearest point of the motion segment
    cos, sin, aspect = pick(np.cos(layer.angle)), pick(np.sin(layer.angle)), pick(layer.aspect)
    major, minor = ex * cos + ey * sin, -ex * sin + ey * cos
    r_sq = (major / aspect) ** 2 + minor * minor
    footprint = sigma * np.sqrt(2 * np.pi) * aspect
    smear = footprint / (footprint + np.sqrt(length_sq))  # a streak spreads the same flake over its path
    return np.minimum(opacity * smear * np.exp(-r_sq / (2 * sigma * sigma)), 0.98)
