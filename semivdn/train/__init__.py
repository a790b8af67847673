"""Training: supervised warm-up, mean teacher with DCR, resume, DDP (paper §3.3–3.4)."""

from semivdn.train.loop import run_training

__all__ = ["run_training"]
