"""Real snowy footage: where it is kept, how it is added, and the retraining sensor.

Locally the footage of record is ``paths.footage`` (``data/footage``), a folder DVC
tracks with ``dvc add`` and that no stage writes: curation reads every clip directly
below it as a real train clip. :func:`add_footage` copies the clips of a drop zone
(``pipeline.footage_uri``, a local folder or ``s3://bucket/prefix``) into it as *new*
files, never overwriting one, and records the result as a new DVC version (pushed
when a DVC remote is configured). Deleting a clip there and running ``dvc add`` is a
new version too.

The fingerprint of footage is a sha256 over the sorted (relative name, size, content
sha256) of every clip file; the champion model version in the MLflow registry carries
the fingerprint of the footage it was trained with as the tag ``footage_fingerprint``.
The sensor (:func:`decide`) compares the two, so any change, deletions included,
triggers a retrain. On the cluster the scheduled pipeline's ingest step
(:func:`stage_footage`) materializes the raw data plus the footage as one artifact
for curation and training; the footage itself is never moved, changed or deleted.
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
from semivdn.data import FOOTAGE_PREFIX
from semivdn.data.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from semivdn.registry import CHAMPION
from semivdn.tracking import tracking_uri
from semivdn.versioning import version_data

LOG = logging.getLogger(__name__)
FINGERPRINT_TAG = "footage_fingerprint"
REAL_TRAIN = PurePosixPath("real/train")
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
class Staged:
    """The footage a pipeline run trains with: its fingerprint and its clip files."""

    fingerprint: str
    clips: list[str]


@dataclass(frozen=True)
class Added:
    """What :func:`add_footage` did: clips written (under their new names), clips already kept, DVC commands."""

    added: list[str]
    unchanged: list[str]
    fingerprint: str
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
    return PurePosixPath(FOOTAGE_PREFIX + first, *rest).as_posix()


def fingerprint(uri: str | Path, endpoint: str | None = None) -> str:
    """sha256 over the sorted (relative name, size, content sha256) of the footage below ``uri``.

    Content is streamed in chunks (S3 objects are never held in memory), so a
    renamed, resized or re-encoded clip changes the fingerprint and a touched one does not.
    """
    return _content_digest(uri, footage_files(uri, endpoint), endpoint)


def data_fingerprint(raw_uri: str | Path, footage_uri: str | Path, endpoint: str | None = None) -> str:
    """The content identity of one pipeline run's inputs: every raw data file and the footage.

    Kubeflow's cache keys on a step's inputs; with this as an input of ingestion, an
    unchanged rerun reuses ingestion and, through its artifact, curation and training.
    """
    raw = _content_digest(raw_uri, storage.list_files(raw_uri, endpoint), endpoint)
    return hashlib.sha256(f"raw\t{raw}\nfootage\t{fingerprint(footage_uri, endpoint)}\n".encode()).hexdigest()


def _content_digest(uri: str | Path, files: list[storage.StoredFile], endpoint: str | None) -> str:
    digest = hashlib.sha256()
    for item in files:
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


def stage_footage(cfg: Config, footage_uri: str, raw_uri: str, dest: Path) -> Staged:
    """Materialize the raw data at ``raw_uri`` into ``dest`` with the footage added to its real train split.

    A pipeline step's working copy: the raw data and the footage stay as they are.
    Returns the fingerprint of exactly the footage that was copied.
    """
    endpoint = storage.endpoint_url(cfg)
    if not storage.is_s3(raw_uri) and not Path(raw_uri).is_dir():
        raise FileNotFoundError(f"raw data not found at {raw_uri}; run `semivdn data make --out {raw_uri}` first")
    storage.download_prefix(raw_uri, dest, endpoint)
    with tempfile.TemporaryDirectory(prefix="footage-") as tmp:
        downloaded = Path(tmp)
        clips = [f.name for f in footage_files(footage_uri, endpoint)]
        storage.download_prefix(footage_uri, downloaded, endpoint, names=clips)
        copied_fingerprint = fingerprint(downloaded)
        for name in clips:
            target = dest / REAL_TRAIN / ingested_name(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            (downloaded / name).replace(target)
    LOG.info("staged %d footage file(s) from %s into %s", len(clips), footage_uri, dest / REAL_TRAIN)
    return Staged(copied_fingerprint, clips)


def _clip_digests(uri: str | Path, endpoint: str | None) -> dict[str, tuple[str, list[str]]]:
    """Clip name (first path part: a video file or a frame folder) -> (content digest, its files)."""
    by_clip: dict[str, list[str]] = {}
    for item in footage_files(uri, endpoint):
        by_clip.setdefault(PurePosixPath(item.name).parts[0], []).append(item.name)
    digests = {}
    for clip, names in by_clip.items():
        digest = hashlib.sha256()
        for name in sorted(names):
            content = hashlib.sha256()
            for chunk in storage.read_chunks(uri, name, endpoint):
                content.update(chunk)
            digest.update(f"{PurePosixPath(name).relative_to(clip)}\t{content.hexdigest()}\n".encode())
        digests[clip] = (digest.hexdigest(), names)
    return digests


def _renamed(clip: str, digest: str) -> str:
    """``site.mp4`` -> ``site-<digest[:8]>.mp4`` (a frame folder ``site`` -> ``site-<digest[:8]>``)."""
    path = PurePosixPath(clip)
    return f"{path.stem}-{digest[:8]}{path.suffix}" if path.suffix.lower() in VIDEO_SUFFIXES else f"{clip}-{digest[:8]}"


def add_footage(cfg: Config, source_uri: str, store: Path) -> Added:
    """Add the clips at ``source_uri`` that ``store`` lacks, as new files, then version ``store`` with DVC.

    A clip already in ``store`` with the same content is left alone; a clip whose
    name is taken by different content is added as ``<name>-<digest[:8]>``: nothing
    in ``store`` is ever overwritten or deleted.
    """
    endpoint = storage.endpoint_url(cfg)
    store.mkdir(parents=True, exist_ok=True)
    kept = {digest: clip for clip, (digest, _) in _clip_digests(store, None).items()}
    taken = {PurePosixPath(p.name).as_posix() for p in store.iterdir()}
    added, unchanged = [], []
    with tempfile.TemporaryDirectory(prefix="footage-") as tmp:
        for clip, (digest, names) in sorted(_clip_digests(source_uri, endpoint).items()):
            if digest in kept:
                unchanged.append(kept[digest])
                continue
            target = clip if clip not in taken else _renamed(clip, digest)
            if target in taken:
                raise FileExistsError(f"{store / target}: exists with other content; refusing to overwrite it")
            storage.download_prefix(source_uri, Path(tmp), endpoint, names=names)
            (Path(tmp) / clip).replace(store / target)
            kept[digest] = target
            taken.add(target)
            added.append(target)
    LOG.info("footage: %d clip(s) added to %s, %d already there", len(added), store, len(unchanged))
    return Added(added, unchanged, fingerprint(store), version_data(store))


def record_fingerprint(cfg: Config, version: int | str, footage_fingerprint: str) -> None:
    """Tag a registered model version with the fingerprint of the footage it was trained on."""
    _client(cfg).set_model_version_tag(cfg.mlflow.model_name, str(version), FINGERPRINT_TAG, footage_fingerprint)
