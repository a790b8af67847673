"""One place that turns a device setting into a torch device, with a clear error."""

from __future__ import annotations

import torch


def resolve_device(setting: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; CUDA must exist when asked for."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as exc:
        raise ValueError(f"device {setting!r} is not a valid torch device; use 'auto', 'cpu' or 'cuda'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {setting!r} requested but CUDA is not available here "
                           f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use cpu")
    return device


def describe_device(device: torch.device) -> str:
    """What a run computed on, for its provenance (the model card lists it per training stage)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"
