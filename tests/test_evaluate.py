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
def evaluations(env: tuple[Config, Path], tiny_data: tuple[Path, Path],
                tiny_truth: Path) -> dict[str, tuple[Path, dict]]:
    """input, median3 and a tiny M2 checkpoint evaluated on the train split (2 paired + 2 real clips), and on
    the test split (1 paired clip, 1 real clip with held-back truth)."""
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
        summary = evaluate(cfg, ref, None, "train", raw, curated, out, tiny_truth)
        results[summary["name"]] = (out, summary)
        test_out = out.with_name(out.name + "-test")
        results[summary["name"] + "-test"] = (test_out, evaluate(cfg, ref, None, "test", raw, curated, test_out,
                                                                 tiny_truth))
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
    assert summary["metrics"]["paired_psnr"]["mean"] == pytest.approx(np.mean(per_frame), abs=1e-4)  # equal lengths
    assert summary["frames"]["paired"] == len(per_frame) == 12


def test_outputs_per_clip_summary_and_grids(evaluations: dict, smoke_cfg: Config) -> None:
    out, summary = evaluations["median3"]
    table = pd.read_csv(out / "per_clip.csv")
    assert list(table.columns) == ["clip_id", "source", "frames", "truth", *METRIC_ORDER]
    assert list(table.source) == ["paired", "paired", "real", "real"]
    assert table.psnr.iloc[:2].notna().all() and table.psnr.iloc[2:].isna().all()  # real train keeps no truth
    assert table.niqe.iloc[:2].isna().all() and table.niqe.iloc[2:].notna().all()  # NR metrics on real clips only
    psnr = summary["metrics"]["paired_psnr"]
    assert psnr["mean"] == pytest.approx(table.psnr.iloc[:2].mean()) and psnr["n"] == 2
    assert psnr["low"] <= psnr["mean"] <= psnr["high"] and psnr["confidence"] == 0.95
    written = json.loads((out / "summary.json").read_text())
    assert {"name", "variant", "model_ref", "frames", "clips", "metrics", "unavailable"} <= set(written)
    assert written["frames"] == {"paired": 12, "real": 12} and written["name"] == "median3"
    for key, filename in (("paired_lpips", "LPIPS_v0.1_alex-df73285e.pth"),
                          ("real_nima", "NIMA_InceptionV2_ava-b0c77c00.pth"),
                          ("real_musiq", "musiq_koniq_ckpt-e95806b9.pth")):
        assert written["metrics"][key] is None and filename in written["unavailable"][key]
    assert "held-back truth" in written["unavailable"]["real_psnr"]
    assert written["metrics"]["real_niqe"]["mean"] > 0  # NIQE needs no download
    grids = sorted((out / "grids").glob("*.png"))
    assert [g.name for g in grids] == ["paired__train__clip_000.png", "real__train__clip_000.png"]
    assert smoke_cfg.eval.grid_clips == 1
    assert Image.open(grids[0]).size == (3 * 48 + 2 * 2, 16 + 48)  # input | output | ground truth
    assert Image.open(grids[1]).size == (2 * 48 + 2, 16 + 48)  # no ground truth for real training footage


def test_real_test_clips_are_scored_against_their_held_back_truth(evaluations: dict, tiny_data: tuple[Path, Path],
                                                                  tiny_truth: Path) -> None:
    raw, _ = tiny_data
    out, summary = evaluations["input-test"]
    snowy, clean = _frames(raw / "real" / "test" / "clip_000"), _frames(tiny_truth / "test" / "clip_000")
    expected = np.mean([10 * np.log10(1 / np.mean((s - c) ** 2)) for s, c in zip(snowy, clean, strict=True)])
    assert summary["metrics"]["real_psnr"]["mean"] == pytest.approx(expected, abs=1e-4)
    assert summary["real_clips_with_truth"] == 1 and summary["metrics"]["real_psnr"]["low"] is None  # one clip
    assert Image.open(out / "grids" / "real__test__clip_000.png").size == (3 * 48 + 2 * 2, 16 + 48)


def test_median3_beats_the_input_on_moving_snow(evaluations: dict) -> None:
    for metric in ("paired_psnr", "paired_ssim"):
        assert evaluations["median3"][1]["metrics"][metric]["mean"] > evaluations["input"][1]["metrics"][metric]["mean"]


def test_a_checkpoint_is_logged_into_its_training_run(evaluations: dict, env: tuple[Config, Path]) -> None:
    _, summary = evaluations["M2"]
    assert summary["variant"] == "M2" and all(np.isfinite(summary["metrics"][k]["mean"])
                                               for k in ("paired_psnr", "paired_ssim"))
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "train-M2"
    assert run.data.metrics["train_paired_psnr"] == pytest.approx(summary["metrics"]["paired_psnr"]["mean"])
    assert run.data.metrics["train_paired_psnr_low"] == pytest.approx(summary["metrics"]["paired_psnr"]["low"])
    assert "train_real_nima.unavailable" in run.data.tags


def test_a_checkpoint_whose_run_is_gone_is_logged_into_a_new_run(env: tuple[Config, Path],
                                                                tiny_data: tuple[Path, Path]) -> None:
    cfg, root = env
    checkpoint = save_checkpoint(root / "orphan" / "model.safetensors", create_model(TINY_MODEL), TINY_MODEL,
                                 meta={"variant": "M1", "mlflow_run_id": "0" * 32})
    summary = evaluate(cfg, str(checkpoint), "orphan", "test", *tiny_data, root / "eval-orphan")
    assert summary["metrics"]["real_psnr"] is None  # without truth_root the real domain gets NR metrics only
    assert mlflow.get_run(summary["mlflow_run_id"]).info.run_name == "eval-orphan"


def test_a_baseline_is_logged_into_a_new_eval_run(evaluations: dict) -> None:
    _, summary = evaluations["input"]
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "eval-input"
    assert run.data.metrics["train_paired_ssim"] == pytest.approx(summary["metrics"]["paired_ssim"]["mean"])


def test_split_without_real_clips_reports_nr_metrics_unavailable(env: tuple[Config, Path],
                                                                 tiny_data: tuple[Path, Path]) -> None:
    cfg, root = env
    summary = evaluate(cfg, "input", "input-val", "val", *tiny_data, root / "eval-val")
    assert summary["metrics"]["real_niqe"] is None
    assert summary["unavailable"]["real_niqe"] == "no real clips in split 'val'"
    assert summary["clips"] == {"paired": 1, "real": 0} and summary["frames"]["real"] == 0


def test_bad_requests_are_refused(env: tuple[Config, Path], tiny_data: tuple[Path, Path]) -> None:
    cfg, root = env
    with pytest.raises(ValueError, match="split must be"):
        evaluate(cfg, "input", None, "validation", *tiny_data, root / "bad")
    wrong = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, metrics_paired=("psnr", "nima")))
    with pytest.raises(ValueError, match="'nima' is not a paired"):
        evaluate(wrong, "input", None, "train", *tiny_data, root / "bad")


def _fake_full(root: Path, m2_dir: Path, grid_source: Path) -> Path:
    """A hand-written evaluation of the full model: M2's clips, each +1 dB on paired PSNR; musiq unavailable."""
    folder = root / "eval" / "full"
    (folder / "grids").mkdir(parents=True, exist_ok=True)
    (folder / "grids" / grid_source.name).write_bytes(grid_source.read_bytes())
    table = pd.read_csv(m2_dir / "per_clip.csv")
    table.loc[table.source == "paired", "psnr"] += 1.0
    table.to_csv(folder / "per_clip.csv", index=False)
    m2 = json.loads((m2_dir / "summary.json").read_text())
    metrics = dict(m2["metrics"])
    shifted = dict(metrics["paired_psnr"])
    shifted.update({k: shifted[k] + 1.0 for k in ("mean", "low", "high")})
    metrics.update(paired_psnr=shifted, real_musiq=None)
    summary = {**m2, "name": "full", "variant": "full", "model_ref": "models/full", "metrics": metrics,
               "unavailable": {**m2["unavailable"], "real_musiq": "weights withheld"}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_report_shows_both_domains_intervals_and_paired_comparisons(evaluations: dict,
                                                                     env: tuple[Config, Path]) -> None:
    cfg, root = env
    grid = next((evaluations["M2"][0] / "grids").glob("paired*.png"))
    m2_dir = evaluations["M2"][0]
    dirs = [m2_dir, evaluations["median3"][0], evaluations["input"][0], _fake_full(root, m2_dir, grid)]
    result = build_report(cfg, dirs, root / "report", root / "metrics" / "quality.json")
    assert result["rows"] == ["input", "median3", "M2", "full"]  # the paper's order, whatever the input order
    text = (root / "report" / "ablation.md").read_text()
    lines = text.splitlines()
    assert "## Paired synthetic test: 2 clips" in lines and any(line.startswith("## Proxy-real test") for line in lines)
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| Method | TDE | SST | DCR | PSNR↑ | SSIM↑ | LPIPS↓ |"
    names = [line.split(" | ")[0].removeprefix("| ") for line in table[1:8]]
    paper = "↳ paper, RVSD / Realsnow85"
    assert names == ["input", paper, "median3", "M2", paper, "SemiVDN (full)", paper]
    m2_psnr = evaluations["M2"][1]["metrics"]["paired_psnr"]
    assert table[4].startswith(f"| M2 | ✓ |  |  | {m2_psnr['mean']:.2f} [{m2_psnr['low']:.2f}, {m2_psnr['high']:.2f}]")
    assert table[5] == "| ↳ paper, RVSD / Realsnow85 |  |  |  | 25.16 | 0.9217 | 0.0822 |"
    real_header = next(line for line in table if "NIQE↓" in line)
    assert real_header == "| Method | TDE | SST | DCR | PSNR↑ | SSIM↑ | LPIPS↓ | NIQE↓ | NIMA↑ | MUSIQ↑ |"
    comparison = next(line for line in table if line.startswith("| SemiVDN (full) − M2 |"))
    assert "+1.000 [+1.000, +1.000] ✓" in comparison  # every clip exactly +1 dB: significant, zero width
    assert "| median3 − input |" in text and "Resolution:" in text and "weights withheld" in text
    assert (root / "report" / "grids" / "full" / grid.name).is_file()
    html = (root / "report" / "ablation.html").read_text()
    assert html.count("data:image/png;base64,") == sum(len(list((d / "grids").glob("*.png"))) for d in dirs)
    quality = json.loads((root / "metrics" / "quality.json").read_text())
    assert set(quality) == {"input", "median3", "M2", "full", "comparisons", "unavailable", "do_no_harm"}
    assert quality["do_no_harm"]["input"]["meets_bar"] is True  # the identity changes nothing
    assert quality["do_no_harm"]["input"]["max_abs_luminance_change"] == 0.0
    harm_rows = text[text.index("## Do no harm"):].splitlines()
    assert any(line.startswith("| input | 120.0 | 0.0 % |") and line.endswith("| yes | — |") for line in harm_rows)
    m2_harm = evaluations["M2"][1]  # a model: the network alone, then with the snow gate (never more change)
    assert m2_harm["do_no_harm_gated"]["min_psnr_vs_input_db"] >= m2_harm["do_no_harm"]["min_psnr_vs_input_db"]
    assert any(line.startswith("| M2 |") and line.endswith(
        f"| {m2_harm['do_no_harm_gated']['min_psnr_vs_input_db']:.1f} dB, "
        f"{100 * m2_harm['do_no_harm_gated']['max_abs_luminance_change']:.1f} %, "
        f"{'yes' if m2_harm['do_no_harm_gated']['meets_bar'] else 'no'} |") for line in harm_rows)
    assert quality["full"]["paired_psnr"]["mean"] == pytest.approx(m2_psnr["mean"] + 1.0)
    assert quality["full"]["real_musiq"] is None and "weights withheld" in quality["unavailable"]["real_musiq"]
    delta = quality["comparisons"]["full - M2: paired_psnr"]
    assert delta["mean"] == pytest.approx(1.0) and delta["verdict"] == "better"
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["full_paired_psnr"] == pytest.approx(m2_psnr["mean"] + 1.0)
    assert "full_real_musiq" not in run.data.metrics


def test_report_refuses_two_evaluations_of_one_row(evaluations: dict, env: tuple[Config, Path]) -> None:
    cfg, root = env
    with pytest.raises(ValueError, match="row 'input' comes from both"):
        build_report(cfg, [evaluations["input"][0]] * 2, root / "report2", root / "q2.json")


def test_report_refuses_to_compare_evaluations_of_different_clips(evaluations: dict,
                                                                  env: tuple[Config, Path]) -> None:
    cfg, root = env
    with pytest.raises(ValueError, match="scored different clips"):
        build_report(cfg, [evaluations["input"][0], evaluations["median3-test"][0]], root / "report3", root / "q3.json")
