"""The MLflow registry: pyfunc model, registration tags, the champion gate, rollback, concurrency."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from semivdn.config import Config, Model, SnowParams
from semivdn.data.scenes import render_clean_clip
from semivdn.data.synth import synthesize_snow
from semivdn.inference import desnow_clip
from semivdn.models import create_model, load_checkpoint, save_checkpoint
from semivdn.models.checkpoint import read_checkpoint_header
from semivdn.registry import _lock_path, download_model, promote, register_model
from semivdn.snow_gate import clip_gates
from semivdn.tracking import configure_mlflow
from semivdn.weights import sha256_file

TINY_MODEL = Model(dim=16, heads=2, decoder_channels=8)
_SERIAL = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, smoke_cfg: Config) -> Iterator[tuple[Config, Path]]:
    """The smoke config on a private sqlite MLflow store, and a tiny M2 checkpoint with a training run."""
    root = tmp_path_factory.mktemp("registry")
    cfg = dataclasses.replace(smoke_cfg, mlflow=dataclasses.replace(
        smoke_cfg.mlflow, tracking_uri=f"sqlite:///{root / 'mlruns.db'}", artifact_location=str(root / "artifacts"),
        model_cache=str(root / "cache")))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", cfg.mlflow.tracking_uri)  # restored after the module
        configure_mlflow(cfg)
        with mlflow.start_run(run_name="train-M2") as run:
            pass
        torch.manual_seed(0)
        save_checkpoint(root / "M2" / "model.safetensors", create_model(TINY_MODEL), TINY_MODEL,
                        meta={"variant": "M2", "mlflow_run_id": run.info.run_id, "data_hash": "d4t4"})
        yield cfg, root


def _named(cfg: Config, model_name: str) -> Config:
    """One registered model per test, so tests do not share champions."""
    return dataclasses.replace(cfg, mlflow=dataclasses.replace(cfg.mlflow, model_name=model_name))


CLIPS = [f"real/test/clip_{i:03d}" for i in range(12)]
BASE = np.random.default_rng(0).normal(22.0, 2.0, len(CLIPS))  # per-clip real PSNR of a reference model


def _register(cfg: Config, root: Path, psnr: float, noise: float = 0.0, checkpoint: Path | None = None) -> int:
    """Register a checkpoint (default: a distinct one) whose per-clip real PSNR is BASE + psnr (+ zero-mean noise).

    The truth goes to ``root/truths/<sha256>.csv``, where :class:`DiskScorer` finds it when the gate
    re-scores the version; the registration's own summary (its tags) is deliberately stale (99 dB),
    so a gate that read tags instead of re-scoring would be caught.
    """
    if checkpoint is None:
        checkpoint = _distinct_checkpoint(root, f"{cfg.mlflow.model_name}-{next(_SERIAL)}")
    digest = sha256_file(checkpoint)
    draw = np.random.default_rng(int(hashlib.sha256(checkpoint.parent.name.encode()).hexdigest()[:8], 16))
    wobble = draw.standard_normal(len(CLIPS))
    wobble = (wobble - wobble.mean()) / wobble.std()  # zero mean: the noise never shifts the true mean gain
    values = BASE + psnr + noise * wobble
    table = pd.DataFrame({"clip_id": CLIPS, "source": "real", "frames": 6, "truth": True, "psnr": values,
                          "ssim": 0.9, "niqe": 5.0})
    (root / "truths").mkdir(exist_ok=True)
    table.to_csv(root / "truths" / f"{digest}.csv", index=False)
    folder = root / "evals" / digest[:12]
    folder.mkdir(parents=True, exist_ok=True)
    stale = {"mean": 99.0, "low": 98.0, "high": 100.0, "n": len(CLIPS), "confidence": 0.95}
    summary = {"name": "M2", "split": "test", "clips": {"paired": 0, "real": len(CLIPS)},
               "metrics": {"real_psnr": stale, "real_nima": None}, "checkpoint_sha256": digest,
               "unavailable": {"real_nima": "weights missing"}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return register_model(cfg, checkpoint, "M2", folder)["version"]


class DiskScorer:
    """The gate's scorer in tests: a version's per-clip truth from :func:`_register` (picklable, for the pool)."""

    def __init__(self, cfg: Config, root: Path) -> None:
        self.cfg, self.root, self.calls = cfg, root, []

    def __call__(self, model_uri: str, role: str) -> Path:
        name, _, version = model_uri.removeprefix("models:/").rpartition("/")
        digest = MlflowClient(self.cfg.mlflow.tracking_uri).get_model_version(name, version).tags["checkpoint_sha256"]
        (self.root / "scored").mkdir(exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-{version}-{role}-", dir=self.root / "scored"))
        table = pd.read_csv(self.root / "truths" / f"{digest}.csv")
        table.to_csv(folder / "per_clip.csv", index=False)
        metrics = {f"real_{m}": {"mean": float(table[m].mean()), "low": None, "high": None, "n": len(table),
                                 "confidence": 0.95} for m in ("psnr", "ssim", "niqe")}
        harmless = {"meets_bar": True, "min_psnr_vs_input_db": 40.0, "max_abs_luminance_change": 0.0}
        (folder / "summary.json").write_text(json.dumps({"metrics": metrics, "do_no_harm": harmless}))
        self.calls.append((model_uri, role))
        return folder


def _distinct_checkpoint(root: Path, tag: str, meta: dict | None = None) -> Path:
    """A tiny M2 checkpoint whose weights (so hash) depend on ``tag``, in the fixture's training run."""
    fixture = root / "M2" / "model.safetensors"
    template = read_checkpoint_header(fixture).meta if fixture.is_file() else {"variant": "M2"}
    torch.manual_seed(int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16))
    path = root / "checkpoints" / tag / "model.safetensors"
    return save_checkpoint(path, create_model(TINY_MODEL), TINY_MODEL, meta={**template, **(meta or {})})


def _champion(cfg: Config) -> int:
    aliases = MlflowClient(cfg.mlflow.tracking_uri).get_registered_model(cfg.mlflow.model_name).aliases
    return int(aliases["champion"])


def test_register_tags_the_version_and_sets_the_candidate_alias(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "tags")
    version = _register(cfg, root, psnr=0.0, checkpoint=root / "M2" / "model.safetensors")
    client = MlflowClient(cfg.mlflow.tracking_uri)
    found = client.get_model_version_by_alias("tags", "candidate")
    assert int(found.version) == version
    assert found.tags["variant"] == "M2" and found.tags["data_hash"] == "d4t4"
    assert float(found.tags["real_psnr"]) == 99.0 and found.tags["unavailable.real_nima"] == "weights missing"
    assert "git_commit" in found.tags and len(found.tags["checkpoint_sha256"]) == 64
    run = mlflow.get_run(found.run_id)
    assert run.info.run_name == "train-M2"  # logged into the variant's training run
    with pytest.raises(ValueError, match="holds variant 'M2', not 'M3'"):
        register_model(cfg, root / "M2" / "model.safetensors", "M3", None)


def test_promotion_sequence_first_better_noise_worse_and_rollback(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "sequence")
    score = DiskScorer(cfg, root)
    with pytest.raises(ValueError, match="no 'candidate' version"):
        promote(cfg, score=score)
    first = _register(cfg, root, psnr=0.0)
    result = promote(cfg, score=score)
    assert result["promoted"] and result["champion"] == first and "first champion" in result["reasons"][0]
    assert score.calls == []  # nothing to compare with yet
    better = _register(cfg, root, psnr=1.0, noise=0.05)
    result = promote(cfg, score=score)
    assert result["promoted"] and result["champion"] == better
    assert score.calls == [(f"models:/sequence/{better}", "candidate"), (f"models:/sequence/{first}", "champion")]
    check = result["checks"]["real_psnr"]
    assert check["mean"] == pytest.approx(1.0, abs=0.05) and check["low"] > 0.9 and check["passed"]
    assert result["evaluations"]["champion"]["real_psnr"]["mean"] == pytest.approx(BASE.mean() + 0.0)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.tags["promotion.decision"] == "promoted" and "gain.real_psnr_low" in run.data.metrics
    assert result["checks"]["do_no_harm"]["passed"] and run.data.metrics["do_no_harm.passed"] == 1.0
    noisy = _register(cfg, root, psnr=1.0, noise=0.3)  # the champion plus noise: its tags even claim 99 dB
    result = promote(cfg, score=score)
    assert not result["promoted"] and result["champion"] == better and _champion(cfg) == better
    assert result["checks"]["real_psnr"]["low"] < cfg.promote.min_gain  # the noise's interval does not clear the bar
    tags = MlflowClient(cfg.mlflow.tracking_uri).get_model_version("sequence", str(noisy)).tags
    assert "promotion.decision" not in tags  # audit tags come only from the process that moved the alias
    worse = _register(cfg, root, psnr=0.5)
    result = promote(cfg, score=score)
    assert not result["promoted"] and result["reasons"][0].startswith("real_psnr: gain -0.")
    assert result["checks"]["real_psnr"]["high"] < 0 and result["candidate"] == worse
    rollback = promote(cfg, version=first, force=True)
    assert rollback["promoted"] and rollback["previous_champion"] == better and _champion(cfg) == first
    _register(cfg, root, psnr=2.0)
    with pytest.raises(ValueError, match="pass a scorer"):
        promote(cfg)
    with pytest.raises(ValueError, match="needs an explicit version"):
        promote(cfg, force=True)
    with pytest.raises(ValueError, match="has no version 99"):
        promote(cfg, version=99, force=True)


@pytest.mark.slow  # four fresh interpreters import MLflow
def test_concurrent_promotions_leave_one_champion_the_best(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "concurrent")
    versions = {_register(cfg, root, psnr=float(i)): float(i) for i in range(4)}
    score = DiskScorer(cfg, root)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(promote, [(cfg, version, False, score) for version in versions])
    best = max(versions, key=versions.__getitem__)
    assert _champion(cfg) == best
    # serialized decisions: only the first saw no champion, and each compared against the champion of its time
    assert sum(r["previous_champion"] is None for r in results) == 1
    for r in results:
        previous = r["previous_champion"]
        assert r["promoted"] == (previous is None or versions[r["candidate"]] > versions[previous])


def test_lock_file_sits_next_to_the_sqlite_store() -> None:
    assert _lock_path("sqlite:////data/mlruns.db") == Path("/data/mlruns.db.promote.lock")
    remote = _lock_path("http://mlflow:5000")
    assert remote.name.startswith("semivdn-promote-") and remote == _lock_path("http://mlflow:5000")


def test_logged_model_loads_as_pyfunc_and_desnows_a_clip(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "pyfunc")
    version = _register(cfg, root, psnr=0.0, checkpoint=root / "M2" / "model.safetensors")
    loaded = mlflow.pyfunc.load_model(f"models:/pyfunc/{version}")
    clean = render_clean_clip("coffee", 4, 48, 48, np.random.default_rng(0))
    clip = (synthesize_snow(clean, SnowParams(), 0).snowy * 255).round().astype(np.uint8)  # snow opens the gate
    output = loaded.predict(clip)
    assert output.shape == clip.shape and output.dtype == np.uint8
    model, _ = load_checkpoint(root / "M2" / "model.safetensors")
    frames = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255.0
    assert loaded.unwrap_python_model().snow_gate == cfg.inference.snow_gate  # it desnows as `semivdn desnow` does
    assert clip_gates(frames, cfg.inference.snow_gate).min() > 0  # the network's output counts
    gated = desnow_clip(model, frames, cfg.data.frames_per_clip, cfg.inference.snow_gate)
    expected = (gated * 255).round().byte().permute(0, 2, 3, 1)
    assert np.array_equal(output, expected.numpy())
    batch = loaded.unwrap_python_model().predict(None, np.stack([clip, clip]).astype(np.float32) / 255.0)
    assert batch.shape == (2, 4, 48, 48, 3) and batch.dtype == np.float32
    assert np.allclose(batch[1] * 255.0, output, atol=0.51)


def test_download_model_resolves_aliases_and_versions_to_the_checkpoint(store: tuple[Config, Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, root = store
    cfg = _named(cfg, "download")
    version = _register(cfg, root, psnr=0.0, checkpoint=root / "M2" / "model.safetensors")
    promote(cfg)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{root / 'elsewhere.db'}")  # the process-wide registry
    by_alias = download_model(cfg, "models:/download@champion")  # must not matter: the configured store is used
    assert not (root / "elsewhere.db").exists()
    assert by_alias == download_model(cfg, f"models:/download/{version}")
    original = (root / "M2" / "model.safetensors").read_bytes()
    assert hashlib.sha256(by_alias.read_bytes()).digest() == hashlib.sha256(original).digest()
    modified = by_alias.stat().st_mtime_ns
    download_model(cfg, "models:/download@champion")
    assert by_alias.stat().st_mtime_ns == modified  # cached, not downloaded again
    with pytest.raises(ValueError, match="no version with alias 'nope'"):
        download_model(cfg, "models:/download@nope")
    with pytest.raises(ValueError, match="expected models:/NAME@ALIAS"):
        download_model(cfg, "models:/download/latest")


def test_issue13_1_registry_rebuild_under_a_warm_cache_never_serves_the_old_model(
        tmp_path: Path, smoke_cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """models:/NAME/1 means whatever version 1 is *now*: a rebuilt store must not get the cached old weights."""
    database = tmp_path / "mlruns.db"
    cfg = dataclasses.replace(smoke_cfg, mlflow=dataclasses.replace(
        smoke_cfg.mlflow, tracking_uri=f"sqlite:///{database}", artifact_location=str(tmp_path / "artifacts"),
        model_cache=str(tmp_path / "cache"), model_name="rebuilt"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.mlflow.tracking_uri)
    first = _distinct_checkpoint(tmp_path, "first")
    register_model(cfg, first, "M2", None)
    assert download_model(cfg, "models:/rebuilt/1").read_bytes() == first.read_bytes()  # the cache is warm
    MlflowClient(cfg.mlflow.tracking_uri).delete_registered_model("rebuilt")  # rebuilt: version 1 is reused
    second = _distinct_checkpoint(tmp_path, "second")
    assert register_model(cfg, second, "M2", None)["version"] == 1
    assert download_model(cfg, "models:/rebuilt/1").read_bytes() == second.read_bytes()


def test_issue13_1_a_cached_file_that_no_longer_matches_its_hash_is_fetched_again(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "tampered")
    version = _register(cfg, root, psnr=20.0)
    cached = download_model(cfg, f"models:/tampered/{version}")
    cached.write_bytes(b"tampered")
    again = download_model(cfg, f"models:/tampered/{version}")
    assert sha256_file(again) == MlflowClient(cfg.mlflow.tracking_uri).get_model_version(
        "tampered", str(version)).tags["checkpoint_sha256"]


def test_issue13_3_register_refuses_an_evaluation_of_another_checkpoint(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "bound")
    other = _distinct_checkpoint(root, "scored-elsewhere")
    folder = root / "evals" / "of-another"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"psnr": 40.0, "checkpoint_sha256": sha256_file(other)}))
    with pytest.raises(ValueError, match="not this checkpoint"):
        register_model(cfg, root / "M2" / "model.safetensors", "M2", folder)
    (folder / "summary.json").write_text(json.dumps({"psnr": 40.0, "model_ref": "models/full"}))  # unbound
    with pytest.raises(ValueError, match="no checkpoint hash"):
        register_model(cfg, root / "M2" / "model.safetensors", "M2", folder)


def test_issue13_e_register_is_idempotent_by_checkpoint_hash_and_a_retry_completes(
        store: tuple[Config, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, root = store
    cfg = _named(cfg, "idempotent")
    checkpoint = _distinct_checkpoint(root, "idempotent")
    calls = 0
    original = MlflowClient.set_registered_model_alias

    def fail_once(self: MlflowClient, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("tracking server went away")  # after the version was created
        original(self, *args)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", fail_once)
    with pytest.raises(ConnectionError):
        register_model(cfg, checkpoint, "M2", None)
    retried = register_model(cfg, checkpoint, "M2", None)
    again = register_model(cfg, checkpoint, "M2", None)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    assert [int(v.version) for v in client.search_model_versions("name = 'idempotent'")] == [1]
    assert retried["version"] == again["version"] == 1
    assert int(client.get_model_version_by_alias("idempotent", "candidate").version) == 1


@pytest.mark.slow  # two fresh interpreters import MLflow
def test_issue13_10_the_losing_concurrent_promote_leaves_the_champions_audit_tags(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "audit")
    version = _register(cfg, root, psnr=20.0)
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # both promote the same candidate
        results = pool.starmap(promote, [(cfg,), (cfg,)])
    assert sorted(r["promoted"] for r in results) == [False, True]
    tags = MlflowClient(cfg.mlflow.tracking_uri).get_model_version("audit", str(version)).tags
    assert tags["promotion.decision"] == "promoted" and "first champion" in tags["promotion.reasons"]


def test_issue13_13_a_registered_model_carries_no_pickle(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "nopickle")
    version = _register(cfg, root, psnr=20.0)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/nopickle/{version}",
                                                      dst_path=str(root / "nopickle")))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.suffix == ".pkl"]
    assert not any(b"python_model.pkl" in p.read_bytes() for p in files if p.name == "MLmodel")
