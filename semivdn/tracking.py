"""MLflow set-up shared by training, evaluation and the registry.

The tracking URI comes from ``$MLFLOW_TRACKING_URI`` when set (a server in a
cluster), else ``mlflow.tracking_uri`` in params (``sqlite:///mlruns.db`` locally).
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


def git_commit() -> str:
    """The working tree's commit (``unknown`` outside a git checkout), for run tags."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()
