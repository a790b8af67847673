"""Storage URIs: a local folder or an S3-compatible prefix (``s3://bucket/prefix``).

Kubeflow components read the raw data and the incoming footage from S3 (MinIO
or any compatible endpoint) and the same code runs on a laptop with local
folders, so every function here takes either kind of URI. Credentials come from
the standard boto3 chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the
environment, a profile, or a pod identity); the endpoint from
``$SEMIVDN_S3_ENDPOINT`` or ``s3.endpoint_url`` in params (:func:`endpoint_url`).

Every file name that comes from a listing (an S3 key, an archive member) is joined onto a
local folder through :func:`safe_join` only, so a key like ``../x`` or ``//etc/x`` is an
error instead of a write outside the folder. Local outputs are produced through
:func:`atomic_output`: written beside the target and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from semivdn.config import Config

LOG = logging.getLogger(__name__)
S3_SCHEME = "s3://"
ENDPOINT_ENV = "SEMIVDN_S3_ENDPOINT"
BUCKET_ENV = "SEMIVDN_S3_BUCKET"
CHUNK_BYTES = 1 << 20


class StorageError(RuntimeError):
    """A storage URI that cannot be listed, read or written, naming the URI."""


@dataclass(frozen=True)
class StoredFile:
    """One file below a storage root: its POSIX path relative to the root, and its size."""

    name: str
    size: int


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith(S3_SCHEME)


def endpoint_url(cfg: Config) -> str | None:
    """The S3 endpoint: ``$SEMIVDN_S3_ENDPOINT`` (set in a cluster) over params; None means AWS."""
    return os.environ.get(ENDPOINT_ENV) or cfg.s3.endpoint_url


def bucket(cfg: Config) -> str | None:
    return os.environ.get(BUCKET_ENV) or cfg.s3.bucket


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    if not is_s3(uri):
        raise StorageError(f"{uri}: not an s3:// URI")
    bucket_name, _, prefix = uri[len(S3_SCHEME):].partition("/")
    if not bucket_name:
        raise StorageError(f"{uri}: no bucket name after s3://")
    return bucket_name, prefix.strip("/")


def join(uri: str | Path, *parts: str) -> str:
    """Append path parts to a local path or an S3 URI."""
    if is_s3(uri):
        return "/".join([str(uri).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(uri).joinpath(*parts))


def safe_join(root: Path, name: str) -> Path:
    """``root / name`` for a relative POSIX ``name`` that stays inside ``root``; anything else is an error.

    Absolute names, ``..`` parts, empty parts (``a//b``) and backslashes are refused before any
    filesystem access; the resolved result is checked again so a symlink inside ``root`` cannot lead out.
    """
    parts = name.split("/")
    if not name or "\\" in name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"{name!r}: unsafe file name (absolute, empty or '..' part); refusing to write it "
                           f"below {root}")
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise StorageError(f"{name!r}: resolves outside {root}; refusing to write it")
    return target


@contextlib.contextmanager
def atomic_output(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same suffix) that becomes ``target`` only if the block succeeds.

    A failure or interrupt removes the temporary path, so nothing that looks complete is left. An
    existing ``target`` is an error unless it is an empty folder or ``overwrite`` is set; the new
    output replaces it by rename, so a hard link to another file (say the input) is never written into.
    """
    target = Path(target)
    if target.exists() and not overwrite and not (target.is_dir() and not any(target.iterdir())):
        raise FileExistsError(f"output {target} already exists; choose a new path or pass --overwrite")
    if target.parent.exists() and not target.parent.is_dir():
        raise NotADirectoryError(f"output {target}: its parent {target.parent} is a file, not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.stem}.partial-", dir=target.parent))
    work = temporary / f"output{target.suffix}"
    try:
        yield work
        if target.is_dir() or (work.is_dir() and target.exists()):
            target.rename(temporary / "replaced")  # a rename cannot replace a folder, or a file by a folder
        os.replace(work, target)  # a file replaces a file atomically; a link to it is left alone
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def s3_client(endpoint: str | None = None) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint or os.environ.get(ENDPOINT_ENV))


def _key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def list_files(uri: str | Path, endpoint: str | None = None) -> list[StoredFile]:
    """All files below ``uri`` sorted by name; a missing local folder is an error."""
    if not is_s3(uri):
        root = Path(uri)
        if not root.is_dir():
            raise StorageError(f"{root}: folder not found")
        return sorted((StoredFile(p.relative_to(root).as_posix(), p.stat().st_size)
                       for p in root.rglob("*") if p.is_file()), key=lambda f: f.name)
    bucket_name, prefix = split_s3(str(uri))
    client = s3_client(endpoint)
    files = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket_name,
                                                                      Prefix=f"{prefix}/" if prefix else ""):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix) + 1:] if prefix else item["Key"]
                if name and not name.endswith("/"):
                    files.append(StoredFile(name, int(item["Size"])))
    except client.exceptions.NoSuchBucket as exc:
        raise StorageError(f"{uri}: bucket {bucket_name!r} does not exist") from exc
    return sorted(files, key=lambda f: f.name)


def read_chunks(uri: str | Path, name: str, endpoint: str | None = None) -> Iterator[bytes]:
    """Stream the bytes of file ``name`` below ``uri`` without holding it in memory."""
    if not is_s3(uri):
        with (Path(uri) / name).open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk
        return
    bucket_name, prefix = split_s3(str(uri))
    body = s3_client(endpoint).get_object(Bucket=bucket_name, Key=_key(prefix, name))["Body"]
    yield from body.iter_chunks(CHUNK_BYTES)


def download_prefix(uri: str | Path, dest: Path, endpoint: str | None = None,
                    names: list[str] | None = None) -> list[Path]:
    """Copy the files below ``uri`` (or only ``names``) into ``dest``, keeping relative paths.

    Every name is checked with :func:`safe_join` before anything is written; S3 objects go
    through boto3's transfer manager (``download_file``: multipart, retried, temp file + rename).
    """
    wanted = names if names is not None else [f.name for f in list_files(uri, endpoint)]
    targets = [safe_join(dest, name) for name in wanted]  # all checked before the first write
    client = s3_client(endpoint) if is_s3(uri) else None
    written = []
    for name, target in tqdm(list(zip(wanted, targets, strict=True)), desc=f"download {uri}", unit="file",
                             disable=not wanted):
        target.parent.mkdir(parents=True, exist_ok=True)
        if client is None:
            shutil.copy2(Path(uri) / name, target)
        else:
            bucket_name, prefix = split_s3(str(uri))
            client.download_file(bucket_name, _key(prefix, name), str(target))
        written.append(target)
    return written


def upload_dir(src: Path, uri: str | Path, endpoint: str | None = None,
               names: list[str] | None = None) -> list[str]:
    """Copy the files below local folder ``src`` (or only ``names``) to ``uri``; return the written URIs."""
    if not src.is_dir():
        raise StorageError(f"{src}: folder not found")
    wanted = names if names is not None else [f.name for f in list_files(src)]
    client = s3_client(endpoint) if is_s3(uri) else None
    written = []
    for name in tqdm(wanted, desc=f"upload {uri}", unit="file", disable=not wanted):
        if client is None:
            target = safe_join(Path(uri), name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(safe_join(src, name), target)
        else:
            bucket_name, prefix = split_s3(str(uri))
            client.upload_file(str(safe_join(src, name)), bucket_name, _key(prefix, name))
        written.append(join(uri, name))
    return written
