"""The README's before/after picture, chosen by a rule rather than by hand.

For each requested domain, the clip whose score (PSNR by default) is the median of the
model's clips in that domain: a typical result, neither the best nor the worst. Its grid
(input | model | ground truth, written by ``semivdn evaluate``) becomes one row of the
picture, under a caption naming the clip and its score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from semivdn.eval.compare import load_per_clip
from semivdn.eval.grids import grid_image
from semivdn.eval.specs import GRIDS


def median_clip(eval_dir: Path, domain: str, metric: str = "psnr") -> tuple[str, float]:
    """The clip of ``domain`` whose ``metric`` is the median over the evaluation's clips (lower middle if even)."""
    table = load_per_clip(eval_dir)
    rows = table[(table.source == domain) & table[metric].notna()].sort_values([metric, "clip_id"])
    if rows.empty:
        raise ValueError(f"{eval_dir}: no {domain} clip has a {metric} score")
    row = rows.iloc[(len(rows) - 1) // 2]
    return str(row.clip_id), float(row[metric])


def median_figure(eval_dir: Path, domains: Sequence[str], out: Path, metric: str = "psnr") -> dict[str, str]:
    """Stack the median clip's grid of every domain into one PNG at ``out``; returns domain -> chosen clip."""
    rows, chosen = [], {}
    for domain in domains:
        clip_id, score = median_clip(eval_dir, domain, metric)
        grid = Path(eval_dir) / GRIDS / f"{clip_id.replace('/', '__')}.png"
        if not grid.is_file():
            raise FileNotFoundError(f"{grid}: no grid for the median clip; raise eval.grid_clips to cover every clip")
        image = np.asarray(Image.open(grid).convert("RGB"))
        caption = np.asarray(grid_image([(f"{domain} test, median {metric} clip {clip_id}: {score:.2f}",
                                          np.full((1, image.shape[1], 3), 255, np.uint8))]))[:-1]
        rows.append(np.concatenate([caption, image]))
        chosen[domain] = clip_id
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(padded)).save(out)
    return chosen
