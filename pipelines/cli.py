"""``semivdn-pipeline compile|submit|schedule|run-local``: one pipeline definition, four ways to use it.

compile writes the IR YAML for the Kubeflow UI; submit and schedule talk to a
Kubeflow Pipelines host through ``kfp.Client``; run-local executes the same DAG
here with ``kfp.local`` (each step a subprocess in the current environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
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
from semivdn import cli, storage, tracking
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


TOKEN_ENV = "SEMIVDN_KFP_TOKEN"  # a bearer token for the Kubeflow Pipelines API (never a command-line argument)


@dataclass(frozen=True)
class Connection:
    """Where and as whom to reach Kubeflow Pipelines: host, profile namespace, credentials.

    Credentials, first that applies: a service-account token file (``--token-file``,
    e.g. a projected token with audience ``pipelines.kubeflow.org``), a bearer
    token in ``$SEMIVDN_KFP_TOKEN``, else kfp.Client's own standard (the in-cluster
    token at ``$KF_PIPELINES_SA_TOKEN_PATH``, or the kube config).
    """

    host: str
    namespace: str | None = None
    token_file: str | None = None

    def client(self) -> Any:
        import kfp
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        auth: dict[str, Any] = {}
        if self.token_file:
            if not Path(self.token_file).is_file():
                raise FileNotFoundError(f"--token-file {self.token_file}: no such file")
            auth["credentials"] = ServiceAccountTokenVolumeCredentials(self.token_file)
        elif os.environ.get(TOKEN_ENV):
            auth["existing_token"] = os.environ[TOKEN_ENV]
        return kfp.Client(host=self.host, **({"namespace": self.namespace} if self.namespace else {}), **auth)


def require_s3(name: str, uri: str) -> str:
    """Pods see no local paths: a run's data must live in S3."""
    if not storage.is_s3(uri):
        raise ConfigError(f"{name} {uri!r}: a cluster run reads its data from S3; give an s3://bucket/prefix URI")
    return uri


TRUTH_PREFIX = "real_truth"  # s3://BUCKET/PREFIX/real_truth: the proxy-real held-back frames (infra/README.md)


def run_arguments(cfg: Config, raw_uri: str | None = None, footage_uri: str | None = None,
                  truth_uri: str | None = None) -> dict[str, str]:
    """The required data inputs of a cluster run: given URIs, else the bucket's ``raw``, ``incoming`` and
    ``real_truth`` prefixes."""
    bucket = storage.bucket(cfg)
    if bucket is None and not (raw_uri and footage_uri and truth_uri):
        raise ConfigError(f"no data location: set s3.bucket in params (or ${storage.BUCKET_ENV}) or pass "
                          "--raw-uri, --footage-uri and --truth-uri")
    return {"raw_uri": require_s3("--raw-uri", raw_uri or default_data_uri(cfg, cfg.paths.raw, "raw")),
            "footage_uri": require_s3("--footage-uri", footage_uri or default_data_uri(cfg, "", "incoming")),
            "truth_uri": require_s3("--truth-uri", truth_uri or default_data_uri(cfg, "", TRUTH_PREFIX))}


def submit(cfg: Config, connection: Connection, arguments: Mapping[str, str], client: Any | None = None
           ) -> dict[str, Any]:
    """Start one run of the pipeline compiled from ``cfg``, in the connection's namespace."""
    client = client or connection.client()
    with tempfile.TemporaryDirectory(prefix="semivdn-pipeline-") as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "semivdn_pipeline.yaml")
        result = client.create_run_from_pipeline_package(
            str(package), arguments=dict(arguments),
            run_name=f"{PIPELINE_NAME}-{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}",
            experiment_name=cfg.mlflow.experiment, namespace=connection.namespace,
            service_account=cfg.pipeline.service_account)
    return {"host": connection.host, "namespace": connection.namespace, "run_id": result.run_id,
            "experiment": cfg.mlflow.experiment, "arguments": dict(arguments)}


def _existing_recurring_runs(client: Any, experiment_id: str, namespace: str | None, name: str) -> list[Any]:
    """The recurring runs named ``name`` in the experiment (every page)."""
    found, token = [], ""
    query = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id,
                                          namespace=namespace, filter=query)
        found += [r for r in page.recurring_runs or [] if r.display_name == name]
        token = page.next_page_token
        if not token:
            return found


def schedule(cfg: Config, connection: Connection, cron: str, spec_path: Path = RECURRING_RUN_SPEC,
             replace: bool = False, client: Any | None = None) -> dict[str, Any]:
    """Create the recurring retraining run of ``spec_path`` with a six-field ``cron``, once.

    A recurring run of that name already in the experiment is reused, not duplicated;
    ``replace`` deletes it and creates it anew (new pipeline version or cron).
    """
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(f"--cron {cron!r}: Kubeflow expects six fields (seconds first), e.g. '0 0 3 * * *'")
    spec = RecurringRunSpec.load(spec_path)
    namespace = connection.namespace or spec.namespace
    client = client or dataclasses.replace(connection, namespace=namespace).client()
    experiment = client.create_experiment(name=spec.experiment, namespace=namespace)  # gets an existing one
    summary = {"host": connection.host, "namespace": namespace, "name": spec.name, "cron": cron,
               "experiment_id": experiment.experiment_id}
    existing = _existing_recurring_runs(client, experiment.experiment_id, namespace, spec.name)
    if existing and not replace:
        LOG.info("recurring run %r exists (%s): reused; --replace recreates it", spec.name,
                 existing[0].recurring_run_id)
        return {**summary, "recurring_run_id": existing[0].recurring_run_id, "created": False}
    for old in existing:
        client.delete_recurring_run(old.recurring_run_id)
    with tempfile.TemporaryDirectory(prefix="semivdn-pipeline-") as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "semivdn_pipeline.yaml")
        recurring = client.create_recurring_run(
            experiment_id=experiment.experiment_id, job_name=spec.name, description=spec.description,
            cron_expression=cron, max_concurrency=spec.max_concurrency, no_catchup=spec.no_catchup,
            params=dict(spec.parameters), pipeline_package_path=str(package),
            service_account=cfg.pipeline.service_account)
    return {**summary, "recurring_run_id": recurring.recurring_run_id, "created": True,
            "replaced": [old.recurring_run_id for old in existing]}


def _local_uri(uri: str) -> str:
    return uri if storage.is_s3(uri) else str(Path(uri).resolve())


def local_arguments(cfg: Config, params_file: Path) -> dict[str, Any]:
    """Pipeline arguments for a run on this machine: absolute paths, this params file, this tracking store."""
    return {"profile": cfg.profile, "params_file": str(params_file.resolve()),
            "raw_uri": _local_uri(default_data_uri(cfg, cfg.paths.raw, "raw")),
            "footage_uri": _local_uri(cfg.pipeline.footage_uri),
            "truth_uri": _local_uri(default_data_uri(cfg, cfg.paths.real_truth, TRUTH_PREFIX)),
            "mlflow_tracking_uri": tracking_uri(cfg)}


# What a step container needs from this machine's environment to reach S3 and MLflow (docker runner).
CONTAINER_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", storage.ENDPOINT_ENV,
                 storage.BUCKET_ENV, "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _docker_runner(image: str, workdir: Path, arguments: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """kfp.local's DockerRunner on ``image`` and the steps' environment; every path a step reads is in ``workdir``.

    Containers share the host network (MLflow and S3 on localhost are reachable) and
    run as the calling user, so the outputs under ``workdir`` are the caller's.
    """
    import docker
    from kfp import local

    for name in ("raw_uri", "footage_uri", "truth_uri", "params_file", "checkpoint_root"):
        uri = str(arguments[name])
        if not storage.is_s3(uri) and not Path(uri).resolve().is_relative_to(workdir):
            raise ConfigError(f"{name} {uri}: containers see only the workdir {workdir}; use s3:// or a path in it")
    client = docker.from_env()
    try:
        digest = client.images.get(image).id
    except docker.errors.ImageNotFound as exc:
        raise ConfigError(f"image {image} is not in the local Docker daemon: build it with `make image`") from exc
    finally:
        client.close()
    environment = {name: os.environ[name] for name in CONTAINER_ENV if os.environ.get(name)}
    environment.update({"HOME": "/tmp", tracking.IMAGE_DIGEST_ENV: digest})
    runner = local.DockerRunner(network_mode="host", user=f"{os.getuid()}:{os.getgid()}")
    return runner, environment


def run_local(cfg: Config, params_file: Path, workdir: Path, runner: str = "subprocess",
              image: str | None = None) -> dict[str, Any]:
    """Run the whole DAG with kfp.local: each step a subprocess here, or a container of the project image.

    ``runner="docker"`` runs every step (training too) in ``image`` (default
    ``pipeline.image``); the params file is copied into the workdir, which the
    containers mount.
    """
    from kfp import local

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    arguments = {**local_arguments(cfg, params_file), "checkpoint_root": str(workdir / "checkpoints")}
    environment: dict[str, str] = {}
    if runner == "docker":
        image = image or cfg.pipeline.image
        cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, image=image, image_cuda=image,
                                                                    train_gpus=0))
        shutil.copyfile(params_file, workdir / "params.yaml")
        arguments["params_file"] = str(workdir / "params.yaml")
        task_runner, environment = _docker_runner(image, workdir, arguments)
    elif runner == "subprocess":
        task_runner = local.SubprocessRunner(use_venv=False)
    else:
        raise ValueError(f"--runner {runner!r}: expected subprocess or docker")
    local.init(runner=task_runner, pipeline_root=str(workdir))
    LOG.info("kfp.local (%s) ignores the cluster-only settings (resources, GPUs, secrets, volumes)", runner)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(non-Python base image|no effect in the current local runner)")
        build_pipeline(cfg, retries=False, environment=environment)(**arguments)
    return {"pipeline": PIPELINE_NAME, "runner": runner, "image": cfg.pipeline.image, "workdir": str(workdir),
            "arguments": arguments}


def _connection(args: argparse.Namespace) -> Connection:
    return Connection(args.host, args.namespace, args.token_file)


def _dispatch(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """Run one ``semivdn-pipeline ACTION`` (the arguments are in :func:`build_parser`)."""
    action = args.action
    if action == "compile":
        return {"output": str(compile_pipeline(cfg, Path(args.output)))}
    if action == "submit":
        return submit(cfg, _connection(args), run_arguments(cfg, args.raw_uri, args.footage_uri, args.truth_uri))
    if action == "schedule":
        return schedule(cfg, _connection(args), args.cron, replace=args.replace)
    if action == "run-local":
        return run_local(cfg, Path(args.params), Path(args.workdir), args.runner, args.image)
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

    def remote(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = action(name, help_text)
        sub.add_argument("--host", required=True, help="Kubeflow Pipelines API, e.g. https://kubeflow.example/pipeline")
        sub.add_argument("--namespace", help="the Kubeflow profile namespace (multi-user Kubeflow)")
        sub.add_argument("--token-file", help=f"service-account token file (else ${TOKEN_ENV}, else kfp's default)")
        return sub

    action("compile", "write the pipeline IR YAML for the Kubeflow UI").add_argument("--output", required=True)
    sub = remote("submit", "start a run on a Kubeflow Pipelines host")
    sub.add_argument("--raw-uri", help="s3:// raw data (default: s3://BUCKET/PREFIX/raw)")
    sub.add_argument("--footage-uri", help="s3:// new real footage (default: s3://BUCKET/PREFIX/incoming)")
    sub.add_argument("--truth-uri", help="s3:// held-back clean frames of the proxy-real clips, for evaluation and "
                     f"the promotion gate (default: s3://BUCKET/PREFIX/{TRUTH_PREFIX})")
    sch = remote("schedule", "create the recurring retraining run (once: an existing one is reused)")
    sch.add_argument("--cron", default="0 0 3 * * *", help="six-field cron (default: daily at 03:00)")
    sch.add_argument("--replace", action="store_true", help="delete the existing recurring run and create it anew")
    loc = action("run-local", "run the DAG here with kfp.local")
    loc.add_argument("--workdir", default="build/kfp-local")
    loc.add_argument("--runner", choices=["subprocess", "docker"], default="subprocess",
                     help="steps as subprocesses here, or as containers of the project image (make image)")
    loc.add_argument("--image", help="the image for --runner docker (default: pipeline.image)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``semivdn-pipeline`` console script: same options, errors and exit codes as ``semivdn``."""
    return cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
