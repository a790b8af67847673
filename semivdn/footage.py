"""The retraining sensor: has new real snowy footage arrived since the champion was trained?

New real clips (video files or frame folders) land in ``pipeline.footage_uri``, a
local folder or ``s3://bucket/prefix``. Their content fingerprint is a sha256 over
the sorted (relative name, size, content sha256) of every clip file there; the
champion model version in the MLflow registry carries the fingerprint of the
footage it was trained with as the tag ``footage_fingerprint``. The scheduled
pipeline compares the two (:func:`decide`), and when they differ copies the
footage into the raw real train split (:func:`ingest`), retrains, and records
the new fingerprint on the version it registers (:func:`record_fingerprint`).
The footage itself is never moved or deleted: bad clips are quarantined by
curation, listed, and stay where they landed.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from semivdn import storage
from semivdn.config import Config
from semivdn.data.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from semivdn.registry import CHAMPION
from semivdn.tracking import tracking_uri
from semivdn.versioning import version_data

LOG = logging.getLogger(__name__)
FINGERPRINT_TAG = "footage_fingerprint"
REAL_TRAIN = PurePosixPath("real/train")
INGESTED_PREFIX = "footage-"  # marks ingested clips in the raw data and keeps them apart from generated ones
CLIP_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
Action = Literal["sweep", "retrain", "skip"]


@dataclass(frozen=True)
class Decision:
    """What the scheduled pipeline should do, and why.

    ``sweep``: no champion yet, run the whole ablation (M1, M2, M3, full).
    ``retrain``: the footage changed since the champion, retrain from the champion.
    ``skip``: the champion already saw exactly this footage.
    """

    action: Action
    fingerprint: str
    champion_version: str | None
    champion_fingerprint: str | None


@dataclass(frozen=True)
class Ingested:
    fingerprint: str
    clips: list[str]
    published: list[str] = field(default_factory=list)
    dvc: list[str] = field(default_factory=list)


def _is_clip_file(name: str) -> bool:
    path = PurePosixPath(name)
    return path.suffix.lower() in CLIP_SUFFIXES and not any(part.startswith(".") for part in path.parts)


def footage_files(uri: str | Path, endpoint: str | None = None) -> list[storage.StoredFile]:
    """The clip files below ``uri``: videos and frame images; other files are logged and left out."""
    files = storage.list_files(uri, endpoint)
    others = [f.name for f in files if not _is_clip_file(f.name)]
    if others:
        LOG.warning("%s: %d file(s) are neither videos nor frames and are not footage: %s",
                    uri, len(others), ", ".join(others[:10]))
    return [f for f in files if _is_clip_file(f.name)]


def ingested_name(name: str) -> str:
    """Where footage file ``name`` goes below ``<raw>/real/train``: ``a/b.png`` -> ``footage-a/b.png``."""
    first, *rest = PurePosixPath(name).parts
    return PurePosixPath(INGESTED_PREFIX + first, *rest).as_posix()


def fingerprint(uri: str | Path, endpoint: str | None = None) -> str:
    """sha256 over the sorted (relative name, size, content sha256) of the footage below ``uri``.

    Content is streamed in chunks (S3 objects are never held in memory), so a
    renamed, resized or re-encoded clip changes the fingerprint and a touched one does not.
    """
    digest = hashlib.sha256()
    for item in footage_files(uri, endpoint):
        content = hashlib.sha256()
        for chunk in storage.read_chunks(uri, item.name, endpoint):
            content.update(chunk)
        digest.update(f"{item.name}\t{item.size}\t{content.hexdigest()}\n".encode())
    return digest.hexdigest()


def _client(cfg: Config) -> MlflowClient:
    uri = tracking_uri(cfg)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion_version(cfg: Config) -> ModelVersion | None:
    """The MLflow ModelVersion holding the ``champion`` alias of ``mlflow.model_name``, or None."""
    client = _client(cfg)
    try:
        model = client.get_registered_model(cfg.mlflow.model_name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = model.aliases.get(CHAMPION)
    return None if version is None else client.get_model_version(cfg.mlflow.model_name, str(version))


def decide(cfg: Config, footage_uri: str) -> Decision:
    """Compare the footage's fingerprint with the one recorded on the champion."""
    current = fingerprint(footage_uri, storage.endpoint_url(cfg))
    champion = champion_version(cfg)
    if champion is None:
        decision = Decision("sweep", current, None, None)
    else:
        recorded = champion.tags.get(FINGERPRINT_TAG)
        decision = Decision("skip" if recorded == current else "retrain", current, str(champion.version), recorded)
    LOG.info("footage sensor: %s", decision)
    return decision


def ingest(cfg: Config, footage_uri: str, raw_uri: str, dest: Path) -> Ingested:
    """Materialize the raw data at ``raw_uri`` into ``dest`` and add the footage to its real train split.

    The footage clips are also copied into ``raw_uri`` itself (the data of record)
    and, when that is a folder in a DVC repository, versioned with DVC.
    Returns the fingerprint of exactly the footage that was copied.
    """
    endpoint = storage.endpoint_url(cfg)
    if not storage.is_s3(raw_uri) and not Path(raw_uri).is_dir():
        raise FileNotFoundError(f"raw data not found at {raw_uri}; run `semivdn data make --out {raw_uri}` first")
    storage.download_prefix(raw_uri, dest, endpoint)
    with tempfile.TemporaryDirectory(prefix="footage-") as tmp:
        downloaded, staged = Path(tmp) / "downloaded", Path(tmp) / "staged"
        downloaded.mkdir()
        staged.mkdir()
        clips = [f.name for f in footage_files(footage_uri, endpoint)]
        storage.download_prefix(footage_uri, downloaded, endpoint, names=clips)
        copied_fingerprint = fingerprint(downloaded)
        for name in clips:
            target = staged / ingested_name(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            (downloaded / name).rename(target)
        storage.upload_dir(staged, dest / REAL_TRAIN)
        published = storage.upload_dir(staged, storage.join(raw_uri, str(REAL_TRAIN)), endpoint)
    dvc = version_data(Path(raw_uri)) if clips and not storage.is_s3(raw_uri) else []
    LOG.info("ingested %d footage file(s) from %s into %s", len(clips), footage_uri, REAL_TRAIN)
    return Ingested(copied_fingerprint, clips, published, dvc)


def record_fingerprint(cfg: Config, version: int | str, footage_fingerprint: str) -> None:
    """Tag a registered model version with the fingerprint of the footage it was trained on."""
    _client(cfg).set_model_version_tag(cfg.mlflow.model_name, str(version), FINGERPRINT_TAG, footage_fingerprint)
