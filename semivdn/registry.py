"""The MLflow model registry: the pyfunc model, registration, the champion gate, model references.

A trained checkpoint is logged as an MLflow pyfunc model (:mod:`semivdn.pyfunc_model`, logged
as code, so without a pickle) and registered as a version of ``mlflow.model_name`` with its
variant, data hashes, git commit, checkpoint SHA-256 and evaluation metrics as tags; the
alias ``candidate`` points at it. A checkpoint is registered once: registering the same file
again (or retrying after a partial failure) reuses its version. Evaluation metrics are accepted
only from a summary that scored this exact checkpoint (its ``checkpoint_sha256``).

:func:`load_model_ref` is the one door from a model reference (a checkpoint file or folder,
``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) to a loaded model, used by ``desnow``,
``evaluate`` and ``train --init``. Registered checkpoints are cached by content: the cache file
is named by the SHA-256 the registry records for the version, and is re-hashed on every use, so
a rebuilt registry or a replaced artifact can never serve the wrong weights.

:func:`promote` is the gate that moves the alias ``champion``:

- no champion yet: the candidate becomes champion;
- otherwise both the candidate and the champion are scored afresh on the same current test
  data (by the ``score`` function the caller hands in: :func:`semivdn.promotion.promote_on_test_data`
  runs ``semivdn evaluate`` on both domains), never from stored tags, and
  :func:`semivdn.eval.gate.judge` decides: the lower bound of the 95 % interval of the paired
  gain on ``promote.gate`` must exceed ``promote.min_gain``, and no tracked metric may lose
  more than its tolerance. A candidate equal to the champion plus noise does not pass.

The read-score-compare-write runs
under an exclusive file lock (next to the sqlite store, or in the temp folder keyed by
the tracking URI), so concurrent promotions on one machine decide one after another
against the current champion; the ``promotion.*`` audit tags are written only by the
process that moved the alias. ``promote(version=N, force=True)`` is the rollback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
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
from semivdn.eval.compare import load_per_clip
from semivdn.eval.gate import Decision, judge
from semivdn.eval.specs import SUMMARY_FILE
from semivdn.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_header
from semivdn.release import RELEASE_REF, release_checkpoint
from semivdn.tracking import configure_mlflow, existing_run, git_commit, tracking_uri
from semivdn.weights import sha256_file

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"
MODEL_IN_RUN = "model"
CHECKPOINT_ARTIFACT = "checkpoint"
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # logged as code: no pickle in the registry
DIGEST_TAG = "checkpoint_sha256"
EXAMPLE_SIZE = 64  # pixels of the input example's frames
RUNTIME_PACKAGES = ("torch", "torchvision", "timm", "numpy", "safetensors", "PyYAML", "av", "pillow", "tqdm")
REGISTRY_PREFIX = "models:/"


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
        name=MODEL_IN_RUN, python_model=str(MODEL_CODE), artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
        signature=ModelSignature(inputs=clip_spec, outputs=clip_spec), input_example=example,
        model_config={"frames_per_clip": cfg.data.frames_per_clip,  # the gate as `semivdn desnow` runs it
                      "snow_gate": {**dataclasses.asdict(cfg.inference.snow_gate),
                                    "balance": list(cfg.inference.snow_gate.balance)}},
        code_paths=[str(Path(semivdn.__file__).parent)], pip_requirements=_requirements(),
        tags={DIGEST_TAG: sha256_file(checkpoint)})


def _client(cfg: Config) -> MlflowClient:
    uri = tracking_uri(cfg)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _logged_model_uri(experiment_id: str, digest: str) -> str | None:
    """A pyfunc model already logged for this exact checkpoint (by training), so it is not logged twice."""
    found = mlflow.search_logged_models(experiment_ids=[experiment_id],
                                        filter_string=f"tags.{DIGEST_TAG} = '{digest}'", output_format="list")
    return found[0].model_uri if found else None


def _version_tags(variant: str, meta: dict[str, Any], digest: str, summary: dict[str, Any] | None) -> dict[str, str]:
    tags = {"variant": variant, "git_commit": git_commit(), DIGEST_TAG: digest,
            "training_git_commit": str(meta.get("git_commit", "unknown"))}
    tags.update({key: str(value) for key, value in meta.items() if "hash" in key})
    if summary is not None:
        tags.update({"eval.name": str(summary.get("name")), "eval.split": str(summary.get("split")),
                     "eval.clips": json.dumps(summary.get("clips"))})
        for key, value in summary.get("metrics", {}).items():
            if value is not None:
                tags[key] = repr(float(value["mean"]))
            else:
                tags[f"unavailable.{key}"] = str(summary.get("unavailable", {}).get(key, "not evaluated"))[:5000]
    return tags


def _read_summary(eval_dir: Path, digest: str) -> dict[str, Any]:
    """The evaluation summary in ``eval_dir``, which must have scored the checkpoint with SHA-256 ``digest``."""
    summary_path = Path(eval_dir) / SUMMARY_FILE
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: no evaluation summary; run `semivdn evaluate` first")
    summary = json.loads(summary_path.read_text())
    scored = summary.get(DIGEST_TAG)
    if scored != digest:
        what = f"checkpoint {scored[:12]}…" if scored else f"{summary.get('model_ref')!r} (no checkpoint hash)"
        raise ValueError(f"{summary_path} scored {what}, not this checkpoint {digest[:12]}…; "
                         "evaluate this checkpoint and register with that folder")
    return summary


def _version_of(client: MlflowClient, name: str, digest: str) -> ModelVersion | None:
    """The version of ``name`` already holding the checkpoint with SHA-256 ``digest`` (the oldest one)."""
    found = client.search_model_versions(f"name = '{name}' and tags.{DIGEST_TAG} = '{digest}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def register_model(cfg: Config, checkpoint: Path, variant: str, eval_dir: Path | None,
                   alias: str = CANDIDATE) -> dict[str, Any]:
    """Register ``checkpoint`` as a version of ``mlflow.model_name`` and point ``alias`` at it.

    Idempotent by checkpoint hash: a checkpoint already registered keeps its version (its eval
    tags are refreshed), so a retry after a partial failure never creates a second version. The
    pyfunc model goes into the variant's training run when the checkpoint names one (reusing the
    model training logged, if it is the same file); metrics come from ``eval_dir/summary.json``.
    """
    checkpoint = Path(checkpoint)
    meta = read_checkpoint_header(checkpoint).meta
    if meta.get("variant") not in (None, variant):
        raise ValueError(f"{checkpoint} holds variant {meta['variant']!r}, not {variant!r}")
    digest = sha256_file(checkpoint)
    summary = _read_summary(eval_dir, digest) if eval_dir is not None else None
    experiment_id = configure_mlflow(cfg)
    client, name = _client(cfg), cfg.mlflow.model_name
    tags = _version_tags(variant, meta, digest, summary)
    with _registry_lock(cfg):  # one search-then-create at a time: two registrations cannot both create
        version = _version_of(client, name, digest)
        if version is not None:
            for key, value in tags.items():
                client.set_model_version_tag(name, version.version, key, value)
            log.info("%s is already %s version %s: tags refreshed", checkpoint, name, version.version)
            run_id = version.run_id
        else:
            run_id = existing_run(meta.get("mlflow_run_id"))
            with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"register-{variant}") as run:
                model_uri = _logged_model_uri(experiment_id, digest) or log_model(cfg, checkpoint).model_uri
                version = mlflow.register_model(model_uri, name, tags=tags)
            run_id = run.info.run_id
        client.set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s (%s) as %r", name, version.version, variant, alias)
    return {"name": name, "version": int(version.version), "alias": alias, "variant": variant,
            "run_id": run_id, "checkpoint_sha256": digest, "source": version.source,
            "metrics": {k: v and v["mean"] for k, v in summary.get("metrics", {}).items()} if summary else {}}


def seed_champion(cfg: Config, checkpoint: Path, variant: str, eval_dir: Path | None) -> dict[str, Any]:
    """Make ``checkpoint`` the first champion of a registry that has none; leave one that has a champion alone.

    ``make demo`` seeds the registry with the shipped release model, so the model trained next faces
    the gate against it like any later candidate, and re-running the demo never unseats a champion.
    """
    champion = _by_alias(_client(cfg), cfg.mlflow.model_name, CHAMPION)
    if champion is not None:
        log.info("%s already has a %s (version %s): nothing to seed", cfg.mlflow.model_name, CHAMPION,
                 champion.version)
        return {"seeded": False, "champion": int(champion.version)}
    registered = register_model(cfg, checkpoint, variant, eval_dir, alias=CHAMPION)
    _client(cfg).set_model_version_tag(cfg.mlflow.model_name, str(registered["version"]), "promotion.decision",
                                       "first champion: the registry had none")
    return {"seeded": True, **registered}


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


def _lock_path(uri: str, purpose: str = "promote") -> Path:
    """The sqlite file's sibling for a local store, else a temp file keyed by the tracking URI."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        return database.with_name(f"{database.name}.{purpose}.lock")
    return Path(tempfile.gettempdir()) / f"semivdn-{purpose}-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def _registry_lock(cfg: Config, purpose: str = "register") -> Iterator[None]:
    """An exclusive lock on this tracking store for one read-decide-write sequence (``purpose`` names the file)."""
    path = _lock_path(tracking_uri(cfg), purpose)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


Scorer = Callable[[str, str], Path]  # (models:/NAME/VERSION, role) -> evaluation folder of the current test data


def _decide(target: ModelVersion, champion: ModelVersion | None, cfg: Config, force: bool,
            score: Scorer | None) -> tuple[Decision, dict[str, Path]]:
    """The decision and, when the gate ran, the evaluation folders of both sides."""
    if force:
        was = f" (was version {champion.version})" if champion else ""
        return Decision(True, [f"forced by the operator: champion set to version {target.version}{was}"]), {}
    if champion is None:
        return Decision(True, [f"no {CHAMPION} yet: version {target.version} becomes the first champion"]), {}
    if champion.version == target.version:
        return Decision(False, [f"version {target.version} is already the {CHAMPION}"]), {}
    if score is None:
        raise ValueError("the promotion gate re-scores candidate and champion on the current test data: "
                         "pass a scorer (semivdn.promotion.promote_on_test_data does)")
    folders = {role: score(f"{REGISTRY_PREFIX}{cfg.mlflow.model_name}/{v.version}", role)
               for role, v in ((CANDIDATE, target), (CHAMPION, champion))}
    candidate_harm, champion_harm = (json.loads((folders[role] / SUMMARY_FILE).read_text()).get("do_no_harm")
                                     for role in (CANDIDATE, CHAMPION))
    return judge(load_per_clip(folders[CANDIDATE]), load_per_clip(folders[CHAMPION]), cfg,
                 (candidate_harm, champion_harm)), folders


def _log_decision(cfg: Config, decision: Decision, folders: dict[str, Path], versions: dict[str, int | None]) -> str:
    """The decision, both evaluations and the intervals as one MLflow run ``promotion-gate``."""
    configure_mlflow(cfg)
    with mlflow.start_run(run_name="promotion-gate") as run:
        mlflow.set_tags({"promotion.decision": "promoted" if decision.promoted else "rejected",
                         "promotion.reasons": "; ".join(decision.reasons)[:5000], "promotion.gate": cfg.promote.gate,
                         **{f"promotion.{role}_version": str(v) for role, v in versions.items()}})
        for key, check in decision.checks.items():
            if "mean" in check:  # a paired gain with its interval
                mlflow.log_metrics({f"gain.{key}{suffix}": check[part] for suffix, part in
                                    (("", "mean"), ("_low", "low"), ("_high", "high")) if check[part] is not None})
            else:  # do no harm: both sides' numbers and verdicts (true = 1)
                mlflow.log_metrics({f"{key}.{name}": float(value) for name, value in check.items()
                                    if isinstance(value, int | float)})
        for role, folder in folders.items():
            summary = json.loads((folder / SUMMARY_FILE).read_text())
            mlflow.log_metrics({f"{role}.{key}": value["mean"] for key, value in summary["metrics"].items()
                                if value is not None})
            mlflow.log_artifacts(str(folder), artifact_path=f"evaluations/{role}")
        return run.info.run_id


def promote(cfg: Config, version: int | None = None, force: bool = False,
            score: Scorer | None = None) -> dict[str, Any]:
    """Move ``champion`` to the ``candidate`` (or ``version``) if it passes the gate; ``force`` skips the gate.

    ``score`` evaluates a registered version on the current test data (see :data:`Scorer`); the gate needs it
    whenever a champion exists.
    """
    if force and version is None:
        raise ValueError("a forced promotion (rollback) needs an explicit version")
    client, name = _client(cfg), cfg.mlflow.model_name
    with _registry_lock(cfg, "promote"):
        champion = _by_alias(client, name, CHAMPION)
        if version is not None:
            target = _get_version(client, name, version)
        else:
            target = _by_alias(client, name, CANDIDATE)
            if target is None:
                raise ValueError(f"model {name!r} has no {CANDIDATE!r} version; run `semivdn register` first")
        decision, folders = _decide(target, champion, cfg, force, score)
        if decision.promoted:  # only the process that moves the alias writes the audit tags
            client.set_registered_model_alias(name, CHAMPION, target.version)
            client.set_model_version_tag(name, target.version, "promotion.decision", "promoted")
            client.set_model_version_tag(name, target.version, "promotion.reasons",
                                         "; ".join(decision.reasons)[:5000])
            client.set_model_version_tag(name, target.version, "promotion.champion_before",
                                         champion.version if champion else "none")
    now = target.version if decision.promoted else (champion.version if champion else None)
    log.info("%s version %s %s: %s", name, target.version, "promoted" if decision.promoted else "rejected",
             "; ".join(decision.reasons))
    result: dict[str, Any] = {
        "promoted": decision.promoted, "reasons": decision.reasons, "champion": int(now) if now else None,
        "candidate": int(target.version), "previous_champion": int(champion.version) if champion else None,
        "gate": cfg.promote.gate, "min_gain": cfg.promote.min_gain, "checks": decision.checks,
        "evaluations": {role: json.loads((folder / SUMMARY_FILE).read_text())["metrics"]
                        for role, folder in folders.items()}}
    if folders:
        result["mlflow_run_id"] = _log_decision(cfg, decision, folders, {
            CANDIDATE: int(target.version), CHAMPION: int(champion.version) if champion else None})
    return result


def _resolve_version(client: MlflowClient, uri: str) -> ModelVersion:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> that version, from this store."""
    body = uri.removeprefix(REGISTRY_PREFIX)
    if not uri.startswith(REGISTRY_PREFIX) or not body:
        raise ValueError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    if "@" in body:
        name, alias = body.split("@", 1)
        found = _by_alias(client, name, alias)
        if found is None:
            raise ValueError(f"{uri}: model {name!r} has no version with alias {alias!r}")
        return found
    name, _, version = body.rpartition("/")
    if not name or not version.isdigit():
        raise ValueError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return _get_version(client, name, version)


def _cache_dir(cfg: Config) -> Path:
    """Content-addressed: one file per checkpoint SHA-256, whatever store or version pointed at it."""
    return Path(cfg.mlflow.model_cache or "~/.cache/semivdn/models").expanduser() / "sha256"


def _fetch_checkpoint(client: MlflowClient, uri: str, version: ModelVersion, into: Path) -> Path:
    """Download the version's checkpoint artifact (and only it) from store ``uri`` into folder ``into``."""
    source = client.get_model_version_download_uri(version.name, version.version)  # this store's, not the global
    mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{source.rstrip('/')}/MLmodel", dst_path=str(into),
                                                  tracking_uri=uri)
    flavor = Model.load(mlmodel).flavors.get("python_function", {})
    relative = flavor.get("artifacts", {}).get(CHECKPOINT_ARTIFACT, {}).get("path")
    if not relative:
        raise CheckpointError(f"{version.name} version {version.version}: no {CHECKPOINT_ARTIFACT!r} artifact")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{source.rstrip('/')}/{relative}",
                                                    dst_path=str(into), tracking_uri=uri))


def download_model(cfg: Config, uri: str) -> Path:
    """The local checkpoint of a registered version, verified against the SHA-256 the registry records for it.

    The cache file is named by that hash and re-hashed on every use; a download whose bytes do not
    hash to the recorded value is an error, never a model.
    """
    client = _client(cfg)
    version = _resolve_version(client, uri)
    digest = version.tags.get(DIGEST_TAG, "")
    if len(digest) != 64:
        raise CheckpointError(f"{uri} ({version.name} version {version.version}) records no {DIGEST_TAG} tag, so "
                              "its weights cannot be verified; register the checkpoint again")
    cache = _cache_dir(cfg)
    cached = cache / f"{digest}.safetensors"
    if not (cached.is_file() and sha256_file(cached) == digest):
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as staging:
            fetched = _fetch_checkpoint(client, tracking_uri(cfg), version, Path(staging))
            got = sha256_file(fetched)
            if got != digest:
                raise CheckpointError(f"{uri} ({version.name} version {version.version}): the registry records "
                                      f"checkpoint {digest[:12]}…, but its artifact hashes to {got[:12]}…")
            os.replace(fetched, cached)  # atomic: a concurrent download of the same bytes is harmless
    log.info("%s -> %s version %s (%s), checkpoint %s", uri, version.name, version.version,
             version.tags.get("variant", "unknown variant"), digest[:12])
    return cached


def _checkpoint_in(folder: Path) -> Path:
    found = sorted(folder.rglob("*.safetensors"))
    if len(found) != 1:
        raise CheckpointError(f"{folder}: expected exactly one .safetensors checkpoint, found {len(found)}"
                              + (f": {[str(p) for p in found[:5]]}" if found else ""))
    return found[0]


def default_model_ref(cfg: Config) -> str:
    """The model to use when none is named: the registry's champion if it has one, else the release model.

    A registry that does not exist yet (a fresh clone's ``sqlite:///mlruns.db``) is not created
    by asking; one that cannot be reached is reported, then the release model is used.
    """
    uri = tracking_uri(cfg)
    champion = f"{REGISTRY_PREFIX}{cfg.mlflow.model_name}@{CHAMPION}"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        log.info("no model registry at %s yet: using the release model (%s)", uri, RELEASE_REF)
        return RELEASE_REF
    try:
        found = _by_alias(_client(cfg), cfg.mlflow.model_name, CHAMPION)
    except MlflowException as exc:
        log.warning("model registry %s unreachable (%s): using the release model (%s)", uri, exc, RELEASE_REF)
        return RELEASE_REF
    if found is None:
        log.info("registry %s has no %s: using the release model (%s)", uri, champion, RELEASE_REF)
        return RELEASE_REF
    return champion


def resolve_checkpoint(cfg: Config, ref: str) -> Path:
    """A model reference (checkpoint file, folder holding one, ``models:/NAME@ALIAS|/VERSION``, ``release``) ->
    local file."""
    if ref == RELEASE_REF:
        return release_checkpoint()
    if ref.startswith(REGISTRY_PREFIX):
        return download_model(cfg, ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        path = _checkpoint_in(path)
    if not path.is_file():
        raise CheckpointError(f"{ref}: no such checkpoint file or folder (or use models:/NAME@ALIAS)")
    return path


def load_model_ref(ref: str, cfg: Config, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load the model ``ref`` names; its meta gains ``checkpoint`` (the file) and ``checkpoint_sha256``."""
    path = resolve_checkpoint(cfg, ref)
    model, meta = load_checkpoint(path, map_location)
    return model, {**meta, "checkpoint": str(path), DIGEST_TAG: sha256_file(path)}
