"""How much of a model's error is one colour offset per clip, and how much is structure (flakes, texture).

    python benchmarks/error_offset.py --profile release --model release --split val \
        --raw data/release/raw --curated data/release/curated --truth data/release/real_truth \
        --output benchmarks/results/error_offset_release_val.json

For every clip with truth (paired, and proxy-real where held-back truth exists) it desnows the clip,
quantizes to 8 bit as `semivdn evaluate` does (``quantize_8bit``), and records:

- ``psnr``: PSNR of the whole clip (all frames' pixels in one mean squared error);
- ``offset_levels``: the output's mean error per colour channel over the clip, in grey levels
  (positive: brighter than the truth), and the input's for comparison;
- ``psnr_offset_removed``: PSNR after subtracting that offset, i.e. the error left if one global
  brightness/colour shift were corrected. A large gap between the two says the model's error is a
  tone (veil, darkening), not leftover snow.

Means over clips per domain go under ``domains``. For diagnosis on val; decisions never read test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semivdn.config import load_config
from semivdn.data.datasets import clip_refs, load_manifest, read_clip
from semivdn.eval.evaluate import quantize_8bit, with_truth
from semivdn.inference import desnow_clip
from semivdn.registry import load_model_ref

CPU_THREADS = 2


def psnr(output: torch.Tensor, truth: torch.Tensor) -> float:
    mse = float(torch.mean((output - truth) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def channel_offset(frames: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean error per colour channel of a (T, 3, H, W) clip, shaped to broadcast over it."""
    return (frames - truth).mean(dim=(0, 2, 3), keepdim=True)


def clip_row(clip_id: str, snowy: torch.Tensor, output: torch.Tensor, truth: torch.Tensor) -> dict[str, Any]:
    offset = channel_offset(output, truth)
    return {"clip_id": clip_id, "psnr": psnr(output, truth), "psnr_offset_removed": psnr(output - offset, truth),
            "offset_levels": [round(float(v) * 255, 1) for v in offset.flatten()],
            "input_offset_levels": [round(float(v) * 255, 1) for v in channel_offset(snowy, truth).flatten()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="release")
    parser.add_argument("--model", default="release", help="checkpoint, models:/ URI or `release`")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--curated", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True, help="held-back truth of the proxy-real clips")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(CPU_THREADS)

    cfg = load_config(profile=args.profile)
    model, meta = load_model_ref(args.model, cfg)
    model.eval()
    manifest = load_manifest(args.curated)
    result: dict[str, Any] = {"model": args.model, "checkpoint_sha256": meta["checkpoint_sha256"],
                              "split": args.split, "domains": {}, "clips": []}
    for domain in ("paired", "real"):
        clips = clip_refs(manifest, args.raw, domain, args.split)
        if domain == "real":  # held-back truth; paired clips carry their own clean frames
            clips = with_truth(clips, args.truth, args.split)
        rows = []
        for clip in (c for c in clips if c.clean is not None):
            snowy, truth = read_clip(clip.snowy), read_clip(clip.clean)
            with torch.no_grad():
                output = quantize_8bit(desnow_clip(model, snowy, cfg.data.frames_per_clip))
            rows.append(clip_row(clip.clip_id, snowy, output, truth))
            print(f"{clip.clip_id}: {rows[-1]['psnr']:.2f} dB, {rows[-1]['psnr_offset_removed']:.2f} dB without "
                  f"its offset {rows[-1]['offset_levels']}", flush=True)
        if rows:
            result["domains"][domain] = {key: sum(r[key] for r in rows) / len(rows)
                                         for key in ("psnr", "psnr_offset_removed")} | {"clips": len(rows)}
        result["clips"] += rows
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["domains"], indent=2))


if __name__ == "__main__":
    main()
