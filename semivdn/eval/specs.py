"""The metrics' table and the evaluation's file names, light to import (no torch, no pyiqa).

The registry's promotion gate reads ``lower_better`` from here without loading networks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

METRIC_ORDER = ("psnr", "ssim", "lpips", "niqe", "nima", "musiq")  # Tables 1 and 2's columns, plus NIQE
SUMMARY_FILE = "summary.json"  # what `semivdn evaluate` writes; the report and the registry read it
DECIMALS = {"psnr": 2, "ssim": 4, "lpips": 4, "niqe": 3, "nima": 3, "musiq": 2}  # the paper's precision
GRIDS = "grids"  # the folder of before/after/ground-truth grids beside the summary
PER_CLIP_FILE = "per_clip.csv"  # one row per clip: the unit that intervals and paired differences resample
DOMAINS = ("paired", "real")  # synthetic pairs; (proxy-)real footage, with held-back truth where it exists


def metric_key(domain: str, metric: str) -> str:
    """The summary's key of a metric in a domain, e.g. ``real_psnr``."""
    if domain not in DOMAINS or metric not in METRICS:
        raise ValueError(f"unknown domain {domain!r} or metric {metric!r}; domains {DOMAINS}, metrics {METRIC_ORDER}")
    return f"{domain}_{metric}"


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is built from pyiqa's defaults (pyiqa/default_model_configs.py) plus ``options``.

    ``lower_better`` and ``paired`` mirror pyiqa's ``lower_better`` and ``metric_mode``
    (FR: needs the ground truth; NR: does not); a test keeps them in sync with pyiqa.
    """

    pyiqa_name: str
    lower_better: bool
    paired: bool
    options: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # WEIGHTS entry of the network's own file (pyiqa would download it)
    checkpoint_key: str | None = None  # key that holds the state dict inside that file
    set_by_constructor: tuple[str, ...] = ()  # state-dict prefixes the file leaves to the constructor
    backbone: str | None = None  # WEIGHTS entry the constructor loads through torchvision or timm
    native: bool = False  # computed by semivdn itself (semivdn/eval/niqe.py; ssim.py: pyiqa's definition, faster)


METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec("psnr", lower_better=False, paired=True, options={"test_y_channel": False}),
    "ssim": MetricSpec("ssim", lower_better=False, paired=True, options={"test_y_channel": False}, native=True),
    "lpips": MetricSpec("lpips", lower_better=True, paired=True, options={"pretrained": False},
                        checkpoint="lpips_alex", set_by_constructor=("net.", "lins.", "scaling_layer."),
                        backbone="alexnet"),
    "niqe": MetricSpec("niqe", lower_better=True, paired=False, native=True),
    "nima": MetricSpec("nima", lower_better=False, paired=False, options={"pretrained": False},
                       checkpoint="nima_ava", checkpoint_key="params", backbone="inception_resnet_v2"),
    "musiq": MetricSpec("musiq", lower_better=False, paired=False, options={"pretrained": False},
                        checkpoint="musiq_koniq"),
}
