"""``semivdn data make``: write the embedded default data set (no downloads).

Two sets, each with train and test splits:

- ``paired/``: synthetic snowy clips with their clean frames, as PNG frame folders
  ``paired/<split>/{snowy,clean}/<clip>/00000.png``;
- ``real/``: the unpaired "real" stand-in, ``real/<split>/<clip>.mp4`` (or frame
  folders), rendered over other scenes with another snow configuration; no clean
  frames are written, but its input PSNR is measured while they are at hand.

Each set gets a ``manifest.json``. Every clip draws its randomness from a seed derived
from ``cfg.seed`` and the clip's place (set, split, index), so a re-run writes
byte-identical PNGs. Everything is written to a staging folder that replaces the
output only when complete: a crash never leaves half a data set behind.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from semivdn.config import Config, SnowParams
from semivdn.data.scenes import PAIRED_TEST_SCENES, PAIRED_TRAIN_SCENES, REAL_SCENES, render_clean_clip
from semivdn.data.synth import synthesize_snow
from semivdn.data.video import FrameWriter, to_rgb8
from semivdn.eval.baselines import temporal_median3

SPLITS = ("train", "test")
SETS = ("paired", "real")
REAL_NOTE = ("Stand-in for real snowy footage (such as Realsnow85): rendered by the snow synthesizer with a "
             "different snow model (params real_snow, recorded under 'snow') over scenes disjoint from the "
             "paired set. It is not real footage.")
PAIRED_NOTE = "Synthetic snow and haze (Eq. 1) over smooth camera moves across images bundled with scikit-image/-learn."


@dataclass(frozen=True)
class _ClipJob:
    set_name: str
    split: str
    index: int
    scene: str

    @property
    def name(self) -> str:
        return f"clip_{self.index:03d}"


@dataclass(frozen=True)
class _ClipResult:
    job: _ClipJob
    path: str  # relative to the set folder
    input_psnr_db: list[float]  # per frame
    median3_psnr_db: list[float]  # per frame: temporal median of frames t-1, t, t+1


def make_dataset(cfg: Config, out_root: Path) -> dict[str, Any]:
    """Render both sets into ``out_root`` (replacing what is there) and return a summary."""
    started = time.perf_counter()
    out_root = Path(out_root)
    if out_root.exists() and not out_root.is_dir():
        raise ValueError(f"make_dataset: output {out_root} exists and is not a folder")
    make = cfg.make_data
    if make.real_format == "mp4" and (make.height % 2 or make.width % 2):
        raise ValueError(f"make_data.height/width: mp4 needs even sizes, got {make.height}x{make.width}")
    staging = out_root.parent / f".{out_root.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        results = [_write_clip(cfg, job, staging) for job in tqdm(_jobs(cfg), desc="data make", unit="clip")]
        summary = {name: _write_manifest(cfg, name, [r for r in results if r.job.set_name == name], staging)
                   for name in SETS}
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace(staging, out_root)
    return {"out": str(out_root), **summary, "seconds": round(time.perf_counter() - started, 2)}


def _jobs(cfg: Config) -> list[_ClipJob]:
    """Every clip to render; paired splits use disjoint scenes, the real set cycles through its own."""
    make = cfg.make_data
    jobs = [_ClipJob("paired", "train", i, PAIRED_TRAIN_SCENES[i % len(PAIRED_TRAIN_SCENES)])
            for i in range(make.train_clips)]
    jobs += [_ClipJob("paired", "test", i, PAIRED_TEST_SCENES[i % len(PAIRED_TEST_SCENES)])
             for i in range(make.test_clips)]
    jobs += [_ClipJob("real", "train", i, REAL_SCENES[i % len(REAL_SCENES)]) for i in range(make.real_train_clips)]
    jobs += [_ClipJob("real", "test", i, REAL_SCENES[(make.real_train_clips + i) % len(REAL_SCENES)])
             for i in range(make.real_test_clips)]
    return jobs


def _snow_params(cfg: Config, set_name: str) -> SnowParams:
    return cfg.snow if set_name == "paired" else cfg.real_snow


def _write_clip(cfg: Config, job: _ClipJob, root: Path) -> _ClipResult:
    make = cfg.make_data
    seed = np.random.SeedSequence(cfg.seed, spawn_key=(SETS.index(job.set_name), SPLITS.index(job.split), job.index))
    motion_rng, snow_rng = (np.random.default_rng(child) for child in seed.spawn(2))
    clean = render_clean_clip(job.scene, make.frames, make.height, make.width, motion_rng)
    clip = synthesize_snow(clean, _snow_params(cfg, job.set_name), snow_rng)
    snowy8 = np.stack([to_rgb8(frame)[0] for frame in clip.snowy])
    clean8 = np.stack([to_rgb8(frame)[0] for frame in clip.clean])
    set_root = root / job.set_name
    if job.set_name == "paired":
        path = Path(job.split) / "snowy" / job.name
        _write_frames(set_root / path, snowy8, make.fps)
        _write_frames(set_root / job.split / "clean" / job.name, clean8, make.fps)
    else:
        path = Path(job.split) / (f"{job.name}.mp4" if make.real_format == "mp4" else job.name)
        _write_frames(set_root / path, snowy8, make.fps)
    return _ClipResult(job=job, path=path.as_posix(), input_psnr_db=_psnr(snowy8, clean8),
                       median3_psnr_db=_psnr(_median3(snowy8), clean8))


def _write_frames(path: Path, frames: np.ndarray, fps: int) -> None:
    with FrameWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)


def _psnr(frames: np.ndarray, reference: np.ndarray) -> list[float]:
    """Per-frame PSNR in dB of uint8 frames (T, H, W, 3) against a reference (inf when identical)."""
    error = (frames.astype(np.float64) - reference.astype(np.float64)) ** 2
    mse = error.reshape(len(frames), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return [float(v) for v in 10.0 * np.log10(255.0**2 / mse)]


def _median3(frames: np.ndarray) -> np.ndarray:
    """The evaluation's temporal-median baseline on uint8 frames (T, H, W, 3), recorded as a difficulty yardstick."""
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)
    return temporal_median3(clip).permute(0, 2, 3, 1).numpy()


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None


def _write_manifest(cfg: Config, set_name: str, results: list[_ClipResult], root: Path) -> dict[str, Any]:
    """Describe one set in ``<set>/manifest.json``; return its summary numbers."""
    make = cfg.make_data
    paired = set_name == "paired"
    measured = [r for r in results if r.job.split == "test"] if paired else results
    summary = {
        "train_clips": sum(r.job.split == "train" for r in results),
        "test_clips": sum(r.job.split == "test" for r in results),
        "frames_per_clip": make.frames,
        "input_psnr_db": _mean([v for r in measured for v in r.input_psnr_db]),
        "median3_psnr_db": _mean([v for r in measured for v in r.median3_psnr_db]),
    }
    manifest = {
        "kind": "synthetic paired" if paired else "real stand-in",
        "stand_in": not paired,
        "note": PAIRED_NOTE if paired else REAL_NOTE,
        "layout": ("<split>/{snowy,clean}/<clip>/<frame>.png" if paired
                   else f"<split>/<clip>{'.mp4' if make.real_format == 'mp4' else '/<frame>.png'}"),
        "scenes": sorted({r.job.scene for r in results}),
        "snow": dataclasses.asdict(_snow_params(cfg, set_name)),
        "seed": cfg.seed,
        "height": make.height,
        "width": make.width,
        "fps": make.fps,
        **summary,
        "psnr_measured_on": "test split" if paired else "all clips",
        "clips": [{"split": r.job.split, "clip": r.job.name, "path": r.path, "scene": r.job.scene,
                   "frames": len(r.input_psnr_db), "input_psnr_db": _mean(r.input_psnr_db)} for r in results],
    }
    (root / set_name).mkdir(parents=True, exist_ok=True)
    (root / set_name / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def _replace(staging: Path, out_root: Path) -> None:
    """Swap the finished staging folder in by renames, so ``out_root`` is either the old or the new set."""
    if not out_root.exists():
        staging.rename(out_root)
        return
    previous = out_root.parent / f".{out_root.name}.previous"
    if previous.exists():
        shutil.rmtree(previous)
    out_root.rename(previous)
    staging.rename(out_root)
    shutil.rmtree(previous)
