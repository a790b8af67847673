"""Train release-stage candidates side by side on one GPU inside a wall-clock budget.

The release model is small: one training process leaves most of a big GPU idle. So candidates
that differ in a setting or two train at once, one ``semivdn train`` process each, and the val
split (never test) picks one afterwards (README, "The release model"). Each candidate's iteration
count is fitted to the budget from a short calibration run of all of them together, so every
poly learning-rate schedule runs to its end instead of being cut off by the deadline.

    python infra/training/gpu_candidates.py --init models/release/stage3/model.safetensors \\
        --budget 480 --out /tmp/gpu --set train.batch_size=16 --set data.crop=128 \\
        --candidate a:data.identity_fraction=0.55 --candidate b:data.identity_fraction=0.4 \\
        --candidate big:init=none,model.dim=96,model.num_ptb=2

Writes, per candidate, OUT/NAME.tar.gz (model.safetensors, train metrics JSON with its recipe, loss
curve and log; the last checkpoint instead of the model if the deadline stopped it: each a few MB,
so they fit the lent machine's 16 MB per returned file) and OUT/calibration.json with the measured
rates. The runs themselves stay in --work.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from semivdn.train.state import STATE_FILE  # the last checkpoint, kept if the deadline stopped a run

VARIANT = "M2+ft"  # supervised fine-tuning: a warm restart from --init, like `make release`'s stages 2 to 5
LOG_EVERY = 10
FINAL_CHECKS = 4  # validations (and checkpoints) in a final run; a calibration run validates once, at its end


def tracking_store(out: Path) -> str:
    """Each candidate's own MLflow store: processes running at once would wait on one SQLite file's lock."""
    return f"sqlite:///{out / 'mlruns.db'}"


def steps_per_second(out: Path, run_id: str) -> float:
    """Training speed alone, from the timestamps MLflow gave the logged losses: start-up and the final
    validation, which the run's own it/s includes, would make a short calibration run look slow."""
    from mlflow import MlflowClient

    history = sorted(MlflowClient(tracking_store(out)).get_metric_history(run_id, "train_loss"),
                     key=lambda metric: metric.step)
    first, last = history[0], history[-1]  # logged before the run's one validation, at its end
    return (last.step - first.step) / max((last.timestamp - first.timestamp) / 1000, 1e-3)


def train_command(args: argparse.Namespace, overrides: list[str], out: Path, iters: int, checks: int) -> list[str]:
    init = next((item.partition("=")[2] for item in overrides if item.startswith("init=")), args.init)
    overrides = [item for item in overrides if not item.startswith("init=")]
    every = max(iters // checks, 1)  # validation, checkpoint and sample image this many times in the run
    settings = [*args.set, *overrides, f"variants.{VARIANT}.iters={iters}", f"train.val_every={every}",
                f"train.checkpoint_every={every}", f"train.image_every={every}", f"train.log_every={LOG_EVERY}",
                f"mlflow.tracking_uri={tracking_store(out)}", f"mlflow.artifact_location={out / 'mlartifacts'}"]
    return [sys.executable, "-m", "semivdn.cli", "train", "--profile", args.profile, "--variant", VARIANT,
            "--raw", args.raw, "--curated", args.curated, "--init", init, "--out", str(out),
            "--metrics", str(out / "metrics.json"), "--curve", str(out / "curve.csv"),
            *[item for setting in settings for item in ("--set", setting)]]


def run_all(args: argparse.Namespace, candidates: dict[str, list[str]], root: Path, iters: dict[str, int],
            checks: int, deadline: float) -> dict[str, dict]:
    """Start every candidate at once; wait until all end or ``deadline`` (then stop the rest)."""
    procs = {}
    for name, overrides in candidates.items():
        out = root / name
        out.mkdir(parents=True, exist_ok=True)
        log = (out / "train.log").open("w")
        procs[name] = (subprocess.Popen(train_command(args, overrides, out, iters[name], checks), stdout=log,
                                        stderr=subprocess.STDOUT), time.monotonic(), log)
    results: dict[str, dict] = {}
    while procs:
        time.sleep(2)
        for name, (proc, began, log) in list(procs.items()):
            if proc.poll() is None and time.monotonic() < deadline:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            metrics_file = root / name / "metrics.json"
            metrics = json.loads(metrics_file.read_text()) if proc.returncode == 0 and metrics_file.is_file() else {}
            results[name] = {"returncode": proc.returncode, "wall_s": round(time.monotonic() - began, 1), **metrics}
            print(f"{name}: exit {proc.returncode}, {results[name]['wall_s']} s, "
                  f"{metrics.get('it_per_s', '?')} it/s, val PSNR {metrics.get('val_psnr', '?')}", flush=True)
            del procs[name]
    return results


def pack(runs: Path, out: Path, names: list[str], summary: dict) -> None:
    """OUT/calibration.json and one OUT/NAME.tar.gz per candidate (the last checkpoint if it has no model)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(summary, indent=2, default=str))
    for name in names:
        run = runs / name
        files = ["model.safetensors" if (run / "model.safetensors").is_file() else STATE_FILE,
                 "metrics.json", "curve.csv", "train.log"]
        with tarfile.open(out / f"{name}.tar.gz", "w:gz") as tar:
            for file in files:
                if (run / file).is_file():
                    tar.add(run / file, arcname=f"{name}/{file}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", required=True,
                        help="checkpoint the candidates start from (a candidate's init=PATH or init=none overrides it)")
    parser.add_argument("--profile", default="release")
    parser.add_argument("--calibration-iters", type=int, default=100)
    parser.add_argument("--raw", default="data/release/raw")
    parser.add_argument("--curated", default="data/release/curated")
    parser.add_argument("--budget", type=float, required=True, help="seconds from now until every run has ended")
    parser.add_argument("--out", required=True, help="folder for NAME.tar.gz and calibration.json")
    parser.add_argument("--work", help="folder for the runs (default: OUT/runs)")
    parser.add_argument("--set", action="append", default=[], help="param override shared by all candidates")
    parser.add_argument("--candidate", action="append", required=True,
                        help="NAME:KEY=VALUE,KEY=VALUE — one candidate and its own param overrides; init=PATH "
                             "or init=none (from scratch, e.g. for a bigger model) replaces --init")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget
    candidates = {}
    for spec in args.candidate:
        name, _, overrides = spec.partition(":")
        candidates[name] = [item for item in overrides.split(",") if item]
    root = Path(args.work) if args.work else Path(args.out) / "runs"

    calibration = run_all(args, candidates, root / "calibration", dict.fromkeys(candidates, args.calibration_iters),
                          1, deadline)
    failed = [name for name, result in calibration.items() if result["returncode"] != 0]
    for name in failed:
        print(f"{name} failed calibration:\n" + (root / "calibration" / name / "train.log").read_text()[-3000:])
        del candidates[name]
    if not candidates:
        return 1
    rates = {name: steps_per_second(root / "calibration" / name, calibration[name]["mlflow_run_id"])
             for name in candidates}
    # the slowest start-up and finish (process, data, validation, model logging) of the calibration runs
    overhead = max(calibration[name]["wall_s"] - args.calibration_iters / rates[name] for name in candidates)
    left = deadline - time.monotonic() - 2 * overhead - 20  # FINAL_CHECKS validations instead of 1; 20 s to pack
    iters = {name: int(rates[name] * left * 0.9) // 100 * 100 for name in candidates}
    print(f"steps/s {rates}, overhead {overhead:.0f} s, {left:.0f} s to train: iterations {iters}", flush=True)
    if min(iters.values()) < 100:
        print("too little time left for a useful run")
        return 1
    results = run_all(args, candidates, root / "final", iters, FINAL_CHECKS, deadline - 15)

    summary = {"calibration": calibration, "iters": iters, "results": results, "candidates": candidates,
               "shared": args.set}
    pack(root / "final", Path(args.out), list(candidates), summary)
    return 0 if all(result["returncode"] == 0 for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
