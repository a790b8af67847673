"""Which proxy-real clips the model leaves alone, and whether it is the snow or the scene it does not see.

    python benchmarks/abstention.py --profile release --model release --split val \
        --raw data/release/raw --curated data/release/curated --truth data/release/real_truth \
        --output benchmarks/results/abstention_release_val.json

For every proxy-real clip with held-back truth it desnows three versions of the same scene and records,
for each, the output's PSNR against its input (how much the model changed; ``ABSTAINS_DB`` or more is
"left alone") and against the truth:

- ``filmed``: the proxy-real clip itself (semivdn/data/realsnow.py: defocused, motion-blurred flakes,
  a veil, sensor noise and JPEG);
- ``paired_snow``: the clean truth under the paired snow model (semivdn/data/synth.py, the profile's
  ``snow`` as val and test use it, seeded by the clip's place in the split);
- ``paired_snow_no_haze``: the same flakes (same seed) without the haze;
- ``veil_only``: the clean truth under a uniform veil and nothing else (``VEIL`` of a bluish white),
  the part of the filmed snow that is not flakes.

A clip left alone when filmed but changed under paired snow is a clip whose *flakes* the model does not
recognise. Each version also records the model's own reading of the clip's haze: its mean airlight F_A'
and transmission F_T' (Eq. 6) over the clip's first window. A model whose snow removal only switches on
together with its haze estimate leaves ``paired_snow_no_haze`` alone with F_A' near 0 and F_T' near 1.
For diagnosis on val; decisions never read test.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import torch
from truth_clips import clips_with_truth, load_model, parse_arguments, psnr

from semivdn.config import SnowParams
from semivdn.data.synth import synthesize_snow
from semivdn.eval.evaluate import quantize_8bit
from semivdn.inference import desnow_clip
from semivdn.models.vdn import VDN

ABSTAINS_DB = 30.0  # output within this PSNR of its input: the model left the clip (nearly) as it was
VEIL = 0.15  # share of the veil's light in the veil-only version: the middle of real_snow.veil_range
VEIL_COLOUR = (0.90, 0.93, 0.95)  # bluish white, as the proxy-real renderer's ambient tint


def versions(truth: torch.Tensor, snow: SnowParams, seed: int) -> dict[str, torch.Tensor]:
    """The clean clip (T, 3, H, W) under the paired snow model, with and without its haze, and under a uniform
    veil alone."""
    clean = np.ascontiguousarray(truth.permute(0, 2, 3, 1).numpy(), dtype=np.float32)

    def snowed(params: SnowParams) -> torch.Tensor:
        snowy = torch.from_numpy(np.asarray(synthesize_snow(clean, params, seed).snowy, dtype=np.float32))
        return quantize_8bit(snowy.permute(0, 3, 1, 2))

    veil = torch.tensor(VEIL_COLOUR).view(1, 3, 1, 1)
    return {"paired_snow": snowed(snow),
            "paired_snow_no_haze": snowed(dataclasses.replace(snow, haze_range=(1.0, 1.0))),
            "veil_only": quantize_8bit(truth * (1 - VEIL) + VEIL * veil)}


@torch.no_grad()
def haze_reading(model: VDN, clip: torch.Tensor, n_frames: int) -> dict[str, float]:
    """The model's mean airlight F_A' and transmission F_T' (Eq. 6) on the clip's first ``n_frames`` frames."""
    output = model(clip[:n_frames][None])
    return {"airlight": round(float(output.airlight.mean()), 4),
            "transmission": round(float(output.transmission.mean()), 4)}


def main() -> None:
    args = parse_arguments(__doc__.split("\n")[0])
    cfg, model, meta = load_model(args)
    rows: list[dict[str, Any]] = []
    for _, clip_id, snowy, truth in clips_with_truth(args, domains=("real",)):
        row: dict[str, Any] = {"clip_id": clip_id}
        for name, clip in {"filmed": snowy, **versions(truth, cfg.snow, seed=len(rows))}.items():
            with torch.no_grad():
                output = quantize_8bit(desnow_clip(model, clip, cfg.data.frames_per_clip))
            row[name] = {"change_db": round(psnr(output, clip), 2), "input_psnr": round(psnr(clip, truth), 2),
                         "output_psnr": round(psnr(output, truth), 2),
                         **haze_reading(model, clip, cfg.data.frames_per_clip)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    left_alone = [r for r in rows if r["filmed"]["change_db"] >= ABSTAINS_DB]
    summary = {
        "clips": len(rows), "left_alone_when_filmed": [r["clip_id"] for r in left_alone],
        "of_those_changed_under_paired_snow": [r["clip_id"] for r in left_alone
                                               if r["paired_snow"]["change_db"] < ABSTAINS_DB],
        **{f"left_alone_under_{name}": sum(r[name]["change_db"] >= ABSTAINS_DB for r in rows)
           for name in ("paired_snow", "paired_snow_no_haze", "veil_only")}}
    result = {"model": args.model, "checkpoint_sha256": meta["checkpoint_sha256"], "split": args.split,
              "abstains_db": ABSTAINS_DB, "veil": VEIL, "summary": summary, "clips": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
