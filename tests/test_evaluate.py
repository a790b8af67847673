"""Evaluation on a tiny curated dataset (baselines and a checkpoint) and the ablation report."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from semivdn.config import Config, Model
from semivdn.data.video import FrameReader
from semivdn.eval.baselines import temporal_median3
from semivdn.eval.evaluate import METRIC_ORDER, evaluate
from semivdn.eval.report import build_report
from semivdn.models import create_model, save_checkpoint
from semivdn.tracking import configure_mlflow

TINY_MODEL = Model(dim=16, heads=2, decoder_channels=8)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, smoke_cfg: Config) -> Iterator[tuple[Config, Path]]:
    """The smoke config on a private MLflow store, with empty weight caches (NR metrics unavailable)."""
    root = tmp_path_factory.mktemp("evaluate")
    (root / "weights").mkdir()
    cfg = dataclasses.replace(
        smoke_cfg,
        mlflow=dataclasses.replace(smoke_cfg.mlflow, tracking_uri=f"sqlite:///{root / 'mlruns.db'}",
                                   artifact_location=str(root / "artifacts")),
        eval=dataclasses.replace(smoke_cfg.eval, weights_dir=str(root / "weights"), allow_missing_weights=True))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", cfg.mlflow.tracking_uri)  # restored after the module
        patch.setenv("TORCH_HOME", str(root / "torch"))
        yield cfg, root


@pytest.fixture(scope="module")
def evaluations(env: tuple[Config, Path], tiny_data: tuple[Path, Path]) -> dict[str, tuple[Path, dict]]:
    """input, median3 and a tiny M2 checkpoint evaluated on the train split (2 paired + 2 real clips)."""
    cfg, root = env
    raw, curated = tiny_data
    configure_mlflow(cfg)
    with mlflow.start_run(run_name="train-M2") as run:
        pass
    torch.manual_seed(0)
    checkpoint = save_checkpoint(root / "M2" / "model.safetensors", create_model(TINY_MODEL), TINY_MODEL,
                                 meta={"variant": "M2", "mlflow_run_id": run.info.run_id})
    results = {}
    for ref in ("input", "median3", str(checkpoint)):
        out = root / "eval" / Path(ref).parent.name if ref == str(checkpoint) else root / "eval" / ref
        summary = evaluate(cfg, ref, None, "train", raw, curated, out)
        results[summary["name"]] = (out, summary)
    return results


def _frames(path: Path) -> np.ndarray:
    with FrameReader(path) as reader:
        return np.stack(list(reader)).astype(np.float64) / 255.0


def test_median3_removes_a_one_frame_flake_and_replicates_edges() -> None:
    clip = torch.zeros(4, 3, 2, 2)
    clip[1, :, 0, 0] = 1.0  # a flake in frame 1 only
    clip[3] = 0.5  # the last frame differs
    out = temporal_median3(clip)
    assert out[1, :, 0, 0].eq(0).all()  # median(0, 1, 0)
    assert torch.equal(out[0], clip[0])  # median(f0, f0, f1) with the edge replicated
    assert torch.equal(out[3], clip[3])  # median(f2, f3, f3)
    with pytest.raises(ValueError, match="expected a clip"):
        temporal_median3(torch.zeros(3, 2, 2))


def test_input_psnr_is_the_mean_over_all_paired_frames(evaluations: dict, tiny_data: tuple[Path, Path]) -> None:
    raw, curated = tiny_data
    manifest = pd.read_parquet(curated / "manifest.parquet")
    paired = manifest[(manifest.source == "paired") & (manifest.split == "train")]
    per_frame = []
    for row in paired.itertuples():
        snowy, clean = _frames(raw / row.snowy_path), _frames(raw / row.clean_path)
        per_frame += [10 * np.log10(1 / np.mean((s - c) ** 2)) for s, c in zip(snowy, clean, strict=True)]
    _, summary = evaluations["input"]
    assert summary["psnr"] == pytest.approx(np.mean(per_frame), abs=1e-4)
    assert summary["paired_frames"] == len(per_frame) == 12


def test_outputs_per_clip_summary_and_grids(evaluations: dict, smoke_cfg: Config) -> None:
    out, summary = evaluations["median3"]
    table = pd.read_csv(out / "per_clip.csv")
    assert list(table.columns) == ["clip_id", "source", "frames", *METRIC_ORDER]
    assert list(table.source) == ["paired", "paired", "real", "real"]
    assert table.psnr.iloc[:2].notna().all() and table.psnr.iloc[2:].isna().all()
    assert summary["psnr"] == pytest.approx(table.psnr.iloc[:2].mean())  # equal-length clips
    written = json.loads((out / "summary.json").read_text())
    assert {"name", "variant", "model_ref", "frames", "unavailable", *METRIC_ORDER} <= set(written)
    assert written["frames"] == 24 and written["name"] == "median3"
    for metric, filename in (("lpips", "LPIPS_v0.1_alex-df73285e.pth"), ("nima", "NIMA_InceptionV2_ava-b0c77c00.pth"),
                             ("musiq", "musiq_koniq_ckpt-e95806b9.pth")):
        assert written[metric] is None and filename in written["unavailable"][metric]
    assert written["psnr"] is not None and "psnr" not in written["unavailable"]
    grids = sorted((out / "grids").glob("*.png"))
    assert [g.name for g in grids] == ["paired__train__clip_000.png", "real__train__clip_000.png"]
    assert smoke_cfg.eval.grid_clips == 1
    assert Image.open(grids[0]).size == (3 * 48 + 2 * 2, 16 + 48)  # input | output | ground truth
    assert Image.open(grids[1]).size == (2 * 48 + 2, 16 + 48)  # no ground truth for real footage


def test_median3_beats_the_input_on_moving_snow(evaluations: dict) -> None:
    assert evaluations["median3"][1]["psnr"] > evaluations["input"][1]["psnr"]
    assert evaluations["median3"][1]["ssim"] > evaluations["input"][1]["ssim"]


def test_a_checkpoint_is_logged_into_its_training_run(evaluations: dict, env: tuple[Config, Path]) -> None:
    _, summary = evaluations["M2"]
    assert summary["variant"] == "M2" and all(np.isfinite(summary[m]) for m in ("psnr", "ssim"))
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "train-M2"
    assert run.data.metrics["train_psnr"] == pytest.approx(summary["psnr"])
    assert "train_nima.unavailable" in run.data.tags


def test_a_checkpoint_whose_run_is_gone_is_logged_into_a_new_run(env: tuple[Config, Path],
                                                                tiny_data: tuple[Path, Path]) -> None:
    cfg, root = env
    checkpoint = save_checkpoint(root / "orphan" / "model.safetensors", create_model(TINY_MODEL), TINY_MODEL,
                                 meta={"variant": "M1", "mlflow_run_id": "0" * 32})
    summary = evaluate(cfg, str(checkpoint), "orphan", "test", *tiny_data, root / "eval-orphan")
    assert mlflow.get_run(summary["mlflow_run_id"]).info.run_name == "eval-orphan"


def test_a_baseline_is_logged_into_a_new_eval_run(evaluations: dict) -> None:
    _, summary = evaluations["input"]
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "eval-input"
    assert run.data.metrics["train_ssim"] == pytest.approx(summary["ssim"])


def test_split_without_real_clips_reports_nr_metrics_unavailable(env: tuple[Config, Path],
                                                                 tiny_data: tuple[Path, Path]) -> None:
    cfg, root = env
    summary = evaluate(cfg, "input", "input-val", "val", *tiny_data, root / "eval-val")
    assert summary["nima"] is None and summary["unavailable"]["nima"] == "no real clips in split 'val'"
    assert summary["paired_clips"] == 1 and summary["real_frames"] == 0


def test_bad_requests_are_refused(env: tuple[Config, Path], tiny_data: tuple[Path, Path]) -> None:
    cfg, root = env
    with pytest.raises(ValueError, match="split must be"):
        evaluate(cfg, "input", None, "validation", *tiny_data, root / "bad")
    wrong = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, metrics_paired=("psnr", "nima")))
    with pytest.raises(ValueError, match="'nima' is not a paired"):
        evaluate(wrong, "input", None, "train", *tiny_data, root / "bad")


def _fake_full(root: Path, grid_source: Path) -> Path:
    """A hand-written evaluation of the full model with every metric (one unavailable)."""
    folder = root / "eval" / "full"
    (folder / "grids").mkdir(parents=True, exist_ok=True)
    (folder / "grids" / grid_source.name).write_bytes(grid_source.read_bytes())
    summary = {"name": "full", "variant": "full", "model_ref": "models/full", "psnr": 30.0, "ssim": 0.95,
               "lpips": 0.05, "nima": 4.5, "musiq": None, "unavailable": {"musiq": "weights withheld"}, "frames": 24}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_report_has_the_table_2_layout_and_the_paper_numbers(evaluations: dict, env: tuple[Config, Path]) -> None:
    cfg, root = env
    grid = next((evaluations["M2"][0] / "grids").glob("paired*.png"))
    dirs = [evaluations[name][0] for name in ("M2", "median3", "input")] + [_fake_full(root, grid)]
    result = build_report(cfg, dirs, root / "report", root / "metrics" / "quality.json")
    assert result["rows"] == ["input", "median3", "M2", "full"]  # the paper's order, whatever the input order
    lines = (root / "report" / "ablation.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| Method | TDE | SST | DCR | PSNR↑ | SSIM↑ | LPIPS↓ | NIMA↑ | MUSIQ↑ |"
    names = [line.split(" | ")[0].removeprefix("| ") for line in table[1:]]
    paper = "↳ paper, RVSD / Realsnow85"
    assert names == ["input", paper, "median3", "M2", paper, "SemiVDN (full)", paper]
    assert table[4].startswith("| M2 | ✓ |  |  | ") and "n/a [" in table[4]
    assert table[5] == "| ↳ paper, RVSD / Realsnow85 |  |  |  | 25.16 | 0.9217 | 0.0822 | 4.212 | 50.69 |"
    assert table[6].startswith("| SemiVDN (full) | ✓ | ✓ | ✓ | 30.00 | 0.9500 | 0.0500 | 4.500 | n/a [")
    assert table[2].endswith("| 18.37 | 0.7792 | 0.3095 | 4.075 | 48.64 |")  # Table 1's input row
    assert any("weights withheld" in line for line in lines)
    assert (root / "report" / "grids" / "full" / grid.name).is_file()
    html = (root / "report" / "ablation.html").read_text()
    assert html.count("data:image/png;base64,") == sum(len(list((d / "grids").glob("*.png"))) for d in dirs)
    quality = json.loads((root / "metrics" / "quality.json").read_text())
    assert set(quality) == {"input", "median3", "M2", "full", "unavailable"}
    assert quality["full"] == {"psnr": 30.0, "ssim": 0.95, "lpips": 0.05, "nima": 4.5, "musiq": None}
    assert quality["median3"]["psnr"] == pytest.approx(evaluations["median3"][1]["psnr"])
    assert "weights withheld" in quality["unavailable"]["musiq"] and "NIMA_" in quality["unavailable"]["nima"]
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["full_psnr"] == 30.0 and "full_musiq" not in run.data.metrics


def test_report_refuses_two_evaluations_of_one_row(evaluations: dict, env: tuple[Config, Path]) -> None:
    cfg, root = env
    with pytest.raises(ValueError, match="row 'input' comes from both"):
        build_report(cfg, [evaluations["input"][0]] * 2, root / "report2", root / "q2.json")
