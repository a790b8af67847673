"""Would flip self-ensembling help a model? PSNR per domain and do-no-harm for each ensemble of views.

    python benchmarks/self_ensemble.py --profile release --model release --split val \
        --raw data/release/raw --curated data/release/curated --truth data/release/real_truth \
        --output benchmarks/results/self_ensemble_release_val.json

Self-ensembling (as in EDSR and BasicSR's test-time augmentation) desnows flipped copies of a clip,
flips the outputs back and averages them. Views: ``plain``, ``hflip`` (left-right) and ``vflip``
(upside down). For each ensemble it records the mean PSNR over the paired and the proxy-real clips
with truth (outputs quantized to 8 bit as `semivdn evaluate` does) and the do-no-harm summary on the
split's snow-free clips (:func:`semivdn.eval.harm.harm`). Each view costs one more pass of the model,
so an ensemble of n views desnows n times slower. For choosing on val; decisions never read test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semivdn.config import load_config
from semivdn.data.datasets import clip_refs, load_manifest, read_clip
from semivdn.eval.evaluate import quantize_8bit, with_truth
from semivdn.eval.harm import harm, snow_free_clips
from semivdn.inference import desnow_clip
from semivdn.registry import load_model_ref

CPU_THREADS = 2
VIEWS: dict[str, tuple[int, ...]] = {"plain": (), "hflip": (-1,), "vflip": (-2,)}  # dims each view flips
ENSEMBLES = (("plain",), ("hflip",), ("plain", "hflip"), ("plain", "hflip", "vflip"))


def psnr(output: torch.Tensor, truth: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / max(float(torch.mean((output - truth) ** 2)), 1e-12))


def view_outputs(desnow: Callable[[torch.Tensor], torch.Tensor], clip: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every view's output of a (T, 3, H, W) clip, flipped back to the clip's orientation."""
    return {name: desnow(clip.flip(dims)).flip(dims) if dims else desnow(clip) for name, dims in VIEWS.items()}


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

    def desnow(clip: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return desnow_clip(model, clip, cfg.data.frames_per_clip)

    manifest = load_manifest(args.curated)
    scores: dict[str, dict[str, list[float]]] = {"+".join(e): {"paired": [], "real": []} for e in ENSEMBLES}
    for domain in ("paired", "real"):
        clips = clip_refs(manifest, args.raw, domain, args.split)
        if domain == "real":  # held-back truth; paired clips carry their own clean frames
            clips = with_truth(clips, args.truth, args.split)
        for clip in (c for c in clips if c.clean is not None):
            outputs, truth = view_outputs(desnow, read_clip(clip.snowy)), read_clip(clip.clean)
            for ensemble in ENSEMBLES:
                mean = torch.stack([outputs[view] for view in ensemble]).mean(0)
                scores["+".join(ensemble)][domain].append(psnr(quantize_8bit(mean), truth))
            print(f"{clip.clip_id}: " + ", ".join(f"{name} {values[domain][-1]:.2f} dB"
                                                  for name, values in scores.items()), flush=True)
    snow_free = snow_free_clips(split=args.split)
    result: dict[str, Any] = {"model": args.model, "checkpoint_sha256": meta["checkpoint_sha256"],
                              "split": args.split, "ensembles": {}}
    for ensemble in ENSEMBLES:
        name = "+".join(ensemble)

        def method(clip: torch.Tensor, ensemble: tuple[str, ...] = ensemble) -> torch.Tensor:
            outputs = view_outputs(desnow, clip)
            return quantize_8bit(torch.stack([outputs[view] for view in ensemble]).mean(0))

        summary = harm(method, snow_free)
        result["ensembles"][name] = {
            "passes": len(ensemble),
            **{f"{domain}_psnr": sum(values) / len(values) for domain, values in scores[name].items() if values},
            "do_no_harm": {key: summary[key] for key in ("min_psnr_vs_input_db", "max_abs_luminance_change",
                                                          "meets_bar")},
            "luminance_change_per_clip": {clip: round(values["luminance_change"], 4)
                                          for clip, values in summary["per_clip"].items()}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({name: {k: v for k, v in row.items() if k != "luminance_change_per_clip"}
                      for name, row in result["ensembles"].items()}, indent=2))


if __name__ == "__main__":
    main()
