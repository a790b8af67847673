"""Do no harm: the harm measure on known changes, and the shipped release model on snow-free clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semivdn.data.procedural import KINDS, procedural_names
from semivdn.data.scenes import SPLIT_SCENES, render_clean_clip
from semivdn.eval import harm as harm_module
from semivdn.eval.harm import harm, harm_on_clip
from semivdn.models.checkpoint import load_checkpoint
from semivdn.release import release_checkpoint


def test_harm_measures_a_known_darkening(monkeypatch: pytest.MonkeyPatch) -> None:
    clip = torch.full((3, 3, 8, 8), 0.5)
    monkeypatch.setattr(harm_module, "desnow_clip", lambda model, frames, n: frames * 0.9)
    scores = harm_on_clip(None, clip, 3)  # type: ignore[arg-type]
    assert scores["luminance_change"] == pytest.approx(-0.1)
    assert scores["psnr_vs_input_db"] == pytest.approx(10 * np.log10(1 / 0.05**2))
    summary = harm(None, [clip, clip * 2], 3)  # type: ignore[arg-type]
    assert summary["clips"] == 2 and summary["max_abs_luminance_change"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no clips"):
        harm(None, [], 3)  # type: ignore[arg-type]


def _snow_free_clips() -> list[torch.Tensor]:
    """Clean clips the release model never trained on: test-split photographs, unseen procedural scenes."""
    scenes = [*SPLIT_SCENES["paired"]["test"], *SPLIT_SCENES["real"]["test"],
              *procedural_names(KINDS, 90_000, 2 * len(KINDS))]
    clips = []
    for index, scene in enumerate(scenes):
        frames = render_clean_clip(scene, 5, 96, 96, np.random.default_rng(index))
        clips.append(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous())
    return clips


@pytest.mark.xfail(strict=True, reason="known defect (issue 11 open): the shipped release model darkens snow-free "
                   "clips by 4-9 % (up to 28 % on a very dark scene); strict, so a model that passes fails this "
                   "marker and it must be removed")
def test_release_model_leaves_snow_free_footage_alone() -> None:
    """Issue bar: output vs input PSNR >= 32 dB and mean-luminance change <= 2 % on snow-free clips."""
    model, _ = load_checkpoint(release_checkpoint())
    with torch.no_grad():
        summary = harm(model.eval(), _snow_free_clips(), n_frames=3)
    assert summary["min_psnr_vs_input_db"] >= 32.0, summary
    assert summary["max_abs_luminance_change"] <= 0.02, summary
