"""benchmarks/unseen_snow.py: its photographs are there, unused by the data, and its third snow model behaves."""

from pathlib import Path

import numpy as np
import pytest
from scripts import load_script

from semivdn.data.scenes import SPLIT_SCENES

unseen_snow = load_script("benchmarks/unseen_snow.py")


def test_every_photograph_is_installed_and_none_is_a_data_scene() -> None:
    assert len(unseen_snow.PHOTOGRAPHS) == 10
    assert all(path.is_file() for path in unseen_snow.PHOTOGRAPHS.values())
    used = {scene for splits in SPLIT_SCENES.values() for scenes in splits.values() for scene in scenes}
    assert not used & set(unseen_snow.PHOTOGRAPHS)


def test_a_missing_photograph_names_its_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.jpg"):
        unseen_snow.load_photograph(tmp_path / "nowhere.jpg")


def test_the_panned_view_moves_and_has_the_benchmark_size() -> None:
    image = np.random.default_rng(0).random((400, 500, 3), dtype=np.float32)
    clip = unseen_snow.pan(image, np.random.default_rng(1))
    assert clip.shape == (unseen_snow.FRAMES, unseen_snow.HEIGHT, unseen_snow.WIDTH, 3)
    assert not np.array_equal(clip[0], clip[-1])


def test_snow_is_seeded_bright_and_only_where_flakes_fall() -> None:
    clean = np.full((6, 64, 80, 3), 0.2, np.float32)
    first = unseen_snow.fall_snow(clean, np.random.default_rng(3))
    assert np.array_equal(first, unseen_snow.fall_snow(clean, np.random.default_rng(3)))
    assert first.min() >= 0.2 - 1e-6 and first.max() <= 1.0  # over a dark scene snow only adds light
    covered = (first - clean).max(axis=-1) > 0.01
    assert 0.001 < covered.mean() < 0.5  # flakes here and there, not a veil over everything
    assert not np.array_equal(covered[0], covered[-1])  # and they move
