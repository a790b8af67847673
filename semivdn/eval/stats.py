"""Uncertainty of the reported numbers: percentile bootstrap over clips.

Clips, not frames, are the independent units (frames of one clip share a scene, a
camera path and a snowfall), so every interval resamples whole clips with
replacement. A comparison of two methods is *paired*: both were scored on the same
clips, so the bootstrap resamples the per-clip differences, which removes the
clip-to-clip spread that both share and resolves far smaller differences than two
separate intervals would. A difference is significant when its interval excludes 0.
Resampling is seeded, so a report is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` clips with its bootstrap interval (None when n < 2: nothing to resample)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    confidence: float

    @property
    def width(self) -> float | None:
        return None if self.low is None or self.high is None else self.high - self.low

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (meaningful for differences)."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "confidence": self.confidence}

    def format(self, decimals: int, signed: bool = False) -> str:
        sign = "+" if signed else ""
        if self.low is None or self.high is None:
            return f"{self.mean:{sign}.{decimals}f} (n={self.n}, no interval)"
        return f"{self.mean:{sign}.{decimals}f} [{self.low:{sign}.{decimals}f}, {self.high:{sign}.{decimals}f}]"


def _check(values: np.ndarray, confidence: float, resamples: int) -> None:
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"bootstrap needs a non-empty 1-D array of per-clip values, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("bootstrap: per-clip values must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap: confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"bootstrap: resamples must be >= 1, got {resamples}")


def bootstrap_mean(values: Sequence[float] | np.ndarray, resamples: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> Interval:
    """Mean of ``values`` (one per clip) with its percentile-bootstrap interval."""
    data = np.asarray(values, dtype=np.float64)
    _check(data, confidence, resamples)
    mean = float(data.mean())
    if data.size < 2:
        return Interval(mean, None, None, int(data.size), confidence)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(mean, float(low), float(high), int(data.size), confidence)


def paired_difference(first: Sequence[float] | np.ndarray, second: Sequence[float] | np.ndarray,
                      resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``first − second`` over the same clips (same order), with its bootstrap interval."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: both sides must score the same clips, got {a.shape} and {b.shape}")
    return bootstrap_mean(a - b, resamples, confidence, seed)
