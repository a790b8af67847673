"""``semivdn-pipeline compile|submit|schedule|run-local``: one pipeline definition, four ways to use it.

compile writes the IR YAML for the Kubeflow UI; submit and schedule talk to a
Kubeflow Pipelines host through ``kfp.Client``; run-local executes the same DAG
here with ``kfp.local`` (each step a subprocess in the current environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler

from pipelines.semivdn_pipeline import PIPELINE_NAME, build_pipeline, default_data_uri
from semivdn import cli, storage
from semivdn.config import Config, ConfigError
from semivdn.tracking import tracking_uri

LOG = logging.getLogger(__name__)
RECURRING_RUN_SPEC = Path(__file__).resolve().parents[1] / "infra" / "recurring-run.yaml"


@dataclass(frozen=True)
class RecurringRunSpec:
    """infra/recurring-run.yaml: the parameters of ``kfp.Client.create_recurring_run``."""

    name: str
    experiment: str
    description: str = ""
    namespace: str | None = None
    max_concurrency: int = 1
    no_catchup: bool = True
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RecurringRunSpec:
        raw = yaml.safe_load(path.read_text()) if path.is_file() else None
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: expected a mapping of recurring run settings")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]!r}; expected some of {sorted(known)}")
        try:
            spec = cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if spec.max_concurrency < 1:
            raise ConfigError(f"{path}: max_concurrency must be >= 1, got {spec.max_concurrency}")
        return spec


def compile_pipeline(cfg: Config, output: Path) -> Path:
    """Write the pipeline IR YAML (pipeline spec + Kubernetes platform spec) to ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), package_path=str(output))
    LOG.info("compiled pipeline %r for image %s into %s", PIPELINE_NAME, cfg.pipeline.image, output)
    return output


def kfp_client(host: str, namespace: str | None = None) -> Any:
    import kfp

    return kfp.Client(host=host, **({"namespace": namespace} if namespace else {}))


def submit(cfg: Config, host: str, client: Any | None = None) -> dict[str, Any]:
    """Start one run of the pipeline compiled from ``cfg`` on the Kubeflow Pipelines host."""
    client = client or kfp_client(host)
    with tempfile.TemporaryDirectory(prefix="semivdn-pipeline-") as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "semivdn_pipeline.yaml")
        result = client.create_run_from_pipeline_package(
            str(package), arguments={}, run_name=f"{PIPELINE_NAME}-{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}",
            experiment_name=cfg.mlflow.experiment, service_account=cfg.pipeline.service_account)
    return {"host": host, "run_id": result.run_id, "experiment": cfg.mlflow.experiment}


def schedule(cfg: Config, host: str, cron: str, spec_path: Path = RECURRING_RUN_SPEC,
             client: Any | None = None) -> dict[str, Any]:
    """Create the recurring retraining run described by ``spec_path`` with a six-field ``cron``."""
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(f"--cron {cron!r}: Kubeflow expects six fields (seconds first), e.g. '0 0 3 * * *'")
    spec = RecurringRunSpec.load(spec_path)
    client = client or kfp_client(host, spec.namespace)
    experiment = client.create_experiment(name=spec.experiment, namespace=spec.namespace)
    with tempfile.TemporaryDirectory(prefix="semivdn-pipeline-") as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "semivdn_pipeline.yaml")
        recurring = client.create_recurring_run(
            experiment_id=experiment.experiment_id, job_name=spec.name, description=spec.description,
            cron_expression=cron, max_concurrency=spec.max_concurrency, no_catchup=spec.no_catchup,
            params=dict(spec.parameters), pipeline_package_path=str(package),
            service_account=cfg.pipeline.service_account)
    return {"host": host, "recurring_run_id": recurring.recurring_run_id, "name": spec.name, "cron": cron,
            "experiment_id": experiment.experiment_id}


def _local_uri(uri: str) -> str:
    return uri if storage.is_s3(uri) else str(Path(uri).resolve())


def local_arguments(cfg: Config, params_file: Path) -> dict[str, Any]:
    """Pipeline arguments for a run on this machine: absolute paths, this params file, this tracking store."""
    return {"profile": cfg.profile, "params_file": str(params_file.resolve()),
            "raw_uri": _local_uri(default_data_uri(cfg, cfg.paths.raw, "raw")),
            "footage_uri": _local_uri(cfg.pipeline.footage_uri), "mlflow_tracking_uri": tracking_uri(cfg)}


def run_local(cfg: Config, params_file: Path, workdir: Path) -> dict[str, Any]:
    """Run the whole DAG with kfp.local: every step a subprocess in this Python environment."""
    from kfp import local

    workdir.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir.resolve()))
    arguments = local_arguments(cfg, params_file)
    LOG.info("kfp.local ignores the cluster-only settings (resources, GPUs, secrets, image %s)", cfg.pipeline.image)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(non-Python base image|no effect in the current local runner)")
        build_pipeline(cfg, retries=False)(**arguments)
    return {"pipeline": PIPELINE_NAME, "workdir": str(workdir.resolve()), "arguments": arguments}


def _dispatch(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """Run one ``semivdn-pipeline ACTION`` (the arguments are in :func:`build_parser`)."""
    action = args.action
    if action == "compile":
        return {"output": str(compile_pipeline(cfg, Path(args.output)))}
    if action == "submit":
        return submit(cfg, args.host)
    if action == "schedule":
        return schedule(cfg, args.host, args.cron)
    if action == "run-local":
        return run_local(cfg, Path(args.params), Path(args.workdir))
    raise ValueError(f"unknown pipeline action {action!r}; expected compile, submit, schedule or run-local")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semivdn-pipeline",
                                     description="Compile, submit, schedule or run the SemiVDN Kubeflow pipeline.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        cli.add_common(sub)
        sub.set_defaults(handler=_dispatch)
        return sub

    action("compile", "write the pipeline IR YAML for the Kubeflow UI").add_argument("--output", required=True)
    action("submit", "start a run on a Kubeflow Pipelines host").add_argument("--host", required=True)
    sch = action("schedule", "create the recurring retraining run")
    sch.add_argument("--host", required=True)
    sch.add_argument("--cron", default="0 0 3 * * *", help="six-field cron (default: daily at 03:00)")
    action("run-local", "run the DAG here with kfp.local").add_argument("--workdir", default="build/kfp-local")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``semivdn-pipeline`` console script: same options, errors and exit codes as ``semivdn``."""
    return cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
