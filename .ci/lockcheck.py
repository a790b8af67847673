"""Fail when dvc.lock does not describe the committed code, params and stage commands.

``dvc status`` compares every stage's recorded dependencies with the workspace. Here
only what git holds counts: source files, params files and commands. Data and models
(stage outputs and `dvc add`-ed folders, absent from a fresh clone) are left out, so
the check needs no data and trains nothing. Run from the repository root; exit 1
lists the stale stages and what changed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dvc.repo import Repo


def stale_entries(root: Path) -> dict[str, list[str]]:
    """Stage -> the committed dependencies (or its command) that differ from dvc.lock."""
    with Repo(str(root)) as repo:  # the root pipeline; the opt-in release/dvc.yaml keeps its own lock
        status = repo.status(targets=[str(root / "dvc.yaml")])
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.decode()
    files = set(filter(None, tracked.split("\0")))

    def in_git(path: str) -> bool:
        return path in files or any(name.startswith(path.rstrip("/") + "/") for name in files)

    stale: dict[str, list[str]] = {}
    for stage, changes in status.items():
        for change in changes:
            if change == "changed command":
                stale.setdefault(stage, []).append("command")
            elif isinstance(change, dict):
                for path, how in change.get("changed deps", {}).items():
                    if in_git(path):
                        stale.setdefault(stage, []).append(f"{path}: {how}")
    return stale


def main() -> int:
    stale = stale_entries(Path.cwd())
    for stage, what in stale.items():
        print(f"dvc.lock is stale for {stage}: {'; '.join(map(str, what))}", file=sys.stderr)
    if stale:
        print("regenerate it with `make demo` (or `dvc commit` after checking the outputs)", file=sys.stderr)
        return 1
    print("dvc.lock matches the committed code, params and commands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
