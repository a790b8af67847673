"""Record a new version of a data folder with DVC (``dvc add``, then ``dvc push`` to the default remote).

Only folders that no pipeline stage writes can be versioned this way (the footage
store, ``paths.footage``): a stage's output belongs to ``dvc repro``, which deletes
and rewrites it, so committing other data over it would lose that data. Outside a
DVC repository (a pipeline pod) it logs that and does nothing: there the data lives
in S3 prefixes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from semivdn.config import Config

LOG = logging.getLogger(__name__)
DVC_TIMEOUT_S = 3600


def dvc_root(path: Path) -> Path | None:
    """The DVC repository containing ``path`` (a ``.dvc`` folder above it), or None."""
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _dvc(root: Path, *args: str) -> None:
    command = [sys.executable, "-m", "dvc", *args]
    LOG.info("running %s in %s", " ".join(["dvc", *args]), root)
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=DVC_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed in {root} (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()}")


def version_data(path: Path) -> list[str]:
    """Version ``path`` with DVC; return the dvc commands run (empty outside a DVC repository)."""
    from dvc.exceptions import OutputNotFoundError
    from dvc.repo import Repo

    if not path.exists():
        raise FileNotFoundError(f"{path}: cannot version a missing folder")
    root = dvc_root(path)
    if root is None:
        LOG.info("%s is not inside a DVC repository: skipping data versioning", path)
        return []
    target = path.resolve().relative_to(root).as_posix()
    with Repo(str(root)) as repo:
        try:
            stages = [out.stage for out in repo.find_outs_by_path(str(root / target))]
        except OutputNotFoundError:
            stages = []
        remote = repo.config["core"].get("remote")
    written = sorted(stage.addressing for stage in stages if not stage.is_data_source)
    if written:
        raise ValueError(f"{target} is an output of the stage(s) {', '.join(written)}: `dvc repro` owns it; "
                         "keep added data in a folder no stage writes (paths.footage)")
    commands = [["add", target]]
    if remote:
        commands.append(["push", target])
    else:
        LOG.info("no default DVC remote configured: the new data version stays in the local cache")
    for args in commands:
        _dvc(root, *args)
    return [" ".join(["dvc", *args]) for args in commands]


REMOTE = "storage"


def configure_remote(cfg: Config, root: Path, local: bool = False) -> dict[str, str]:
    """Make ``s3://<bucket>/<s3.prefix>/dvc`` the default DVC remote of the repository at ``root``.

    Bucket and endpoint come from params (``s3:``) or ``$SEMIVDN_S3_BUCKET`` /
    ``$SEMIVDN_S3_ENDPOINT``, as for the pipeline (MinIO on the cluster, see infra/);
    credentials from the usual AWS environment or profile, never from a file here.
    ``local`` writes .dvc/config.local (this clone only) instead of the committed .dvc/config.
    """
    from semivdn import storage

    bucket_name = storage.bucket(cfg)
    if not bucket_name:
        raise ValueError(f"no S3 bucket for the DVC remote: set s3.bucket in params or ${storage.BUCKET_ENV}")
    url = storage.join(f"s3://{bucket_name}", cfg.s3.prefix, "dvc")
    scope = ["--local"] if local else []
    _dvc(root, "remote", "add", *scope, "--default", "--force", REMOTE, url)
    endpoint = storage.endpoint_url(cfg)
    if endpoint:
        _dvc(root, "remote", "modify", *scope, REMOTE, "endpointurl", endpoint)
    return {"remote": REMOTE, "url": url, "endpoint": endpoint or "AWS S3",
            "config": ".dvc/config.local" if local else ".dvc/config"}
