"""Mean-teacher weight averaging, Eq. 7: θ'_teacher = η·θ_teacher + (1 − η)·θ_student."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """Move every teacher parameter (and float buffer) toward the student's, Eq. 7."""
    for t_param, s_param in zip(teacher.parameters(), student.parameters(), strict=True):
        t_param.mul_(decay).add_(s_param.detach(), alpha=1.0 - decay)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers(), strict=True):
        if t_buf.dtype.is_floating_point:
            t_buf.mul_(decay).add_(s_buf, alpha=1.0 - decay)
        else:
            t_buf.copy_(s_buf)


def poly_decay(iteration: int, total: int, power: float) -> float:
    """The polynomial learning-rate factor (1 − r/r_max)^power used by the paper's scheduler."""
    return max(0.0, 1.0 - iteration / max(1, total)) ** power
