"""The DVC pipeline end to end on the smoke profile, in a copy of the repository (slow: it trains).

One `dvc repro` of every stage, then: the user's footage survived it and was curated; the lock
check passes on the fresh lock and fails on a changed source file; a profile change makes exactly
the stages whose resolved params it changes stale; `dvc exp run` never moves the champion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from semivdn.config import load_config
from semivdn.data.video import FrameWriter

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(repo: Path, *command: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo), **extra_env}
    for name in ("MLFLOW_TRACKING_URI", "SEMIVDN_PROFILE", "SEMIVDN_S3_BUCKET"):
        if name not in extra_env:
            env.pop(name, None)
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if check:
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _dvc(repo: Path, *args: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return _run(repo, sys.executable, "-m", "dvc", *args, check=check, **extra_env)


def _stale(repo: Path) -> set[str]:
    return set(json.loads(_dvc(repo, "status", "--json").stdout or "{}"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC copy of the working tree on the smoke profile, with one user clip, after `dvc repro`."""
    repo = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes((ROOT / name).read_bytes())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rng = np.random.default_rng(5)
    with FrameWriter(repo / "data" / "footage" / "my_street.mp4") as writer:  # the user's own clip
        for t in range(8):
            frame = np.full((48, 48, 3), 90 + 5 * t, np.uint8)
            frame[rng.integers(0, 48, 30), rng.integers(0, 48, 30)] = 255
            writer.write(frame)
    _run(repo, "git", "init", "-q")
    _dvc(repo, "add", "data/footage")
    _commit(repo, "the code and the user's footage (data/footage.dvc)")
    _dvc(repo, "repro", SEMIVDN_PROFILE="paper")  # the environment must not beat params' profile
    _commit(repo, "dvc repro")
    return repo


def _commit(repo: Path, message: str) -> None:
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", message)


def test_repro_keeps_the_users_footage_and_curates_it(repo: Path) -> None:
    clip = repo / "data" / "footage" / "my_street.mp4"
    assert clip.is_file()
    assert "up to date" in _dvc(repo, "status", "data/footage.dvc").stdout
    manifest = pd.read_parquet(repo / "data" / "curated" / "manifest.parquet")
    assert "real/train/footage-my_street" in manifest["clip_id"].tolist()
    assert _stale(repo) == set()
    assert load_config(repo / "params.resolved.yaml").profile == "smoke"  # $SEMIVDN_PROFILE=paper did not win


def test_lock_check_passes_on_the_fresh_lock_and_fails_on_a_changed_source(repo: Path) -> None:
    assert _run(repo, sys.executable, ".ci/lockcheck.py").returncode == 0
    source = repo / "semivdn" / "data" / "curate.py"
    original = source.read_text()
    source.write_text(original + "\n# changed\n")
    try:
        failed = _run(repo, sys.executable, ".ci/lockcheck.py", check=False)
    finally:
        source.write_text(original)
    assert failed.returncode == 1
    assert "curate: semivdn/data/curate.py: modified" in failed.stderr


def test_a_profile_change_makes_exactly_the_dependent_stages_stale(repo: Path) -> None:
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["profiles"]["smoke"]["train"]["log_every"] = 3  # read by training only
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert _stale(repo) == {"resolve_params"}
        _dvc(repo, "repro", "resolve_params")
        assert _stale(repo) == {f"train@{variant}" for variant in params["variants"]}
    finally:
        params_file.write_text(original)
        _dvc(repo, "repro", "resolve_params")
    assert _stale(repo) == set()


def test_an_experiment_never_registers_or_promotes(repo: Path) -> None:
    _run(repo, "make", "promote", f"BIN={Path(sys.executable).parent}", "STAMP=")
    cfg = load_config(repo / "params.yaml")
    store = f"sqlite:///{repo / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    champion = client.get_model_version_by_alias(cfg.mlflow.model_name, "champion").version
    versions = len(client.search_model_versions(f"name='{cfg.mlflow.model_name}'"))

    # re-reports at another confidence (only the report and its params: what matters is what an experiment's
    # commands do, and no stage of dvc.yaml registers or promotes)
    _dvc(repo, "exp", "run", "--single-item", "resolve_params", "report", "-S", "eval.confidence=0.9")
    assert "[90% bootstrap interval over clips]" in (repo / "reports" / "ablation.md").read_text()
    assert client.get_model_version_by_alias(cfg.mlflow.model_name, "champion").version == champion
    assert len(client.search_model_versions(f"name='{cfg.mlflow.model_name}'")) == versions
