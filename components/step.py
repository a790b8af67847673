"""The glue every thin component shares: run one ``semivdn`` command in-process.

A component parses its argv with the same parser as the ``semivdn`` CLI and calls
the same handler, so the Kubeflow step, the DVC stage and a shell user run one
implementation. The handler's return value (a dict for register/promote) comes
back to the component, which turns it into typed outputs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kfp.dsl import Metrics, Model

from semivdn.config import load_config

CHECKPOINT_FILE = "model.safetensors"


def _environment(mlflow_tracking_uri: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri


def run_semivdn(argv: Sequence[str], params_file: str, profile: str, mlflow_tracking_uri: str = "") -> Any:
    """Run ``semivdn ARGV --params PARAMS_FILE --profile PROFILE`` and return the handler's result."""
    from semivdn.cli import build_parser

    _environment(mlflow_tracking_uri)
    args = build_parser().parse_args([*argv, "--params", params_file, *(["--profile", profile] if profile else [])])
    logging.getLogger(__name__).info("semivdn %s", " ".join(argv))
    return args.handler(args, load_config(args.params, args.profile))


def torchrun_semivdn(argv: Sequence[str], processes: int, params_file: str, profile: str,
                     mlflow_tracking_uri: str = "") -> None:
    """``semivdn ARGV`` as ``processes`` DDP workers on this node (torchrun; NCCL on GPUs, gloo on CPU)."""
    _environment(mlflow_tracking_uri)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "semivdn.cli", *argv, "--params", params_file, *(["--profile", profile] if profile else [])]
    logging.getLogger(__name__).info("%s", " ".join(command))
    subprocess.run(command, check=True)


def checkpoint(model: Model) -> str:
    """The weights file inside a Model artifact folder (``semivdn train --out`` writes it)."""
    path = Path(model.path) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model artifact {model.uri} has no {CHECKPOINT_FILE}")
    return str(path)


def numeric_leaves(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested numbers to ``a.b`` keys; booleans, strings and lists are not metrics."""
    flat: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(numeric_leaves(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def log_json_metrics(metrics: Metrics, json_path: Path) -> dict[str, float]:
    """Show the numbers of a step's JSON output in the Kubeflow UI (Output[Metrics].log_metric)."""
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: the step did not write its metrics file")
    values = numeric_leaves(json.loads(json_path.read_text()))
    for name, value in values.items():
        metrics.log_metric(name, value)
    return values
