"""Mean-teacher weight averaging, Eq. 7: θ'_teacher = η·θ_teacher + (1 − η)·θ_student."""

from __future__ import annotations

import torch
from torch import nn


class TeacherAverager:
    """Eq. 7 for one teacher/student pair, with their tensors collected once.

    Walking ~100 submodules for the parameter and buffer lists at every step cost as much as the
    update itself (~2 ms of a 60 ms CPU step). The lists stay valid because ``load_state_dict``
    and optimizers update tensors in place.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module) -> None:
        self.teacher_params, self.student_params = list(teacher.parameters()), list(student.parameters())
        if len(self.teacher_params) != len(self.student_params):
            raise ValueError(f"TeacherAverager: teacher has {len(self.teacher_params)} parameters, "
                             f"student {len(self.student_params)}")
        buffers = list(zip(teacher.buffers(), student.buffers(), strict=True))
        self.float_buffers = [(t, s) for t, s in buffers if t.dtype.is_floating_point]
        self.other_buffers = [(t, s) for t, s in buffers if not t.dtype.is_floating_point]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """Move every teacher parameter (and float buffer) toward the student's; copy integer buffers."""
        # t + (1 − η)(s − t) = η·t + (1 − η)·s, for all parameters in a few fused kernels instead of two per tensor
        torch._foreach_lerp_(self.teacher_params, self.student_params, 1.0 - decay)
        for t_buf, s_buf in self.float_buffers:
            t_buf.lerp_(s_buf, 1.0 - decay)
        for t_buf, s_buf in self.other_buffers:
            t_buf.copy_(s_buf)


def poly_decay(iteration: int, total: int, power: float) -> float:
    """The polynomial learning-rate factor (1 − r/r_max)^power used by the paper's scheduler."""
    return max(0.0, 1.0 - iteration / max(1, total)) ** power
