"""Do no harm: the harm measure on known changes, and the shipped release model on snow-free clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semivdn.data.scenes import SPLIT_SCENES
from semivdn.eval.harm import harm, harm_on_clip, meets_bar, snow_free_clips
from semivdn.inference import desnow_clip
from semivdn.models.checkpoint import load_checkpoint
from semivdn.release import release_checkpoint


def test_harm_measures_a_known_darkening() -> None:
    clip = torch.full((3, 3, 8, 8), 0.5)
    scores = harm_on_clip(lambda frames: frames * 0.9, clip)
    assert scores["luminance_change"] == pytest.approx(-0.1)
    assert scores["psnr_vs_input_db"] == pytest.approx(10 * np.log10(1 / 0.05**2))
    report = harm(lambda frames: frames * 0.9, {"grey": clip, "white": clip * 2})
    assert report["clips"] == 2 and report["max_abs_luminance_change"] == pytest.approx(0.1)
    assert report["per_clip"]["white"]["psnr_vs_input_db"] == pytest.approx(10 * np.log10(1 / 0.1**2))
    assert not report["meets_bar"] and harm(lambda frames: frames, {"grey": clip})["meets_bar"]
    with pytest.raises(ValueError, match="no clips"):
        harm(lambda frames: frames, {})


def test_snow_free_clips_are_the_unseen_scenes_and_reproducible() -> None:
    clips = snow_free_clips(frames=2, size=32)
    assert set(SPLIT_SCENES["paired"]["test"]) | set(SPLIT_SCENES["real"]["test"]) <= set(clips)
    assert not set(clips) & {scene for splits in ("train", "val") for scene in SPLIT_SCENES["paired"][splits]}
    assert all(tuple(clip.shape) == (2, 3, 32, 32) for clip in clips.values())
    assert all(torch.equal(clips[name], again) for name, again in snow_free_clips(frames=2, size=32).items())
    val = snow_free_clips(frames=2, size=32, split="val")
    assert set(SPLIT_SCENES["real"]["val"]) <= set(val) and not set(val) & set(clips)  # choose on val, report on test
    with pytest.raises(ValueError, match="split must be one of"):
        snow_free_clips(split="holdout")
    assert meets_bar({"min_psnr_vs_input_db": 32.0, "max_abs_luminance_change": 0.02})
    assert not meets_bar({"min_psnr_vs_input_db": 31.9, "max_abs_luminance_change": 0.0})


def test_release_model_leaves_snow_free_footage_alone() -> None:
    """Issue bar: output vs input PSNR >= 32 dB and mean-luminance change <= 2 % on snow-free clips."""
    model, _ = load_checkpoint(release_checkpoint())
    report = harm(lambda clip: desnow_clip(model.eval(), clip, 3), snow_free_clips())
    assert report["meets_bar"], {name: scores for name, scores in report["per_clip"].items()}
