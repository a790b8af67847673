"""The glue every thin component shares: run one ``semivdn`` command in-process.

A component parses its argv with the same parser as the ``semivdn`` CLI and calls
the same handler, so the Kubeflow step, the DVC stage and a shell user run one
implementation. The handler's return value (a dict for register/promote) comes
back to the component, which turns it into typed outputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kfp.dsl import Metrics, Model

from semivdn import storage
from semivdn.config import load_config

CHECKPOINT_FILE = "model.safetensors"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
TEST_SPLIT = "test"  # what evaluate and promote score


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def tracking_environment(mlflow_tracking_uri: str) -> Iterator[None]:
    """``$MLFLOW_TRACKING_URI`` set to the step's URI (when given) for one command, then as it was.

    The variable outranks ``mlflow.tracking_uri`` in params (:func:`semivdn.tracking.tracking_uri`);
    MLflow's ``set_tracking_uri`` writes it too. Restoring it keeps one step's store out of whatever
    runs next in the process (another component called in-process, a test).
    """
    before = os.environ.get(TRACKING_URI_ENV)
    if mlflow_tracking_uri:
        os.environ[TRACKING_URI_ENV] = mlflow_tracking_uri
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TRACKING_URI_ENV, None)
        else:
            os.environ[TRACKING_URI_ENV] = before


def run_semivdn(argv: Sequence[str], params_file: str, profile: str, mlflow_tracking_uri: str = "") -> Any:
    """Run ``semivdn ARGV --params PARAMS_FILE --profile PROFILE`` and return the handler's result."""
    from semivdn.cli import build_parser

    _logging()
    args = build_parser().parse_args([*argv, "--params", params_file, *(["--profile", profile] if profile else [])])
    logging.getLogger(__name__).info("semivdn %s", " ".join(argv))
    with tracking_environment(mlflow_tracking_uri):
        return args.handler(args, load_config(args.params, args.profile, args.overrides))


def torchrun_semivdn(argv: Sequence[str], processes: int, params_file: str, profile: str,
                     mlflow_tracking_uri: str = "") -> None:
    """``semivdn ARGV`` as ``processes`` DDP workers on this node (torchrun; NCCL on GPUs, gloo on CPU)."""
    _logging()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "semivdn.cli", *argv, "--params", params_file, *(["--profile", profile] if profile else [])]
    logging.getLogger(__name__).info("%s", " ".join(command))
    environment = {**os.environ, **({TRACKING_URI_ENV: mlflow_tracking_uri} if mlflow_tracking_uri else {})}
    subprocess.run(command, check=True, env=environment)


@contextlib.contextmanager
def local_truth(truth_uri: str, params_file: str, profile: str) -> Iterator[str]:
    """The proxy-real held-back truth of the test split as a local folder for ``--truth``.

    A local ``truth_uri`` is used as it is; an S3 prefix is downloaded (its ``test/`` part only)
    into a temporary folder. No truth files is an error: without them the real domain has no
    PSNR/SSIM and the promotion gate could not judge a candidate on it.
    """
    source = storage.join(truth_uri, TEST_SPLIT)
    if not storage.is_s3(truth_uri):
        if not storage.list_files(source):
            raise storage.StorageError(f"truth {truth_uri}: no held-back frames under {source}")
        yield truth_uri
        return
    endpoint = storage.endpoint_url(load_config(params_file, profile or None))
    with tempfile.TemporaryDirectory(prefix="truth-") as folder:
        if not storage.download_prefix(source, Path(folder) / TEST_SPLIT, endpoint):
            raise storage.StorageError(f"truth {truth_uri}: no held-back frames under {source}")
        yield folder


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
