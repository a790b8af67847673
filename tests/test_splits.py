"""Honest splits: scenes disjoint across train/val/test and across sets, and the proxy-real
truth out of training's reach (the semi-supervised protocol with held-back labels)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from semivdn.config import Config
from semivdn.data.curate import curate
from semivdn.data.datasets import clip_refs, load_manifest
from semivdn.data.make import make_dataset
from semivdn.data.video import read_image
from semivdn.train import run_training

ROOT = Path(__file__).resolve().parents[1]
_WATCHED: list[Path] = []  # folders whose access the audit hook records
_TOUCHED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if _WATCHED and event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], str | Path):
        path = Path(args[0]).resolve()
        if any(path == folder or folder in path.parents for folder in _WATCHED):
            _TOUCHED.append(f"{event} {path}")


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one records only while a folder is watched


@pytest.fixture()
def watch_truth(made: tuple[Path, Path, Path]) -> Iterator[list[str]]:
    _WATCHED.append(made[2].resolve())
    _TOUCHED.clear()
    try:
        yield _TOUCHED
    finally:
        _WATCHED.clear()


@pytest.fixture(scope="module")
def made(smoke_cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("splits")
    raw, curated, truth = root / "raw", root / "curated", root / "real_truth"
    make_dataset(smoke_cfg, raw, truth)
    curate(smoke_cfg, raw, curated)
    return raw, curated, truth


def test_curated_splits_hold_disjoint_scenes(made: tuple[Path, Path, Path]) -> None:
    raw, curated, _ = made
    manifest = load_manifest(curated)
    scene_of = {f"{s}/{c['split']}/{c['clip']}": c["scene"] for s in ("paired", "real")
                for c in json.loads((raw / s / "manifest.json").read_text())["clips"]}
    groups = {key: {scene_of[i] for i in group["clip_id"]} for key, group in manifest.groupby(["source", "split"])}
    assert {split for _, split in groups} == {"train", "val", "test"}
    for key, scenes in groups.items():
        for other, other_scenes in groups.items():
            assert key == other or not scenes & other_scenes, (key, other, scenes & other_scenes)


def test_real_truth_lies_outside_the_raw_data_and_the_manifest(made: tuple[Path, Path, Path]) -> None:
    raw, curated, truth = made
    assert raw.resolve() not in truth.resolve().parents
    assert sorted(p.name for p in truth.iterdir()) == ["test", "val"]  # unlabelled training footage keeps none
    manifest = load_manifest(curated)
    real = manifest[manifest.source == "real"]
    assert len(real) and real["clean_path"].isna().all()
    for split in ("train", "val", "test"):
        assert all(ref.clean is None for ref in clip_refs(manifest, raw, "real", split))


def test_training_never_opens_the_real_truth(made: tuple[Path, Path, Path], smoke_cfg: Config, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, watch_truth: list[str]) -> None:
    """M3 reads the real train footage (mean teacher) and validates on paired val; the truth stays unopened."""
    raw, curated, truth = made
    read_image(next(truth.rglob("*.png")))
    assert watch_truth, "the audit hook must see a read of the truth"  # the check below can fail
    watch_truth.clear()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.chdir(tmp_path)
    metrics = run_training(smoke_cfg, "M3", raw, curated, tmp_path / "M3", init="none")
    assert metrics["iterations"] >= 1 and "val_psnr" in metrics  # it validated (on paired val)
    assert watch_truth == []


def test_training_code_never_names_the_test_split() -> None:
    """`test` is for `semivdn evaluate`, reports and the gate; training and tuning see train and val only."""
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in sorted((ROOT / "semivdn" / "train").rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"""["']test["']""", line)]
    assert offenders == []
