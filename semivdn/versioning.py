"""Record a new version of a data folder with DVC after the pipeline changed it.

New real footage is copied into ``<raw>/real/train``; this module makes that a
data version: ``dvc commit`` when the folder is already a DVC output (a stage's
``outs`` or an earlier ``dvc add``), ``dvc add`` otherwise, then ``dvc push``
when a default remote is configured. Outside a DVC repository (a pipeline pod)
it logs that and does nothing: there the data lives in versioned S3 prefixes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

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
    repo = Repo(str(root))
    try:
        tracked = bool(repo.find_outs_by_path(str(root / target)))
    except OutputNotFoundError:
        tracked = False
    remote = repo.config["core"].get("remote")
    repo.close()
    commands = [["commit", "--force", target] if tracked else ["add", target]]
    if remote:
        commands.append(["push", target])
    else:
        LOG.info("no default DVC remote configured: the new data version stays in the local cache")
    for args in commands:
        _dvc(root, *args)
    return [" ".join(["dvc", *args]) for args in commands]
