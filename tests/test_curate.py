"""Curation: every kind of bad raw clip is quarantined with its reason, good clips pass, raw data stays as it was."""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from semivdn.cli import main
from semivdn.config import Config, config_from_dict
from semivdn.data.curate import MANIFEST_COLUMNS, CurationError, MedianSnow, curate
from semivdn.data.video import FrameWriter

SIZE = 32
LUMA = np.array([0.299, 0.587, 0.114]) / 255.0
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _clean_frames(count: int, seed: int, size: int = SIZE) -> list[np.ndarray]:
    """Smooth, mid-grey content in [50, 150]: every snow pixel (255) is more than 0.1 brighter."""
    y, x = np.mgrid[0:size, 0:size]
    phase = np.random.default_rng(seed).uniform(0, 6)
    base = 100 + 50 * np.sin(x / 5 + phase)[..., None] * np.array([1.0, 0.8, 0.6]) * np.cos(y / 7)[..., None]
    return [np.roll(base, i, axis=1).astype(np.uint8) for i in range(count)]


def _snow(frames: list[np.ndarray], seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    masks = [rng.random(frames[0].shape[:2]) < 0.08 for _ in frames]
    snowy = [np.where(mask[..., None], 255, frame).astype(np.uint8) for frame, mask in zip(frames, masks, strict=True)]
    return snowy, masks


def _write_pngs(folder: Path, frames: list[np.ndarray], mode: str = "RGB") -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        if mode == "L":
            image = Image.fromarray(frame[..., 0])
        elif mode == "RGBA":
            image = Image.fromarray(np.dstack([frame, np.full(frame.shape[:2], 200, np.uint8)]))
        elif mode == "I;16":
            image = Image.fromarray(frame[..., 0].astype(np.uint16) * 257)
        else:
            image = Image.fromarray(frame)
        image.save(folder / f"{i:05d}.png")


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10) -> None:
    with FrameWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)


def _pair(split_dir: Path, clip: str, count: int = 5, seed: int = 0, snowy_mode: str = "RGB",
          snowy_dir: str = "snowy", clean_dir: str = "clean", grey: bool = False) -> dict[str, Any]:
    clean = _clean_frames(count, seed)
    if grey:
        clean = [np.repeat(frame[..., :1], 3, axis=2) for frame in clean]
    snowy, masks = _snow(clean, seed + 100)
    _write_pngs(split_dir / snowy_dir / clip, snowy, snowy_mode)
    _write_pngs(split_dir / clean_dir / clip, clean)
    mse = [np.mean((s.astype(float) - c.astype(float)) ** 2) / 255**2 for s, c in zip(snowy, clean, strict=True)]
    return {"psnr": float(np.mean([10 * np.log10(1 / m) for m in mse])), "snow": float(np.mean(masks)),
            "brightness": float(np.mean([(f.astype(float) @ LUMA).mean() for f in snowy]))}


def _fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _build_raw(raw: Path) -> dict[str, Any]:
    """One of each good layout and each bad input; returns the known statistics of a few clips."""
    train, test = raw / "paired" / "train", raw / "paired" / "test"
    known = {"good_a": _pair(train, "good_a", seed=1)}
    _pair(train, "good_gray", seed=2, snowy_mode="L", grey=True)
    _pair(train, "good_rgba", seed=3, snowy_mode="RGBA")
    _pair(train, "good_16bit", seed=4, snowy_mode="I;16", grey=True)
    _pair(train, "unreadable", seed=5)
    (train / "snowy" / "unreadable" / "00002.png").write_bytes(b"this is not a png" * 10)
    _pair(train, "count_mismatch", seed=6)
    (train / "clean" / "count_mismatch" / "00004.png").unlink()
    _pair(train, "size_mismatch", seed=7)
    shutil.rmtree(train / "clean" / "size_mismatch")
    _write_pngs(train / "clean" / "size_mismatch", _clean_frames(5, 7, size=24))
    _pair(train, "short", count=2, seed=8)
    _pair(train, "no_clean", seed=9)
    shutil.rmtree(train / "clean" / "no_clean")
    _write_pngs(train / "snowy" / "no_snow", _clean_frames(5, 10))  # clean identical to snowy: PSNR infinite
    _write_pngs(train / "clean" / "no_snow", _clean_frames(5, 10))
    shutil.copytree(train / "snowy" / "good_a", train / "snowy" / "zz_copy_of_a")
    shutil.copytree(train / "clean" / "good_a", train / "clean" / "zz_copy_of_a")
    clean_video = _clean_frames(6, 11)
    _write_video(train / "snowy" / "vid.mp4", _snow(clean_video, 12)[0])
    _write_video(train / "clean" / "vid.mp4", clean_video)
    # paired test: folder-first with RVSD names, and the clip-first RVSD layout
    known["t1"] = _pair(test, "t1", seed=13, snowy_dir="Snow", clean_dir="GT")
    rvsd_clean = _clean_frames(5, 14)
    _write_pngs(test / "rvsd_clip" / "Snow", _snow(rvsd_clean, 15)[0])
    _write_pngs(test / "rvsd_clip" / "GT", rvsd_clean)

    real_train, real_test = raw / "real" / "train", raw / "real" / "test"
    _write_video(real_train / "cam1.mp4", _snow(_clean_frames(6, 20), 21)[0])
    shutil.copyfile(real_train / "cam1.mp4", real_train / "cam1_copy.mov")  # same content, other name and container
    (real_train / "zero.mp4").write_bytes(b"")
    data = (real_train / "cam1.mp4").read_bytes()
    (real_train / "trunc.mp4").write_bytes(data[: len(data) // 2])
    _write_video(real_train / "long.mkv", _snow(_clean_frames(12, 22), 23)[0])
    data = (real_train / "long.mkv").read_bytes()
    (real_train / "trunc_mkv.mkv").write_bytes(data[: len(data) // 2])  # header intact: decodes, but fewer frames
    _write_pngs(real_train / "frames_clip", _snow(_clean_frames(4, 24), 25)[0])
    (real_train / "notes.txt").write_text("not a clip")
    _write_video(real_test / "cam2.mp4", _snow(_clean_frames(6, 26), 27)[0])
    _write_pngs(real_test / "cam3", _snow(_clean_frames(4, 28), 29)[0])
    _write_video(real_test / "cam3.mkv", _snow(_clean_frames(4, 30), 31)[0])  # same clip name as the folder
    _write_pngs(train / "clean" / "orphan", _clean_frames(4, 32))

    (raw / "paired" / "manifest.json").write_text(json.dumps({"kind": "paired", "stand_in": False, "fps": 12,
                                                              "input_psnr_db": 20.0}))
    (raw / "real" / "manifest.json").write_text(json.dumps({"kind": "real", "stand_in": True, "input_psnr_db": 17.5}))
    return known


EXPECTED_QUARANTINE = {  # path relative to the raw root -> fragment of the reason
    "paired/train/snowy/unreadable": "unreadable image",
    "paired/train/snowy/count_mismatch": "snowy/clean frame count mismatch: 5 vs 4",
    "paired/train/snowy/size_mismatch": "snowy/clean frame size mismatch: 32x32 vs 24x24",
    "paired/train/snowy/short": "too short: 2 frames < data.frames_per_clip=3",
    "paired/train/snowy/no_clean": "clean counterpart missing",
    "paired/train/snowy/no_snow": "input PSNR inf dB outside curate.input_psnr_range",
    "paired/train/snowy/zz_copy_of_a": "duplicate of paired/train/good_a",
    "paired/train/clean/orphan": "clean clip without a snowy counterpart",
    "real/train/cam1_copy.mov": "duplicate of real/train/cam1",
    "real/train/zero.mp4": "zero-byte video file",
    "real/train/trunc.mp4": "cannot open video",  # the mp4 index was in the lost half
    "real/train/trunc_mkv.mkv": "truncated video: decoded",
    "real/train/notes.txt": "not a video file",
    "real/test/cam3.mkv": "clip name clash: real/test/cam3 has the same clip_id real/test/cam3",
}
EXPECTED_GOOD = {"paired/train/good_a", "paired/train/good_gray", "paired/train/good_rgba", "paired/train/good_16bit",
                 "paired/train/vid", "paired/test/t1", "paired/test/rvsd_clip", "real/train/cam1", "real/train/long",
                 "real/train/frames_clip", "real/test/cam2", "real/test/cam3"}


def _cfg(max_fraction: float) -> Config:
    return config_from_dict({"curate": {"max_quarantine_fraction": max_fraction}}, profile="demo")


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("curate")
    raw = root / "raw"
    known = _build_raw(raw)
    before = _fingerprint(raw)
    summary = curate(_cfg(0.6), raw, root / "out")
    return {"raw": raw, "out": root / "out", "known": known, "before": before, "summary": summary,
            "manifest": pd.read_parquet(root / "out" / "manifest.parquet"),
            "quarantine": pd.read_csv(root / "out" / "quarantine.csv"),
            "report": (root / "out" / "report.md").read_text()}


def test_each_bad_input_is_quarantined_with_its_reason(curated: dict[str, Any]) -> None:
    quarantine = curated["quarantine"]
    assert list(quarantine.columns) == ["clip_id", "source", "split", "path", "reason"]
    reasons = dict(zip(quarantine["path"], quarantine["reason"], strict=True))
    assert set(reasons) == set(EXPECTED_QUARANTINE)
    for path, fragment in EXPECTED_QUARANTINE.items():
        assert fragment in reasons[path], (path, reasons[path])
    for path in ("paired/train/snowy/zz_copy_of_a", "paired/train/snowy/size_mismatch", "paired/train/clean/orphan"):
        assert ";" not in reasons[path], reasons[path]  # one problem, one reason
    by_path = quarantine.set_index("path")
    assert by_path.loc["real/train/zero.mp4", ["clip_id", "source", "split"]].tolist() == ["real/train/zero", "real",
                                                                                            "train"]


def test_good_clips_pass_into_the_manifest(curated: dict[str, Any]) -> None:
    manifest = curated["manifest"]
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert set(manifest["clip_id"]) == EXPECTED_GOOD
    assert manifest["clip_id"].is_unique and manifest["content_hash"].is_unique
    assert (manifest["frames"] >= 3).all() and (manifest[["height", "width"]] == SIZE).all().all()
    assert manifest["brightness"].between(0, 1).all() and manifest["snow_fraction"].between(0, 1).all()
    real = manifest[manifest["source"] == "real"]
    assert real["clean_path"].isna().all() and real["input_psnr"].isna().all()
    assert (real["snow_fraction"] > 0).all()
    by_id = manifest.set_index("clip_id")
    assert by_id.loc["real/train/cam1", "fps"] == pytest.approx(10, rel=1e-3)
    assert by_id.loc["paired/train/good_a", "fps"] == 12  # frame folder: the generator's manifest gives the rate
    assert by_id.loc["real/train/long", "frames"] == 12


def test_paired_statistics_match_known_values(curated: dict[str, Any]) -> None:
    by_id = curated["manifest"].set_index("clip_id")
    for clip_id, known in (("paired/train/good_a", curated["known"]["good_a"]),
                           ("paired/test/t1", curated["known"]["t1"])):
        row = by_id.loc[clip_id]
        assert row["input_psnr"] == pytest.approx(known["psnr"], abs=1e-3)
        assert row["snow_fraction"] == pytest.approx(known["snow"], abs=1e-6)
        assert row["brightness"] == pytest.approx(known["brightness"], abs=1e-4)
        assert row["frames"] == 5


def test_rvsd_layouts_are_normalised(curated: dict[str, Any]) -> None:
    by_id = curated["manifest"].set_index("clip_id")
    assert by_id.loc["paired/test/rvsd_clip", "snowy_path"] == "paired/test/rvsd_clip/Snow"
    assert by_id.loc["paired/test/rvsd_clip", "clean_path"] == "paired/test/rvsd_clip/GT"
    assert by_id.loc["paired/test/t1", "snowy_path"] == "paired/test/Snow/t1"
    assert by_id.loc["paired/test/t1", "clean_path"] == "paired/test/GT/t1"
    assert by_id.loc["paired/train/vid", "snowy_path"] == "paired/train/snowy/vid.mp4"


def test_conversions_are_noted_not_quarantined(curated: dict[str, Any]) -> None:
    notes = curated["manifest"].set_index("clip_id")["notes"]
    assert notes["paired/train/good_gray"] == "converted: grayscale (snowy)"
    assert notes["paired/train/good_rgba"] == "converted: RGBA (snowy)"
    assert notes["paired/train/good_16bit"] == "converted: 16-bit+grayscale (snowy)"
    assert notes["paired/train/good_a"] == ""
    assert "converted: RGBA (snowy)" in curated["report"]


def test_report_and_summary_give_counts_and_difficulty(curated: dict[str, Any]) -> None:
    summary, report, manifest = curated["summary"], curated["report"], curated["manifest"]
    paired_test = manifest[(manifest["source"] == "paired") & (manifest["split"] == "test")]["input_psnr"].mean()
    assert summary["paired_test_input_psnr_db"] == pytest.approx(paired_test)
    assert f"paired test input PSNR: {paired_test:.2f} dB" in report
    assert summary["real_input_psnr_db"] == 17.5 and "17.50 dB (from the generator's manifest" in report
    assert summary["clips"] == len(EXPECTED_GOOD) + len(EXPECTED_QUARANTINE)
    assert summary["quarantined"] == len(curated["quarantine"]) and summary["suite_success"] is False
    assert summary["counts"]["paired/test"] == {"good": 2, "quarantined": 0}
    assert "expect_column_values_to_be_unique(content_hash)" in report and "duplicate of real/train/cam1" in report
    assert json.loads((curated["out"] / "summary.json").read_text()) == summary


def test_raw_data_is_untouched(curated: dict[str, Any]) -> None:
    assert _fingerprint(curated["raw"]) == curated["before"]


def test_too_many_bad_clips_raise_naming_the_expectation(curated: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.parquet").write_bytes(b"stale")
    with pytest.raises(CurationError, match=r"max_quarantine_fraction=0.3; broken expectations: "
                                            r"expect_column_values_to_be_null\(scan_error\) \(6 rows\)"):
        curate(_cfg(0.3), curated["raw"], out)
    assert pd.read_csv(out / "quarantine.csv")["path"].tolist() == curated["quarantine"]["path"].tolist()
    assert "**Failed:**" in (out / "report.md").read_text()
    assert not (out / "manifest.parquet").exists()


def test_median_snow_counts_moving_flakes_only() -> None:
    frames = [np.zeros((4, 4), np.float32) for _ in range(7)]
    for i, frame in enumerate(frames):
        frame[i % 4, i // 4] = 1.0  # one flake per frame, never twice in the same place
    snow = MedianSnow(window=5)
    for frame in frames:
        snow.add(frame)
    assert snow.fraction() == pytest.approx(1 / 16)
    static = MedianSnow(window=5)
    for _ in range(3):  # shorter than the window: scored against the median of all
        static.add(np.full((4, 4), 0.7, np.float32))
    assert static.fraction() == 0.0


def test_cli_without_generator_manifest_reports_no_ground_truth(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _write_pngs(raw / "real" / "test" / "clip", _snow(_clean_frames(4, 30), 31)[0])
    assert main(["data", "curate", "--params", str(PARAMS), "--profile", "demo", "--raw", str(raw),
                 "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "real set input PSNR: n/a: real footage has no ground truth" in report
    assert "paired test input PSNR: n/a" in report
    assert main(["data", "curate", "--params", str(PARAMS), "--raw", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "out2")]) == 1
