"""The MLflow pyfunc model of a SemiVDN checkpoint, logged as code (MLflow "models from code").

:func:`semivdn.registry.log_model` passes this file's path as ``python_model``: MLflow copies
the source into the model and runs it on load, so a registered model carries no pickle
(``python_model.pkl``) that ``mlflow.pyfunc.load_model`` would have to unpickle. The weights
are the ``checkpoint`` artifact, loaded with safetensors.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import torch
from torch import nn

from semivdn.config import SnowGate
from semivdn.registry import CHECKPOINT_ARTIFACT


class SemiVDNModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a SemiVDN checkpoint.

    ``predict`` takes one clip (T, H, W, 3) or a batch of clips (N, T, H, W, 3), uint8 in
    0..255 or float in [0, 1], and returns the desnowed frames in the same shape and
    dtype. The logged signature declares the serving form: one uint8 clip.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from semivdn.models.checkpoint import load_checkpoint

        self.model, self.meta = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])
        self.frames_per_clip = int(context.model_config["frames_per_clip"])
        gate = context.model_config.get("snow_gate")  # absent in models logged before the gate: none
        self.snow_gate = None if gate is None else SnowGate(**{**gate, "balance": tuple(gate["balance"])})

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> np.ndarray:
        return desnow_array(self.model, np.asarray(model_input), self.frames_per_clip, self.snow_gate)


def desnow_array(model: nn.Module, clips: np.ndarray, frames_per_clip: int,
                 snow_gate: SnowGate | None = None) -> np.ndarray:
    """Desnow a clip (T, H, W, 3) or clips (N, T, H, W, 3); uint8 (0..255) or float ([0, 1]) in and out."""
    from semivdn.inference import desnow_clip

    if clips.ndim not in (4, 5) or clips.shape[-1] != 3:
        raise ValueError(f"expected a clip (T, H, W, 3) or clips (N, T, H, W, 3), got shape {clips.shape}")
    is_uint8 = clips.dtype == np.uint8
    outputs = []
    for clip in clips if clips.ndim == 5 else clips[None]:
        frames = torch.from_numpy(clip.astype(np.float32) / (255.0 if is_uint8 else 1.0)).permute(0, 3, 1, 2)
        outputs.append(desnow_clip(model, frames, frames_per_clip, snow_gate).permute(0, 2, 3, 1).numpy())
    result = np.stack(outputs)
    result = (result * 255.0).round().astype(np.uint8) if is_uint8 else result.astype(clips.dtype)
    return result if clips.ndim == 5 else result[0]


mlflow.models.set_model(SemiVDNModel())
