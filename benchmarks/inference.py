"""Inference benchmark of the VDN: size, compute, streaming speed and memory over stream length.

    python benchmarks/inference.py --output benchmarks/results/inference.json

For each params.yaml profile given (default ``demo``, ``release`` and ``paper``), with random weights
(``model.encoder_weights`` forced to ``none``), it writes one object with (``release``: the architecture
of the shipped release model, read from its checkpoint, e.g. an output ensemble of the profile's networks):

- ``params``: trainable parameters.
- ``gflops_per_frame``: FLOPs (torch.utils.flop_counter) of one output frame in the
  streaming steady state at 256x256: encoding one new frame plus restoring one N_f-frame
  window's centre frame (what ``desnow_frames`` spends per frame).
- ``fps_256_cpu``, ``fps_480p_cpu`` (854x480): frames/s of ``desnow_frames`` on pre-decoded
  synthetic frames with ``torch.set_num_threads(2)``, best of ``--repeats`` runs after a
  warm-up (all runs are listed under ``runs``); ``fps_*_cuda`` the same on CUDA, or null;
  ``fps_*_cpu_gated`` with the snow gate (its pass over the frames and its blending) included.
- ``rss_mb_100_frames``, ``rss_mb_1000_frames``: peak RSS (``VmHWM``, see ``peak_rss_mb``)
  of a fresh subprocess desnowing a synthetic 128x128 stream of that many frames; equal
  values show that memory does not grow with video length (``rss_growth``: 1000 vs 100).
- ``cpu_ms_per_frame_256_1thread``: process CPU time per streamed 256x256 frame on one
  thread, a measure of work that, unlike wall-clock fps, hardly moves when other
  processes share the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semivdn.config import Config, Model, config_from_dict, load_config
from semivdn.data.video import to_tensor
from semivdn.inference import desnow_frames
from semivdn.models import create_model
from semivdn.models.checkpoint import read_checkpoint_header
from semivdn.models.vdn import VDN
from semivdn.release import release_checkpoint
from semivdn.snow_gate import stream_gates

CPU_THREADS = 2
RSS_SIZE = 128


def build(model_cfg: Model) -> VDN:
    torch.manual_seed(0)
    return create_model(dataclasses.replace(model_cfg, encoder_weights="none")).eval()


def synthetic_frames(count: int, height: int, width: int) -> Iterator[np.ndarray]:
    """Moving random texture, generated lazily so the stream itself takes no memory."""
    base = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    for index in range(count):
        yield np.roll(base, shift=(index, 2 * index), axis=(0, 1))


def gflops_per_frame(model: VDN, n_frames: int, size: int = 256) -> float:
    frame = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        features = model.encode(frame)
        window = features.unsqueeze(0).expand(1, n_frames, *features.shape[1:])
        clip = frame.unsqueeze(0).expand(1, n_frames, -1, -1, -1)
        counter = FlopCounterMode(display=False)
        with counter:
            model.encode(frame)
            model.restore(window, clip, frame_index=n_frames // 2)
    return counter.get_total_flops() / 1e9


def streaming_fps(model: VDN, cfg: Config, height: int, width: int, frames: int, repeats: int, device: str,
                  clock: Callable[[], float] = time.perf_counter, gated: bool = False) -> tuple[float, list[float]]:
    """Best and all frames/s of ``desnow_frames`` over ``frames`` pre-made frames, timed by ``clock``;
    ``gated``: with the snow gate's first pass over the frames and its blending, as `semivdn desnow` runs."""
    stream = list(synthetic_frames(frames, height, width))

    def snow_gates(count: int) -> torch.Tensor | None:
        if not gated:
            return None
        return stream_gates((to_tensor(frame) for frame in stream[:count]), cfg.inference.snow_gate)

    def run(count: int) -> float:
        start = clock()
        outputs = desnow_frames(model, stream[:count], n_frames=cfg.data.frames_per_clip, device=device,
                                batch_frames=cfg.inference.batch_frames, frame_gates=snow_gates(count))
        produced = sum(1 for _ in outputs)
        return produced / (clock() - start)

    run(min(frames, cfg.inference.batch_frames))  # warm-up: allocator, oneDNN/cuDNN kernel selection
    runs = [round(run(frames), 3) for _ in range(repeats)]
    return max(runs), runs


def cpu_ms_per_frame_one_thread(model: VDN, cfg: Config, repeats: int) -> float:
    torch.set_num_threads(1)
    try:
        best, _ = streaming_fps(model, cfg, 256, 256, 12, repeats, "cpu", clock=time.process_time)
    finally:
        torch.set_num_threads(CPU_THREADS)
    return round(1000.0 / best, 1)


def measure_rss_in_child(cfg: Config, frames: int) -> float:
    spec = {"model": dataclasses.asdict(cfg.model), "n_frames": cfg.data.frames_per_clip,
            "batch_frames": cfg.inference.batch_frames, "frames": frames}
    done = subprocess.run([sys.executable, __file__, "--child-rss", json.dumps(spec)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"RSS child for {frames} frames failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["rss_mb"]


def peak_rss_mb() -> float:
    """Peak RSS of this process image.

    Linux keeps ``ru_maxrss`` across fork+exec, so a child of a big parent would report the
    parent's peak; ``VmHWM`` belongs to the new address space and starts afresh at exec.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; bytes/1024 on macOS


def child_rss(spec: dict[str, Any]) -> None:
    """Run in a fresh process: desnow a synthetic stream and print the peak RSS."""
    torch.set_num_threads(CPU_THREADS)
    model = build(config_from_dict({"model": spec["model"]}, profile="demo").model)
    stream = synthetic_frames(spec["frames"], RSS_SIZE, RSS_SIZE)
    produced = sum(1 for _ in desnow_frames(model, stream, n_frames=spec["n_frames"],
                                            batch_frames=spec["batch_frames"]))
    print(json.dumps({"frames": produced, "rss_mb": round(peak_rss_mb(), 1)}))


def shipped_architecture(cfg: Config) -> Config:
    """The release profile trains single networks; what ships may combine several (the checkpoint's header)."""
    if cfg.profile != "release":
        return cfg
    return dataclasses.replace(cfg, model=read_checkpoint_header(release_checkpoint()).model_config)


def benchmark_profile(cfg: Config, repeats: int) -> dict[str, Any]:
    profile = cfg.profile
    model = build(cfg.model)
    n_frames = cfg.data.frames_per_clip
    result: dict[str, Any] = {
        "model": dataclasses.asdict(dataclasses.replace(cfg.model, encoder_weights="none")),
        "frames_per_clip": n_frames,
        "params": sum(p.numel() for p in model.parameters()),
        "gflops_per_frame": round(gflops_per_frame(model, n_frames), 3),
    }
    runs: dict[str, list[float]] = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in ("cpu", "cuda"):
        for name, (height, width, frames) in {"256": (256, 256, 24), "480p": (480, 854, 6)}.items():
            key = f"fps_{name}_{device}"
            if device not in devices:
                result[key] = None
                continue
            print(f"[{profile}] {key} ...", file=sys.stderr, flush=True)
            result[key], runs[key] = streaming_fps(model, cfg, height, width, frames, repeats, device)
            if device == "cpu":  # what `semivdn desnow` spends with its default snow gate
                result[f"{key}_gated"], runs[f"{key}_gated"] = streaming_fps(model, cfg, height, width, frames,
                                                                             repeats, device, gated=True)
    model.to("cpu")
    result["cpu_ms_per_frame_256_1thread"] = cpu_ms_per_frame_one_thread(model, cfg, repeats)
    for frames in (100, 1000):
        print(f"[{profile}] peak RSS, {frames} frames ...", file=sys.stderr, flush=True)
        result[f"rss_mb_{frames}_frames"] = measure_rss_in_child(cfg, frames)
    result["rss_growth"] = round(result["rss_mb_1000_frames"] / result["rss_mb_100_frames"] - 1.0, 4)
    result["runs"] = runs
    print(f"[{profile}] {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, help="JSON file to write")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--profiles", nargs="+", default=["demo", "release", "paper"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (the best is reported)")
    parser.add_argument("--child-rss", metavar="SPEC_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(json.loads(args.child_rss))
        return
    if args.output is None:
        parser.error("--output is required")
    torch.set_num_threads(CPU_THREADS)
    environment = {"torch": torch.__version__, "cpu_threads": CPU_THREADS, "cpu_count": os.cpu_count(),
                   "processor": platform.processor() or platform.machine(),
                   "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                   "load_average_start": os.getloadavg()}
    chosen = [shipped_architecture(load_config(args.params, profile)) for profile in args.profiles]  # fail fast
    configs = {cfg.profile: benchmark_profile(cfg, args.repeats) for cfg in chosen}
    environment["load_average_end"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"environment": environment, "configs": configs}, indent=2) + "\n")
    print(json.dumps(configs, indent=2))


if __name__ == "__main__":
    main()
