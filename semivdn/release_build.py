"""Building the release model: ``make release``'s last step (the shipped model itself: :mod:`semivdn.release`).

``build_release`` copies a trained checkpoint into the assets, writes the manifest (hash,
provenance, evaluation, do-no-harm) and renders ``MODEL_CARD.md`` from the training metrics,
the evaluation summaries of both test domains and the do-no-harm measurement.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from semivdn.config import Config
from semivdn.eval.compare import load_per_clip, paired_delta, verdict
from semivdn.eval.harm import harm, snow_free_clips
from semivdn.inference import desnow_clip
from semivdn.models.checkpoint import load_checkpoint, read_checkpoint_header
from semivdn.release import ASSETS, CHECKPOINT_NAME, MANIFEST_NAME
from semivdn.weights import sha256_file

MAX_BYTES = 20 * 1024 * 1024  # shipped in git: at most 20 MB
SUMMARY_KEYS = ("name", "split", "metrics", "unavailable", "clips", "frames", "interval")  # no local paths or run ids


def build_release(checkpoint: Path, train_metrics: Sequence[Sequence[Path]], eval_dirs: Sequence[Path], cfg: Config,
                  out_dir: Path = ASSETS, card: Path = Path("MODEL_CARD.md")) -> dict[str, Any]:
    """Ship ``checkpoint`` as the release model: copy, hash, manifest, model card.

    ``train_metrics`` holds, per network of the checkpoint (one, or each member of an output
    ensemble, in order), the ``semivdn train --metrics`` files of every stage that produced its
    weights (warm-up, then fine-tuning), in order; ``eval_dirs`` the ``semivdn evaluate`` outputs
    whose summaries the card reports (the release model and its baselines on the test splits).
    The card also reports do-no-harm, measured here on snow-free clips with the windows of ``cfg``,
    and the release's PSNR gain over each baseline as a paired interval over the same clips.
    """
    checkpoint = Path(checkpoint)
    size = checkpoint.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{checkpoint}: {size / 2**20:.1f} MB exceeds the release limit of {MAX_BYTES / 2**20:.0f} MB")
    header = read_checkpoint_header(checkpoint)
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    gate = cfg.inference.snow_gate
    snow_free = snow_free_clips()
    do_no_harm = harm(lambda clip: desnow_clip(model, clip, cfg.data.frames_per_clip), snow_free)
    gated_harm = harm(lambda clip: desnow_clip(model, clip, cfg.data.frames_per_clip, gate), snow_free)
    members = header.model_config.members
    if len(train_metrics) != members:
        raise ValueError(f"{checkpoint} holds {members} network(s) but training metrics were given for "
                         f"{len(train_metrics)}: pass --train-metrics once per network, in the checkpoint's order")
    stages = [{**json.loads(Path(path).read_text()), "member": member}
              for member, paths in enumerate(train_metrics, start=1) for path in paths]
    summaries = {Path(d).name: {key: value for key, value in json.loads((Path(d) / "summary.json").read_text()).items()
                                if key in SUMMARY_KEYS} for d in eval_dirs}
    manifest = {
        "sha256": sha256_file(checkpoint),
        "bytes": size,
        "meta": header.meta,
        "model": dataclasses.asdict(header.model_config),
        "training": [{key: stage.get(key) for key in ("member", "variant", "iterations", "seconds", "it_per_s",
                                                      "mlflow_run_id", "recipe")} for stage in stages],
        "hardware": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()},  # where it was built
        "evaluation": summaries,
        "gains": _paired_gains({Path(d).name: Path(d) for d in eval_dirs}, cfg),
        "do_no_harm": do_no_harm,  # the network itself; `semivdn desnow` adds the snow gate of "snow_gate"
        "do_no_harm_gated": {key: value for key, value in gated_harm.items() if key != "per_clip"},
        "snow_gate": dataclasses.asdict(gate),
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
    members = int(model.get("members") or 1)
    training = manifest["training"]
    hours = sum(float(stage.get("seconds") or 0.0) for stage in training) / 3600
    lines = [
        "# SemiVDN release model — model card", "",
        "Generated by `semivdn release` (`make release`); do not edit by hand.", "",
        "## What it is",
        f"- Architecture: VDN (ConvNeXt `{model.get('encoder')}` encoder, {model.get('num_ptb')} Physics Transformer "
        f"Block(s), d = {model.get('dim')}, Temporal Decoupling Experts: {model.get('tde')}), "
        f"{manifest['bytes'] / 2**20:.1f} MB safetensors, SHA-256 `{manifest['sha256']}` (checked on every load).",
        *_provenance(meta, members), "",
        "## How it was trained",
        "- Data: the `release` profile of `semivdn data make` — paired clips over bundled photographs and procedural "
        "scenes (landscapes, towns, textures, shapes, interiors; night and low-contrast variants) with per-clip "
        "domain-randomized Eq. 1 snow and snow-free identity pairs (unlabelled proxy-real clips serve the "
        "mean-teacher variants only). Each stage names the data it trained on by its hash; `make release` "
        "regenerates each data set (a second one films the paired training snow fainter, out of focus and in part "
        "through a noisy, compressing camera: the Makefile's `FILMED`). "
        "No test-split scene is used in training or tuning (splits are disjoint by scene).",
        *[f"- {name}: `{stage.get('variant')}`, {stage.get('iterations')} iterations, "
          f"{float(stage.get('seconds') or 0) / 60:.1f} min at {stage.get('it_per_s')} it/s{_recipe(stage)}"
          for name, stage in zip(_stage_names(training, members), training, strict=True)],
        f"- Evaluated and packaged on {manifest['hardware']['processor']}, {manifest['hardware']['cpu_count']} CPU "
        f"cores, CUDA {'yes' if manifest['hardware']['cuda'] else 'no'}; {hours:.2f} h of training in all.", "",
        "## How well it does",
        "Test splits of the release profile's data (disjoint scenes), every frame; 95 % bootstrap intervals over "
        "clips. `paired`: synthetic Eq. 1 snow; `real`: the proxy-real domain (an independent 3-D particle snow "
        "model with held-back truth), which training saw only as unlabelled footage.", "",
        *_metrics_table(manifest["evaluation"]), "",
        *_gains(manifest["gains"]),
        *_harm_section(manifest["do_no_harm"], manifest.get("snow_gate"), manifest.get("do_no_harm_gated")),
        "## Known limits",
        *([] if manifest["do_no_harm"]["meets_bar"] else [
            "- Snow-free footage is not left alone everywhere: see *Do no harm* above for the clips it changes."]),
        *(["- The snow gate sees falling snow as bright temporal outliers: flakes darker than what is behind them "
           "(grey flakes against a bright sky), or light snow over busy moving texture, can partly close it and keep "
           "snow; `semivdn desnow --no-snow-gate` gives the network's output as is."]
          if manifest.get("snow_gate", {}).get("enabled") else []),
        "- Trained on synthetic and proxy-real snow only: real footage with snow unlike both (heavy wet snow on the "
        "lens, night-time flash-lit flakes) may keep flakes.",
        "- Photographs are its weak side (few among its training scenes): under snow of a third model on photographs "
        "no split uses (`benchmarks/unseen_snow.py`) it leaves light snow in place, and where it acts it takes the "
        "clip for hazy too, which can leave darker ghosts of the flakes on faces and façades (README, *Footage and "
        "snow it never saw*).",
        "- Trained at 96-pixel crops of 160-pixel frames; large frames are processed whole or in tiles "
        "(`--tile`), and very large flakes at 4K may exceed what the network has seen.",
        "- No pretrained ImageNet or VGG weights were available to training (none can be downloaded here): "
        "perceptual losses were off.", "",
        "## Licence",
        "MIT, like the code. The training scenes are scikit-image / scikit-learn sample images (public domain / CC0 "
        "per their documentation) and procedural scenes painted by the project.", "",
    ]
    return "\n".join(lines)


def _provenance(meta: dict[str, Any], members: int) -> list[str]:
    """Variant, profile, code and data of the network, or of each member of an output ensemble."""
    if members == 1:
        return [f"- Variant `{meta.get('variant')}`, profile `{meta.get('profile')}`, code at git commit "
                f"`{meta.get('git_commit')}`, training data hash `{meta.get('data_hash')}`."]
    return [f"- An output ensemble of {members} such networks, trained separately (the stages below): it "
            f"restores with the mean of their outputs (`semivdn ensemble`, `semivdn/models/ensemble.py`), at "
            f"{members}× the cost of one.",
            *[f"- Member {i}: variant `{member.get('variant')}`, profile `{member.get('profile')}`, SHA-256 "
              f"`{str(member.get('sha256'))[:12]}…`, code at git commit `{member.get('git_commit')}`, training data "
              f"hash `{member.get('data_hash')}`." for i, member in enumerate(meta.get("members", []), start=1)]]


def _stage_names(training: list[dict[str, Any]], members: int) -> list[str]:
    """"Stage 3" per stage, or "Member 2, stage 3" when the stages belong to an ensemble's networks."""
    counts: Counter[int] = Counter()
    names = []
    for stage in training:
        member = stage.get("member") or 1
        counts[member] += 1
        names.append(f"Member {member}, stage {counts[member]}" if members > 1 else f"Stage {counts[member]}")
    return names


def _recipe(stage: dict[str, Any]) -> str:
    """What a stage started from and trained on (``semivdn train --metrics`` records it): empty if unknown."""
    recipe = stage.get("recipe")
    if not recipe:
        return ""
    batch = f"batches of {recipe['batch_size']}, " if recipe.get("batch_size") else ""
    device = f", on {recipe['device']}" if recipe.get("device") else ""
    identity = float(recipe.get("identity_fraction") or 0)
    snow_stream = f", snow-stream loss weight {recipe['snow_stream']}" if recipe.get("snow_stream") else ""
    return (f"; from `{recipe.get('init') or 'scratch'}`, lr {recipe.get('lr')}, {batch}{recipe.get('crop')}-pixel "
            f"crops, {identity:.0%} identity pairs{snow_stream}, data `{recipe.get('data_hash')}`, "
            f"code `{str(recipe.get('git_commit'))[:12]}`{device}")


def _harm_section(report: dict[str, Any], gate: dict[str, Any] | None = None,
                  gated: dict[str, Any] | None = None) -> list[str]:
    """Do no harm: how much the model changes snow-free clips it never trained on (semivdn/eval/harm.py)."""
    worst = sorted(report["per_clip"].items(), key=lambda item: item[1]["psnr_vs_input_db"])
    with_gate = ([f"As `semivdn desnow` runs it, with the snow gate (`semivdn/snow_gate.py`: threshold "
                  f"{gate['threshold']}, window {gate['window']}, balance {list(gate['balance'])}), which keeps "
                  f"the input where a clip shows no falling snow: lowest PSNR {gated['min_psnr_vs_input_db']:.1f} dB, "
                  f"largest luminance change {100 * gated['max_abs_luminance_change']:.1f} % "
                  f"(bar {'met' if gated['meets_bar'] else 'not met'}).", ""]
                 if gate and gate.get("enabled") and gated else [])
    return [
        "## Do no harm",
        f"Snow-free clips no training saw ({report['clips']}: the test-split photographs and unseen procedural "
        f"scenes, night and low-contrast ones among them) go through the network; the output is compared with the "
        f"input. Bar: PSNR "
        f"against the input >= {report['bar']['min_psnr_vs_input_db']:.0f} dB and mean-luminance change <= "
        f"{100 * report['bar']['max_abs_luminance_change']:.0f} % on every clip — "
        f"**{'met' if report['meets_bar'] else 'not met'}** (lowest PSNR "
        f"{report['min_psnr_vs_input_db']:.1f} dB, largest luminance change "
        f"{100 * report['max_abs_luminance_change']:.1f} %). The clips it changes most:", "",
        "| clip | PSNR vs input (dB) | luminance change |", "|---|---|---|",
        *[f"| {name} | {scores['psnr_vs_input_db']:.1f} | {100 * scores['luminance_change']:+.1f} % |"
          for name, scores in worst[:5]], "", *with_gate,
    ]


def _paired_gains(eval_dirs: dict[str, Path], cfg: Config, model: str = "release") -> dict[str, dict[str, Any]]:
    """release − baseline PSNR per domain, bootstrapped over the clips both scored (the issue's bars)."""
    if model not in eval_dirs:
        return {}
    ours = load_per_clip(eval_dirs[model])
    gains = {}
    for baseline in ("input", "median3"):
        if baseline not in eval_dirs:
            continue
        theirs = load_per_clip(eval_dirs[baseline])
        for domain in ("paired", "real"):
            delta = paired_delta(ours, theirs, domain, "psnr", cfg)
            if delta is not None:
                gains[f"{domain}_psnr over {baseline}"] = {**dataclasses.asdict(delta),
                                                            "verdict": verdict(delta, "psnr")}
    return gains


def _gains(gains: dict[str, dict[str, Any]]) -> list[str]:
    """One line per paired gain: mean [low, high], and "not significant" where the interval holds zero."""
    lines = []
    for name, delta in gains.items():
        interval = "" if delta["low"] is None else (
            f" [{delta['low']:+.2f}, {delta['high']:+.2f}] ({delta['confidence']:.0%}, paired over "
            f"{delta['n']} clips{', not significant' if delta['verdict'] == 'not significant' else ''})")
        lines.append(f"- {name.replace('_', ' ')}: {delta['mean']:+.2f} dB{interval}")
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
