"""Mean-teacher weight averaging, Eq. 7: θ'_teacher = η·θ_teacher + (1 − η)·θ_student."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """Move every teacher parameter (and float buffer) toward the student's, Eq. 7."""
    teacher_params, student_params = list(teacher.parameters()), list(student.parameters())
    if len(teacher_params) != len(student_params):
        raise ValueError(f"update_ema: teacher has {len(teacher_params)} parameters, student {len(student_params)}")
    # t + (1 − η)(s − t) = η·t + (1 − η)·s, for all parameters in a few fused kernels instead of two per tensor
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - decay)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers(), strict=True):
        if t_buf.dtype.is_floating_point:
            t_buf.lerp_(s_buf, 1.0 - decay)
        else:
            t_buf.copy_(s_buf)


def poly_decay(iteration: int, total: int, power: float) -> float:
    """The polynomial learning-rate factor (1 − r/r_max)^power used by the paper's scheduler."""
    return max(0.0, 1.0 - iteration / max(1, total)) ** power
