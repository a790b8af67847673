"""Evaluate one method on the curated clips of a split, in both domains (paper §4.3).

Two domains, each scored on the split's clips:

- ``paired``: the synthetic paired clips, full-reference metrics (PSNR, SSIM, LPIPS)
  against their clean frames;
- ``real``: the (proxy-)real clips. Full-reference metrics where held-back truth exists
  (``truth_root/<split>/<clip>/``, written by ``semivdn data make`` outside the raw
  folder; training never reads it) and the no-reference metrics (NIQE, NIMA, MUSIQ) on
  every real clip, truth or not.

Outputs are quantized to 8 bit first (what a user's video would hold). Each clip's
frames are averaged into ``per_clip.csv`` (the unit the report and the promotion gate
resample); ``summary.json`` holds, per ``<domain>_<metric>``, the mean over clips with
its 95 % bootstrap interval (:mod:`semivdn.eval.stats`). A metric that cannot be
computed (weights missing, not configured, no clips or no truth) is null with its
reason under ``unavailable``. Metrics score the network itself, as the paper's ablation does;
``do_no_harm`` records how much it changes snow-free clips it never saw
(:mod:`semivdn.eval.harm`), and ``do_no_harm_gated`` how much they change as `semivdn desnow`
runs it, with the snow gate of ``inference.snow_gate`` (:mod:`semivdn.snow_gate`;
``benchmarks/snow_gate.py`` measures the gate's effect on PSNR).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from tqdm import tqdm

from semivdn.config import Config, SnowGate
from semivdn.data.datasets import ClipRef, clip_refs, load_manifest, read_clip
from semivdn.data.video import to_uint8
from semivdn.devices import resolve_device
from semivdn.eval.baselines import BASELINES, Method
from semivdn.eval.grids import save_grid
from semivdn.eval.harm import harm, snow_free_clips
from semivdn.eval.metrics import Metric, create_metric
from semivdn.eval.specs import DOMAINS, GRIDS, METRIC_ORDER, METRICS, PER_CLIP_FILE, SUMMARY_FILE, metric_key
from semivdn.eval.stats import bootstrap_mean
from semivdn.tracking import configure_mlflow, existing_run

log = logging.getLogger(__name__)

PER_CLIP = PER_CLIP_FILE
SPLITS = ("train", "val", "test")


def _load_method(cfg: Config, model_ref: str, device: torch.device) -> tuple[Method, Method | None, dict[str, Any]]:
    """A clip (T, 3, H, W) -> desnowed clip function of the network itself, the same with the snow gate
    of ``cfg`` as `semivdn desnow` runs it (None for a baseline or with the gate off), and the model's meta."""
    if model_ref in BASELINES:
        return BASELINES[model_ref], None, {"variant": model_ref}
    from semivdn.inference import desnow_clip
    from semivdn.registry import load_model_ref

    model, meta = load_model_ref(model_ref, cfg)
    model = model.to(device).eval()

    def desnow(clip: torch.Tensor, gate: SnowGate | None = None) -> torch.Tensor:
        return desnow_clip(model, clip.to(device), cfg.data.frames_per_clip, gate).cpu()

    gated = partial(desnow, gate=cfg.inference.snow_gate) if cfg.inference.snow_gate.enabled else None
    return desnow, gated, meta


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


def quantize_8bit(frames: torch.Tensor) -> torch.Tensor:
    """Round to the 256 levels a saved video holds: every score is of what a user would get."""
    return frames.clamp(0, 1).mul(255).round().div(255)


def _score(metrics: list[Metric], output: torch.Tensor, reference: torch.Tensor | None,
           batch: int) -> dict[str, float]:
    """Each available metric's mean over the clip's frames, ``batch`` frames at a time."""
    scores: dict[str, float] = {}
    for metric in (m for m in metrics if m.available and m.paired == (reference is not None)):
        values: list[float] = []
        for start in range(0, output.shape[0], batch):
            ref = None if reference is None else reference[start:start + batch]
            values.extend(metric(output[start:start + batch], ref).tolist())
        scores[metric.name] = sum(values) / len(values)
    return scores


def _grid_panels(name: str, snowy: torch.Tensor, output: torch.Tensor,
                 clean: torch.Tensor | None) -> list[tuple[str, Any]]:
    middle = snowy.shape[0] // 2
    panels = [("input", to_uint8(snowy[middle])), (name, to_uint8(output[middle]))]
    if clean is not None:
        panels.append(("ground truth", to_uint8(clean[middle])))
    return panels


def with_truth(clips: list[ClipRef], truth_root: Path | None, split: str) -> list[ClipRef]:
    """Real clips with their held-back clean frames attached where ``truth_root/<split>/<clip>`` exists."""
    if truth_root is None:
        return clips
    attached = []
    for clip in clips:
        folder = Path(truth_root) / split / clip.clip_id.rsplit("/", 1)[-1]
        attached.append(dataclasses.replace(clip, clean=folder) if folder.is_dir() else clip)
    return attached


def _evaluate_clips(clips: list[ClipRef], source: str, method: Method, metrics: list[Metric], name: str,
                    cfg: Config, grids_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for index, clip in enumerate(tqdm(clips, desc=f"evaluate {name} ({source})", unit="clip")):
        snowy = read_clip(clip.snowy)
        output = quantize_8bit(method(snowy))
        clean = read_clip(clip.clean) if clip.clean is not None else None
        if output.shape != snowy.shape or (clean is not None and clean.shape != snowy.shape):
            raise ValueError(f"clip {clip.clip_id}: input {tuple(snowy.shape)}, output {tuple(output.shape)} and "
                             f"ground truth {None if clean is None else tuple(clean.shape)} must have one shape")
        scores = _score(metrics, output, clean, cfg.inference.batch_frames) if clean is not None else {}
        if source == "real":
            scores.update(_score(metrics, output, None, cfg.inference.batch_frames))
        rows.append({"clip_id": clip.clip_id, "source": source, "frames": snowy.shape[0],
                     "truth": clean is not None, **scores})
        if index < cfg.eval.grid_clips:
            save_grid(grids_dir / f"{clip.clip_id.replace('/', '__')}.png", _grid_panels(name, snowy, output, clean))
    return rows


def _unavailable(cfg: Config, domain: str, metric: str, split: str, table: pd.DataFrame,
                 built: dict[str, Metric]) -> str | None:
    """Why ``<domain>_<metric>`` has no number, or None when it has one."""
    spec = METRICS[metric]
    listed = cfg.eval.metrics_paired if spec.paired else cfg.eval.metrics_real
    rows = table[table.source == domain]
    if metric not in listed:
        return f"not listed in eval.{'metrics_paired' if spec.paired else 'metrics_real'}"
    if rows.empty:
        return f"no {domain} clips in split {split!r}"
    if spec.paired and not rows.truth.any():
        return f"no {domain} clip in split {split!r} has held-back truth (paths.real_truth)"
    if not built[metric].available:
        return str(built[metric].unavailable)
    return None


def summarize(cfg: Config, split: str, table: pd.DataFrame,
              built: dict[str, Metric]) -> tuple[dict[str, dict[str, Any] | None], dict[str, str]]:
    """Per ``<domain>_<metric>``: the mean over clips with its bootstrap interval, or None and the reason."""
    values: dict[str, dict[str, Any] | None] = {}
    unavailable: dict[str, str] = {}
    for domain in DOMAINS:
        for metric in METRIC_ORDER:
            if domain == "paired" and not METRICS[metric].paired:
                continue  # synthetic pairs are judged against their truth only
            key = metric_key(domain, metric)
            reason = _unavailable(cfg, domain, metric, split, table, built)
            values[key] = None
            if reason is not None:
                unavailable[key] = reason
                continue
            scores = table.loc[(table.source == domain) & table[metric].notna(), metric]
            interval = bootstrap_mean(scores.to_numpy(), cfg.eval.bootstrap, cfg.eval.confidence, cfg.seed)
            if not math.isfinite(interval.mean):
                raise RuntimeError(f"metric {key} is not finite ({interval.mean}) on split {split!r}")
            values[key] = interval.to_dict()
    return values, unavailable


def _log_to_mlflow(cfg: Config, meta: dict[str, Any], name: str, split: str, summary: dict[str, Any],
                   out_dir: Path) -> str:
    """Log to the variant's training run when the checkpoint names one, else to a new run ``eval-<name>``."""
    configure_mlflow(cfg)
    run_id = existing_run(meta.get("mlflow_run_id"))
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"eval-{name}") as run:
        for key, value in summary["metrics"].items():
            if value is not None:
                mlflow.log_metrics({f"{split}_{key}{suffix}": value[part] for suffix, part in
                                    (("", "mean"), ("_low", "low"), ("_high", "high")) if value[part] is not None})
        mlflow.set_tags({f"{split}_{key}.unavailable": reason[:5000] for key, reason in summary["unavailable"].items()})
        mlflow.set_tags({"eval.name": name, "eval.model_ref": summary["model_ref"]})
        mlflow.log_artifacts(str(out_dir), artifact_path=f"eval/{split}/{name}")
        return run.info.run_id


def evaluate(cfg: Config, model_ref: str, name: str | None, split: str, raw_root: Path, curated: Path,
             out_dir: Path, truth_root: Path | None = None) -> dict[str, Any]:
    """Score ``model_ref`` (checkpoint, ``models:/`` URI, ``input`` or ``median3``) on ``split`` of both
    domains; write ``per_clip.csv``, ``summary.json`` and ``grids/`` under ``out_dir``; log them to MLflow.

    ``truth_root`` holds the real clips' held-back clean frames (None: the real domain gets NR metrics only).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    manifest = load_manifest(curated)
    paired_clips = [c for c in clip_refs(manifest, raw_root, "paired", split) if c.clean is not None]
    real_clips = with_truth(clip_refs(manifest, raw_root, "real", split), truth_root, split)
    if not paired_clips and not real_clips:
        raise ValueError(f"{curated}: the manifest has no clips in split {split!r}")
    device = resolve_device(cfg.train.device)
    method, gated, meta = _load_method(cfg, model_ref, device)
    name = name or _default_name(model_ref, meta)
    with_reference = bool(paired_clips) or any(c.clean is not None for c in real_clips)
    metrics = _create_metrics(cfg, cfg.eval.metrics_paired, True, device) if with_reference else []
    metrics += _create_metrics(cfg, cfg.eval.metrics_real, False, device) if real_clips else []
    built = {m.name: m for m in metrics}

    out_dir.mkdir(parents=True, exist_ok=True)
    grids_dir = out_dir / GRIDS
    rows = _evaluate_clips(paired_clips, "paired", method, metrics, name, cfg, grids_dir)
    rows += _evaluate_clips(real_clips, "real", method, metrics, name, cfg, grids_dir)
    table = pd.DataFrame(rows, columns=["clip_id", "source", "frames", "truth", *METRIC_ORDER])
    values, unavailable = summarize(cfg, split, table, built)
    snow_free = snow_free_clips(split=split)
    summary: dict[str, Any] = {
        "name": name, "variant": str(meta.get("variant", name)), "model_ref": model_ref,
        "checkpoint_sha256": meta.get("checkpoint_sha256"),  # what `register` checks: these scores are this file's
        "split": split, "metrics": values, "unavailable": unavailable,
        "clips": {domain: int((table.source == domain).sum()) for domain in DOMAINS},
        "frames": {domain: int(table.loc[table.source == domain, "frames"].sum()) for domain in DOMAINS},
        "real_clips_with_truth": int(table.loc[table.source == "real", "truth"].sum()),
        "interval": f"{cfg.eval.confidence:.0%} percentile bootstrap over clips ({cfg.eval.bootstrap} resamples)",
        # snow-free clips of the split: how much the network itself changes them (the promotion gate's check;
        # the snow gate is a safety net, not a licence to darken), and how much `semivdn desnow` does
        "do_no_harm": harm(method, snow_free),
        "do_no_harm_gated": harm(gated, snow_free) if gated else None,
        "snow_gate": dataclasses.asdict(cfg.inference.snow_gate) if gated else None,
    }
    table.to_csv(out_dir / PER_CLIP, index=False)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    summary["mlflow_run_id"] = _log_to_mlflow(cfg, meta, name, split, summary, out_dir)
    log.info("%s on %s: %s", name, split, {k: v["mean"] for k, v in values.items() if v is not None})
    return summary
