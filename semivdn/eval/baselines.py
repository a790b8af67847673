"""Reference methods every ablation row is compared with: the snowy input and a temporal median.

``median3`` is the classic video desnowing baseline: snow moves between frames while
the background (mostly) does not, so the per-pixel median of three consecutive
frames removes flakes that cover a pixel in only one of them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Method = Callable[[torch.Tensor], torch.Tensor]


def identity(clip: torch.Tensor) -> torch.Tensor:
    """The snowy frames themselves (the "Input" row of Table 1)."""
    return clip


def temporal_median3(clip: torch.Tensor) -> torch.Tensor:
    """Per-pixel median over frames t-1, t, t+1 of a clip (T, 3, H, W), edges replicated."""
    if clip.ndim != 4:
        raise ValueError(f"expected a clip (T, 3, H, W), got shape {tuple(clip.shape)}")
    previous = torch.cat([clip[:1], clip[:-1]])
    following = torch.cat([clip[1:], clip[-1:]])
    return torch.stack([previous, clip, following]).median(dim=0).values


BASELINES: dict[str, Method] = {"input": identity, "median3": temporal_median3}
