"""The proxy-real snow model (semivdn.data.realsnow): filmed 3-D particle snow."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from semivdn.config import RealSnowParams
from semivdn.data.realsnow import film_snow
from semivdn.data.scenes import render_clean_clip

PARAMS = RealSnowParams()
CLEAN_CAMERA = {"veil_range": (0.0, 0.0), "noise_range": (0.0, 0.0), "jpeg_quality": (95, 95)}


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return render_clean_clip("coffee", 4, 64, 64, np.random.default_rng(0))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def _snow(clean: np.ndarray, seed: int = 3, **changes: object) -> tuple[np.ndarray, np.ndarray]:
    clip = film_snow(clean, dataclasses.replace(PARAMS, **changes), fps=12, seed=seed)
    return clip.snowy, clip.clean


def test_same_seed_same_clip_and_shapes(clean: np.ndarray) -> None:
    snowy, truth = _snow(clean)
    again, _ = _snow(clean)
    other, _ = _snow(clean, seed=4)
    assert snowy.shape == truth.shape == clean.shape and snowy.dtype == truth.dtype == np.uint8
    np.testing.assert_array_equal(snowy, again)
    assert not np.array_equal(snowy, other)
    np.testing.assert_array_equal(truth, np.round(clean * 255).astype(np.uint8))


def test_no_snow_and_a_clean_camera_leave_the_scene(clean: np.ndarray) -> None:
    snowy, truth = _snow(clean, density=0.0, **CLEAN_CAMERA)
    assert _psnr(snowy, truth) > 30  # only shot noise and JPEG at quality 95 remain


def test_denser_snowfall_degrades_more_and_brightens(clean: np.ndarray) -> None:
    light, truth = _snow(clean, density=5.0, **CLEAN_CAMERA)
    heavy, _ = _snow(clean, density=50.0, **CLEAN_CAMERA)
    assert _psnr(heavy, truth) < _psnr(light, truth) < 40
    assert heavy.astype(float).mean() > light.astype(float).mean() > truth.astype(float).mean() - 0.5


def test_defocus_spreads_the_snow_without_losing_its_light(clean: np.ndarray) -> None:
    """A wide aperture turns flakes into soft bokeh disks: lower peaks, about the same light in total."""
    flat = np.full_like(clean, 0.3)

    def snow_layer(aperture: float) -> np.ndarray:
        snowy, truth = _snow(flat, aperture_range=(aperture, aperture), focus_range=(6.0, 6.0), **CLEAN_CAMERA)
        return snowy.astype(float) - truth.astype(float)

    sharp, soft = snow_layer(0.0), snow_layer(0.06)
    assert np.percentile(soft, 99) < 0.7 * np.percentile(sharp, 99)
    assert soft.mean() == pytest.approx(sharp.mean(), rel=0.3)


def test_rejects_bad_input(clean: np.ndarray) -> None:
    with pytest.raises(ValueError, match="float32"):
        film_snow(clean.astype(np.float64), PARAMS, fps=12, seed=0)
    with pytest.raises(ValueError, match="fps"):
        film_snow(clean, PARAMS, fps=0, seed=0)
