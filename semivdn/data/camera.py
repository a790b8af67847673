"""What a camera does to every frame after the scene and the snow: sensor noise and JPEG compression.

Real footage is never noise- and artefact-free. The proxy-real snow model (semivdn.data.realsnow)
films through this camera; the paired training snow can too (``paired_randomization.camera_fraction``),
so a network trained on clean synthetic pairs does not meet noise and blocking for the first time on
real footage, and learns to leave them out of the restored frames.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

SHOT_NOISE = (2e-4, 1.5e-3)  # variance per unit signal


@dataclass(frozen=True)
class Camera:
    """One clip's camera: read noise σ (of full scale), shot-noise variance per unit signal, JPEG quality."""

    read_noise: float
    shot_noise: float
    jpeg_quality: int

    @classmethod
    def draw(cls, rng: np.random.Generator, noise_range: tuple[float, float],
             quality_range: tuple[int, int]) -> Camera:
        """Uniform read noise and shot noise, a uniform integer quality in ``quality_range`` (both ends included)."""
        read_noise = float(rng.uniform(*noise_range))
        shot_noise = float(rng.uniform(*SHOT_NOISE))
        return cls(read_noise, shot_noise, int(rng.integers(quality_range[0], quality_range[1] + 1)))

    def film(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A float frame (H, W, 3) in [0, 1] → the uint8 frame this camera records."""
        return jpeg_round_trip(sensor_noise(frame, rng, self.read_noise, self.shot_noise), self.jpeg_quality)


def sensor_noise(frame: np.ndarray, rng: np.random.Generator, read_noise: float, shot_noise: float) -> np.ndarray:
    """Shot noise (variance ∝ signal) plus read noise, per colour channel."""
    sigma = np.sqrt(shot_noise * np.clip(frame, 0, 1) + read_noise**2)
    return np.clip(frame + sigma * rng.standard_normal(frame.shape), 0.0, 1.0)


def jpeg_round_trip(frame: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip at ``quality`` (4:2:0 chroma) of a float frame in [0, 1]: uint8 out."""
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg_round_trip: quality must lie in [1, 100], got {quality}")
    buffer = io.BytesIO()
    Image.fromarray(np.round(frame * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))
