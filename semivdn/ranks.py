"""Collectives over DDP ranks that also work in a single process (where they return their input)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def gather_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) over all DDP ranks in rank order; as is alone.

    Every rank must call it at the same point, as with any collective.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
