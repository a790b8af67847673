"""Training throughput per variant: optimisation steps per second of ``Trainer.step``.

    python benchmarks/train_throughput.py --output benchmarks/results/train_throughput.json

For each variant of the chosen profile (default ``demo``) it times ``--rounds`` rounds of
``--steps`` calls of the real ``Trainer.step`` (losses, mean teacher, DCR and all) on synthetic
in-memory batches of the profile's batch sizes, crop and clip length (unlabelled clips only at the steps
where the teacher labels, ``train.teacher_reuse``, as the training loop loads them), after ``--warmup`` untimed
steps, with ``torch.set_num_threads(2)`` (the project's reference machine). Variants take turns
round by round and each keeps its best round, so load from other processes hits all alike.
Data loading is excluded: it is the same for every variant. ``ratio_to_M2`` is the variant's it/s over
M2's, the number the throughput target is stated in; ``clips_ratio_to_M2`` compares clips trained on
per second instead, since a mean-teacher step (M3, full) puts its unlabelled clips through the student
as well as its labelled ones and runs the teacher on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semivdn.config import Config, load_config
from semivdn.train.distributed import DistContext
from semivdn.train.loop import Batch, Trainer, numpy_blas_single_threaded

CPU_THREADS = 2


def synthetic_batch(cfg: Config, generator: torch.Generator) -> Batch:
    """Random clips of the profile's shape: (B, N_f, 3, crop, crop) labelled, clean and unlabelled."""
    train, data = cfg.train, cfg.data
    labelled = (train.batch_size, data.frames_per_clip, 3, data.crop, data.crop)
    unlabelled = (train.unlabelled_batch_size, *labelled[1:])
    clean = torch.rand(labelled, generator=generator)
    snowy = (clean + 0.3 * torch.rand(labelled, generator=generator)).clamp(0, 1)
    return Batch(snowy, clean, torch.rand(unlabelled, generator=generator))


class VariantTimer:
    """A trainer of one variant on fixed synthetic batches, timed a round of ``steps`` at a time."""

    def __init__(self, cfg: Config, variant: str) -> None:
        cfg = dataclasses.replace(cfg, train=cfg.train_for(variant))  # the variant's iters/lr, as run_training does
        self.trainer = Trainer(cfg, variant, torch.device("cpu"), DistContext())
        self.trainer.start_teacher()
        generator = torch.Generator().manual_seed(0)
        self.batches = [synthetic_batch(cfg, generator) for _ in range(4)]
        self.iteration = 0

    def clips_per_step(self) -> dict[str, int]:
        """Clips of one step: labelled (student), unlabelled (student and teacher), through the student in all."""
        batch = self.batches[0]
        labelled = batch.labelled_snowy.shape[0]
        unlabelled = batch.real.shape[0] if self.trainer.teacher is not None and batch.real is not None else 0
        return {"labelled_clips": labelled, "unlabelled_clips": unlabelled, "student_clips": labelled + unlabelled}

    def run(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        began = time.perf_counter()
        for _ in range(steps):
            batch = self.batches[self.iteration % len(self.batches)]
            if not self.trainer.labels_at(self.iteration):  # as the training loop: no unlabelled batch is loaded
                batch = dataclasses.replace(batch, real=None)
            self.trainer.step(batch, self.iteration)
            self.iteration += 1
        return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, as `semivdn train --set` (e.g. train.teacher_reuse=1)")
    args = parser.parse_args()
    torch.set_num_threads(CPU_THREADS)
    cfg = load_config(args.params, args.profile, args.overrides)
    timers = {name: VariantTimer(cfg, name) for name in cfg.variants}
    rounds: dict[str, list[float]] = {name: [] for name in timers}
    with numpy_blas_single_threaded():  # as run_training does
        for timer in timers.values():
            timer.run(args.warmup)
        for _ in range(args.rounds):  # interleaved, best round kept: robust to other load on the machine
            for name, timer in timers.items():
                rounds[name].append(timer.run(args.steps))
    results = {name: {"it_per_s": round(1 / min(times), 3), "ms_per_step": round(1000 * min(times), 1),
                      "ms_per_step_rounds": [round(1000 * t, 1) for t in times],
                      **timers[name].clips_per_step()} for name, times in rounds.items()}
    for values in results.values():
        values["student_clips_per_s"] = round(values["it_per_s"] * values["student_clips"], 2)
    reference = results.get("M2", {})
    for values in results.values():
        for key, ratio in (("it_per_s", "ratio_to_M2"), ("student_clips_per_s", "clips_ratio_to_M2")):
            values[ratio] = round(values[key] / reference[key], 3) if reference else None
    report = {"profile": args.profile, "overrides": args.overrides, "teacher_reuse": cfg.train.teacher_reuse,
              "threads": CPU_THREADS, "steps": args.steps, "rounds": args.rounds,
              "machine": platform.machine(),
              "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
              "variants": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
