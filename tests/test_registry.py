"""The MLflow registry: pyfunc model, registration tags, the champion gate, rollback, concurrency."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from semivdn.config import Config, Model
from semivdn.inference import desnow_clip
from semivdn.models import create_model, load_checkpoint, save_checkpoint
from semivdn.models.checkpoint import read_checkpoint_header
from semivdn.registry import _gain, _lock_path, download_model, gate, promote, register_model
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


def _register(cfg: Config, root: Path, psnr: float | None, nima: float | None = 4.2,
              musiq: float | None = 50.0, checkpoint: Path | None = None) -> int:
    """Register a checkpoint (default: the fixture's M2) with an evaluation summary that scored it.

    Registration is idempotent by checkpoint hash, so a distinct checkpoint is written for each
    call without one (same architecture, different weights).
    """
    if checkpoint is None:
        checkpoint = _distinct_checkpoint(root, f"{cfg.mlflow.model_name}-{next(_SERIAL)}")
    folder = root / "evals" / f"{cfg.mlflow.model_name}-{psnr}-{nima}-{musiq}"
    folder.mkdir(parents=True, exist_ok=True)
    values = {"psnr": psnr, "ssim": 0.9, "lpips": None, "nima": nima, "musiq": musiq}
    summary = {"name": "M2", "split": "test", "frames": 6, **values,
               "checkpoint_sha256": sha256_file(checkpoint),
               "unavailable": {m: "weights missing" for m, v in values.items() if v is None}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return register_model(cfg, checkpoint, "M2", folder)["version"]


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


def _metrics(psnr: float | None, nima: float | None = 4.2, musiq: float | None = 50.0) -> dict[str, float | None]:
    return {"psnr": psnr, "ssim": 0.9, "lpips": 0.1, "nima": nima, "musiq": musiq}


def test_gate_promotes_a_better_candidate_and_rejects_a_worse_one(smoke_cfg: Config) -> None:
    better = gate(_metrics(25.0), _metrics(24.0), smoke_cfg)
    assert better.promoted and "gain +1.0000" in better.reasons[0]
    worse = gate(_metrics(23.5), _metrics(24.0), smoke_cfg)
    assert not worse.promoted and "gain -0.5000" in worse.reasons[0]


def test_gate_tie_keeps_the_champion_and_min_gain_applies(smoke_cfg: Config) -> None:
    assert smoke_cfg.promote.min_psnr_gain == 0.0
    tie = gate(_metrics(24.0), _metrics(24.0), smoke_cfg)
    assert not tie.promoted and "a tie keeps the champion" in tie.reasons[0]
    strict = dataclasses.replace(smoke_cfg, promote=dataclasses.replace(smoke_cfg.promote, min_psnr_gain=0.1))
    assert not gate(_metrics(24.05), _metrics(24.0), strict).promoted
    assert gate(_metrics(24.1), _metrics(24.0), strict).promoted  # exactly the required gain passes


def test_gate_nr_tolerance_is_relative_and_missing_nr_does_not_block(smoke_cfg: Config) -> None:
    assert smoke_cfg.promote.max_nr_drop == 0.05
    small_drop = gate(_metrics(25.0, nima=4.2 * 0.96), _metrics(24.0), smoke_cfg)
    assert small_drop.promoted
    big_drop = gate(_metrics(25.0, musiq=50.0 * 0.9), _metrics(24.0), smoke_cfg)
    assert not big_drop.promoted and any("musiq" in r and "exceeds" in r for r in big_drop.reasons)
    missing = gate(_metrics(25.0, nima=None), _metrics(24.0), smoke_cfg)
    assert missing.promoted and "nima not compared: unavailable for the candidate" in missing.reasons
    unknown = gate(_metrics(None), _metrics(24.0), smoke_cfg)
    assert not unknown.promoted and "psnr of the candidate is unknown" in unknown.reasons[0]


def test_gain_follows_each_metrics_direction() -> None:
    assert _gain("psnr", 25.0, 24.0) == 1.0
    assert _gain("lpips", 0.08, 0.10) == pytest.approx(0.02)  # lower LPIPS is better


def test_register_tags_the_version_and_sets_the_candidate_alias(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "tags")
    version = _register(cfg, root, psnr=21.5, nima=None, checkpoint=root / "M2" / "model.safetensors")
    client = MlflowClient(cfg.mlflow.tracking_uri)
    found = client.get_model_version_by_alias("tags", "candidate")
    assert int(found.version) == version
    assert found.tags["variant"] == "M2" and found.tags["data_hash"] == "d4t4"
    assert float(found.tags["psnr"]) == 21.5 and found.tags["unavailable.nima"] == "weights missing"
    assert "git_commit" in found.tags and len(found.tags["checkpoint_sha256"]) == 64
    run = mlflow.get_run(found.run_id)
    assert run.info.run_name == "train-M2"  # logged into the variant's training run
    with pytest.raises(ValueError, match="holds variant 'M2', not 'M3'"):
        register_model(cfg, root / "M2" / "model.safetensors", "M3", None)


def test_promotion_sequence_first_better_worse_tie_and_rollback(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "sequence")
    with pytest.raises(ValueError, match="no 'candidate' version"):
        promote(cfg)
    first = _register(cfg, root, psnr=20.0)
    result = promote(cfg)
    assert result["promoted"] and result["champion"] == first and "first champion" in result["reasons"][0]
    better = _register(cfg, root, psnr=21.0)
    assert promote(cfg)["champion"] == better
    worse = _register(cfg, root, psnr=20.5)
    result = promote(cfg)
    assert not result["promoted"] and result["champion"] == better and _champion(cfg) == better
    assert "gain -0.5000" in result["reasons"][0]
    tags = MlflowClient(cfg.mlflow.tracking_uri).get_model_version("sequence", str(worse)).tags
    assert "promotion.decision" not in tags  # audit tags come only from the process that moved the alias
    _register(cfg, root, psnr=21.0)
    tie = promote(cfg)
    assert not tie["promoted"] and "a tie keeps the champion" in tie["reasons"][0]
    rollback = promote(cfg, version=first, force=True)
    assert rollback["promoted"] and rollback["previous_champion"] == better and _champion(cfg) == first
    with pytest.raises(ValueError, match="needs an explicit version"):
        promote(cfg, force=True)
    with pytest.raises(ValueError, match="has no version 99"):
        promote(cfg, version=99, force=True)


@pytest.mark.slow  # four fresh interpreters import MLflow
def test_concurrent_promotions_leave_one_champion_the_best(store: tuple[Config, Path]) -> None:
    cfg, root = store
    cfg = _named(cfg, "concurrent")
    versions = {_register(cfg, root, psnr=20.0 + i): 20.0 + i for i in range(4)}
    with multiprocessing.get_context("spawn").Pool(4) as pool:  # the children import only semivdn.registry
        results = pool.starmap(promote, [(cfg, version) for version in versions])
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
    version = _register(cfg, root, psnr=20.0, checkpoint=root / "M2" / "model.safetensors")
    loaded = mlflow.pyfunc.load_model(f"models:/pyfunc/{version}")
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    output = loaded.predict(clip)
    assert output.shape == clip.shape and output.dtype == np.uint8
    model, _ = load_checkpoint(root / "M2" / "model.safetensors")
    frames = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255.0
    expected = (desnow_clip(model, frames, cfg.data.frames_per_clip) * 255).round().byte().permute(0, 2, 3, 1)
    assert np.array_equal(output, expected.numpy())
    batch = loaded.unwrap_python_model().predict(None, np.stack([clip, clip]).astype(np.float32) / 255.0)
    assert batch.shape == (2, 3, 48, 48, 3) and batch.dtype == np.float32
    assert np.allclose(batch[1] * 255.0, output, atol=0.51)


def test_download_model_resolves_aliases_and_versions_to_the_checkpoint(store: tuple[Config, Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, root = store
    cfg = _named(cfg, "download")
    version = _register(cfg, root, psnr=20.0, checkpoint=root / "M2" / "model.safetensors")
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
