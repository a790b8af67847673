"""The release model: weights the project's own release pipeline trained, shipped inside the package.

``semivdn desnow`` needs a model on a fresh clone, before any pipeline has trained one: the
release model is that model and the first champion ``make demo`` registers. Its checkpoint
lives in ``semivdn/assets/`` beside a manifest (``semivdn-release.json``) that records its
SHA-256 and provenance; every load re-hashes the file and refuses one that does not match,
so a truncated, swapped or tampered file is an error, never a model.

``build_release`` is the last step of ``make release``: it copies a trained checkpoint
into the assets, writes the manifest and renders ``MODEL_CARD.md`` from the training
metrics and the evaluation summaries of both test domains.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from semivdn.models.checkpoint import CheckpointError, read_checkpoint_header
from semivdn.weights import sha256_file

RELEASE_REF = "release"  # the model reference that names the release model (desnow --model release)
ASSETS = Path(__file__).resolve().parent / "assets"
CHECKPOINT_NAME = "semivdn-release.safetensors"
MANIFEST_NAME = "semivdn-release.json"
MAX_BYTES = 20 * 1024 * 1024  # shipped in git: at most 20 MB
SUMMARY_KEYS = ("name", "split", "metrics", "unavailable", "clips", "frames", "interval")  # no local paths or run ids


def release_checkpoint(assets: Path = ASSETS) -> Path:
    """The shipped checkpoint, after checking it against the SHA-256 its manifest records."""
    checkpoint, manifest_path = assets / CHECKPOINT_NAME, assets / MANIFEST_NAME
    if not manifest_path.is_file() or not checkpoint.is_file():
        raise CheckpointError(f"the release model is missing: expected {checkpoint} and {manifest_path} (they ship "
                              "with the package; reinstall it, or build them with `make release`)")
    try:
        expected = json.loads(manifest_path.read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest_path}: not a release manifest ({exc})") from exc
    actual = sha256_file(checkpoint)
    if actual != expected:
        raise CheckpointError(f"{checkpoint}: SHA-256 {actual[:12]}… differs from the {expected[:12]}… its manifest "
                              f"records: the file is corrupt or was replaced; restore it with `git checkout -- "
                              f"{checkpoint.name}` or rebuild it with `make release`")
    return checkpoint


def build_release(checkpoint: Path, train_metrics: Sequence[Path], eval_dirs: Sequence[Path], out_dir: Path = ASSETS,
                  card: Path = Path("MODEL_CARD.md")) -> dict[str, Any]:
    """Ship ``checkpoint`` as the release model: copy, hash, manifest, model card.

    ``train_metrics`` are the ``semivdn train --metrics`` files of every stage that produced the
    weights (warm-up, then fine-tuning), in order; ``eval_dirs`` the ``semivdn evaluate`` outputs
    whose summaries the card reports (the release model and its baselines on the test splits).
    """
    checkpoint = Path(checkpoint)
    size = checkpoint.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{checkpoint}: {size / 2**20:.1f} MB exceeds the release limit of {MAX_BYTES / 2**20:.0f} MB")
    header = read_checkpoint_header(checkpoint)
    stages = [json.loads(Path(path).read_text()) for path in train_metrics]
    summaries = {Path(d).name: {key: value for key, value in json.loads((Path(d) / "summary.json").read_text()).items()
                                if key in SUMMARY_KEYS} for d in eval_dirs}
    manifest = {
        "sha256": sha256_file(checkpoint),
        "bytes": size,
        "meta": header.meta,
        "model": dataclasses.asdict(header.model_config),
        "training": [{key: stage.get(key) for key in ("variant", "iterations", "seconds", "it_per_s", "mlflow_run_id")}
                     for stage in stages],
        "hardware": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()},  # where it was built
        "evaluation": summaries,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".release-") as staging:
        staged = Path(staging) / CHECKPOINT_NAME
        shutil.copyfile(checkpoint, staged)
        os.chmod(staged, 0o644)
        (Path(staging) / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        os.replace(staged, out_dir / CHECKPOINT_NAME)
        os.replace(Path(staging) / MANIFEST_NAME, out_dir / MANIFEST_NAME)
    card.write_text(render_model_card(manifest))
    return {"checkpoint": str(out_dir / CHECKPOINT_NAME), "sha256": manifest["sha256"], "card": str(card)}


def render_model_card(manifest: dict[str, Any]) -> str:
    """MODEL_CARD.md: what the model is, how it was made, how well it does (with intervals), its limits."""
    meta, model = manifest["meta"], manifest["model"]
    training = manifest["training"]
    hours = sum(float(stage.get("seconds") or 0.0) for stage in training) / 3600
    lines = [
        "# SemiVDN release model — model card", "",
        "Generated by `semivdn release` (`make release`); do not edit by hand.", "",
        "## What it is",
        f"- Architecture: VDN (ConvNeXt `{model.get('encoder')}` encoder, {model.get('num_ptb')} Physics Transformer "
        f"Block(s), d = {model.get('dim')}, Temporal Decoupling Experts: {model.get('tde')}), "
        f"{manifest['bytes'] / 2**20:.1f} MB safetensors, SHA-256 `{manifest['sha256']}` (checked on every load).",
        f"- Variant `{meta.get('variant')}`, profile `{meta.get('profile')}`, code at git commit "
        f"`{meta.get('git_commit')}`, training data hash `{meta.get('data_hash')}`.", "",
        "## How it was trained",
        "- Data: the `release` profile of `semivdn data make` — paired clips over bundled photographs and procedural "
        "scenes (landscapes, towns, textures, shapes, interiors; night and low-contrast variants) with per-clip "
        "domain-randomized Eq. 1 snow and snow-free identity pairs (unlabelled proxy-real clips serve the "
        "mean-teacher variants only). "
        "No test-split scene is used in training or tuning (splits are disjoint by scene).",
        *[f"- Stage {i + 1}: `{stage.get('variant')}`, {stage.get('iterations')} iterations, "
          f"{float(stage.get('seconds') or 0) / 60:.1f} min at {stage.get('it_per_s')} it/s"
          for i, stage in enumerate(training)],
        f"- Hardware: {manifest['hardware']['processor']}, {manifest['hardware']['cpu_count']} CPU cores, "
        f"CUDA {'yes' if manifest['hardware']['cuda'] else 'no'}; {hours:.2f} h of training in all.", "",
        "## How well it does",
        "Test splits of the release profile's data (disjoint scenes), every frame; 95 % bootstrap intervals over "
        "clips. `paired`: synthetic Eq. 1 snow; `real`: the proxy-real domain (an independent 3-D particle snow "
        "model with held-back truth), which training saw only as unlabelled footage.", "",
        *_metrics_table(manifest["evaluation"]), "",
        *_gains(manifest["evaluation"]),
        "## Known limits",
        "- Snow-free footage is not left alone: the model removes haze that is not there and darkens clean "
        "clips by a few per cent (`semivdn/eval/harm.py` measures it; tests/test_harm.py holds the bar it "
        "does not yet meet: PSNR against the input >= 32 dB, luminance change <= 2 %).",
        "- Trained on synthetic and proxy-real snow only: real footage with snow unlike both (heavy wet snow on the "
        "lens, night-time flash-lit flakes) may keep flakes.",
        "- Trained at 96-pixel crops of 160-pixel frames; large frames are processed whole or in tiles "
        "(`--tile`), and very large flakes at 4K may exceed what the network has seen.",
        "- No pretrained ImageNet or VGG weights were available to training (none can be downloaded here): "
        "perceptual losses were off.", "",
        "## Licence",
        "MIT, like the code. The training scenes are scikit-image / scikit-learn sample images (public domain / CC0 "
        "per their documentation) and procedural scenes painted by the project.", "",
    ]
    return "\n".join(lines)


def _gains(evaluation: dict[str, Any], model: str = "release") -> list[str]:
    """The model's mean PSNR gain over each baseline per domain (paired intervals are in the ablation report)."""
    lines = []
    for baseline in ("input", "median3"):
        for key in ("paired_psnr", "real_psnr"):
            ours = (evaluation.get(model, {}).get("metrics", {}).get(key) or {}).get("mean")
            theirs = (evaluation.get(baseline, {}).get("metrics", {}).get(key) or {}).get("mean")
            if ours is not None and theirs is not None:
                lines.append(f"- {key.replace('_', ' ')}: {ours - theirs:+.2f} dB over {baseline}")
    return [*lines, ""] if lines else []


def _metrics_table(evaluation: dict[str, Any]) -> list[str]:
    """One row per evaluated model, one column per domain metric: mean [low, high]."""
    columns = sorted({key for summary in evaluation.values() for key, value in summary.get("metrics", {}).items()
                      if isinstance(value, dict) and value.get("mean") is not None})
    if not columns:
        return ["(no evaluation summaries)"]
    rows = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, summary in evaluation.items():
        cells = []
        for column in columns:
            value = summary.get("metrics", {}).get(column) or {}
            mean, low, high = value.get("mean"), value.get("low"), value.get("high")
            cells.append("n/a" if mean is None else f"{mean:.3f} [{low:.3f}, {high:.3f}]" if low is not None
                         else f"{mean:.3f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows
