"""Data curation: scan raw clips into a manifest, validate it, quarantine bad clips.

``<raw>/paired/<split>/`` holds snowy/clean pairs, either folder-first
(``snowy/<clip>`` with ``clean/<clip>``, any of ``data.snowy_dirs`` /
``data.clean_dirs``) or clip-first like the RVSD benchmark
(``<clip>/Snow`` with ``<clip>/GT``); clips are frame folders or video files.
``<raw>/real/<split>/`` holds unpaired clips. The user's own real footage lives apart,
in ``paths.footage`` (DVC-tracked, written by no stage): each clip directly below it
joins the real train split as ``footage-<name>``, listed by its path relative to the
raw root (``../footage/...``) so every manifest path resolves from one root. Every clip is decoded frame by frame
(memory holds one frame pair plus a short window, never a whole video) into one
row of statistics; the great-expectations suite (:mod:`semivdn.data.expectations`)
then validates the whole scan table once. Failing rows go to ``quarantine.csv``
with their reasons, the rest to ``manifest.parquet``. Raw data is only read.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
from tqdm import tqdm

from semivdn.config import Config
from semivdn.data import FOOTAGE_PREFIX
from semivdn.data.expectations import SuiteOutcome, build_checks, validate
from semivdn.data.video import VIDEO_SUFFIXES, FrameReader, VideoError, is_video_file, psnr_db

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["clip_id", "source", "split", "clip", "snowy_path", "clean_path", "frames", "height", "width",
                    "fps", "content_hash", "brightness", "snow_fraction", "input_psnr", "notes"]
QUARANTINE_COLUMNS = ["clip_id", "source", "split", "path", "reason"]
SNOW_THRESHOLD = 0.1  # luminance excess over the background that counts as a snow pixel
MEDIAN_WINDOW = 5  # frames in the temporal median that stands in for the background of real clips
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0  # ITU-R BT.601
NO_GROUND_TRUTH = "n/a: real footage has no ground truth"


class CurationError(RuntimeError):
    """More clips failed the expectation suite than ``curate.max_quarantine_fraction`` allows."""


@dataclass(frozen=True)
class Candidate:
    """A raw entry that should be a clip; ``problem`` is set when discovery already knows it is not."""

    source: str
    split: str
    clip: str
    snowy: Path
    clean: Path | None = None
    problem: str | None = None

    @property
    def clip_id(self) -> str:
        return f"{self.source}/{self.split}/{self.clip}"


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_clip(path: Path) -> bool:
    return path.is_dir() or is_video_file(path)


def _clip_name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _not_a_clip(path: Path) -> str:
    return f"not a video file ({', '.join(sorted(VIDEO_SUFFIXES))}) or a frame folder: {path.name}"


def _counterpart(clip: Path, folders: Iterable[Path]) -> Path | None:
    """The clip of the same name in the first folder that has one (container or folder-vs-video may differ)."""
    name = _clip_name(clip)
    names = dict.fromkeys([clip.name, name, *(name + suffix for suffix in sorted(VIDEO_SUFFIXES))])
    for folder in folders:
        for other in (folder / n for n in names):
            if other.exists() and _is_clip(other):
                return other
    return None


def _paired_split(cfg: Config, split_dir: Path) -> list[Candidate]:
    """Both layouts of one paired split: folder-first and clip-first (the RVSD adapter)."""
    split = split_dir.name
    layout_names = set(cfg.data.snowy_dirs) | set(cfg.data.clean_dirs)
    snowy_dirs = [split_dir / n for n in cfg.data.snowy_dirs if (split_dir / n).is_dir()]
    clean_dirs = [split_dir / n for n in cfg.data.clean_dirs if (split_dir / n).is_dir()]
    found = []
    for snowy_dir in snowy_dirs:
        for entry in _entries(snowy_dir):
            problem = None if _is_clip(entry) else _not_a_clip(entry)
            found.append(Candidate("paired", split, _clip_name(entry), entry, _counterpart(entry, clean_dirs), problem))
    for clean_dir in clean_dirs:
        for entry in _entries(clean_dir):
            if _is_clip(entry) and _counterpart(entry, snowy_dirs) is None:
                problem = f"clean clip without a snowy counterpart in {list(cfg.data.snowy_dirs)}"
                found.append(Candidate("paired", split, _clip_name(entry), entry, problem=problem))
    for entry in _entries(split_dir):
        if entry.name in layout_names:
            continue
        snowy = next((entry / n for n in cfg.data.snowy_dirs if (entry / n).is_dir()), None)
        if entry.is_dir() and snowy is not None:
            clean = next((entry / n for n in cfg.data.clean_dirs if (entry / n).is_dir()), None)
            found.append(Candidate("paired", split, entry.name, snowy, clean))
        else:
            found.append(Candidate("paired", split, _clip_name(entry), entry, problem=(
                f"unrecognised paired entry {entry.name}: expected <{'|'.join(cfg.data.snowy_dirs)}>/<clip> "
                f"or <clip>/<{'|'.join(cfg.data.snowy_dirs)}>/")))
    return found


def _real_split(split_dir: Path) -> list[Candidate]:
    return [Candidate("real", split_dir.name, _clip_name(entry), entry,
                      problem=None if _is_clip(entry) else _not_a_clip(entry)) for entry in _entries(split_dir)]


def discover(cfg: Config, raw_root: Path) -> list[Candidate]:
    """Every candidate clip under ``raw_root``, sorted by clip_id (so "the later duplicate" is well defined)."""
    if not raw_root.is_dir():
        raise FileNotFoundError(f"raw data folder not found: {raw_root}")
    found: list[Candidate] = []
    for source, per_split in (("paired", lambda d: _paired_split(cfg, d)), ("real", _real_split)):
        source_dir = raw_root / source
        if source_dir.is_dir():
            for split_dir in (p for p in _entries(source_dir) if p.is_dir()):
                found.extend(per_split(split_dir))
    if not found:
        raise FileNotFoundError(f"{raw_root}: no clips found; expected paired/<split>/<snowy>/<clip> "
                                f"and/or real/<split>/<clip> (run `semivdn data make` or add footage)")
    return sorted(found, key=lambda c: (c.clip_id, str(c.snowy)))


def discover_footage(footage_root: Path) -> list[Candidate]:
    """The clips directly below ``footage_root``, as real train clips named ``footage-<name>``."""
    if not footage_root.is_dir():
        raise FileNotFoundError(f"footage folder not found: {footage_root}")
    return [Candidate("real", "train", FOOTAGE_PREFIX + _clip_name(entry), entry,
                      problem=None if _is_clip(entry) else _not_a_clip(entry)) for entry in _entries(footage_root)]


def read_source_manifest(path: Path) -> dict[str, Any] | None:
    """The generator's ``manifest.json`` of a source, or None for data brought without one."""
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def _luma(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ LUMA_WEIGHTS


class FrameStats:
    """Running statistics of one stream of frames: count, size, content hash, mean luminance."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.count = 0
        self.shape: tuple[int, ...] | None = None
        self.luma_sum = 0.0
        self._hash = hashlib.sha256()

    def add(self, frame: np.ndarray) -> np.ndarray:
        if self.shape is None:
            self.shape = frame.shape
        elif frame.shape != self.shape:
            raise VideoError(f"{self.label}: frame {self.count} is {frame.shape[0]}x{frame.shape[1]}, "
                             f"earlier frames are {self.shape[0]}x{self.shape[1]}")
        self._hash.update(f"{frame.shape}".encode())
        self._hash.update(np.ascontiguousarray(frame).tobytes())
        luma = _luma(frame)
        self.luma_sum += float(luma.mean())
        self.count += 1
        return luma

    def summary(self) -> dict[str, Any]:
        if self.shape is None:
            raise VideoError(f"{self.label}: no frames")
        return {"frames": self.count, "height": self.shape[0], "width": self.shape[1],
                "content_hash": self._hash.hexdigest(), "brightness": self.luma_sum / self.count}


class MedianSnow:
    """Snow fraction of an unpaired clip: pixels brighter than the per-pixel temporal median by > SNOW_THRESHOLD.

    Falling snow moves while the background stays, so a median over a short centred window of
    frames approximates the snow-free background. Only ``MEDIAN_WINDOW`` frames are held; frames
    near the clip's ends use the first or last full window.
    """

    def __init__(self, window: int = MEDIAN_WINDOW) -> None:
        self.window: deque[np.ndarray] = deque(maxlen=window)
        self.seen = 0
        self.scored = 0
        self.bright = 0
        self.pixels = 0

    def add(self, luma: np.ndarray) -> None:
        self.window.append(luma)
        self.seen += 1
        if len(self.window) == self.window.maxlen:
            self._score(until=self.seen - self.window.maxlen // 2)

    def _score(self, until: int) -> None:
        median = np.median(np.stack(self.window), axis=0)
        first = self.seen - len(self.window)
        for index in range(self.scored, until):
            self.bright += int(np.count_nonzero(self.window[index - first] - median > SNOW_THRESHOLD))
            self.pixels += median.size
        self.scored = until

    def fraction(self) -> float:
        if self.scored < self.seen:
            self._score(until=self.seen)
        return self.bright / self.pixels if self.pixels else math.nan


def declared_frames(path: Path) -> tuple[int, int] | None:
    """(frames the container promises, tolerance) so a cut-off file is caught; None when it promises nothing."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return stream.frames, 0
            if container.duration and stream.average_rate:
                return round(container.duration / av.time_base * float(stream.average_rate)), 1
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: cannot read the container header ({exc})") from exc
    return None


def _check_complete(path: Path | None, decoded: int) -> None:
    if path is None or not path.is_file():
        return
    promised = declared_frames(path)
    if promised is not None and decoded + promised[1] < promised[0]:
        raise VideoError(f"{path}: truncated video: decoded {decoded} of the {promised[0]} frames "
                         "its container declares")


def _notes(readers: dict[str, FrameReader]) -> str:
    converted = sorted(f"{note} ({role})" for role, reader in readers.items() for note in reader.conversions)
    return f"converted: {', '.join(converted)}" if converted else ""


def _frames(reader: FrameReader | None) -> Iterator[np.ndarray]:
    return iter(reader) if reader is not None else iter(())


def scan_paired(snowy: Path, clean: Path | None) -> dict[str, Any]:
    """Statistics of a snowy clip against its clean counterpart (if any), one frame pair at a time."""
    snowy_stats, clean_stats = FrameStats(str(snowy)), FrameStats(str(clean))
    psnr_sum, pairs, snow_pixels, pixels = 0.0, 0, 0, 0
    with contextlib.ExitStack() as stack:
        readers = {"snowy": stack.enter_context(FrameReader(snowy))}
        if clean is not None:
            readers["clean"] = stack.enter_context(FrameReader(clean))
        for snowy_frame, clean_frame in itertools.zip_longest(_frames(readers["snowy"]), _frames(readers.get("clean"))):
            snowy_luma = snowy_stats.add(snowy_frame) if snowy_frame is not None else None
            clean_luma = clean_stats.add(clean_frame) if clean_frame is not None else None
            if snowy_luma is not None and clean_luma is not None and snowy_frame.shape == clean_frame.shape:
                psnr_sum += float(psnr_db(snowy_frame[None], clean_frame[None])[0])
                pairs += 1
                snow_pixels += int(np.count_nonzero(snowy_luma - clean_luma > SNOW_THRESHOLD))
                pixels += snowy_luma.size
        row = {**snowy_stats.summary(), "fps": readers["snowy"].fps, "notes": _notes(readers)}
    _check_complete(snowy, snowy_stats.count)
    _check_complete(clean, clean_stats.count)
    if clean is not None:
        clean_summary = clean_stats.summary()
        row.update({f"clean_{key}": clean_summary[key] for key in ("frames", "height", "width")})
    row["snow_fraction"] = snow_pixels / pixels if pixels else math.nan
    row["input_psnr"] = psnr_sum / pairs if pairs else math.nan
    return row


def scan_real(path: Path) -> dict[str, Any]:
    """Statistics of an unpaired clip; the snow fraction is measured against a temporal median background."""
    stats, snow = FrameStats(str(path)), MedianSnow()
    with FrameReader(path) as reader:
        for frame in reader:
            snow.add(stats.add(frame))
        row = {**stats.summary(), "fps": reader.fps, "notes": _notes({"snowy": reader})}
    _check_complete(path, stats.count)
    return {**row, "snow_fraction": snow.fraction(), "input_psnr": math.nan}


def _scan(candidate: Candidate, raw_root: Path, folder_fps: dict[str, float]) -> dict[str, Any]:
    relative = Path(os.path.relpath(candidate.snowy, raw_root)).as_posix()
    row: dict[str, Any] = {"clip_id": candidate.clip_id, "source": candidate.source, "split": candidate.split,
                           "clip": candidate.clip, "snowy_path": relative,
                           "clean_path": candidate.clean.relative_to(raw_root).as_posix() if candidate.clean else None,
                           "scan_error": candidate.problem}
    if candidate.problem is None:
        try:
            if candidate.source == "paired":
                stats = scan_paired(candidate.snowy, candidate.clean)
            else:
                stats = scan_real(candidate.snowy)
        except VideoError as exc:
            row["scan_error"] = str(exc).replace(f"{raw_root}/", "")  # paths relative to the raw root, as in `path`
        else:
            if candidate.snowy.is_dir() and candidate.source in folder_fps:
                stats["fps"] = folder_fps[candidate.source]  # frame folders carry no rate; the generator's does
            row.update(stats)
    return row


def scan_table(raw_root: Path, candidates: list[Candidate],
               manifests: dict[str, dict[str, Any] | None]) -> pd.DataFrame:
    """One row per candidate (good or bad), the table the expectation suite validates."""
    folder_fps = {source: float(m["fps"]) for source, m in manifests.items()
                  if m is not None and isinstance(m.get("fps"), int | float) and m["fps"] > 0}
    rows = [_scan(c, raw_root, folder_fps) for c in tqdm(candidates, desc="curate: scanning clips", unit="clip")]
    table = pd.DataFrame(rows).reindex(columns=[*MANIFEST_COLUMNS, "clean_frames", "clean_height", "clean_width",
                                                "scan_error"])
    for column in ("frames", "height", "width", "clean_frames", "clean_height", "clean_width"):
        table[column] = table[column].astype("Int64")
    for column in ("fps", "brightness", "snow_fraction", "input_psnr"):
        table[column] = table[column].astype(float)
    table["notes"] = table["notes"].fillna("")
    return table


def _mean_or_none(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def _difficulty(manifest: pd.DataFrame, real_manifest: dict[str, Any] | None) -> dict[str, Any]:
    paired_test = manifest[(manifest["source"] == "paired") & (manifest["split"] == "test")]["input_psnr"]
    real = real_manifest or {}
    real_psnr = real.get("input_psnr_db")
    if not isinstance(real_psnr, int | float):
        return {"paired_test_input_psnr_db": _mean_or_none(paired_test), "real_input_psnr_db": None,
                "real_input_psnr_source": NO_GROUND_TRUTH}
    kind = "a synthetic stand-in" if real.get("stand_in") else "stand_in not set"
    return {"paired_test_input_psnr_db": _mean_or_none(paired_test), "real_input_psnr_db": float(real_psnr),
            "real_input_psnr_source": f"from the generator's manifest, real/manifest.json: {kind}"}


def _counts(table: pd.DataFrame, good: pd.Series) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for (source, split), group in table.groupby(["source", "split"], sort=True):
        passed = int(good[group.index].sum())
        counts[f"{source}/{split}"] = {"good": passed, "quarantined": len(group) - passed}
    return counts


def _md_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(raw_root: Path, summary: dict[str, Any], quarantine: pd.DataFrame, manifest: pd.DataFrame,
                  outcome: SuiteOutcome, manifests: dict[str, dict[str, Any] | None], failed: str | None) -> str:
    """The human-readable curation report (Markdown)."""
    paired_psnr, real_psnr = summary["paired_test_input_psnr_db"], summary["real_input_psnr_db"]
    paired_line = f"{paired_psnr:.2f} dB" if paired_psnr is not None else "n/a (no good paired test clips)"
    real_source = summary["real_input_psnr_source"]
    real_line = f"{real_psnr:.2f} dB ({real_source})" if real_psnr is not None else real_source
    sections = [
        "# Data curation report", f"Raw data: `{raw_root}`",
        f"**Failed:** {failed}" if failed else
        f"{summary['good']} of {summary['clips']} clips passed into manifest.parquet.",
        "## Clips", _md_table(["source/split", "good", "quarantined"],
                              ([k, v["good"], v["quarantined"]] for k, v in summary["counts"].items())),
        "## Difficulty",
        f"- paired test input PSNR: {paired_line} (mean snowy-vs-clean PSNR over the good paired test clips)\n"
        f"- real set input PSNR: {real_line}",
        f"## Quarantined clips ({len(quarantine)}, fraction {summary['quarantine_fraction']:.1%}, "
        f"limit curate.max_quarantine_fraction={summary['max_quarantine_fraction']})",
        _md_table(["clip_id", "path", "reason"], quarantine[["clip_id", "path", "reason"]].values)
        if len(quarantine) else "None.",
        "## Conversions",
        _md_table(["clip_id", "notes"], manifest.loc[manifest["notes"] != "", ["clip_id", "notes"]].values)
        if (manifest["notes"] != "").any() else "None: every frame was 8-bit RGB.",
        f"## Expectation suite ({'passed' if outcome.success else 'failed'}; one validation run, "
        f"{outcome.seconds:.2f} s)",
        _md_table(["expectation", "success", "unexpected rows"],
                  ([r.name, "yes" if r.success else "NO", r.unexpected] for r in outcome.results)),
        "## Source manifests",
        "\n".join(f"- {source}: " + (", ".join(f"{k}={m[k]}" for k in ("kind", "stand_in", "input_psnr_db") if k in m)
                                     if m is not None else "none (user data)") for source, m in manifests.items()),
    ]
    return "\n\n".join(sections) + "\n"


def curate(cfg: Config, raw_root: Path, out_dir: Path, footage_root: Path | None = None) -> dict[str, Any]:
    """Scan ``raw_root`` and ``footage_root``; write manifest.parquet, quarantine.csv, report.md and summary.json.

    Raises :class:`CurationError` (after writing quarantine.csv, report.md and summary.json)
    when more than ``curate.max_quarantine_fraction`` of the clips are quarantined.
    """
    raw_root, out_dir = Path(raw_root), Path(out_dir)
    candidates = discover(cfg, raw_root)
    if footage_root is not None:
        footage = discover_footage(Path(footage_root))
        log.info("footage: %d clip(s) in %s join the real train split", len(footage), footage_root)
        candidates = sorted(candidates + footage, key=lambda c: (c.clip_id, str(c.snowy)))
    manifests = {source: read_source_manifest(raw_root / source / "manifest.json") for source in ("paired", "real")}
    table = scan_table(raw_root, candidates, manifests)
    outcome = validate(table, build_checks(cfg))

    bad = pd.Series(table.index.isin(list(outcome.reasons)), index=table.index)
    manifest = table.loc[~bad, MANIFEST_COLUMNS].reset_index(drop=True)
    for column in ("frames", "height", "width"):
        manifest[column] = manifest[column].astype("int64")
    quarantine = table.loc[bad, ["clip_id", "source", "split", "snowy_path"]].rename(columns={"snowy_path": "path"})
    # a clip that could not be scanned has no statistics, so its scan error is its whole story
    quarantine["reason"] = [table.at[i, "scan_error"] if pd.notna(table.at[i, "scan_error"])
                            else "; ".join(outcome.reasons[i]) for i in quarantine.index]

    fraction = len(quarantine) / len(table)
    limit = cfg.curate.max_quarantine_fraction
    summary = {"clips": len(table), "good": len(manifest), "quarantined": len(quarantine),
               "quarantine_fraction": fraction, "max_quarantine_fraction": limit,
               "counts": _counts(table, ~bad), **_difficulty(manifest, manifests["real"]),
               "suite_success": outcome.success, "broken_expectations": outcome.broken(),
               "validation_seconds": round(outcome.seconds, 3)}
    failed = None
    if fraction > limit:
        failed = (f"{len(quarantine)} of {len(table)} clips quarantined ({fraction:.0%}) > "
                  f"curate.max_quarantine_fraction={limit}; broken expectations: {', '.join(outcome.broken())}")

    out_dir.mkdir(parents=True, exist_ok=True)
    quarantine.to_csv(out_dir / "quarantine.csv", columns=QUARANTINE_COLUMNS, index=False)
    (out_dir / "report.md").write_text(render_report(raw_root, summary, quarantine, manifest, outcome, manifests,
                                                     failed))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    manifest_path = out_dir / "manifest.parquet"
    if failed:
        manifest_path.unlink(missing_ok=True)  # never leave an older manifest next to this failed report
        raise CurationError(f"{failed}; see {out_dir / 'quarantine.csv'} and {out_dir / 'report.md'}")
    manifest.to_parquet(manifest_path, index=False)
    log.info("curated %d clips (%d quarantined) into %s", len(manifest), len(quarantine), out_dir)
    return summary
