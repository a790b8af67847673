"""What the snow gate does to a model: PSNR per domain and do-no-harm, gated and not, for several balances.

    python benchmarks/snow_gate.py --profile release --model release --split val \
        --raw data/release/raw --curated data/release/curated --truth data/release/real_truth \
        --output benchmarks/results/snow_gate_release_val.json

The network desnows each clip with truth once; the gate (:mod:`semivdn.snow_gate`) then blends
input and output for every ``balance`` in ``BALANCES`` (``none``: the network alone). Outputs are
quantized to 8 bit as `semivdn evaluate` does. Recorded per balance: mean PSNR over the paired and
the proxy-real clips, and the do-no-harm summary on the split's snow-free clips; per clip: the
mean gate under the params' balance. Also the gate's own cost per frame (two phase correlations, a
blur and a median) at 256² and 854×480 on this machine's CPU threads, best of ``TIMING_ROUNDS``.
For choosing on val; decisions never read test.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import torch
from truth_clips import clips_with_truth, load_model, parse_arguments, psnr

from semivdn.config import SnowGate
from semivdn.eval.evaluate import quantize_8bit
from semivdn.eval.harm import harm, snow_free_clips
from semivdn.inference import desnow_clip
from semivdn.snow_gate import apply_gate, clip_outliers, gates

BALANCES: tuple[tuple[float, float] | None, ...] = (None, (0.0, 0.1), (0.0, 0.2), (0.0, 0.3), (-0.2, 0.2), (0.1, 0.3))
TIMING_ROUNDS = 5
TIMING_SIZES = {"256x256": (256, 256), "854x480": (480, 854)}


def name_of(balance: tuple[float, float] | None) -> str:
    return "network alone" if balance is None else f"balance [{balance[0]}, {balance[1]}]"


def gate_ms_per_frame(params: SnowGate, height: int, width: int, frames: int = 10) -> float:
    """Best-of-rounds milliseconds per frame of the gate's evidence (outliers of every inner frame)."""
    clip = torch.rand(frames, 3, height, width, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(TIMING_ROUNDS):
        start = time.perf_counter()
        clip_outliers(clip, params.threshold)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / (frames - 2)


def main() -> None:
    args = parse_arguments(__doc__.split("\n")[0])
    cfg, model, meta = load_model(args)
    chosen = cfg.inference.snow_gate

    done: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # id -> (clip, network output, outliers)

    def network_and_outliers(clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each clip through the network and the gate's evidence once, whatever the balances tried on it."""
        if id(clip) not in done:  # the clip is kept with its results, so its id is not reused
            with torch.no_grad():
                done[id(clip)] = (clip, desnow_clip(model, clip, cfg.data.frames_per_clip),
                                  clip_outliers(clip, chosen.threshold))
        return done[id(clip)][1:]

    def blend(clip: torch.Tensor, balance: tuple[float, float] | None) -> torch.Tensor:
        restored, inner = network_and_outliers(clip)
        if balance is None:
            return restored
        return apply_gate(clip, restored, gates(inner, clip.shape[0], dataclasses.replace(chosen, balance=balance)))

    def mean_gate(clip: torch.Tensor) -> float:
        return round(float(gates(network_and_outliers(clip)[1], clip.shape[0], chosen).mean()), 3)

    scores: dict[str, dict[str, list[float]]] = {name_of(b): {"paired": [], "real": []} for b in BALANCES}
    per_clip: dict[str, dict[str, float]] = {}
    for domain, clip_id, snowy, truth in clips_with_truth(args):
        for balance in BALANCES:
            scores[name_of(balance)][domain].append(psnr(quantize_8bit(blend(snowy, balance)), truth))
        per_clip[clip_id] = {"gate": mean_gate(snowy),
                             "psnr_network": round(scores["network alone"][domain][-1], 3),
                             "psnr_gated": round(scores[name_of(chosen.balance)][domain][-1], 3)}
        print(f"{clip_id}: {per_clip[clip_id]}", flush=True)
    snow_free = snow_free_clips(split=args.split)
    result: dict[str, Any] = {"model": args.model, "checkpoint_sha256": meta["checkpoint_sha256"],
                              "split": args.split, "params_snow_gate": dataclasses.asdict(chosen), "balances": {}}
    for balance in BALANCES:
        summary = harm(lambda clip, b=balance: quantize_8bit(blend(clip, b)), snow_free)
        result["balances"][name_of(balance)] = {
            **{f"{domain}_psnr": sum(values) / len(values) for domain, values in scores[name_of(balance)].items()
               if values},
            "do_no_harm": {key: summary[key] for key in ("min_psnr_vs_input_db", "max_abs_luminance_change",
                                                          "meets_bar")}}
    result["snow_free_gates"] = {name: mean_gate(clip) for name, clip in snow_free.items()}
    result["clips"] = per_clip
    result["gate_ms_per_frame"] = {size: round(gate_ms_per_frame(chosen, *shape), 2)
                                   for size, shape in TIMING_SIZES.items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "clips"}, indent=2))


if __name__ == "__main__":
    main()
