"""Lineage on every MLflow run: git SHA, image and digest, Kubeflow run id, pipeline name (semivdn/tracking.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from semivdn import tracking

ENV = {tracking.GIT_SHA_ENV: "0123abcd" * 5, tracking.IMAGE_ENV: "registry.example/semivdn@sha256:" + "f" * 64,
       tracking.KFP_RUN_ID_ENV: "8c1f-run", tracking.PIPELINE_NAME_ENV: "semivdn"}


def test_lineage_tags_come_from_the_environment_and_leave_unknowns_out(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(tracking.IMAGE_DIGEST_ENV, raising=False)
    assert tracking.lineage_tags() == {"git_commit": "0123abcd" * 5, "image": ENV[tracking.IMAGE_ENV],
                                       "image_digest": "sha256:" + "f" * 64, "kfp_run_id": "8c1f-run",
                                       "pipeline_name": "semivdn"}
    monkeypatch.setenv(tracking.IMAGE_ENV, "semivdn:cuda")  # a tag: the digest comes from its own variable
    monkeypatch.setenv(tracking.IMAGE_DIGEST_ENV, "sha256:abc")
    monkeypatch.delenv(tracking.KFP_RUN_ID_ENV)
    tags = tracking.lineage_tags()
    assert (tags["image"], tags["image_digest"]) == ("semivdn:cuda", "sha256:abc")
    assert "kfp_run_id" not in tags  # outside Kubeflow: absent, never a made-up id


def test_every_new_mlflow_run_is_tagged_through_the_run_context_provider(tmp_path: Path) -> None:
    """A fresh process, as a pipeline step is: the entry point in pyproject.toml registers the provider."""
    script = ("import mlflow; mlflow.set_tracking_uri('sqlite:///' + __import__('sys').argv[1]); "
              "run = mlflow.start_run(); mlflow.end_run(); print(run.info.run_id)")
    db = tmp_path / "mlruns.db"
    fresh = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}  # as a new pod's
    out = subprocess.run([sys.executable, "-c", script, str(db)], env={**fresh, **ENV}, cwd=tmp_path,
                         capture_output=True, text=True, check=True, timeout=300)
    run = MlflowClient(tracking_uri=f"sqlite:///{db}").get_run(out.stdout.split()[-1])
    assert {k: run.data.tags.get(k) for k in ("git_commit", "image", "kfp_run_id", "pipeline_name")} == {
        "git_commit": ENV[tracking.GIT_SHA_ENV], "image": ENV[tracking.IMAGE_ENV], "kfp_run_id": "8c1f-run",
        "pipeline_name": "semivdn"}
