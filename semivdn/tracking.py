"""MLflow set-up shared by training, evaluation and the registry, and the lineage every run records.

The tracking URI comes from ``$MLFLOW_TRACKING_URI`` when set (a server in a
cluster), else ``mlflow.tracking_uri`` in params (``sqlite:///mlruns.db`` locally).

Lineage: :class:`LineageContext` is an MLflow run-context provider (registered in
pyproject.toml), so every run this process creates is tagged with the code's git
SHA, the image and its digest, and the Kubeflow run id and pipeline name, from
the environment the image and the pipeline set (infra/docker/Dockerfile,
pipelines/semivdn_pipeline.py). What is unknown is left out, never guessed.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import mlflow

from semivdn.config import Config

log = logging.getLogger(__name__)


def tracking_uri(cfg: Config) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.mlflow.tracking_uri


def configure_mlflow(cfg: Config) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id."""
    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    location = cfg.mlflow.artifact_location
    if "://" not in location:
        location = Path(location).resolve().as_uri()
    if experiment is not None:
        _check_artifact_location(cfg, experiment.artifact_location, location)
        mlflow.set_experiment(cfg.mlflow.experiment)
        return experiment.experiment_id
    experiment_id = mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=location)
    mlflow.set_experiment(cfg.mlflow.experiment)
    return experiment_id


def _check_artifact_location(cfg: Config, stored: str, configured: str) -> None:
    """A local store must keep writing where params say: a store whose experiment points elsewhere.

    MLflow stores the artifact location as an absolute URI, so a copied or moved project would
    silently keep writing into the original folder; that is refused, naming both places.
    """
    local = tracking_uri(cfg).startswith("sqlite:")
    if not local or not stored.startswith("file:") or "://" in cfg.mlflow.artifact_location:
        return  # a tracking server or an explicit URI decides where artifacts go
    if stored.rstrip("/") != configured.rstrip("/"):
        raise RuntimeError(f"MLflow experiment {cfg.mlflow.experiment!r} in {tracking_uri(cfg)} stores artifacts in "
                           f"{stored}, but mlflow.artifact_location {cfg.mlflow.artifact_location!r} is {configured} "
                           "here (was the project moved or copied?); set mlflow.artifact_location to an explicit "
                           "URI or use a fresh tracking store")


def existing_run(run_id: str | None) -> str | None:
    """``run_id`` if that run is in the current store, else None (with a warning): log to a new run instead."""
    if not run_id:
        return None
    try:
        return mlflow.get_run(run_id).info.run_id
    except mlflow.exceptions.MlflowException:
        log.warning("run %s is not in %s: logging to a new run", run_id, mlflow.get_tracking_uri())
        return None


GIT_SHA_ENV = "SEMIVDN_GIT_SHA"  # baked into the image at build time
IMAGE_ENV = "SEMIVDN_IMAGE"  # the image reference a step runs (repo:tag or repo@sha256:...)
IMAGE_DIGEST_ENV = "SEMIVDN_IMAGE_DIGEST"  # its digest, when the reference does not carry one
KFP_RUN_ID_ENV = "SEMIVDN_KFP_RUN_ID"
PIPELINE_NAME_ENV = "SEMIVDN_PIPELINE_NAME"


def git_commit() -> str:
    """The code's commit: the image's baked-in SHA, else the working tree's (``unknown`` outside git)."""
    baked = os.environ.get(GIT_SHA_ENV)
    if baked and baked != "unknown":
        return baked
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def lineage_tags() -> dict[str, str]:
    """Where a run's code came from: git SHA, image and digest, Kubeflow run id and pipeline name."""
    image = os.environ.get(IMAGE_ENV, "")
    digest = os.environ.get(IMAGE_DIGEST_ENV) or (image.partition("@")[2] if "@" in image else "")
    tags = {"git_commit": git_commit(), "image": image, "image_digest": digest,
            "kfp_run_id": os.environ.get(KFP_RUN_ID_ENV, ""), "pipeline_name": os.environ.get(PIPELINE_NAME_ENV, "")}
    return {key: value for key, value in tags.items() if value}


class LineageContext:
    """MLflow run-context provider (entry point ``mlflow.run_context_provider``): lineage tags on every new run."""

    def in_context(self) -> bool:
        return True

    def tags(self) -> dict[str, str]:
        return lineage_tags()
