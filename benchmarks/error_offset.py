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

import json
from typing import Any

import torch
from truth_clips import clips_with_truth, load_model, parse_arguments, psnr

from semivdn.eval.evaluate import quantize_8bit
from semivdn.inference import desnow_clip


def channel_offset(frames: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean error per colour channel of a (T, 3, H, W) clip, shaped to broadcast over it."""
    return (frames - truth).mean(dim=(0, 2, 3), keepdim=True)


def clip_row(clip_id: str, snowy: torch.Tensor, output: torch.Tensor, truth: torch.Tensor) -> dict[str, Any]:
    offset = channel_offset(output, truth)
    return {"clip_id": clip_id, "psnr": psnr(output, truth), "psnr_offset_removed": psnr(output - offset, truth),
            "offset_levels": [round(float(v) * 255, 1) for v in offset.flatten()],
            "input_offset_levels": [round(float(v) * 255, 1) for v in channel_offset(snowy, truth).flatten()]}


def main() -> None:
    args = parse_arguments(__doc__.split("\n")[0])
    cfg, model, meta = load_model(args)
    result: dict[str, Any] = {"model": args.model, "checkpoint_sha256": meta["checkpoint_sha256"],
                              "split": args.split, "domains": {}, "clips": []}
    rows: dict[str, list[dict[str, Any]]] = {"paired": [], "real": []}
    for domain, clip_id, snowy, truth in clips_with_truth(args):
        with torch.no_grad():
            output = quantize_8bit(desnow_clip(model, snowy, cfg.data.frames_per_clip))
        row = clip_row(clip_id, snowy, output, truth)
        rows[domain].append(row)
        print(f"{clip_id}: {row['psnr']:.2f} dB, {row['psnr_offset_removed']:.2f} dB without "
              f"its offset {row['offset_levels']}", flush=True)
    for domain, domain_rows in rows.items():
        if domain_rows:
            result["domains"][domain] = {key: sum(r[key] for r in domain_rows) / len(domain_rows)
                                         for key in ("psnr", "psnr_offset_removed")} | {"clips": len(domain_rows)}
        result["clips"] += domain_rows
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["domains"], indent=2))


if __name__ == "__main__":
    main()
