"""What the val diagnostics share: their command line, the model they load and the clips with truth they read.

Used by ``abstention.py``, ``error_offset.py``, ``self_ensemble.py`` and ``snow_gate.py`` (run them from the
repository root).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semivdn.config import Config, load_config
from semivdn.data.datasets import clip_refs, load_manifest, read_clip
from semivdn.eval.evaluate import with_truth
from semivdn.registry import load_model_ref

CPU_THREADS = 2


def psnr(output: torch.Tensor, truth: torch.Tensor) -> float:
    """PSNR of a whole clip: all its frames' pixels in one mean squared error."""
    return 10 * math.log10(1.0 / max(float(torch.mean((output - truth) ** 2)), 1e-12))


def parse_arguments(description: str) -> argparse.Namespace:
    """--profile, --model, --split, --raw, --curated, --truth and --output."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", default="release")
    parser.add_argument("--model", default="release", help="checkpoint, models:/ URI or `release`")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--curated", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True, help="held-back truth of the proxy-real clips")
    parser.add_argument("--output", type=Path, required=True)
    return parser.parse_args()


def load_model(args: argparse.Namespace) -> tuple[Config, torch.nn.Module, dict[str, Any]]:
    """The profile's config and the model in eval mode, on ``CPU_THREADS`` threads."""
    torch.set_num_threads(CPU_THREADS)
    cfg = load_config(profile=args.profile)
    model, meta = load_model_ref(args.model, cfg)
    return cfg, model.eval(), meta


def clips_with_truth(args: argparse.Namespace, domains: tuple[str, ...] = ("paired", "real"),
                     ) -> Iterator[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """(domain, clip id, snowy clip, clean clip) of the split: paired clips, then proxy-real ones with truth."""
    manifest = load_manifest(args.curated)
    for domain in domains:
        clips = clip_refs(manifest, args.raw, domain, args.split)
        if domain == "real":  # held-back truth; paired clips carry their own clean frames
            clips = with_truth(clips, args.truth, args.split)
        for clip in (c for c in clips if c.clean is not None):
            yield domain, clip.clip_id, read_clip(clip.snowy), read_clip(clip.clean)
