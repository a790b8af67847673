"""The README picture: the median clip by rule, its grid stacked per domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from semivdn.eval.figure import median_clip, median_figure
from semivdn.eval.grids import save_grid


def _eval_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    scores = {"real/test/a": 20.0, "real/test/b": 30.0, "real/test/c": 25.0, "paired/test/d": 22.0}
    pd.DataFrame([{"clip_id": clip, "source": clip.split("/")[0], "frames": 3, "truth": True, "psnr": psnr}
                  for clip, psnr in scores.items()]).to_csv(root / "per_clip.csv", index=False)
    for clip in scores:
        frame = np.full((8, 8, 3), int(scores[clip]), np.uint8)
        save_grid(root / "grids" / f"{clip.replace('/', '__')}.png", [("input", frame), ("model", frame)])
    return root


def test_median_clip_is_the_middle_score(tmp_path: Path) -> None:
    assert median_clip(_eval_dir(tmp_path), "real") == ("real/test/c", 25.0)
    with pytest.raises(ValueError, match="no nothing clip"):
        median_clip(tmp_path, "nothing")


def test_median_figure_stacks_one_row_per_domain(tmp_path: Path) -> None:
    eval_dir = _eval_dir(tmp_path / "eval")
    chosen = median_figure(eval_dir, ["real", "paired"], tmp_path / "demo.png")
    assert chosen == {"real": "real/test/c", "paired": "paired/test/d"}
    picture = np.asarray(Image.open(tmp_path / "demo.png"))
    grid = np.asarray(Image.open(eval_dir / "grids" / "real__test__c.png"))
    assert picture.shape[0] > 2 * grid.shape[0] and picture.shape[1] >= grid.shape[1]
    (eval_dir / "grids" / "paired__test__d.png").unlink()
    with pytest.raises(FileNotFoundError, match="grid_clips"):
        median_figure(eval_dir, ["paired"], tmp_path / "other.png")
