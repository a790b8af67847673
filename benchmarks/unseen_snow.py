"""Footage and snow the project never trained, chose or reported on: does the model still desnow, and do no harm?

    python benchmarks/unseen_snow.py --model release --output benchmarks/results/unseen_snow_release.json

The data splits hold out scenes, but every paired clip's snow comes from one synthesizer and every
proxy-real clip's from one renderer, over images of the same few packages. This measures a third
case. Scenes: photographs that installed packages ship and no split uses (matplotlib's portrait of
Grace Hopper, the five Kodak photographs and four photographs among pyiqa's files), each filmed
by a camera panning across it. Snow: a third model, written for this and for nothing else: soft
round flakes (Gaussian footprints) of random size, opacity and tint, falling at random speed and
wind, streaked by the exposure when fast, at a per-clip density from a light flurry to heavy snow.
Each clip's settings come from its seed (its place in the list), so every run scores the same clips.

For the input, the 3-frame temporal median, the network and the network behind the snow gate it
reports the mean PSNR per clip with 95 % bootstrap intervals, the paired gains over the input and
the median, and do-no-harm on the same clips without snow. Nothing here may choose a model: it is
a report, read after the choice, like the test split.
"""

from __future__ import annotations

import argparse
import json
import math
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from truth_clips import CPU_THREADS, psnr  # also puts the repository root on sys.path

from semivdn.config import SnowGate, load_config
from semivdn.eval.baselines import BASELINES
from semivdn.eval.evaluate import quantize_8bit
from semivdn.eval.harm import BAR, harm
from semivdn.eval.stats import bootstrap_mean, paired_difference
from semivdn.inference import desnow_clip
from semivdn.registry import load_model_ref

FRAMES, HEIGHT, WIDTH = 12, 192, 256
SUBSTEPS = 4  # positions per exposure: fast flakes streak
SEED = 11  # with the clip's place in PHOTOGRAPHS: its camera path and its snow
VIEW_MARGIN = 1.5  # the photograph, resized, is this many times the view on its tighter side
SITE = Path(sysconfig.get_paths()["purelib"])
# photographs shipped by installed packages that no data split uses (semivdn.data.scenes)
PHOTOGRAPHS = {
    "grace_hopper": SITE / "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
    **{f"kodak_{n}": SITE / f"ResultsCalibra/ref_dir/I{n}.bmp" for n in ("03", "04", "06", "08", "19")},  # pyiqa
    **{f"pyiqa_{path.stem[-6:].lower()}": path
       for path in sorted((SITE / "tests/test_efficiency_img_dir").glob("*.jpg"))},  # pyiqa's test photographs
}


def load_photograph(path: Path) -> np.ndarray:
    """An RGB float32 (H, W, 3) image in [0, 1], resized so the view spans two thirds of it (room to pan)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: photograph missing (shipped by matplotlib or pyiqa: run `make install`)")
    image = Image.open(path).convert("RGB")
    scale = VIEW_MARGIN * max(WIDTH / image.width, HEIGHT / image.height)
    size = (math.ceil(image.width * scale), math.ceil(image.height * scale))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS), np.float32).clip(0, 255) / 255.0


def pan(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A clean clip (T, H, W, 3): the view slides across ``image`` at 0.5–2 pixels per frame, whole pixels."""
    room = np.array([image.shape[0] - HEIGHT, image.shape[1] - WIDTH])
    speed, angle = rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
    steps = np.arange(FRAMES)[:, None] * speed * np.array([np.sin(angle), np.cos(angle)])
    corners = np.clip(np.round(room / 2 - steps[-1] / 2 + steps), 0, room).astype(int)
    return np.stack([image[y:y + HEIGHT, x:x + WIDTH] for y, x in corners])


def fall_snow(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The third snow model over a clean clip (T, H, W, 3); see the module docstring.

    Flakes fill a band twice the frame's height and wrap around it, so the frame never empties. A
    flake's opacity in a frame is the mean of its footprint over ``SUBSTEPS`` positions along its
    path during the exposure: slow flakes stay round, fast ones streak and fade. Flakes combine by
    the maximum of their opacities; the frame is blended toward the snow's colour by it.
    """
    frames, height, width, _ = clean.shape
    band = np.array([2 * height, width])
    count = int(rng.uniform(1000, 9000) * 2 * height * width / 1e6)  # flakes per megapixel of the band
    radius = np.exp(rng.uniform(np.log(0.6), np.log(rng.uniform(1.5, 4.0)), count))
    opacity = rng.uniform(0.4, 0.95, count)
    speed = rng.uniform(1.5, rng.uniform(3.0, 10.0), count) * (0.5 + radius / radius.max())  # big flakes fall faster
    velocity = np.stack([speed, rng.uniform(-3.0, 3.0) + rng.normal(0.0, 0.5, count)], 1)  # pixels per frame
    position = rng.uniform(0, 1, (count, 2)) * band
    colour = 1.0 - rng.uniform(0.0, 0.1, 3).astype(np.float32)
    ys, xs = np.mgrid[:height, :width]
    snowy = np.empty_like(clean)
    for t in range(frames):
        exposure = np.zeros((height, width), np.float32)
        for step in range(SUBSTEPS):
            alpha = np.zeros((height, width), np.float32)
            for (y, x), r, a in zip((position + velocity * step / SUBSTEPS) % band, radius, opacity, strict=True):
                reach = int(3 * r) + 1
                y0, y1 = max(int(y) - reach, 0), min(int(y) + reach + 1, height)
                x0, x1 = max(int(x) - reach, 0), min(int(x) + reach + 1, width)
                if y0 < y1 and x0 < x1:
                    d2 = (ys[y0:y1, x0:x1] - y) ** 2 + (xs[y0:y1, x0:x1] - x) ** 2
                    alpha[y0:y1, x0:x1] = np.maximum(alpha[y0:y1, x0:x1], a * np.exp(-d2 / (2 * r * r)))
            exposure += alpha / SUBSTEPS
        snowy[t] = clean[t] * (1 - exposure[..., None]) + exposure[..., None] * colour
        position = (position + velocity) % band
    return np.clip(snowy, 0.0, 1.0)


def unseen_clips() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(snowy, clean) clips (T, 3, H, W) in [0, 1] per photograph, 8-bit like any video, seeded by position."""
    clips = {}
    for index, (name, path) in enumerate(PHOTOGRAPHS.items()):
        rng = np.random.default_rng([SEED, index])
        clean = pan(load_photograph(path), rng)
        snowy = fall_snow(clean, rng)
        clips[name] = (quantize_8bit(torch.from_numpy(snowy).permute(0, 3, 1, 2).contiguous()),
                       quantize_8bit(torch.from_numpy(clean).permute(0, 3, 1, 2).contiguous()))
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="release")
    parser.add_argument("--model", default="release", help="checkpoint, models:/ URI or `release`")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(CPU_THREADS)
    cfg = load_config(profile=args.profile)
    model, meta = load_model_ref(args.model, cfg)
    model.eval()

    def network(clip: torch.Tensor, gate: SnowGate | None = None) -> torch.Tensor:
        with torch.no_grad():
            return quantize_8bit(desnow_clip(model, clip, cfg.data.frames_per_clip, gate))

    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        **BASELINES, "network": network,
        "network + snow gate": lambda clip: network(clip, cfg.inference.snow_gate)}
    clips = unseen_clips()
    scores: dict[str, list[float]] = {name: [] for name in methods}
    for clip_id, (snowy, clean) in clips.items():
        for name, method in methods.items():
            scores[name].append(psnr(method(snowy), clean))
        print(f"{clip_id}: " + ", ".join(f"{name} {values[-1]:.2f} dB" for name, values in scores.items()), flush=True)
    seed, resamples, confidence = cfg.seed, cfg.eval.bootstrap, cfg.eval.confidence
    snow_free = {clip_id: clean for clip_id, (_, clean) in clips.items()}  # the same clips without their snow
    result: dict[str, Any] = {
        "model": args.model, "checkpoint_sha256": meta["checkpoint_sha256"], "clips": list(clips),
        "frames": FRAMES, "size": [HEIGHT, WIDTH],
        "psnr": {name: bootstrap_mean(values, resamples, confidence, seed).to_dict()
                 for name, values in scores.items()},
        "gains": {f"{name} - {base}": paired_difference(scores[name], scores[base], resamples, confidence,
                                                        seed).to_dict()
                  for name in ("network", "network + snow gate") for base in ("input", "median3")},
        "per_clip_psnr": {name: dict(zip(clips, np.round(values, 3).tolist(), strict=True))
                          for name, values in scores.items()},
        "do_no_harm": {name: {key: value for key, value in harm(methods[name], snow_free).items() if key != "bar"}
                       for name in ("network", "network + snow gate")},
        "bar": BAR,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("psnr", "gains")}, indent=2))
    for name, summary in result["do_no_harm"].items():
        print(f"do no harm, {name}: lowest {summary['min_psnr_vs_input_db']:.1f} dB, "
              f"largest luminance change {100 * summary['max_abs_luminance_change']:.1f} %")


if __name__ == "__main__":
    main()
