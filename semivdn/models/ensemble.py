"""An output ensemble: several trained networks of one architecture whose restorations are averaged.

Networks trained from different starting points make partly independent errors, so the mean of
their outputs is closer to the truth than either (the release model: two VDN lineages, +0.2 to
+0.3 dB on both val domains over the better one, README). The ensemble speaks the same
``encode``/``restore`` interface as one network, so streaming inference, evaluation and the
registry need no change: ``encode`` stacks the members' features along the channel axis and
``restore`` splits them again. Ensembles are assembled from trained checkpoints
(:func:`semivdn.models.checkpoint.assemble_ensemble`), never trained as one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn


def _mean(values: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if values[0] is None else torch.stack(values).mean(dim=0)  # type: ignore[arg-type]


class OutputEnsemble(nn.Module):
    """The members' restorations averaged; every physics feature of their ``VDNOutput`` is averaged alike."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Each member's per-frame features (N, dim, h, w), stacked to (N, members·dim, h, w)."""
        return torch.cat([member.encode(frames) for member in self.members], dim=1)

    def restore(self, features: torch.Tensor, clip: torch.Tensor, frame_index: int | None = None,
                snow_only: bool = False) -> Any:
        """The members' :meth:`VDN.restore` on their own share of ``features`` (B, N_f, members·dim, h, w), averaged."""
        if features.shape[2] % len(self.members):
            raise ValueError(f"features with {features.shape[2]} channels cannot be split among "
                             f"{len(self.members)} ensemble members")
        shares = features.chunk(len(self.members), dim=2)
        outputs = [member.restore(share, clip, frame_index=frame_index, snow_only=snow_only)
                   for member, share in zip(self.members, shares, strict=True)]
        return type(outputs[0])(**{field.name: _mean([getattr(out, field.name) for out in outputs])
                                   for field in dataclasses.fields(outputs[0])})

    def forward(self, clip: torch.Tensor, snow_only: bool = False) -> Any:
        """Restore every frame of a clip (B, N_f, 3, H, W) in [0, 1], as :meth:`VDN.forward`."""
        if clip.ndim != 5:
            raise ValueError(f"the ensemble expects a clip of shape (B, N_f, 3, H, W), got {tuple(clip.shape)}")
        features = self.encode(clip.flatten(0, 1))
        return self.restore(features.reshape(*clip.shape[:2], *features.shape[1:]), clip, snow_only=snow_only)
