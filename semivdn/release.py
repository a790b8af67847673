"""The release model: weights the project's own release pipeline trained, shipped inside the package.

``semivdn desnow`` needs a model on a fresh clone, before any pipeline has trained one: the
release model is that model and the first champion ``make demo`` registers. Its checkpoint
lives in ``semivdn/assets/`` beside a manifest (``semivdn-release.json``) that records its
SHA-256 and provenance; every load re-hashes the file and refuses one that does not match,
so a truncated, swapped or tampered file is an error, never a model.

Building one (``make release``'s last step) is :mod:`semivdn.release_build`.
"""

from __future__ import annotations

import json
from pathlib import Path

from semivdn.models.checkpoint import CheckpointError
from semivdn.weights import sha256_file

RELEASE_REF = "release"  # the model reference that names the release model (desnow --model release)
ASSETS = Path(__file__).resolve().parent / "assets"
CHECKPOINT_NAME = "semivdn-release.safetensors"
MANIFEST_NAME = "semivdn-release.json"


def release_checkpoint(assets: Path = ASSETS) -> Path:
    """The shipped checkpoint, after checking it against the SHA-256 its manifest records."""
    checkpoint, manifest_path = assets / CHECKPOINT_NAME, assets / MANIFEST_NAME
    if not manifest_path.is_file() or not checkpoint.is_file():
        raise CheckpointError(f"the release model is missing: expected {checkpoint} and {manifest_path} (they ship "
                              "with the package; reinstall it, or build them with `make release`)")
    try:
        expected = json.loads(manifest_path.read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest_path}: not a release manifest ({exc})") from exc
    actual = sha256_file(checkpoint)
    if actual != expected:
        raise CheckpointError(f"{checkpoint}: SHA-256 {actual[:12]}… differs from the {expected[:12]}… its manifest "
                              f"records: the file is corrupt or was replaced; restore it with `git checkout -- "
                              f"{checkpoint.name}` or rebuild it with `make release`")
    return checkpoint
