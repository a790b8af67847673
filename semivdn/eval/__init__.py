"""Evaluation (paper §4.3, Tables 1-2): pyiqa metrics, per-clip tables, image grids, the ablation report.

``create_metric`` is the front door to the metrics; it is imported on first use, so that
light users of this package (the registry's gate reads :mod:`semivdn.eval.specs`) do not
pay for torch and pyiqa.
"""

from __future__ import annotations

from typing import Any

from semivdn.eval.specs import METRIC_ORDER, METRICS, MetricSpec

__all__ = ["METRICS", "METRIC_ORDER", "Metric", "MetricSpec", "create_metric"]


def __getattr__(name: str) -> Any:
    if name in ("Metric", "create_metric"):
        from semivdn.eval import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
