"""Name -> class registry of networks; ``create_model`` builds one from the typed ``model`` params.

A network joins with ``@register_model("name")``; params.yaml's ``model.type`` picks it and
the other keys of the section become its constructor's keyword arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from torch import nn

from semivdn.config import Model
from semivdn.models.ensemble import OutputEnsemble

MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a network under ``name``; a second class with the same name is an error."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in MODELS:
            raise ValueError(f"model type {name!r} is already registered by {MODELS[name].__qualname__}")
        MODELS[name] = cls
        return cls

    return add


def create_model(model_cfg: Model, cache_dir: str | Path | None = None) -> nn.Module:
    """Build the network ``model_cfg.type`` with the section's other keys as keyword arguments
    (``members`` > 1: an :class:`~semivdn.models.ensemble.OutputEnsemble` of that many)."""
    if model_cfg.type not in MODELS:
        raise ValueError(f"model.type: unknown model {model_cfg.type!r}; registered: {sorted(MODELS)}")
    kwargs = {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg)
              if f.name not in ("type", "members")}
    if model_cfg.members == 1:
        return MODELS[model_cfg.type](**kwargs, cache_dir=cache_dir)
    return OutputEnsemble([MODELS[model_cfg.type](**kwargs, cache_dir=cache_dir) for _ in range(model_cfg.members)])
