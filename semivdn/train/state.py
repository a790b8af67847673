"""Atomic, pickle-free training checkpoints for exact resume.

The state is a dict of tensors, numbers, strings and lists, saved with
``torch.save`` to a temporary file that is fsynced and renamed over the old one,
so a kill at any moment leaves either the previous or the new checkpoint, never
a torn one; it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "last.ckpt"


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically; weights that are NaN or infinite are refused (the old state is kept)."""
    for part in ("student", "teacher"):
        broken = [name for name, tensor in state.get(part, {}).items()
                  if tensor.is_floating_point() and not tensor.isfinite().all()]
        if broken:
            raise RuntimeError(f"{path}: refusing to save non-finite {part} weights ({broken[0]} and "
                               f"{len(broken) - 1} more) at iteration {state.get('iteration')}; training diverged")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file is a clear error, not a half resume
        # only the exception type: torch's own text would suggest weights_only=False, which must never be done
        raise RuntimeError(f"{path}: cannot resume: not a readable SemiVDN training checkpoint "
                           f"({type(exc).__name__}); delete it to train from scratch") from exc
