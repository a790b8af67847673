"""Training-data diversity: procedural scenes, domain-randomized paired snow, identity (snow-free) pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from semivdn.config import ConfigError, Data, SnowParams, SnowRandomization
from semivdn.data import procedural
from semivdn.data.camera import Camera, jpeg_round_trip, sensor_noise
from semivdn.data.datasets import WindowDataset, clip_refs
from semivdn.data.procedural import KINDS, procedural_names, render_procedural
from semivdn.data.scenes import load_scene
from semivdn.data.synth import randomize_snow, synthesize_snow
from semivdn.data.video import FrameWriter


def test_procedural_scene_is_a_pure_function_of_its_name() -> None:
    names = procedural_names(KINDS, 0, 2 * len(KINDS))
    assert len(set(names)) == len(names) and {n.split("-")[1] for n in names} == set(KINDS)
    first = render_procedural(names[0])
    assert np.array_equal(first, render_procedural(names[0]))
    assert first.dtype == np.float32 and first.shape[2] == 3 and first.min() >= 0.0 and first.max() <= 1.0
    others = [render_procedural(n) for n in names[1:]]
    assert all(not np.array_equal(first, other) for other in others if other.shape == first.shape)
    assert all(float(image.std()) > 0.01 for image in [first, *others])  # no blank canvases
    assert np.array_equal(load_scene(names[3]), render_procedural(names[3]))  # scenes.py resolves them


def test_some_scenes_carry_scene_fixed_bright_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stars and glints (hard negatives for a flake detector): a quarter of the scenes, brightening only."""
    names = procedural_names(KINDS, 0, 40)
    sprinkled = {name: render_procedural(name) for name in names}
    monkeypatch.setattr(procedural, "SPARKLE_PROBABILITY", 0.0)
    plain = {name: render_procedural(name) for name in names}
    changed = [name for name in names if not np.array_equal(sprinkled[name], plain[name])]
    assert 4 <= len(changed) <= 20
    for name in changed:
        gain = sprinkled[name] - plain[name]
        assert gain.min() >= -1e-6  # screen blend: points light the scene, never darken it
        lit = (gain.max(axis=2) > 0.1).mean()
        assert 1e-5 < lit < 0.3, (name, lit)  # points, not a wash over the frame


def test_procedural_ranges_are_disjoint_and_bad_names_rejected() -> None:
    assert not set(procedural_names(KINDS, 0, 10)) & set(procedural_names(KINDS, 10, 10))
    with pytest.raises(KeyError, match="kind one of"):
        render_procedural("proc-volcano-1")


def test_neutral_randomization_leaves_the_snow_and_the_random_stream_alone() -> None:
    rng = np.random.default_rng(0)
    assert randomize_snow(SnowParams(), SnowRandomization(), rng) == SnowParams()
    assert rng.random() == np.random.default_rng(0).random()


def test_randomized_snow_spans_the_configured_ranges() -> None:
    spread = SnowRandomization(no_haze_fraction=0.3, density_scale=(0.1, 2.0), size_scale=(0.5, 1.5),
                               speed_scale=(0.5, 1.5), vary_style=True)
    base = SnowParams()
    drawn = [randomize_snow(base, spread, np.random.default_rng(seed)) for seed in range(200)]
    density = np.array([p.flakes_per_megapixel for p in drawn]) / base.flakes_per_megapixel
    assert 0.1 <= density.min() < 0.2 and 1.5 < density.max() <= 2.0
    assert all(0.5 * base.size_range[1] <= p.size_range[1] <= 1.5 * base.size_range[1] for p in drawn)
    no_haze = np.mean([p.haze_range == (1.0, 1.0) for p in drawn])
    assert 0.2 < no_haze < 0.45  # 30 %, and vary_style draws a few nearly haze-free ones on its own
    clean = np.random.default_rng(1).random((3, 32, 32, 3), dtype=np.float32)
    hazeless = next(p for p in drawn if p.haze_range == (1.0, 1.0))
    np.testing.assert_array_equal(synthesize_snow(clean, hazeless, 0).transmission, 1.0)
    assert {p.haze_gradient for p in drawn} == {1.0}  # not asked for: every clip keeps the depth-graded haze
    assert {p.opacity_range for p in drawn} == {base.opacity_range} and {p.defocus for p in drawn} == {0.0}


def test_haze_gradient_is_drawn_per_clip_within_its_range() -> None:
    spread = SnowRandomization(haze_gradient=(0.0, 0.4))
    drawn = np.array([randomize_snow(SnowParams(), spread, np.random.default_rng(seed)).haze_gradient
                      for seed in range(100)])
    assert 0.0 <= drawn.min() < 0.05 and 0.35 < drawn.max() <= 0.4


def test_opacity_scale_and_defocus_are_drawn_per_clip() -> None:
    base = SnowParams()
    spread = SnowRandomization(opacity_scale=(0.2, 1.0), defocus=(0.5, 2.5))
    drawn = [randomize_snow(base, spread, np.random.default_rng(seed)) for seed in range(100)]
    factors = np.array([p.opacity_range[0] / base.opacity_range[0] for p in drawn])
    np.testing.assert_allclose([p.opacity_range[1] / base.opacity_range[1] for p in drawn], factors)  # one factor
    assert 0.2 <= factors.min() < 0.25 and 0.85 < factors.max() <= 1.0
    assert 0.3 < np.median(factors) < 0.6  # log-uniform: the geometric middle of [0.2, 1] is 0.45
    defocus = np.array([p.defocus for p in drawn])
    assert 0.5 <= defocus.min() < 0.7 and 2.3 < defocus.max() <= 2.5


def test_haze_only_clips_have_haze_and_no_flakes() -> None:
    base = SnowParams(haze_range=(0.6, 0.8))
    spread = SnowRandomization(no_haze_fraction=0.5, haze_only_fraction=0.3)
    drawn = [randomize_snow(base, spread, np.random.default_rng(seed)) for seed in range(200)]
    haze_only = [p for p in drawn if p.flakes_per_megapixel == 0]
    assert 0.2 < len(haze_only) / len(drawn) < 0.4
    assert all(p.haze_range == base.haze_range for p in haze_only)  # never a clip equal to its truth
    assert all(p.flakes_per_megapixel == base.flakes_per_megapixel for p in drawn if p not in haze_only)
    clean = np.full((2, 48, 48, 3), 0.3, np.float32)
    clip = synthesize_snow(clean, haze_only[0], 1)
    assert np.abs(clip.snow).max() == 0 and clip.transmission.max() < 1  # Eq. 1 with S = 0
    assert np.abs(clip.snowy - clean).mean() > 0.02


def test_defocus_spreads_the_same_flakes_wider_and_fainter() -> None:
    clean = np.full((2, 64, 64, 3), 0.3, np.float32)
    sharp, soft = (synthesize_snow(clean, SnowParams(haze_range=(1.0, 1.0), bokeh_fraction=0.0, defocus=d), 5)
                   for d in (0.0, 2.0))
    light_sharp, light_soft = sharp.snow.sum(), soft.snow.sum()
    assert abs(light_soft - light_sharp) < 0.1 * light_sharp  # the lens moves light, it adds none
    assert soft.snow.max() < 0.8 * sharp.snow.max()  # peaks spread out
    assert (soft.snow.max(axis=3) > 0.01).mean() > (sharp.snow.max(axis=3) > 0.01).mean()  # over more pixels
    np.testing.assert_array_equal(soft.clean, sharp.clean)


def _write(folder: Path, frames: np.ndarray) -> None:
    with FrameWriter(folder) as writer:
        for frame in frames:
            writer.write(frame)


def test_identity_fraction_feeds_clean_windows_as_input(tmp_path: Path) -> None:
    clean = np.random.default_rng(0).integers(0, 200, (5, 32, 32, 3), dtype=np.uint8)
    _write(tmp_path / "paired/train/clean/c0", clean)
    _write(tmp_path / "paired/train/snowy/c0", clean + 40)
    manifest = pd.DataFrame([{"clip_id": "paired/train/c0", "source": "paired", "split": "train", "frames": 5,
                              "snowy_path": "paired/train/snowy/c0", "clean_path": "paired/train/clean/c0",
                              "content_hash": "0"}])
    clips = clip_refs(manifest, tmp_path, "paired", "train")

    def identical_share(fraction: float) -> float:
        dataset = WindowDataset(clips, 3, 16, True, paired=True, identity_fraction=fraction)
        items = [dataset[(seed % len(dataset), seed)] for seed in range(300)]
        return float(np.mean([torch.equal(item["snowy"], item["clean"]) for item in items]))

    assert identical_share(0.0) == 0.0
    assert 0.2 < identical_share(0.3) < 0.4
    with pytest.raises(ValueError, match="identity_fraction"):
        Data(identity_fraction=1.0)


def test_camera_noise_has_the_drawn_strength_and_bad_settings_are_rejected() -> None:
    flat = np.full((64, 64, 3), 0.5)
    sigma = np.sqrt(1e-3 * 0.5 + 0.02**2)  # shot-noise variance ∝ signal, plus read noise
    noisy = sensor_noise(flat, np.random.default_rng(0), read_noise=0.02, shot_noise=1e-3)
    assert abs(noisy.mean() - 0.5) < 0.005 and noisy.std() == pytest.approx(sigma, rel=0.05)
    filmed = Camera(read_noise=0.02, shot_noise=1e-3, jpeg_quality=95).film(flat, np.random.default_rng(0)) / 255
    assert abs(filmed.mean() - 0.5) < 0.01 and 0.4 * sigma < filmed.std() < sigma  # JPEG smooths some noise away
    rng = np.random.default_rng(1)
    drawn = [Camera.draw(rng, (0.003, 0.02), (45, 95)) for _ in range(200)]
    assert all(0.003 <= c.read_noise <= 0.02 and 45 <= c.jpeg_quality <= 95 for c in drawn)
    assert {c.jpeg_quality for c in drawn} >= {45, 95}  # both ends reachable
    with pytest.raises(ValueError, match="quality"):
        jpeg_round_trip(flat, 0)
    with pytest.raises(ConfigError, match="camera_fraction"):
        SnowRandomization(camera_fraction=1.5)
    with pytest.raises(ConfigError, match="jpeg_quality"):
        SnowRandomization(jpeg_quality=(50, 120))
