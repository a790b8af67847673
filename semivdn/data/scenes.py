"""Clean footage without downloads: smooth camera moves over images that installed packages ship.

Every scene is an image bundled inside scikit-image or scikit-learn (no pooch
download). A clip is a virtual camera moving over the scene: a pan along a straight
path, a slow zoom, a slight roll and a sub-pixel hand-held shake, sampled bilinearly;
in some clips a near silhouette (scikit-image's horse) crosses the view faster than the
background, giving two-layer parallax. The paired and the real stand-in sets draw from
disjoint scene lists, and every split (train, val, test) of each set holds its own scenes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage import data as skdata
from skimage.transform import resize
from sklearn.datasets import load_sample_image

from semivdn.data.procedural import is_procedural, render_procedural

# Scenes of each set and split: disjoint across splits and across sets, so no test clip shows a scene that
# training or validation saw (tests/test_make_data.py checks it).
SPLIT_SCENES: dict[str, dict[str, tuple[str, ...]]] = {
    "paired": {"train": ("astronaut", "chelsea", "camera", "china", "brick", "moon", "retina", "cell"),
               "val": ("immunohistochemistry", "hubble_deep_field"),
               "test": ("coffee", "rocket")},
    "real": {"train": ("motorcycle", "coins", "grass"), "val": ("gravel",), "test": ("flower", "clock")},
}

_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": skdata.astronaut,
    "chelsea": skdata.chelsea,
    "camera": skdata.camera,
    "china": lambda: load_sample_image("china.jpg"),
    "brick": skdata.brick,
    "immunohistochemistry": skdata.immunohistochemistry,
    "hubble_deep_field": skdata.hubble_deep_field,
    "coffee": skdata.coffee,
    "rocket": skdata.rocket,
    "motorcycle": lambda: skdata.stereo_motorcycle()[0],
    "flower": lambda: load_sample_image("flower.jpg"),
    "coins": skdata.coins,
    "grass": skdata.grass,
    "gravel": skdata.gravel,
    "clock": skdata.clock,
    "moon": skdata.moon,
    "retina": skdata.retina,
    "cell": skdata.cell,
}

VIEW_MARGIN = (1.5, 2.0)  # scene's short side over the view's long side: room to pan
PAN_SPEED = (0.6, 2.5)  # output pixels per frame
ZOOM_TOTAL = 0.25  # largest relative change of scale over a clip
ROLL_TOTAL = np.deg2rad(3.0)  # largest roll over a clip
SHAKE_PIXELS = (0.15, 0.6)
PARALLAX_PROBABILITY = 0.5
PARALLAX_GAIN = (1.6, 2.6)  # the near layer moves this many times faster than the background
SPRITE_HEIGHT = (0.35, 0.6)  # of the frame height
SPRITE_SHADE = (0.25, 0.5)  # the near silhouette is the scene's own colours, in shadow


def scene_names() -> tuple[str, ...]:
    return tuple(_LOADERS)


@functools.lru_cache(maxsize=32)  # bounded: a data set may paint hundreds of procedural scenes
def load_scene(name: str) -> np.ndarray:
    """A bundled image or a procedural scene as read-only float32 RGB (H, W, 3) in [0, 1]; gray is replicated."""
    if is_procedural(name):
        image = render_procedural(name)
        image.setflags(write=False)
        return image
    if name not in _LOADERS:
        raise KeyError(f"unknown scene {name!r}; known: {sorted(_LOADERS)}")
    image = np.asarray(_LOADERS[name]())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3].astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    image.setflags(write=False)
    return image


def render_clean_clip(scene: str, frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 clip (T, H, W, 3) in [0, 1]: the camera path over ``scene``, plus a parallax layer in some clips."""
    if frames < 1 or height < 1 or width < 1:
        raise ValueError(f"render_clean_clip: need positive frames/height/width, got {frames}/{height}/{width}")
    image = load_scene(scene)
    short_side = max(height, width) * rng.uniform(*VIEW_MARGIN)
    factor = short_side / min(image.shape[:2])
    image = resize(image, (round(image.shape[0] * factor), round(image.shape[1] * factor)),
                   order=1, anti_aliasing=factor < 1).astype(np.float32)
    centres, scales, angles = _camera_path(rng, image.shape[:2], frames, height, width)
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    grid_y -= (height - 1) / 2
    grid_x -= (width - 1) / 2
    clip = np.empty((frames, height, width, 3), np.float32)
    for t in range(frames):
        cos, sin = np.cos(angles[t]) * scales[t], np.sin(angles[t]) * scales[t]
        coords = np.stack([centres[t, 0] + cos * grid_y + sin * grid_x, centres[t, 1] - sin * grid_y + cos * grid_x])
        clip[t] = _sample(image, coords, mode="reflect")
    if rng.random() < PARALLAX_PROBABILITY:
        _add_parallax_layer(clip, image, centres / scales[:, None], rng)
    return np.clip(clip, 0.0, 1.0, out=clip)


def _sample(image: np.ndarray, coords: np.ndarray, mode: str) -> np.ndarray:
    """Bilinear sampling of every channel at (2, H, W) source coordinates."""
    return np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode=mode)
                     for c in range(image.shape[2])], axis=-1)


def _camera_path(rng: np.random.Generator, source: tuple[int, int], frames: int, height: int,
                 width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (T, 2) in source pixels, scales (T,) in source pixels per output pixel, roll angles (T,)."""
    progress = np.linspace(0.0, 1.0, frames)
    ease = progress + rng.uniform(-0.15, 0.15) * np.sin(np.pi * progress)  # smooth, not constant, speed
    scale0 = rng.uniform(0.9, 1.1)
    scales = scale0 * (1.0 + rng.uniform(-ZOOM_TOTAL, ZOOM_TOTAL) * ease)
    angles = rng.uniform(-ROLL_TOTAL, ROLL_TOTAL) * ease
    reach = 0.5 * np.hypot(height, width) * scales.max()  # the view's half-diagonal in source pixels
    low = np.array([reach, reach])
    room = np.maximum(np.array(source, dtype=float) - 2 * reach, 0.0)
    direction = rng.uniform(0, 2 * np.pi)
    travel = rng.uniform(*PAN_SPEED) * max(frames - 1, 0) * np.array([np.sin(direction), np.cos(direction)])
    travel *= min(1.0, *(room / np.maximum(np.abs(travel), 1e-6)))  # the whole pan stays inside the scene
    start = low + rng.uniform(0, 1, 2) * (room - np.abs(travel)) + np.maximum(-travel, 0.0)
    shake_phase = np.outer(np.arange(frames), rng.uniform(0.8, 2.2, 2)) + rng.uniform(0, 2 * np.pi, 2)
    shake = rng.uniform(*SHAKE_PIXELS) * np.sin(shake_phase)
    centres = start + np.outer(ease, travel) + shake
    return centres, scales, angles


def _add_parallax_layer(clip: np.ndarray, image: np.ndarray, background_path: np.ndarray,
                        rng: np.random.Generator) -> None:
    """Composite a near silhouette that moves ``gain`` times as fast as the background (in place)."""
    frames, height, width, _ = clip.shape
    silhouette = (~skdata.horse()).astype(np.float32)  # the horse is False (black) on white
    if rng.random() < 0.5:
        silhouette = silhouette[:, ::-1]
    size = rng.uniform(*SPRITE_HEIGHT) * height
    factor = size / silhouette.shape[0]
    alpha = resize(silhouette, (round(silhouette.shape[0] * factor), round(silhouette.shape[1] * factor)),
                   order=1, anti_aliasing=True).astype(np.float32)
    texture = image[: alpha.shape[0], : alpha.shape[1]] * rng.uniform(*SPRITE_SHADE)
    sprite = np.concatenate([texture, alpha[: texture.shape[0], : texture.shape[1], None]], axis=-1)
    gain = rng.uniform(*PARALLAX_GAIN)
    top = height - sprite.shape[0] * rng.uniform(0.7, 1.0)
    left = rng.uniform(-0.3, 0.8) * width
    moved = -(background_path - background_path[0]) * gain  # screen motion of a near object
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    for t in range(frames):
        coords = np.stack([grid_y - (top + moved[t, 0]), grid_x - (left + moved[t, 1])])
        layer = _sample(sprite, coords, mode="constant")
        clip[t] = clip[t] * (1.0 - layer[..., 3:]) + layer[..., :3] * layer[..., 3:]
