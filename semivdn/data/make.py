"""``semivdn data make``: write the embedded default data set (no downloads).

Two sets, each with train, val and test splits whose source scenes are disjoint
(:data:`semivdn.data.scenes.SPLIT_SCENES`; the sets' scenes are disjoint too):

- ``paired/``: synthetic snowy clips (Eq. 1, :mod:`semivdn.data.synth`) with their clean
  frames, as PNG frame folders ``paired/<split>/{snowy,clean}/<clip>/00000.png``;
- ``real/``: the proxy-real stand-in, ``real/<split>/<clip>.mp4`` (or frame folders),
  filmed by the independent 3-D particle snow model (:mod:`semivdn.data.realsnow`) over
  other scenes. Training sees it as unlabelled footage. Its clean frames are written
  *aside* (val and test only), under ``truth_root/<split>/<clip>/`` (``paths.real_truth``), outside the raw
  folder that curation and training read: only evaluation opens them (the standard
  semi-supervised protocol with held-back truth).

Each set gets a ``manifest.json``. Every clip draws its randomness from a seed derived
from ``cfg.seed`` and the clip's place (set, split, index), so a re-run writes
byte-identical PNGs. Everything is written to staging folders that replace the outputs
only when complete: a crash never leaves half a data set behind.
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

from semivdn.config import Config
from semivdn.data.camera import Camera
from semivdn.data.procedural import KINDS, procedural_names
from semivdn.data.realsnow import film_snow
from semivdn.data.scenes import SPLIT_SCENES, render_clean_clip
from semivdn.data.synth import randomize_snow, synthesize_snow
from semivdn.data.video import FrameWriter, psnr_db, to_rgb8
from semivdn.eval.baselines import temporal_median3

SPLITS = ("train", "val", "test")
SETS = ("paired", "real")
# first numbers of the painted scenes of each split that gets some: disjoint ranges, so disjoint scenes
# (semivdn.eval.harm's unseen scenes start at 90_000)
PROCEDURAL_START = {("paired", "train"): 0, ("paired", "val"): 80_000, ("real", "val"): 85_000,
                    ("paired", "test"): 92_000, ("real", "test"): 95_000}
REAL_NOTE = ("Proxy-real stand-in for real snowy footage (such as Realsnow85): filmed by an independent 3-D "
             "particle snow model (semivdn/data/realsnow.py, params real_snow, recorded under 'snow') over scenes "
             "disjoint from the paired set. It is not real footage. Its clean frames are kept aside (truth_root) "
             "for evaluation only; training never reads them.")
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


def make_dataset(cfg: Config, out_root: Path, truth_root: Path) -> dict[str, Any]:
    """Render both sets into ``out_root`` and the proxy-real truth into ``truth_root`` (replacing what is there)."""
    started = time.perf_counter()
    out_root, truth_root = Path(out_root), Path(truth_root)
    for folder in (out_root, truth_root):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"make_dataset: output {folder} exists and is not a folder")
    raw_abs, truth_abs = out_root.resolve(), truth_root.resolve()
    if raw_abs == truth_abs or raw_abs in truth_abs.parents or truth_abs in raw_abs.parents:
        raise ValueError(f"make_dataset: the truth folder {truth_root} must lie outside the raw folder {out_root} "
                         "(and the other way round): training reads the raw folder")
    make = cfg.make_data
    if make.real_format == "mp4" and (make.height % 2 or make.width % 2):
        raise ValueError(f"make_data.height/width: mp4 needs even sizes, got {make.height}x{make.width}")
    staging, truth_staging = (folder.parent / f".{folder.name}.partial" for folder in (out_root, truth_root))
    for folder in (staging, truth_staging):
        if folder.exists():
            shutil.rmtree(folder)
    try:
        results = [_write_clip(cfg, job, staging, truth_staging)
                   for job in tqdm(_jobs(cfg), desc="data make", unit="clip")]
        summary = {name: _write_manifest(cfg, name, [r for r in results if r.job.set_name == name], staging)
                   for name in SETS}
        truth_staging.mkdir(parents=True, exist_ok=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(truth_staging, ignore_errors=True)
        raise
    _replace(staging, out_root)
    _replace(truth_staging, truth_root)
    return {"out": str(out_root), "truth": str(truth_root), **summary,
            "seconds": round(time.perf_counter() - started, 2)}


def split_counts(cfg: Config, set_name: str) -> dict[str, int]:
    """How many clips each split of a set gets (params make_data)."""
    make = cfg.make_data
    if set_name == "paired":
        return {"train": make.train_clips, "val": make.val_clips, "test": make.test_clips}
    return {"train": make.real_train_clips, "val": make.real_val_clips, "test": make.real_test_clips}


def split_scenes(cfg: Config, set_name: str, split: str) -> tuple[str, ...]:
    """The scenes a split's clips cycle through: its photographs (SPLIT_SCENES), then its painted scenes.

    The paired train split gains ``procedural_scenes`` painted scenes, each val split
    ``procedural_val_scenes`` and each test split ``procedural_test_scenes``: a split of one or two
    photographs is too narrow to choose a model on (val) or to report one with (test). The paired
    train photographs take ``photo_weight`` turns each: among 150 painted scenes, 8 photographs
    at one turn each were 5 % of the clips, and users film the natural world, not paintings.
    """
    counts = {"train": cfg.make_data.procedural_scenes if set_name == "paired" else 0,
              "val": cfg.make_data.procedural_val_scenes, "test": cfg.make_data.procedural_test_scenes}
    painted = procedural_names(KINDS, PROCEDURAL_START[set_name, split], counts[split]) if counts[split] else ()
    turns = cfg.make_data.photo_weight if (set_name, split) == ("paired", "train") else 1
    return SPLIT_SCENES[set_name][split] * turns + painted


def _jobs(cfg: Config) -> list[_ClipJob]:
    """Every clip to render; each split cycles through its own scenes (:func:`split_scenes`)."""
    jobs = []
    for set_name in SETS:
        for split, count in split_counts(cfg, set_name).items():
            scenes = split_scenes(cfg, set_name, split)
            jobs += [_ClipJob(set_name, split, i, scenes[i % len(scenes)]) for i in range(count)]
    return jobs


def _write_clip(cfg: Config, job: _ClipJob, root: Path, truth_root: Path) -> _ClipResult:
    make = cfg.make_data
    seed = np.random.SeedSequence(cfg.seed, spawn_key=(SETS.index(job.set_name), SPLITS.index(job.split), job.index))
    motion_rng, snow_rng = (np.random.default_rng(child) for child in seed.spawn(2))
    clean = render_clean_clip(job.scene, make.frames, make.height, make.width, motion_rng)
    set_root = root / job.set_name
    if job.set_name == "paired":
        # training snow is domain-randomized per clip; val and test keep one fixed style, comparable across runs
        snow = randomize_snow(cfg.snow, cfg.paired_randomization, snow_rng) if job.split == "train" else cfg.snow
        clip = synthesize_snow(clean, snow, snow_rng)
        snowy8 = np.stack([to_rgb8(frame)[0] for frame in clip.snowy])
        spread = cfg.paired_randomization
        if job.split == "train" and spread.camera_fraction > 0 and snow_rng.random() < spread.camera_fraction:
            camera = Camera.draw(snow_rng, spread.read_noise, spread.jpeg_quality)
            snowy8 = np.stack([camera.film(frame, snow_rng) for frame in clip.snowy])
        clean8 = np.stack([to_rgb8(frame)[0] for frame in clip.clean])
        path = Path(job.split) / "snowy" / job.name
        _write_frames(set_root / path, snowy8, make.fps)
        _write_frames(set_root / job.split / "clean" / job.name, clean8, make.fps)
    else:
        filmed = film_snow(clean, cfg.real_snow, make.fps, snow_rng)
        snowy8, clean8 = filmed.snowy, filmed.clean
        path = Path(job.split) / (f"{job.name}.mp4" if make.real_format == "mp4" else job.name)
        _write_frames(set_root / path, snowy8, make.fps)
        if job.split != "train":  # the unlabelled training footage keeps no truth at all
            _write_frames(truth_root / job.split / job.name, clean8, make.fps)
    return _ClipResult(job=job, path=path.as_posix(), input_psnr_db=psnr_db(snowy8, clean8).tolist(),
                       median3_psnr_db=psnr_db(_median3(snowy8), clean8).tolist())


def _write_frames(path: Path, frames: np.ndarray, fps: int) -> None:
    with FrameWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)


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
    measured = [r for r in results if r.job.split == "test"]
    summary = {
        **{f"{split}_clips": sum(r.job.split == split for r in results) for split in SPLITS},
        "frames_per_clip": make.frames,
        "input_psnr_db": _mean([v for r in measured for v in r.input_psnr_db]),
        "median3_psnr_db": _mean([v for r in measured for v in r.median3_psnr_db]),
    }
    manifest = {
        "kind": "synthetic paired" if paired else "proxy-real stand-in",
        "stand_in": not paired,
        "note": PAIRED_NOTE if paired else REAL_NOTE,
        "layout": ("<split>/{snowy,clean}/<clip>/<frame>.png" if paired
                   else f"<split>/<clip>{'.mp4' if make.real_format == 'mp4' else '/<frame>.png'}"),
        "scenes": {split: sorted({r.job.scene for r in results if r.job.split == split}) for split in SPLITS},
        "snow": dataclasses.asdict(cfg.snow if paired else cfg.real_snow),
        "snow_model": "semivdn.data.synth (Eq. 1)" if paired else "semivdn.data.realsnow (3-D particles, filmed)",
        "truth": None if paired else ("val and test kept aside in paths.real_truth as <split>/<clip>/<frame>.png, "
                                      "for evaluation only; none for train"),
        "seed": cfg.seed,
        "height": make.height,
        "width": make.width,
        "fps": make.fps,
        **summary,
        "psnr_measured_on": "test split",
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
