"""``semivdn promote``: the champion gate on the current test data.

Joins the registry (:func:`semivdn.registry.promote`, which owns aliases and locking) and the
evaluation (:func:`semivdn.eval.evaluate.evaluate`): the registry asks for each side's scores,
this module evaluates that registered version on the test split of both domains (with the
proxy-real held-back truth), into ``out_dir/<role>``. Nothing is read from stored tags, so a
champion is always judged on the same data as its challenger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from semivdn.config import Config
from semivdn.eval.evaluate import evaluate
from semivdn.registry import promote


def promote_on_test_data(cfg: Config, raw_root: Path, curated: Path, truth_root: Path | None, out_dir: Path,
                         version: int | None = None, force: bool = False) -> dict[str, Any]:
    """Promote the candidate (or force ``version``) if it beats the champion on the current test data."""

    def score(model_uri: str, role: str) -> Path:
        folder = Path(out_dir) / role
        evaluate(cfg, model_uri, f"{role}-{model_uri.rsplit('/', 1)[-1]}", "test", Path(raw_root), Path(curated),
                 folder, truth_root)
        return folder

    return promote(cfg, version=version, force=force, score=score)
