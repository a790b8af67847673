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

import json
from collections.abc import Callable
from typing import Any

import torch
from truth_clips import clips_with_truth, load_model, parse_arguments, psnr

from semivdn.eval.evaluate import quantize_8bit
from semivdn.eval.harm import harm, snow_free_clips
from semivdn.inference import desnow_clip

VIEWS: dict[str, tuple[int, ...]] = {"plain": (), "hflip": (-1,), "vflip": (-2,)}  # dims each view flips
ENSEMBLES = (("plain",), ("hflip",), ("plain", "hflip"), ("plain", "hflip", "vflip"))


def view_outputs(desnow: Callable[[torch.Tensor], torch.Tensor], clip: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every view's output of a (T, 3, H, W) clip, flipped back to the clip's orientation."""
    return {name: desnow(clip.flip(dims)).flip(dims) if dims else desnow(clip) for name, dims in VIEWS.items()}


def main() -> None:
    args = parse_arguments(__doc__.split("\n")[0])
    cfg, model, meta = load_model(args)

    def desnow(clip: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return desnow_clip(model, clip, cfg.data.frames_per_clip)

    scores: dict[str, dict[str, list[float]]] = {"+".join(e): {"paired": [], "real": []} for e in ENSEMBLES}
    for domain, clip_id, snowy, truth in clips_with_truth(args):
        outputs = view_outputs(desnow, snowy)
        for ensemble in ENSEMBLES:
            mean = torch.stack([outputs[view] for view in ensemble]).mean(0)
            scores["+".join(ensemble)][domain].append(psnr(quantize_8bit(mean), truth))
        print(f"{clip_id}: " + ", ".join(f"{name} {values[domain][-1]:.2f} dB" for name, values in scores.items()),
              flush=True)
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
