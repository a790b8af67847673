"""The snow synthesizer (semivdn.data.synth): Eq. 1, ranges, reproducibility, moving flakes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from semivdn.config import SnowParams, load_config
from semivdn.data.synth import SnowyClip, synthesize_snow

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def snow() -> SnowParams:
    return load_config(PARAMS, profile="smoke").snow


def _clean(frames: int = 4, height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((frames, height, width, 3), dtype=np.float32)


def _still(**overrides: object) -> SnowParams:
    """No haze, no wind: only falling snow, so motion tests see the fall alone."""
    return dataclasses.replace(SnowParams(), **{"haze_range": (1.0, 1.0), "wind_range": (0.0, 0.0), **overrides})


def test_no_haze_no_snow_returns_the_clean_clip() -> None:
    clean = _clean()
    clip = synthesize_snow(clean, dataclasses.replace(SnowParams(), haze_range=(1.0, 1.0), flakes_per_megapixel=0),
                           seed=3)
    np.testing.assert_array_equal(clip.snowy, clean)
    np.testing.assert_array_equal(clip.snow, 0.0)
    np.testing.assert_array_equal(clip.transmission, 1.0)


def test_shapes_dtypes_and_range(snow: SnowParams) -> None:
    clean = _clean()
    clip = synthesize_snow(clean, snow, seed=1)
    for name in ("snowy", "clean", "snow", "airlight"):
        array = getattr(clip, name)
        assert array.shape == clean.shape, name
        assert array.dtype == np.float32, name
    assert clip.transmission.shape == (*clean.shape[:3], 1)
    assert clip.transmission.dtype == np.float32
    assert clip.snowy.min() >= 0.0 and clip.snowy.max() <= 1.0
    assert clip.transmission.min() > 0.0 and clip.transmission.max() <= 1.0
    assert clip.airlight.min() >= 0.0 and clip.airlight.max() <= 1.0


def test_components_satisfy_eq1(snow: SnowParams) -> None:
    clip = synthesize_snow(_clean(), snow, seed=2)
    rebuilt = clip.clean * clip.transmission + clip.airlight * (1.0 - clip.transmission) + clip.snow
    np.testing.assert_allclose(clip.snowy, rebuilt, atol=1e-5)


def test_same_seed_same_clip_different_seed_different_clip(snow: SnowParams) -> None:
    clean = _clean()
    first, again = synthesize_snow(clean, snow, seed=7), synthesize_snow(clean, snow, seed=np.random.default_rng(7))
    other = synthesize_snow(clean, snow, seed=8)
    for field in dataclasses.fields(SnowyClip):
        np.testing.assert_array_equal(getattr(first, field.name), getattr(again, field.name))
    assert not np.allclose(first.snowy, other.snowy)


def test_haze_is_thicker_far_away_at_the_top() -> None:
    clip = synthesize_snow(_clean(height=64), dataclasses.replace(SnowParams(), haze_range=(0.5, 0.5)), seed=4)
    assert clip.transmission[:, :8].mean() < clip.transmission[:, -8:].mean() - 0.1
    assert clip.transmission.min() >= 0.5 - 1e-6  # T_far is the thickest haze


@pytest.mark.parametrize("gradient", [0.0, 0.5])
def test_haze_gradient_fades_the_depth_towards_a_uniform_veil(gradient: float) -> None:
    graded, blended = (synthesize_snow(_clean(height=64), dataclasses.replace(SnowParams(), haze_range=(0.5, 0.5),
                                                                              haze_gradient=g), seed=4)
                       for g in (1.0, gradient))
    depth = np.log(graded.transmission) / np.log(0.5)  # T = T_far ** depth, the same fog for the same seed
    np.testing.assert_allclose(np.log(blended.transmission) / np.log(0.5), 1.0 - gradient * (1.0 - depth), atol=1e-5)
    if gradient == 0.0:  # a uniform veil of T_far over every pixel of every frame
        np.testing.assert_allclose(blended.transmission, 0.5, atol=1e-6)


def test_flakes_are_visible_with_the_default_snow() -> None:
    grey = np.full((4, 96, 96, 3), 0.3, np.float32)
    clip = synthesize_snow(grey, load_config(PARAMS, profile="demo").snow, seed=5)
    assert (np.abs(clip.snow).max(axis=-1) > 0.05).mean() > 0.1


def _best_shift(before: np.ndarray, after: np.ndarray, reach: int = 8) -> tuple[int, int]:
    """The (dy, dx) that best aligns ``before`` moved by it with ``after`` (circular cross-correlation)."""
    scores = {(dy, dx): float((np.roll(before, (dy, dx), axis=(0, 1)) * after).sum())
              for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)}
    return max(scores, key=scores.__getitem__)


def test_flakes_fall_between_frames() -> None:
    params = _still(speed_range=(3.0, 3.0), streak_fraction=0.0, bokeh_fraction=0.0, flakes_per_megapixel=60000)
    clip = synthesize_snow(np.zeros((3, 96, 96, 3), np.float32), params, seed=6)
    layer = clip.snow.mean(axis=-1)
    assert not np.allclose(layer[0], layer[1])
    dy, dx = _best_shift(layer[0], layer[1])
    assert 2 <= dy <= 4 and abs(dx) <= 1  # 3 px per frame downwards, with a little sway


def test_wind_pushes_flakes_sideways() -> None:
    params = _still(speed_range=(3.0, 3.0), wind_range=(3.0, 3.0), streak_fraction=0.0, bokeh_fraction=0.0,
                    flakes_per_megapixel=60000)
    layer = synthesize_snow(np.zeros((2, 96, 96, 3), np.float32), params, seed=6).snow.mean(axis=-1)
    dy, dx = _best_shift(layer[0], layer[1])
    assert dy >= 2 and dx >= 2


def test_streaks_are_smeared_along_the_fall() -> None:
    base = _still(speed_range=(7.0, 7.0), size_range=(1.0, 1.0), bokeh_fraction=0.0, flakes_per_megapixel=8000)

    def anisotropy(streaks: float) -> float:
        layer = synthesize_snow(np.zeros((1, 96, 96, 3), np.float32), dataclasses.replace(
            base, streak_fraction=streaks), seed=9).snow[0].mean(axis=-1)
        vertical = (layer * np.roll(layer, 3, axis=0)).sum()
        horizontal = (layer * np.roll(layer, 3, axis=1)).sum()
        return float(vertical / horizontal)

    assert anisotropy(1.0) > 2.0 * anisotropy(0.0)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 8, 8, 3), np.uint8), "float32"),
    (np.zeros((8, 8, 3), np.float32), "shape"),
    (np.zeros((0, 8, 8, 3), np.float32), "shape"),
    (np.full((1, 8, 8, 3), 1.5, np.float32), r"\[0, 1\]"),
])
def test_bad_input_is_rejected(bad: np.ndarray, message: str, snow: SnowParams) -> None:
    with pytest.raises(ValueError, match=message):
        synthesize_snow(bad, snow, seed=0)
