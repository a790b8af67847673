"""Regenerate ``requirements-<variant>.lock``: the image's every transitive dependency, pinned with its hash.

``make image-lock`` runs this with the project's Python (3.11 on Linux x86-64, the image's).
pip resolves the project plus ``<variant>.in`` without installing anything, and
its installation report becomes a requirements file that the Dockerfile installs
with ``--require-hashes --no-deps``: nothing floats between two builds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def resolve(variant: str) -> list[dict[str, Any]]:
    """pip's resolution of the project and ``<variant>.in`` (its ``--report`` install list)."""
    with tempfile.TemporaryDirectory(prefix="semivdn-lock-") as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), str(ROOT), "-r", str(HERE / f"{variant}.in")], check=True)
        return json.loads(report.read_text())["install"]


def lock_lines(install: list[dict[str, Any]]) -> list[str]:
    """``name==version --hash=sha256:...`` for every package but the project itself, sorted by name."""
    lines = []
    for item in install:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if "dir_info" in item["download_info"]:  # the project: installed from the build context
            continue
        digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        if not digest:
            raise SystemExit(f"{name}=={version}: the index gave no sha256 for {item['download_info']['url']}")
        lines.append(f"{name}=={version} --hash=sha256:{digest}")
    return sorted(lines, key=str.lower)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=["cpu", "cuda"])
    variant = parser.parse_args().variant
    header = [f"# The {variant} image's Python packages: `make image-lock` regenerates this file",
              f"# (infra/docker/lock.py) from pyproject.toml and infra/docker/{variant}.in. Do not edit by hand."]
    sources = [line for line in (HERE / f"{variant}.in").read_text().splitlines() if line.startswith("--")]
    lines = [*header, *sources, *lock_lines(resolve(variant))]
    (HERE / f"requirements-{variant}.lock").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
