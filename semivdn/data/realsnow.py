"""The proxy-real snow model: a second, independent renderer of *filmed* snow.

The paired set's snow comes from :mod:`semivdn.data.synth` (the paper's Eq. 1, flakes in
three screen-space layers). The unpaired "real" stand-in must not share that model, or a
network could learn the synthesizer instead of snow. This module films snow instead:

- **particles in 3-D**: flakes fill the camera's view frustum (pinhole, field of view
  ``fov_deg``) at a constant density per cubic metre between ``depth_range``, so far
  flakes outnumber near ones and their projected size falls as ``f·d / z``;
- **physics of motion**: each flake falls at its terminal speed, is carried by a wind
  field that varies over height, depth and time (a mean wind, gusts and a travelling
  eddy) and flutters sideways; positions are integrated in metres and wrap around the
  frustum, so a flake keeps its identity across frames;
- **exposure**: the shutter stays open for ``exposure_range`` of the frame interval; a
  flake's image is the time-average of its footprint over that interval (sampled along
  its projected path), so fast near flakes streak and slow far ones stay round;
- **depth of field**: the lens focuses at a random distance; the circle of confusion
  ``aperture·W·|1 − z_focus / z|`` turns flakes near the lens into large, faint bokeh
  disks (their light is spread over the disk, conserving energy) with a brighter rim;
- **clumps**: a few flakes are aggregates several times larger, near opaque, with an
  irregular outline (a radius modulated by low harmonics of the angle);
- **light**: flakes reflect the scene's ambient light (bright scenes give white flakes,
  dark scenes grey ones), unresolved far snow adds a uniform veil;
- **camera**: signal-dependent sensor noise (shot + read noise) on the 8-bit signal and
  JPEG compression of every frame (blocking, chroma subsampling), before the file's own
  codec.

Everything random comes from one numpy Generator; the same seed gives the same clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semivdn.config import RealSnowParams
from semivdn.data.camera import Camera

SLABS = 4  # depth slabs composited far to near: nearer flakes occlude farther ones
MAX_SAMPLES = 12  # sub-exposure positions per flake and frame
MIN_RADIUS = 0.6  # pixels: smaller footprints are drawn at this radius with proportionally less opacity
SUBSTEPS = 4  # Euler steps of the motion per frame interval
CLUMP_HARMONICS = 3  # angular harmonics of a clump's outline
RIM = 0.25  # extra brightness at the edge of a bokeh disk (optical vignetting of the aperture)
OPACITY = (0.7, 0.95)  # of an in-focus flake
CLUMP_OPACITY = 0.97
FLUTTER = (0.8, 2.5)  # Hz of the sideways flutter
GUST_PERIOD = (1.0, 4.0)  # seconds


@dataclass
class RealSnowClip:
    """A filmed-snow clip: ``snowy`` and ``clean`` uint8 (T, H, W, 3), and the clip's drawn settings."""

    snowy: np.ndarray
    clean: np.ndarray
    settings: dict[str, float]


@dataclass(frozen=True)
class _Camera:
    width: int
    height: int
    focal: float  # pixels
    focus: float  # metres
    coc: float  # circle of confusion at infinity relative to focus, pixels
    fps: float
    exposure: float  # seconds

    def half_extent(self, z: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """Half width and height (metres) of the frustum at depth ``z``, padded by ``margin`` pixels."""
        return z * (self.width / 2 + margin) / self.focal, z * (self.height / 2 + margin) / self.focal


@dataclass
class _Flakes:
    x: np.ndarray  # metres, right
    y: np.ndarray  # metres, down
    z: np.ndarray  # metres from the lens
    diameter: np.ndarray  # metres
    fall: np.ndarray  # metres per second
    flutter_amp: np.ndarray  # metres per second
    flutter_freq: np.ndarray  # Hz
    flutter_phase: np.ndarray
    opacity: np.ndarray
    clump: np.ndarray  # bool
    outline: np.ndarray  # (N, CLUMP_HARMONICS, 2): amplitude, phase of each harmonic


@dataclass(frozen=True)
class _Wind:
    mean: float  # metres per second, horizontal
    gust: float
    gust_freq: float
    gust_phase: float
    eddy: float  # amplitude of the travelling eddy
    eddy_k: float  # radians per metre
    eddy_phase: float

    def velocity(self, y: np.ndarray, z: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Horizontal and vertical air velocity (m/s) at height ``y`` and depth ``z`` at time ``t``."""
        gusts = self.gust * np.sin(2 * np.pi * self.gust_freq * t + self.gust_phase + 0.3 * z)
        swirl = self.eddy_k * (y + z) - 2 * np.pi * self.gust_freq * t + self.eddy_phase
        return self.mean + gusts + self.eddy * np.sin(swirl), 0.5 * self.eddy * np.cos(swirl)


def film_snow(clean: np.ndarray, params: RealSnowParams, fps: float,
              seed: int | np.random.Generator) -> RealSnowClip:
    """Film snow in front of a clean float32 clip (T, H, W, 3) in [0, 1]; see the module docstring."""
    if clean.dtype != np.float32 or clean.ndim != 4 or clean.shape[3] != 3 or 0 in clean.shape:
        raise ValueError(f"film_snow: expected a float32 clip (T, H, W, 3), got {clean.dtype} {clean.shape}")
    if fps <= 0:
        raise ValueError(f"film_snow: fps must be positive, got {fps}")
    rng = np.random.default_rng(seed)
    frames, height, width, _ = clean.shape
    camera = _camera(rng, params, width, height, fps)
    wind = _wind(rng, params)
    flakes = _spawn(rng, params, camera)
    ambient = float(np.clip(0.55 + 0.6 * clean.mean(), 0.6, 1.0))
    colour = (ambient * np.array([rng.uniform(0.92, 0.97), rng.uniform(0.95, 0.99), 1.0])).astype(np.float32)
    veil = float(rng.uniform(*params.veil_range))
    camera_noise = Camera.draw(rng, params.noise_range, params.jpeg_quality)
    snowy = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        start = _project(flakes, camera)
        _advance(flakes, wind, camera, t / fps, camera.exposure, params)
        end = _project(flakes, camera)
        frame = clean[t] * (1 - veil) + veil * colour
        frame = _composite(frame, flakes, start, end, camera, colour)
        snowy[t] = camera_noise.film(frame, rng)
        _advance(flakes, wind, camera, t / fps + camera.exposure, 1 / fps - camera.exposure, params)
    clean8 = np.round(np.clip(clean, 0, 1) * 255).astype(np.uint8)
    settings = {"flakes": float(flakes.z.size), "focus_m": camera.focus, "coc_px": camera.coc,
                "exposure_s": camera.exposure, "wind_mps": wind.mean, "veil": veil,
                "read_noise": camera_noise.read_noise, "jpeg_quality": float(camera_noise.jpeg_quality)}
    return RealSnowClip(snowy=snowy, clean=clean8, settings=settings)


def _camera(rng: np.random.Generator, params: RealSnowParams, width: int, height: int, fps: float) -> _Camera:
    focal = width / (2 * np.tan(np.deg2rad(params.fov_deg) / 2))
    return _Camera(width=width, height=height, focal=float(focal), focus=float(rng.uniform(*params.focus_range)),
                   coc=float(rng.uniform(*params.aperture_range) * width), fps=fps,
                   exposure=float(rng.uniform(*params.exposure_range) / fps))


def _wind(rng: np.random.Generator, params: RealSnowParams) -> _Wind:
    return _Wind(mean=float(rng.uniform(*params.wind_range)), gust=float(rng.uniform(0, params.turbulence)),
                 gust_freq=float(1 / rng.uniform(*GUST_PERIOD)), gust_phase=float(rng.uniform(0, 2 * np.pi)),
                 eddy=float(rng.uniform(0, params.turbulence)), eddy_k=float(rng.uniform(1.0, 4.0)),
                 eddy_phase=float(rng.uniform(0, 2 * np.pi)))


def _spawn(rng: np.random.Generator, params: RealSnowParams, camera: _Camera) -> _Flakes:
    """Flakes uniform in the frustum's volume: depth drawn with density ∝ z² (inverse CDF of z³)."""
    near, far = params.depth_range
    margin = _margin(params, camera)
    half_w, half_h = camera.half_extent(np.float64(1.0), margin)
    volume = 4 * half_w * half_h * (far**3 - near**3) / 3  # of the frustum padded by the margin
    count = int(rng.poisson(params.density * volume))
    z = np.cbrt(near**3 + rng.random(count) * (far**3 - near**3))
    ext_x, ext_y = camera.half_extent(z, margin)
    log_d = rng.uniform(*np.log(params.diameter_range), count)
    clump = rng.random(count) < params.clump_fraction
    diameter = np.exp(log_d) * np.where(clump, rng.uniform(*params.clump_scale, count), 1.0)
    return _Flakes(
        x=rng.uniform(-ext_x, ext_x), y=rng.uniform(-ext_y, ext_y), z=z, diameter=diameter,
        fall=rng.uniform(*params.fall_speed, count) * np.where(clump, 1.3, 1.0),  # clumps fall faster
        flutter_amp=rng.uniform(0, params.turbulence, count), flutter_freq=rng.uniform(*FLUTTER, count),
        flutter_phase=rng.uniform(0, 2 * np.pi, count),
        opacity=np.where(clump, CLUMP_OPACITY, rng.uniform(*OPACITY, count)), clump=clump,
        outline=np.stack([rng.uniform(0.05, 0.3, (count, CLUMP_HARMONICS)),
                          rng.uniform(0, 2 * np.pi, (count, CLUMP_HARMONICS))], axis=-1),
    )


def _margin(params: RealSnowParams, camera: _Camera) -> float:
    """Pixels around the frame where flakes live, so most enter and leave the view smoothly (at most half
    the frame: the few larger footprints are faint bokeh)."""
    biggest = camera.focal * params.diameter_range[1] * params.clump_scale[1] / params.depth_range[0]
    blur = camera.coc * abs(1 - camera.focus / params.depth_range[0]) / 2
    return float(min(biggest + blur, camera.width / 2))


def _velocity(flakes: _Flakes, wind: _Wind, t: float) -> tuple[np.ndarray, np.ndarray]:
    air_x, air_y = wind.velocity(flakes.y, flakes.z, t)
    flutter = flakes.flutter_amp * np.sin(2 * np.pi * flakes.flutter_freq * t + flakes.flutter_phase)
    return air_x + flutter, air_y + flakes.fall


def _advance(flakes: _Flakes, wind: _Wind, camera: _Camera, t: float, duration: float,
             params: RealSnowParams) -> None:
    """Integrate the motion over ``duration`` seconds from ``t`` (in place), wrapping around the frustum."""
    if duration <= 0:
        return
    step = duration / SUBSTEPS
    for k in range(SUBSTEPS):
        vx, vy = _velocity(flakes, wind, t + k * step)
        flakes.x += vx * step
        flakes.y += vy * step
    ext_x, ext_y = camera.half_extent(flakes.z, _margin(params, camera))
    flakes.x = (flakes.x + ext_x) % (2 * ext_x) - ext_x
    flakes.y = (flakes.y + ext_y) % (2 * ext_y) - ext_y


def _project(flakes: _Flakes, camera: _Camera) -> np.ndarray:
    """Projected pixel positions (N, 2) as (column, row)."""
    u = camera.focal * flakes.x / flakes.z + (camera.width - 1) / 2
    v = camera.focal * flakes.y / flakes.z + (camera.height - 1) / 2
    return np.stack([u, v], axis=1)


def _composite(frame: np.ndarray, flakes: _Flakes, start: np.ndarray, end: np.ndarray, camera: _Camera,
               colour: np.ndarray) -> np.ndarray:
    """Paint the flakes over ``frame`` in depth slabs, far to near; within a slab opacities combine."""
    geometric = camera.focal * flakes.diameter / 2 / flakes.z
    blur = camera.coc * np.abs(1 - camera.focus / flakes.z) / 2
    radius = np.sqrt(geometric**2 + blur**2)  # footprint radius of the defocused flake
    drawn = np.maximum(radius, MIN_RADIUS)
    # its light spread over the drawn disk (a 1-pixel anti-aliased edge covers pi * (r^2 + 1/12) pixels)
    peak = flakes.opacity * np.minimum(1.0, geometric**2 / (drawn**2 + 1 / 12))
    travel = np.linalg.norm(end - start, axis=1)  # the exposure's time-average spreads it along this path
    height, width = frame.shape[:2]
    wrapped = travel > width / 2  # wrapped around the frustum during the exposure: drawn again next frame
    visible = (~wrapped & (peak > 2e-3) & (np.maximum(start, end)[:, 0] + drawn + 1 >= 0)
               & (np.minimum(start, end)[:, 0] - drawn - 1 < width) & (np.maximum(start, end)[:, 1] + drawn + 1 >= 0)
               & (np.minimum(start, end)[:, 1] - drawn - 1 < height))
    order = np.flatnonzero(visible)
    if order.size == 0:
        return frame
    order = order[np.argsort(-flakes.z[order])]
    for slab in np.array_split(order, min(SLABS, order.size)):
        density = np.zeros(height * width)
        halves = np.ceil(drawn[slab] * (1 + np.where(flakes.clump[slab], 0.4, 0.0)) + travel[slab] / 2 + 1)
        for half in np.unique(halves):
            group = slab[halves == half]
            _splat(density, group, flakes, start, end, drawn, peak, blur > geometric, int(half), height, width)
        alpha = (-np.expm1(-density)).reshape(height, width, 1).astype(np.float32)
        frame = frame * (1 - alpha) + alpha * colour
    return frame


def _splat(density: np.ndarray, group: np.ndarray, flakes: _Flakes, start: np.ndarray, end: np.ndarray,
           drawn: np.ndarray, peak: np.ndarray, defocused: np.ndarray, half: int, height: int, width: int) -> None:
    """Add the optical depth of ``group`` (flakes of one kernel size) to the flat ``density`` canvas."""
    travel = np.linalg.norm(end[group] - start[group], axis=1)
    samples = int(np.clip(np.ceil(travel.max() / np.maximum(drawn[group].min(), 0.5)) + 1, 1, MAX_SAMPLES))
    fractions = (np.arange(samples) + 0.5) / samples
    centre = (start[group] + end[group]) / 2
    anchor = np.round(centre).astype(np.int64)
    offsets = np.arange(-half, half + 1)
    # pixel offsets from each sub-exposure position: (N, S, K, K)
    step = (end[group] - start[group])[:, None, :]
    path = start[group][:, None, :] + fractions[None, :, None] * step - anchor[:, None]
    dx = offsets[None, None, None, :] - path[:, :, 0, None, None]
    dy = offsets[None, None, :, None] - path[:, :, 1, None, None]
    distance = np.sqrt(dx * dx + dy * dy)
    radius = drawn[group][:, None, None, None]
    outline = flakes.outline[group]
    if flakes.clump[group].any():
        angle = np.arctan2(dy, dx)
        ripple = sum(outline[:, k, 0, None, None, None] * np.cos((k + 2) * angle + outline[:, k, 1, None, None, None])
                     for k in range(CLUMP_HARMONICS))
        radius = radius * (1 + np.where(flakes.clump[group][:, None, None, None], ripple, 0.0))
    coverage = np.clip(radius + 0.5 - distance, 0.0, 1.0)  # anti-aliased disk
    rim = 1 + RIM * np.where(defocused[group][:, None, None, None], (distance / radius).clip(0, 1) ** 4, 0.0)
    kernel = np.minimum(peak[group][:, None, None, None] * coverage * rim, 0.98).mean(axis=1)  # (N, K, K)
    cols = anchor[:, 0, None, None] + offsets[None, None, :]
    rows = anchor[:, 1, None, None] + offsets[None, :, None]
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height) & (kernel > 0)
    flat = np.broadcast_to(rows * width + cols, kernel.shape)
    density += np.bincount(flat[inside], weights=-np.log1p(-kernel[inside]), minlength=density.size)
