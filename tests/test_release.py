"""The release model: hash-checked loading, the build that ships it, and the default model on a fresh clone."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from semivdn.config import Config, Model, load_config
from semivdn.data.video import FrameReader, FrameWriter
from semivdn.eval.specs import PER_CLIP_FILE
from semivdn.models import create_model, save_checkpoint
from semivdn.models.checkpoint import CheckpointError, assemble_ensemble
from semivdn.registry import default_model_ref, resolve_checkpoint, seed_champion
from semivdn.release import CHECKPOINT_NAME, MANIFEST_NAME, release_checkpoint
from semivdn.release_build import build_release

TINY_MODEL = Model(dim=16, heads=2, decoder_channels=8)
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture()
def shipped(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny checkpoint built into an assets folder by build_release; returns (assets, card)."""
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "full" / "model.safetensors", create_model(TINY_MODEL), TINY_MODEL,
                                 meta={"variant": "full", "profile": "release", "git_commit": "abc123"})
    warmup, train = tmp_path / "train_M2.json", tmp_path / "train_full.json"
    warmup.write_text(json.dumps({"variant": "M2", "iterations": 20, "seconds": 60.0, "it_per_s": 0.333}))
    train.write_text(json.dumps({"variant": "full", "iterations": 10, "seconds": 120.0, "it_per_s": 0.083,
                                 "recipe": {"init": "models/M2/model.safetensors", "lr": 1e-4, "crop": 96,
                                            "batch_size": 16, "device": "cuda (NVIDIA H100 80GB HBM3)",
                                            "identity_fraction": 0.4, "snow_stream": 1.0, "data_hash": "d0d0",
                                            "git_commit": "abc123"}}))
    scores = {"release": {"real_psnr": {"mean": 24.5, "low": 23.9, "high": 25.1, "n": 12}, "real_lpips": None},
              "input": {"real_psnr": {"mean": 18.0, "low": 17.5, "high": 18.6, "n": 12},
                        "real_lpips": {"mean": 0.3, "low": 0.25, "high": 0.35, "n": 12}}}
    clip_psnr = {"release": [24.0, 25.0, 26.5], "input": [17.5, 18.5, 20.0]}  # +6.5 dB on every clip
    for name, metrics in scores.items():
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "summary.json").write_text(json.dumps({"metrics": metrics}))
        pd.DataFrame({"clip_id": [f"real/test/clip_{i:03d}" for i in range(3)], "source": "real", "frames": 5,
                      "truth": True, "psnr": clip_psnr[name]}).to_csv(tmp_path / "eval" / name / PER_CLIP_FILE)
    assets, card = tmp_path / "assets", tmp_path / "MODEL_CARD.md"
    build_release(checkpoint, [[warmup, train]], [tmp_path / "eval" / name for name in scores],
                  load_config(PARAMS, "smoke"), out_dir=assets, card=card)
    return assets, card


def test_build_release_ships_a_hash_checked_checkpoint_and_a_card(shipped: tuple[Path, Path]) -> None:
    assets, card = shipped
    manifest = json.loads((assets / MANIFEST_NAME).read_text())
    assert release_checkpoint(assets) == assets / CHECKPOINT_NAME
    assert (assets / CHECKPOINT_NAME).stat().st_mode & 0o044 == 0o044  # readable by everyone who installs it
    text = card.read_text()
    assert manifest["sha256"] in text and "abc123" in text
    assert "24.500 [23.900, 25.100]" in text  # metrics with their intervals
    assert "- real psnr over input: +6.50 dB [+6.50, +6.50] (95%, paired over 3 clips)" in text  # the bars
    assert "- Stage 1: `M2`, 20 iterations, 1.0 min at 0.333 it/s\n" in text  # an old record: no recipe to tell
    assert ("- Stage 2: `full`, 10 iterations, 2.0 min at 0.083 it/s; from `models/M2/model.safetensors`, lr 0.0001, "
            "batches of 16, 96-pixel crops, 40% identity pairs, snow-stream loss weight 1.0, data `d0d0`, "
            "code `abc123`, on cuda (NVIDIA H100 80GB HBM3)\n") in text
    assert "| release | n/a | 24.500" in text  # columns real_lpips, real_psnr: an unavailable metric says so
    harm = manifest["do_no_harm"]  # measured on the shipped weights, clip by clip, against the bar
    assert harm["clips"] == len(harm["per_clip"]) >= 10
    assert harm["min_psnr_vs_input_db"] == min(s["psnr_vs_input_db"] for s in harm["per_clip"].values())
    assert harm["meets_bar"] == (harm["min_psnr_vs_input_db"] >= 32 and harm["max_abs_luminance_change"] <= 0.02)
    assert "## Do no harm" in text and f"{harm['min_psnr_vs_input_db']:.1f} dB" in text


def test_an_ensemble_release_names_each_member_and_its_stages(tmp_path: Path) -> None:
    members = []
    for seed, commit in ((0, "aaa111"), (1, "bbb222")):
        torch.manual_seed(seed)
        members.append(save_checkpoint(tmp_path / f"m{seed}.safetensors", create_model(TINY_MODEL), TINY_MODEL,
                                       meta={"variant": "M2+ft", "profile": "release", "git_commit": commit}))
    ensemble = assemble_ensemble(members, tmp_path / "ensemble.safetensors")
    stage = tmp_path / "stage.json"
    stage.write_text(json.dumps({"variant": "M2+ft", "iterations": 10, "seconds": 60.0, "it_per_s": 0.167}))
    cfg = load_config(PARAMS, "smoke")
    with pytest.raises(ValueError, match="holds 2 network"):
        build_release(ensemble, [[stage]], [], cfg, out_dir=tmp_path / "assets", card=tmp_path / "card.md")
    build_release(ensemble, [[stage, stage], [stage]], [], cfg, out_dir=tmp_path / "assets", card=tmp_path / "card.md")
    text = (tmp_path / "card.md").read_text()
    assert "An output ensemble of 2 such networks" in text
    assert "Member 1: variant `M2+ft`" in text and "`aaa111`" in text and "`bbb222`" in text
    assert [line.split(":")[0] for line in text.splitlines() if line.startswith("- Member") and "stage" in line] == [
        "- Member 1, stage 1", "- Member 1, stage 2", "- Member 2, stage 1"]
    assert release_checkpoint(tmp_path / "assets").is_file()


def test_tampered_or_missing_release_model_is_a_clear_error(shipped: tuple[Path, Path], tmp_path: Path) -> None:
    assets, _ = shipped
    weights = bytearray((assets / CHECKPOINT_NAME).read_bytes())
    weights[-1] ^= 0xFF
    (assets / CHECKPOINT_NAME).write_bytes(bytes(weights))
    with pytest.raises(CheckpointError, match="corrupt or was replaced"):
        release_checkpoint(assets)
    with pytest.raises(CheckpointError, match="release model is missing"):
        release_checkpoint(tmp_path / "nowhere")


def test_release_rejects_an_oversized_checkpoint(tmp_path: Path) -> None:
    big = tmp_path / "big.safetensors"
    with big.open("wb") as handle:
        handle.truncate(21 * 1024 * 1024)
    with pytest.raises(ValueError, match="exceeds the release limit"):
        build_release(big, [], [], load_config(PARAMS, "smoke"), out_dir=tmp_path / "assets", card=tmp_path / "card.md")


def test_default_model_is_the_release_model_without_a_registry(smoke_cfg: Config, tmp_path: Path) -> None:
    database = tmp_path / "mlruns.db"
    cfg = dataclasses.replace(smoke_cfg, mlflow=dataclasses.replace(smoke_cfg.mlflow,
                                                                     tracking_uri=f"sqlite:///{database}"))
    assert default_model_ref(cfg) == "release"
    assert not database.exists()  # asking does not create a registry



def test_seed_champion_only_fills_an_empty_registry(smoke_cfg: Config, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dataclasses.replace(smoke_cfg, mlflow=dataclasses.replace(
        smoke_cfg.mlflow, tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
        artifact_location=str(tmp_path / "artifacts"), model_name="seeded"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.mlflow.tracking_uri)
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        checkpoints.append(save_checkpoint(tmp_path / f"m{seed}" / "model.safetensors", create_model(TINY_MODEL),
                                           TINY_MODEL, meta={"variant": "full"}))
    first = seed_champion(cfg, checkpoints[0], "full", None)
    assert first["seeded"] and first["alias"] == "champion"
    again = seed_champion(cfg, checkpoints[1], "full", None)  # a champion exists: nothing changes
    assert again == {"seeded": False, "champion": first["version"]}
    assert default_model_ref(cfg) == "models:/seeded@champion"


def test_release_reference_resolves_to_the_checked_shipped_file(smoke_cfg: Config) -> None:
    assert resolve_checkpoint(smoke_cfg, "release") == release_checkpoint()


def test_fresh_clone_desnows_an_mp4_with_the_release_model(tmp_path: Path) -> None:
    """No registry anywhere: desnow takes the shipped model and says so."""
    frames = np.random.default_rng(0).integers(0, 255, (6, 48, 64, 3), dtype=np.uint8)
    with FrameWriter(tmp_path / "snowy.mp4", fps=12) as writer:
        for frame in frames:
            writer.write(frame)
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, "-m", "semivdn.cli", "desnow", "snowy.mp4", "-o", "clean.mp4"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert "using the release model" in done.stderr
    members = json.loads((release_checkpoint().parent / MANIFEST_NAME).read_text())["meta"].get("members")
    assert (f"an ensemble of {len(members)} networks" in done.stderr) == bool(members)  # says what it runs
    assert json.loads(done.stdout)["frames"] == 6 and not (tmp_path / "mlruns.db").exists()
    with FrameReader(tmp_path / "clean.mp4") as reader:
        assert sum(1 for _ in reader) == 6
