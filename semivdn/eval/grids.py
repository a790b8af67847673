"""Before/after(/ground-truth) image grids: frames side by side under a row of text labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 16
GAP = 2
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def grid_image(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Join RGB uint8 frames (H, W, 3) of equal size left to right, each under its label."""
    if not panels:
        raise ValueError("a grid needs at least one panel")
    shapes = {frame.shape for _, frame in panels}
    if len(shapes) != 1 or next(iter(shapes))[-1:] != (3,):
        raise ValueError(f"grid panels must be RGB frames of one size, got shapes {sorted(shapes)}")
    height, width, _ = panels[0][1].shape
    canvas = Image.new("RGB", (len(panels) * width + (len(panels) - 1) * GAP, LABEL_HEIGHT + height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, (label, frame) in enumerate(panels):
        left = index * (width + GAP)
        while label and draw.textlength(label, font=font) > width - 4:  # keep each label over its own panel
            label = label[:-1]
        draw.text((left + 2, 2), label, fill=INK, font=font)
        canvas.paste(Image.fromarray(frame), (left, LABEL_HEIGHT))
    return np.asarray(canvas)


def save_grid(path: Path, panels: Sequence[tuple[str, np.ndarray]]) -> Path:
    """Write :func:`grid_image` of ``panels`` as a PNG; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid_image(panels)).save(path)
    return path
