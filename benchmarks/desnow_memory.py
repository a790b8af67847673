"""Peak memory of ``semivdn desnow`` on a 1920x1080 video at default settings.

    python benchmarks/desnow_memory.py --output benchmarks/results/desnow_memory.json

Writes a synthetic 1080p video, saves a randomly initialised model of the params profile
(``model.encoder_weights`` forced to ``none``; memory does not depend on the weights), and runs
the real CLI (``semivdn desnow``, default tile and batch settings of the profile) in a fresh
interpreter that reports its own peak RSS (``VmHWM``, which starts afresh at exec). The result
is compared with the bound from issue 13 (2.5 GB); the exit code is 1 when it is exceeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semivdn.config import load_config
from semivdn.data.video import FrameWriter
from semivdn.models import create_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
BOUND_MB = 2500.0
_CHILD = """
import sys
from semivdn.cli import main
code = main(sys.argv[1:])
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print("PEAK_RSS_KB", hwm.split()[1], file=sys.stderr)
sys.exit(code)
"""


def measure(profile: str, frames: int, height: int, width: int, threads: int) -> dict[str, object]:
    cfg = load_config(ROOT / "params.yaml", profile)
    with tempfile.TemporaryDirectory(prefix="desnow-memory-") as tmp:
        folder = Path(tmp)
        model_cfg = dataclasses.replace(cfg.model, encoder_weights="none")
        checkpoint = save_checkpoint(folder / "model.safetensors", create_model(model_cfg), model_cfg)
        rng = np.random.default_rng(0)
        with FrameWriter(folder / "in.mp4", fps=25) as writer:
            for _ in range(frames):
                writer.write(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        argv = ["desnow", str(folder / "in.mp4"), "-o", str(folder / "out.mp4"), "--model", str(checkpoint),
                "--params", str(ROOT / "params.yaml"), "--profile", profile]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, env=env,
                              cwd=folder)
        if done.returncode != 0:
            raise SystemExit(f"desnow failed ({done.returncode}): {done.stderr[-2000:]}")
        peak_kb = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")))
        summary = json.loads(done.stdout)
    peak_mb = round(peak_kb / 1024, 1)
    return {"profile": profile, "height": height, "width": width, "frames": frames, "tile": cfg.inference.tile,
            "batch_frames": cfg.inference.batch_frames, "max_batch_pixels": cfg.inference.max_batch_pixels,
            "threads": threads, "peak_rss_mb": peak_mb, "bound_mb": BOUND_MB, "within_bound": peak_mb <= BOUND_MB,
            "seconds": summary["seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", help="write the result JSON here")
    args = parser.parse_args()
    result = measure(args.profile, args.frames, 1080, 1920, args.threads)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if result["within_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
