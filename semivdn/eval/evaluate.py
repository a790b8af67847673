"""Evaluate one method on the curated clips of a split (paper §4.3).

Paired metrics (PSNR, SSIM, LPIPS) are scored on every frame of every paired clip
against its ground truth, NR metrics (NIMA, MUSIQ) on every frame of the real
clips. Outputs are quantized to 8 bit first (what a user's video would hold).
Each clip is averaged for ``per_clip.csv``; the summary averages over all frames,
as the paper does. A metric that cannot be computed (weights missing, not
configured, no clips of its kind) is null with its reason under ``unavailable``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from tqdm import tqdm

from semivdn.config import Config
from semivdn.data.datasets import ClipRef, clip_refs, load_manifest, read_clip
from semivdn.data.video import to_uint8
from semivdn.devices import resolve_device
from semivdn.eval.baselines import BASELINES, Method
from semivdn.eval.grids import save_grid
from semivdn.eval.metrics import Metric, create_metric
from semivdn.eval.specs import METRIC_ORDER, METRICS, SUMMARY_FILE
from semivdn.tracking import configure_mlflow, existing_run

log = logging.getLogger(__name__)

PER_CLIP = "per_clip.csv"
GRIDS = "grids"


def _load_method(cfg: Config, model_ref: str, device: torch.device) -> tuple[Method, dict[str, Any]]:
    """A clip (T, 3, H, W) -> desnowed clip function, and the model's meta."""
    if model_ref in BASELINES:
        return BASELINES[model_ref], {"variant": model_ref}
    from semivdn.inference import desnow_clip
    from semivdn.registry import load_model_ref

    model, meta = load_model_ref(model_ref, cfg)
    model = model.to(device).eval()

    def desnow(clip: torch.Tensor) -> torch.Tensor:
        return desnow_clip(model, clip.to(device), cfg.data.frames_per_clip).cpu()

    return desnow, meta


def _default_name(model_ref: str, meta: dict[str, Any]) -> str:
    if model_ref in BASELINES:
        return model_ref
    return str(meta.get("variant") or Path(model_ref).stem)


def _create_metrics(cfg: Config, names: tuple[str, ...], paired: bool, device: torch.device) -> list[Metric]:
    key = "eval.metrics_paired" if paired else "eval.metrics_real"
    for name in names:
        if name not in METRICS or METRICS[name].paired != paired:
            kind = "paired (full-reference)" if paired else "no-reference"
            known = sorted(n for n, spec in METRICS.items() if spec.paired == paired)
            raise ValueError(f"{key}: {name!r} is not a {kind} metric; use one of {known}")
    return [create_metric(name, cfg, device) for name in names]


def _quantize(frames: torch.Tensor) -> torch.Tensor:
    return frames.clamp(0, 1).mul(255).round().div(255)


def _score(metrics: list[Metric], output: torch.Tensor, reference: torch.Tensor | None,
           batch: int) -> dict[str, list[float]]:
    """Per-frame scores of every available metric, ``batch`` frames at a time."""
    scores: dict[str, list[float]] = {}
    for metric in (m for m in metrics if m.available):
        values: list[float] = []
        for start in range(0, output.shape[0], batch):
            ref = None if reference is None else reference[start:start + batch]
            values.extend(metric(output[start:start + batch], ref).tolist())
        scores[metric.name] = values
    return scores


def _grid_panels(name: str, snowy: torch.Tensor, output: torch.Tensor,
                 clean: torch.Tensor | None) -> list[tuple[str, Any]]:
    middle = snowy.shape[0] // 2
    panels = [("input", to_uint8(snowy[middle])), (name, to_uint8(output[middle]))]
    if clean is not None:
        panels.append(("ground truth", to_uint8(clean[middle])))
    return panels


def _evaluate_clips(clips: list[ClipRef], source: str, method: Method, metrics: list[Metric], name: str,
                    cfg: Config, grids_dir: Path) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    rows: list[dict[str, Any]] = []
    frame_scores: dict[str, list[float]] = {m.name: [] for m in metrics if m.available}
    for index, clip in enumerate(tqdm(clips, desc=f"evaluate {name} ({source})", unit="clip")):
        snowy = read_clip(clip.snowy)
        output = _quantize(method(snowy))
        clean = read_clip(clip.clean) if clip.clean is not None else None
        if output.shape != snowy.shape or (clean is not None and clean.shape != snowy.shape):
            raise ValueError(f"clip {clip.clip_id}: input {tuple(snowy.shape)}, output {tuple(output.shape)} and "
                             f"ground truth {None if clean is None else tuple(clean.shape)} must have one shape")
        scores = _score(metrics, output, clean, cfg.inference.batch_frames)
        for metric_name, values in scores.items():
            frame_scores[metric_name].extend(values)
        rows.append({"clip_id": clip.clip_id, "source": source, "frames": snowy.shape[0],
                     **{m: sum(v) / len(v) for m, v in scores.items()}})
        if index < cfg.eval.grid_clips:
            save_grid(grids_dir / f"{clip.clip_id.replace('/', '__')}.png", _grid_panels(name, snowy, output, clean))
    return rows, frame_scores


def _summarize(cfg: Config, split: str, paired_clips: list[ClipRef], real_clips: list[ClipRef],
               metrics: list[Metric], frame_scores: dict[str, list[float]]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, float | None] = {}
    unavailable: dict[str, str] = {}
    by_name = {m.name: m for m in metrics}
    for name in METRIC_ORDER:
        paired = METRICS[name].paired
        configured = cfg.eval.metrics_paired if paired else cfg.eval.metrics_real
        clips = paired_clips if paired else real_clips
        values[name] = None
        if name not in configured:
            unavailable[name] = f"not listed in eval.{'metrics_paired' if paired else 'metrics_real'}"
        elif not clips:
            unavailable[name] = f"no {'paired' if paired else 'real'} clips in split {split!r}"
        elif not by_name[name].available:
            unavailable[name] = str(by_name[name].unavailable)
        else:
            scores = frame_scores[name]
            values[name] = sum(scores) / len(scores)
            if not math.isfinite(values[name]):
                raise RuntimeError(f"metric {name} is not finite ({values[name]}) on split {split!r}")
    return values, unavailable


def _log_to_mlflow(cfg: Config, meta: dict[str, Any], name: str, split: str, summary: dict[str, Any],
                   out_dir: Path) -> str:
    """Log to the variant's training run when the checkpoint names one, else to a new run ``eval-<name>``."""
    configure_mlflow(cfg)
    run_id = existing_run(meta.get("mlflow_run_id"))
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"eval-{name}") as run:
        mlflow.log_metrics({f"{split}_{m}": summary[m] for m in METRIC_ORDER if summary[m] is not None})
        mlflow.set_tags({f"{split}_{m}.unavailable": reason[:5000] for m, reason in summary["unavailable"].items()})
        mlflow.set_tags({"eval.name": name, "eval.model_ref": summary["model_ref"]})
        mlflow.log_artifacts(str(out_dir), artifact_path=f"eval/{split}/{name}")
        return run.info.run_id


def evaluate(cfg: Config, model_ref: str, name: str | None, split: str, raw_root: Path, curated: Path,
             out_dir: Path) -> dict[str, Any]:
    """Score ``model_ref`` (checkpoint, ``models:/`` URI, ``input`` or ``median3``) on ``split``; write
    ``per_clip.csv``, ``summary.json`` and ``grids/`` under ``out_dir``; log them to MLflow."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    manifest = load_manifest(curated)
    paired_clips = [c for c in clip_refs(manifest, raw_root, "paired", split) if c.clean is not None]
    real_clips = clip_refs(manifest, raw_root, "real", split)
    if not paired_clips and not real_clips:
        raise ValueError(f"{curated}: the manifest has no clips in split {split!r}")
    device = resolve_device(cfg.train.device)
    method, meta = _load_method(cfg, model_ref, device)
    name = name or _default_name(model_ref, meta)
    paired_metrics = _create_metrics(cfg, cfg.eval.metrics_paired, True, device) if paired_clips else []
    real_metrics = _create_metrics(cfg, cfg.eval.metrics_real, False, device) if real_clips else []

    out_dir.mkdir(parents=True, exist_ok=True)
    grids_dir = out_dir / GRIDS
    paired_rows, paired_scores = _evaluate_clips(paired_clips, "paired", method, paired_metrics, name, cfg, grids_dir)
    real_rows, real_scores = _evaluate_clips(real_clips, "real", method, real_metrics, name, cfg, grids_dir)
    values, unavailable = _summarize(cfg, split, paired_clips, real_clips, paired_metrics + real_metrics,
                                     {**paired_scores, **real_scores})
    paired_frames = sum(row["frames"] for row in paired_rows)
    real_frames = sum(row["frames"] for row in real_rows)
    summary: dict[str, Any] = {
        "name": name, "variant": str(meta.get("variant", name)), "model_ref": model_ref,
        "checkpoint_sha256": meta.get("checkpoint_sha256"),  # what `register` checks: these scores are this file's
        "split": split, **values, "unavailable": unavailable, "frames": paired_frames + real_frames,
        "paired_frames": paired_frames, "real_frames": real_frames,
        "paired_clips": len(paired_rows), "real_clips": len(real_rows),
    }
    columns = ["clip_id", "source", "frames", *METRIC_ORDER]
    pd.DataFrame(paired_rows + real_rows, columns=columns).to_csv(out_dir / PER_CLIP, index=False)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    summary["mlflow_run_id"] = _log_to_mlflow(cfg, meta, name, split, summary, out_dir)
    log.info("%s on %s: %s", name, split, {m: summary[m] for m in METRIC_ORDER})
    return summary
