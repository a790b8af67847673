"""The MLflow model registry: the pyfunc model, registration, the champion gate, downloads.

A trained checkpoint is logged as an MLflow pyfunc model (:class:`SemiVDNModel`: a clip
array in, the desnowed clip out) and registered as a new version of
``mlflow.model_name`` with its variant, data hashes, git commit and evaluation metrics
as tags; the alias ``candidate`` points at it. :func:`promote` is the gate that moves
the alias ``champion``:

- no champion yet: the candidate becomes champion;
- otherwise the candidate must beat the champion on paired PSNR by
  ``promote.min_psnr_gain`` dB *and* be strictly better: a tie never promotes (a
  retrain that changes nothing should not churn the production model);
- and each NR metric of ``eval.metrics_real`` (NIMA, MUSIQ) that both versions have
  may drop by at most ``promote.max_nr_drop``, relative to the champion's value
  (0.05: 5 %); a metric missing on either side is reported, not held against it.

"Better" and "drop" follow each metric's ``lower_better``. The read-compare-write runs
under an exclusive file lock (next to the sqlite store, or in the temp folder keyed by
the tracking URI), so concurrent promotions on one machine decide one after another
against the current champion. ``promote(version=N, force=True)`` is the rollback.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

import semivdn
from semivdn.config import Config
from semivdn.eval.specs import METRIC_ORDER, METRICS, SUMMARY_FILE
from semivdn.tracking import configure_mlflow, existing_run, git_commit, tracking_uri
from semivdn.weights import sha256_file

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"
GATE_METRIC = "psnr"
CHECKPOINT_ARTIFACT = "checkpoint"
MODEL_IN_RUN = "model"
EXAMPLE_SIZE = 64  # pixels of the input example's frames
RUNTIME_PACKAGES = ("torch", "torchvision", "timm", "numpy", "safetensors", "PyYAML", "av", "pillow", "tqdm")
REGISTRY_PREFIX = "models:/"


class SemiVDNModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a SemiVDN checkpoint.

    ``predict`` takes one clip (T, H, W, 3) or a batch of clips (N, T, H, W, 3), uint8 in
    0..255 or float in [0, 1], and returns the desnowed frames in the same shape and
    dtype. The logged signature declares the serving form: one uint8 clip.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from semivdn.models.checkpoint import load_checkpoint

        self.model, self.meta = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])
        self.frames_per_clip = int(context.model_config["frames_per_clip"])

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> np.ndarray:
        return desnow_array(self.model, np.asarray(model_input), self.frames_per_clip)


def desnow_array(model: nn.Module, clips: np.ndarray, frames_per_clip: int) -> np.ndarray:
    """Desnow a clip (T, H, W, 3) or clips (N, T, H, W, 3); uint8 (0..255) or float ([0, 1]) in and out."""
    import torch

    from semivdn.inference import desnow_clip

    if clips.ndim not in (4, 5) or clips.shape[-1] != 3:
        raise ValueError(f"expected a clip (T, H, W, 3) or clips (N, T, H, W, 3), got shape {clips.shape}")
    is_uint8 = clips.dtype == np.uint8
    outputs = []
    for clip in clips if clips.ndim == 5 else clips[None]:
        frames = torch.from_numpy(clip.astype(np.float32) / (255.0 if is_uint8 else 1.0)).permute(0, 3, 1, 2)
        outputs.append(desnow_clip(model, frames, frames_per_clip).permute(0, 2, 3, 1).numpy())
    result = np.stack(outputs)
    result = (result * 255.0).round().astype(np.uint8) if is_uint8 else result.astype(clips.dtype)
    return result if clips.ndim == 5 else result[0]


def _requirements() -> list[str]:
    """Pinned runtime packages (given, so MLflow does not spawn a process to infer them)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in RUNTIME_PACKAGES]


def log_model(cfg: Config, checkpoint: Path) -> ModelInfo:
    """Log ``checkpoint`` as a pyfunc model into the active run (training calls this at its end)."""
    if mlflow.active_run() is None:
        raise RuntimeError("log_model needs an active MLflow run")
    checkpoint = Path(checkpoint)
    example = np.zeros((cfg.data.frames_per_clip, EXAMPLE_SIZE, EXAMPLE_SIZE, 3), dtype=np.uint8)
    clip_spec = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))])
    return mlflow.pyfunc.log_model(
        name=MODEL_IN_RUN, python_model=SemiVDNModel(), artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
        signature=ModelSignature(inputs=clip_spec, outputs=clip_spec), input_example=example,
        model_config={"frames_per_clip": cfg.data.frames_per_clip},
        code_paths=[str(Path(semivdn.__file__).parent)], pip_requirements=_requirements(),
        tags={"checkpoint_sha256": sha256_file(checkpoint)})


def _client(cfg: Config) -> MlflowClient:
    uri = tracking_uri(cfg)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _logged_model_uri(experiment_id: str, digest: str) -> str | None:
    """A pyfunc model already logged for this exact checkpoint (by training), so it is not logged twice."""
    found = mlflow.search_logged_models(experiment_ids=[experiment_id],
                                        filter_string=f"tags.checkpoint_sha256 = '{digest}'", output_format="list")
    return found[0].model_uri if found else None


def _version_tags(variant: str, meta: dict[str, Any], digest: str, summary: dict[str, Any] | None) -> dict[str, str]:
    tags = {"variant": variant, "git_commit": git_commit(), "checkpoint_sha256": digest,
            "training_git_commit": str(meta.get("git_commit", "unknown"))}
    tags.update({key: str(value) for key, value in meta.items() if "hash" in key})
    if summary is not None:
        tags.update({"eval.name": str(summary.get("name")), "eval.split": str(summary.get("split")),
                     "eval.frames": str(summary.get("frames"))})
        for metric in METRIC_ORDER:
            if summary.get(metric) is not None:
                tags[metric] = repr(float(summary[metric]))
            else:
                tags[f"unavailable.{metric}"] = str(summary.get("unavailable", {}).get(metric, "not evaluated"))[:5000]
    return tags


def register_model(cfg: Config, checkpoint: Path, variant: str, eval_dir: Path | None,
                   alias: str = CANDIDATE) -> dict[str, Any]:
    """Register ``checkpoint`` as a new version of ``mlflow.model_name`` and point ``alias`` at it.

    The pyfunc model goes into the variant's training run when the checkpoint names one (reusing
    the model training logged, if it is the same file); metrics come from ``eval_dir/summary.json``.
    """
    from semivdn.models.checkpoint import read_checkpoint_header

    checkpoint = Path(checkpoint)
    meta = read_checkpoint_header(checkpoint).meta
    if meta.get("variant") not in (None, variant):
        raise ValueError(f"{checkpoint} holds variant {meta['variant']!r}, not {variant!r}")
    summary = None
    if eval_dir is not None:
        summary_path = Path(eval_dir) / SUMMARY_FILE
        if not summary_path.is_file():
            raise FileNotFoundError(f"{summary_path}: no evaluation summary; run `semivdn evaluate` first")
        summary = json.loads(summary_path.read_text())
    digest = sha256_file(checkpoint)
    experiment_id = configure_mlflow(cfg)
    run_id = existing_run(meta.get("mlflow_run_id"))
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"register-{variant}") as run:
        model_uri = _logged_model_uri(experiment_id, digest) or log_model(cfg, checkpoint).model_uri
        tags = _version_tags(variant, meta, digest, summary)
        version = mlflow.register_model(model_uri, cfg.mlflow.model_name, tags=tags)
        _client(cfg).set_registered_model_alias(cfg.mlflow.model_name, alias, version.version)
    log.info("registered %s version %s (%s) as %r", cfg.mlflow.model_name, version.version, variant, alias)
    return {"name": cfg.mlflow.model_name, "version": int(version.version), "alias": alias, "variant": variant,
            "run_id": run.info.run_id, "model_uri": model_uri, "source": version.source,
            "metrics": {m: summary.get(m) for m in METRIC_ORDER} if summary else {}}


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reasons: list[str]


def _gain(metric: str, candidate: float, champion: float) -> float:
    """How much better the candidate is (positive: better), whichever way the metric points."""
    return champion - candidate if METRICS[metric].lower_better else candidate - champion


def gate(candidate: dict[str, float | None], champion: dict[str, float | None], cfg: Config) -> Decision:
    """The promotion rule (module docstring) on two versions' metrics; returns the decision and its reasons."""
    reasons: list[str] = []
    passed = True
    new, old = candidate.get(GATE_METRIC), champion.get(GATE_METRIC)
    if new is None or old is None:
        side = "candidate" if new is None else "champion"
        return Decision(False, [f"{GATE_METRIC} of the {side} is unknown (register it with --eval); "
                                "force a version with `semivdn promote --version N` if intended"])
    gain, needed = _gain(GATE_METRIC, new, old), cfg.promote.min_psnr_gain
    if gain > 0 and gain >= needed:
        reasons.append(f"{GATE_METRIC} {new:.4f} vs champion {old:.4f}: gain {gain:+.4f} >= {needed:.4f} required")
    else:
        passed = False
        tie = " (a tie keeps the champion)" if gain == 0 else ""
        reasons.append(f"{GATE_METRIC} {new:.4f} vs champion {old:.4f}: gain {gain:+.4f}, needs > 0 and "
                       f">= {needed:.4f}{tie}")
    for metric in cfg.eval.metrics_real:
        new_nr, old_nr = candidate.get(metric), champion.get(metric)
        if new_nr is None or old_nr is None:
            side = "candidate" if new_nr is None else "champion"
            reasons.append(f"{metric} not compared: unavailable for the {side}")
            continue
        drop = -_gain(metric, new_nr, old_nr) / abs(old_nr) if old_nr else -_gain(metric, new_nr, old_nr)
        verdict = "within" if drop <= cfg.promote.max_nr_drop else "exceeds"
        passed = passed and drop <= cfg.promote.max_nr_drop
        reasons.append(f"{metric} {new_nr:.4f} vs champion {old_nr:.4f}: relative drop {drop:+.2%} {verdict} "
                       f"the {cfg.promote.max_nr_drop:.2%} allowed")
    return Decision(passed, reasons)


def _metrics_of(version: ModelVersion) -> dict[str, float | None]:
    return {m: float(version.tags[m]) if m in version.tags else None for m in METRIC_ORDER}


def _by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _get_version(client: MlflowClient, name: str, version: int | str) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ValueError(f"model {name!r} has no version {version} in {client.tracking_uri}") from exc


def _lock_path(uri: str) -> Path:
    """The sqlite file's sibling for a local store, else a temp file keyed by the tracking URI."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        return database.with_name(database.name + ".promote.lock")
    return Path(tempfile.gettempdir()) / f"semivdn-promote-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def _promotion_lock(cfg: Config) -> Iterator[None]:
    path = _lock_path(tracking_uri(cfg))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _decide(target: ModelVersion, champion: ModelVersion | None, cfg: Config, force: bool) -> Decision:
    if force:
        was = f" (was version {champion.version})" if champion else ""
        return Decision(True, [f"forced by the operator: champion set to version {target.version}{was}"])
    if champion is None:
        return Decision(True, [f"no {CHAMPION} yet: version {target.version} becomes the first champion"])
    if champion.version == target.version:
        return Decision(False, [f"version {target.version} is already the {CHAMPION}"])
    return gate(_metrics_of(target), _metrics_of(champion), cfg)


def promote(cfg: Config, version: int | None = None, force: bool = False) -> dict[str, Any]:
    """Move ``champion`` to the ``candidate`` (or ``version``) if it passes the gate; ``force`` skips the gate."""
    if force and version is None:
        raise ValueError("a forced promotion (rollback) needs an explicit version")
    client, name = _client(cfg), cfg.mlflow.model_name
    with _promotion_lock(cfg):
        champion = _by_alias(client, name, CHAMPION)
        if version is not None:
            target = _get_version(client, name, version)
        else:
            target = _by_alias(client, name, CANDIDATE)
            if target is None:
                raise ValueError(f"model {name!r} has no {CANDIDATE!r} version; run `semivdn register` first")
        decision = _decide(target, champion, cfg, force)
        if decision.promoted:
            client.set_registered_model_alias(name, CHAMPION, target.version)
        client.set_model_version_tag(name, target.version, "promotion.decision",
                                     "promoted" if decision.promoted else "rejected")
        client.set_model_version_tag(name, target.version, "promotion.reasons", "; ".join(decision.reasons)[:5000])
        client.set_model_version_tag(name, target.version, "promotion.champion_before",
                                     champion.version if champion else "none")
    now = target.version if decision.promoted else (champion.version if champion else None)
    log.info("%s version %s %s: %s", name, target.version, "promoted" if decision.promoted else "rejected",
             "; ".join(decision.reasons))
    return {"promoted": decision.promoted, "reasons": decision.reasons, "champion": int(now) if now else None,
            "candidate": int(target.version), "previous_champion": int(champion.version) if champion else None}


def _parse_uri(client: MlflowClient, uri: str) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, version)."""
    body = uri.removeprefix(REGISTRY_PREFIX)
    if not uri.startswith(REGISTRY_PREFIX) or not body:
        raise ValueError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    if "@" in body:
        name, alias = body.split("@", 1)
        found = _by_alias(client, name, alias)
        if found is None:
            raise ValueError(f"{uri}: model {name!r} has no version with alias {alias!r}")
        return name, str(found.version)
    name, _, version = body.rpartition("/")
    if not name or not version.isdigit():
        raise ValueError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, str(_get_version(client, name, version).version)


def _cache_dir(cfg: Config) -> Path:
    root = Path(cfg.mlflow.model_cache or "~/.cache/semivdn/models").expanduser()
    return root / hashlib.sha256(tracking_uri(cfg).encode()).hexdigest()[:12]


def download_model(cfg: Config, uri: str) -> Path:
    """The local checkpoint file of a registered version (downloaded once per version into the model cache)."""
    client = _client(cfg)
    name, version = _parse_uri(client, uri)
    folder = _cache_dir(cfg) / name / version
    if not (folder / "MLmodel").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=folder.parent))
        try:
            source = client.get_model_version_download_uri(name, version)  # this store's, not the global one
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(staging),
                                                        tracking_uri=tracking_uri(cfg))
            with contextlib.suppress(OSError):  # another process finished first (the rename is atomic): keep it
                os.replace(local, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    flavor = Model.load(str(folder / "MLmodel")).flavors.get("python_function", {})
    relative = flavor.get("artifacts", {}).get(CHECKPOINT_ARTIFACT, {}).get("path")
    if not relative or not (folder / relative).is_file():
        raise FileNotFoundError(f"{uri} (version {version}): no {CHECKPOINT_ARTIFACT!r} artifact in {folder}")
    log.info("%s -> %s", uri, folder / relative)
    return folder / relative
