"""Footage: content fingerprints, the sensor and the champion's tag, add-only ingestion, staging, DVC versions."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from semivdn import storage
from semivdn.config import Config, config_from_dict, load_config
from semivdn.data.curate import curate
from semivdn.data.datasets import clip_refs
from semivdn.data.make import make_dataset
from semivdn.data.video import FrameWriter
from semivdn.footage import (
    add_footage,
    champion_version,
    data_fingerprint,
    decide,
    fingerprint,
    footage_files,
    ingested_name,
    record_fingerprint,
    stage_footage,
)
from semivdn.versioning import dvc_root, version_data

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def _new_clip(path: Path, seed: int, size: int = 48, frames: int = 6) -> Path:
    """A short real-looking clip nobody has seen: a drifting colour field with falling white flakes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    flakes = rng.integers(0, size, (20, 2))
    with FrameWriter(path) as writer:
        for t in range(frames):
            frame = np.stack([0.4 + 0.3 * np.sin(5 * x + t / 3 + seed), 0.3 + 0.4 * y, 0.5 + 0.2 * x], -1)
            for row, col in flakes:
                frame[(row + 2 * t) % size, col] = 1.0
            writer.write((frame * 255).astype(np.uint8))
    return path


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite MLflow store for the module (creating one takes seconds); tests use their own model names."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def cfg(mlflow_store: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Config:
    """Smoke params with the module's private MLflow store and a model name of this test's own."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = load_config(PARAMS, "smoke").to_dict()
    base["mlflow"].update(tracking_uri=f"sqlite:///{mlflow_store / 'mlruns.db'}",
                          artifact_location=str(mlflow_store / "mlartifacts"), model_name=request.node.name[:60])
    return config_from_dict(base, "smoke")


def _register_champion(cfg: Config, footage_fingerprint: str | None) -> str:
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri, registry_uri=cfg.mlflow.tracking_uri)
    client.create_registered_model(cfg.mlflow.model_name)
    version = client.create_model_version(cfg.mlflow.model_name, source="models/full/model.safetensors").version
    client.set_registered_model_alias(cfg.mlflow.model_name, "champion", version)
    if footage_fingerprint is not None:
        record_fingerprint(cfg, version, footage_fingerprint)
    return str(version)


def test_fingerprint_is_a_content_hash_over_names_sizes_and_bytes(tmp_path: Path) -> None:
    files = {"a.mp4": b"aaaa", "clip/00000.png": b"p0", "clip/00001.png": b"p1"}
    first = fingerprint(_write(tmp_path / "one", files))
    assert first == fingerprint(_write(tmp_path / "two", dict(reversed(files.items()))))  # order-free
    assert first != fingerprint(_write(tmp_path / "edited", {**files, "a.mp4": b"aaab"}))  # same size, new bytes
    assert first != fingerprint(_write(tmp_path / "renamed", {"b.mp4": b"aaaa", **{k: v for k, v in files.items()
                                                                                  if k != "a.mp4"}}))
    expected = hashlib.sha256("".join(f"{name}\t{len(content)}\t{hashlib.sha256(content).hexdigest()}\n"
                                      for name, content in sorted(files.items())).encode()).hexdigest()
    assert first == expected


def test_data_fingerprint_changes_with_any_raw_byte_or_the_footage(tmp_path: Path) -> None:
    """The pipeline's cache key for ingestion: the same content gives the same key wherever it lives."""
    raw = {"paired/train/snowy/c/00000.png": b"s0", "manifest.json": b"{}"}
    footage = {"site.mp4": b"vvvv"}
    key = data_fingerprint(_write(tmp_path / "raw", raw), _write(tmp_path / "in", footage))
    assert key == data_fingerprint(_write(tmp_path / "raw2", raw), _write(tmp_path / "in2", footage))
    assert key != data_fingerprint(_write(tmp_path / "raw3", {**raw, "manifest.json": b"[]"}), tmp_path / "in")
    assert key != data_fingerprint(tmp_path / "raw", _write(tmp_path / "in3", {"site.mp4": b"vvvw"}))


def test_fingerprint_counts_only_clip_files_and_says_what_it_left_out(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    clips = _write(tmp_path / "clips", {"a.MP4": b"v"})
    noisy = _write(tmp_path / "noisy", {"a.MP4": b"v", "notes.txt": b"hi", ".hidden/x.png": b"h",
                                        ".DS_Store.png": b"d"})
    with caplog.at_level(logging.WARNING):
        assert fingerprint(noisy) == fingerprint(clips)
    assert "notes.txt" in caplog.text
    assert [f.name for f in footage_files(noisy)] == ["a.MP4"]
    (tmp_path / "empty").mkdir()
    assert fingerprint(tmp_path / "empty") == EMPTY_SHA256
    with pytest.raises(storage.StorageError, match="absent"):
        fingerprint(tmp_path / "absent")


def test_ingested_names_are_marked_and_keep_frame_folders_together() -> None:
    assert ingested_name("site.mp4") == "footage-site.mp4"
    assert ingested_name("clipA/00001.png") == "footage-clipA/00001.png"


def test_sensor_sweeps_first_skips_known_footage_and_retrains_on_new_footage(cfg: Config, tmp_path: Path) -> None:
    footage = tmp_path / "incoming"
    footage.mkdir()
    first = decide(cfg, str(footage))
    assert (first.action, first.champion_version) == ("sweep", None)

    version = _register_champion(cfg, first.fingerprint)
    again = decide(cfg, str(footage))
    assert (again.action, again.champion_version, again.champion_fingerprint) == ("skip", version, first.fingerprint)

    _write(footage, {"site_a.mp4": b"new footage"})
    changed = decide(cfg, str(footage))
    assert changed.action == "retrain"
    assert changed.fingerprint == fingerprint(footage) != first.fingerprint


def test_sensor_retrains_when_the_champion_carries_no_fingerprint(cfg: Config, tmp_path: Path) -> None:
    (tmp_path / "incoming").mkdir()
    version = _register_champion(cfg, None)
    assert str(champion_version(cfg).version) == version
    decision = decide(cfg, str(tmp_path / "incoming"))
    assert (decision.action, decision.champion_fingerprint) == ("retrain", None)


def test_staging_adds_footage_to_a_copy_of_the_raw_data_and_curation_quarantines_the_corrupt_clip(
        cfg: Config, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_dataset(cfg, raw, tmp_path / "real_truth")
    footage = tmp_path / "incoming"
    _new_clip(footage / "site_a.mp4", seed=7)
    _write(footage, {"broken.mp4": b"\x00\x01 not a video " * 200})
    footage_before, raw_before = _digests(footage), _digests(raw)

    result = stage_footage(cfg, str(footage), str(raw), tmp_path / "artifact")

    assert result.fingerprint == fingerprint(footage)
    assert sorted(result.clips) == ["broken.mp4", "site_a.mp4"]
    assert (_digests(footage), _digests(raw)) == (footage_before, raw_before)  # both stay as they were
    artifact = _digests(tmp_path / "artifact")
    assert {k: v for k, v in artifact.items() if not k.startswith("real/train/footage-")} == raw_before
    assert artifact["real/train/footage-site_a.mp4"] == footage_before["site_a.mp4"]

    summary = curate(cfg, tmp_path / "artifact", tmp_path / "curated")
    quarantine = pd.read_csv(tmp_path / "curated" / "quarantine.csv")
    assert quarantine["path"].tolist() == ["real/train/footage-broken.mp4"]
    manifest = pd.read_parquet(tmp_path / "curated" / "manifest.parquet")
    assert "real/train/footage-site_a.mp4" in manifest["snowy_path"].tolist()
    assert summary["quarantined"] == 1


def test_curation_reads_the_footage_folder_as_real_train_clips_resolvable_from_the_raw_root(
        cfg: Config, tmp_path: Path) -> None:
    raw, footage = tmp_path / "data" / "raw", tmp_path / "data" / "footage"
    make_dataset(cfg, raw, tmp_path / "real_truth")
    _new_clip(footage / "site_a.mp4", seed=3)
    curate(cfg, raw, tmp_path / "curated", footage)
    manifest = pd.read_parquet(tmp_path / "curated" / "manifest.parquet")
    row = manifest.set_index("clip_id").loc["real/train/footage-site_a"]
    assert row["snowy_path"] == "../footage/site_a.mp4"
    [ref] = [c for c in clip_refs(manifest, raw, "real", "train") if c.clip_id == "real/train/footage-site_a"]
    assert ref.snowy.resolve() == (footage / "site_a.mp4").resolve()


def test_ingesting_adds_new_clips_and_never_overwrites(cfg: Config, tmp_path: Path) -> None:
    incoming, store = tmp_path / "incoming", tmp_path / "footage"
    _write(incoming, {"a.mp4": b"first a", "site/00000.png": b"f0", "site/00001.png": b"f1"})
    first = add_footage(cfg, str(incoming), store)
    assert (first.added, first.unchanged) == (["a.mp4", "site"], [])
    kept = _digests(store)

    again = add_footage(cfg, str(incoming), store)  # nothing new: nothing written
    assert (again.added, sorted(again.unchanged)) == ([], ["a.mp4", "site"])
    assert _digests(store) == kept

    _write(incoming, {"a.mp4": b"second a", "b.mp4": b"b", "site/00001.png": b"f1 re-encoded"})
    third = add_footage(cfg, str(incoming), store)
    assert len(third.added) == 3 and "b.mp4" in third.added
    renamed = sorted(name for name in third.added if name != "b.mp4")
    assert [name.split("-")[0] for name in renamed] == ["a", "site"]  # a-<digest>.mp4, site-<digest>
    after = _digests(store)
    assert {k: after[k] for k in kept} == kept  # every earlier file is still there, unchanged
    assert after[next(n for n in renamed if n.endswith(".mp4"))] == hashlib.sha256(b"second a").hexdigest()
    assert third.fingerprint == fingerprint(store)
    assert third.dvc == []  # tmp_path is not a DVC repository


def test_a_deleted_clip_is_a_new_footage_version_for_the_sensor(cfg: Config, tmp_path: Path) -> None:
    store = _write(tmp_path / "footage", {"a.mp4": b"a", "b.mp4": b"b"})
    version = _register_champion(cfg, fingerprint(store))
    assert decide(cfg, str(store)).action == "skip"
    (store / "b.mp4").unlink()
    decision = decide(cfg, str(store))
    assert (decision.action, decision.champion_version) == ("retrain", version)


def _dvc(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True, capture_output=True, timeout=300)


def test_version_data_adds_each_version_and_pushes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data" / "footage").mkdir(parents=True)
    (repo / "data" / "footage" / "a.txt").write_text("a")
    assert version_data(repo / "data" / "footage") == []  # not a DVC repository yet: skipped
    _dvc(repo, "init", "--no-scm", "-q")
    assert dvc_root(repo / "data" / "footage") == repo

    assert version_data(repo / "data" / "footage") == ["dvc add data/footage"]
    first = (repo / "data" / "footage.dvc").read_text()
    (repo / "data" / "footage" / "b.txt").write_text("b")
    _dvc(repo, "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    assert version_data(repo / "data" / "footage") == ["dvc add data/footage", "dvc push data/footage"]
    assert (repo / "data" / "footage.dvc").read_text() != first
    assert any((tmp_path / "remote").rglob("*")), "dvc push wrote nothing to the remote"


def test_version_data_refuses_a_pipeline_stage_output(tmp_path: Path) -> None:
    """`dvc repro` deletes and rewrites a stage's output: data committed over it would be lost."""
    (tmp_path / "dvc.yaml").write_text("stages:\n  make:\n    cmd: mkdir -p raw && echo a > raw/a.txt\n"
                                       "    outs: [raw]\n")
    _dvc(tmp_path, "init", "--no-scm", "-q")
    _dvc(tmp_path, "repro", "-q")
    lock = (tmp_path / "dvc.lock").read_text()
    (tmp_path / "raw" / "footage-x.mp4").write_text("x")
    with pytest.raises(ValueError, match="output of the stage"):
        version_data(tmp_path / "raw")
    assert (tmp_path / "dvc.lock").read_text() == lock
