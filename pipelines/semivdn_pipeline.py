"""The SemiVDN Kubeflow pipeline: footage sensor -> curate -> train -> evaluate -> report -> register -> promote.

```
footage-sensor ──(action != skip)──> fingerprint-data -> ingest-footage (cached on the fingerprint) -> curate-data
  action == sweep (no champion yet): the ablation, paper Table 2
    baselines (ParallelFor: input, median3) ─────────────┐
    M1 -> evaluate ──────────────────────────────────────┤
    M2 warm-up -> evaluate ──────────────────────────────┤
      └─> ParallelFor variants (M3, full) from M2:       │
            train -> evaluate ──────────(Collected)──────┴─> ablation-report
                           └──(Collected)──> register-candidate -> promote-candidate
  else (retrain: the footage changed since the champion):
    ParallelFor retrain variants (full) from models:/NAME@champion:
      train -> evaluate ──(Collected)──> register-candidate -> promote-candidate
```

The loops iterate over the variants of params (compiled in, not run parameters), so each
task's display name says which variants it trains or evaluates: ``train full from the
champion``, ``train M2+ft, M3 or full from M2 (one per iteration)``; Kubeflow takes a display
name as a constant, never a loop item. Loops stay loops because only ``dsl.Collected``
fans artifacts in (kfp 2.17 refuses a list of separate tasks' artifacts), and they carry no
``name=``: kfp 2.17 writes that name as the loop's task name, which the backend's driver then
fails to match with the ``dsl.Collected`` producer (kubeflow/pipelines#13239); the UI shows
the loop node as ``for-loop-N``.

Resources, deadlines, retries and caching are set per step kind. Cluster settings
that ``kfp.local`` ignores (GPU limits, secrets, the ConfigMap of infra/k8s, the
checkpoint PVC, /dev/shm, the run-id label) live in the same spec, so one
definition serves a cluster, ``run-local`` and ``run-local --runner docker``.

Kubeflow reads parameter types and defaults from the pipeline function's signature,
so this module does not use ``from __future__ import annotations``.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import PipelineTask

from components.build import Components, build_components
from semivdn import storage, tracking
from semivdn.config import Config, ConfigError
from semivdn.registry import CHAMPION

PIPELINE_NAME = "semivdn"
IMAGE_PARAMS_FILE = "params.yaml"  # in the image's working directory (infra/docker/Dockerfile)
S3_SECRET = "semivdn-s3"  # created out of band, see infra/README.md
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
ENV_CONFIG_MAP = "semivdn-pipeline-env"  # infra/k8s/pipeline-env.yaml
ENV_CONFIG_KEYS = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI", "SEMIVDN_S3_ENDPOINT": "SEMIVDN_S3_ENDPOINT",
                   "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL"}
MLFLOW_SECRET = "semivdn-mlflow-client"  # MLflow basic-auth user of the pipeline (infra/README.md)
MLFLOW_SECRET_KEYS = {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                      "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}
RUN_ID_LABEL = "pipeline/runid"  # the Kubeflow run id on every step pod: MLflow lineage (semivdn/tracking.py)
CHECKPOINT_MOUNT = "/checkpoints"  # where pipeline.checkpoint_pvc is mounted in training pods
SUPERVISED_BASELINE = "M1"
WARM_UP = "M2"
CANDIDATE = "full"
RETRAIN_VARIANTS = [CANDIDATE]  # retrained from the champion when new footage arrives
BASELINES = ["input", "median3"]
GPU_RESOURCE = "nvidia.com/gpu"
HOUR = 3600


@dataclass(frozen=True)
class StepPolicy:
    """Kubernetes requests, a deadline, retries on transient failure, and whether a cached result may be reused.

    Steps that read mutable external state (the footage location, the registry)
    never use the cache: their inputs are URIs whose content changes. Ingestion
    does, keyed on the data fingerprint (the content behind those URIs),
    so an unchanged rerun reuses ingestion, curation and training. ``shm``
    sizes the in-memory /dev/shm that PyTorch DataLoader workers share tensors
    through (a pod's default is 64 MiB).
    """

    cpu: str
    memory: str
    cache: bool
    retries: int
    timeout_s: int
    gpus: int = 0
    shm: str | None = None


# The sensor does not retry: a missing footage location is one clear failure, not three.
SENSOR = StepPolicy(cpu="500m", memory="2Gi", cache=False, retries=0, timeout_s=HOUR // 4)
LIGHT = StepPolicy(cpu="500m", memory="2Gi", cache=False, retries=3, timeout_s=HOUR // 4)
DATA = StepPolicy(cpu="2", memory="8Gi", cache=True, retries=3, timeout_s=2 * HOUR)  # keyed on data content
CURATE = StepPolicy(cpu="2", memory="8Gi", cache=True, retries=1, timeout_s=2 * HOUR)
EVALUATE = StepPolicy(cpu="4", memory="16Gi", cache=True, retries=1, timeout_s=6 * HOUR, shm="2Gi")
REPORT = StepPolicy(cpu="1", memory="4Gi", cache=True, retries=1, timeout_s=HOUR // 2)


def training_policy(cfg: Config) -> StepPolicy:
    """Two retries: a retried attempt resumes from its checkpoint on the PVC, so a retry costs little."""
    return StepPolicy(cpu="8", memory="32Gi", cache=True, retries=2,
                      timeout_s=round(cfg.pipeline.train_timeout_hours * HOUR), gpus=cfg.pipeline.train_gpus,
                      shm="8Gi")


def apply_policy(task: PipelineTask, policy: StepPolicy, display_name: str, environment: Mapping[str, str],
                 retry: bool = True) -> PipelineTask:
    """Requests/limits, deadline, retry, caching, /dev/shm and the environment of one task.

    On the cluster: S3 and MLflow credentials from secrets (never in the container's
    arguments), endpoints from the ConfigMap, the run id from the pod's label.
    ``environment`` holds plain variables (the lineage of :mod:`semivdn.tracking`).
    """
    for name, value in environment.items():
        task.set_env_variable(name, value)
    task.set_cpu_request(policy.cpu).set_memory_request(policy.memory).set_memory_limit(policy.memory)
    if policy.gpus:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(policy.gpus)
    if retry:
        task.set_retry(num_retries=policy.retries, backoff_duration="30s", backoff_factor=2.0)
    task.set_caching_options(enable_caching=policy.cache)
    task.set_display_name(display_name)
    kubernetes.set_timeout(task, policy.timeout_s)
    if policy.shm:
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=policy.shm)
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=S3_SECRET_KEYS)
    kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, secret_key_to_env=MLFLOW_SECRET_KEYS)
    kubernetes.use_config_map_as_env(task, config_map_name=ENV_CONFIG_MAP, config_map_key_to_env=ENV_CONFIG_KEYS)
    kubernetes.use_field_path_as_env(task, env_name=tracking.KFP_RUN_ID_ENV,
                                     field_path=f"metadata.labels['{RUN_ID_LABEL}']")
    return task


def default_data_uri(cfg: Config, local_path: str, name: str) -> str:
    """``s3://<bucket>/<prefix>/<name>`` when a bucket is configured, else the local path from params."""
    bucket = storage.bucket(cfg)
    return f"s3://{bucket}/{cfg.s3.prefix}/{name}" if bucket else local_path


def semi_supervised_variants(cfg: Config) -> list[str]:
    """The variants that start from the warm-up (M3 and full in params.yaml)."""
    return [name for name, variant in cfg.variants.items() if variant.init == WARM_UP]


def either(names: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``: the values one loop task takes (one per iteration) for its display name."""
    if not names:
        raise ConfigError("a pipeline loop over no variants: params define none for it")
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def per_iteration(names: Sequence[str]) -> str:
    return " (one per iteration)" if len(names) > 1 else ""


def build_pipeline(cfg: Config, retries: bool = True, environment: Mapping[str, str] | None = None) -> Any:
    """The pipeline function for ``cfg``: its images, resources and parameter defaults come from params.

    ``raw_uri``, ``footage_uri`` and ``truth_uri`` have no defaults: every run names its
    data (``semivdn-pipeline submit`` fills them with the bucket's ``raw``, ``incoming`` and
    ``real_truth`` prefixes). The truth (the proxy-real clips' held-back clean frames) goes
    to evaluation and the promotion gate only, never to training. ``retries=False``
    (``kfp.local`` runs, which honour retry policies) fails at the first error instead of
    retrying with back-off what on one machine is not transient. ``environment``: more
    variables for every step (a local run's endpoints and credentials; on a cluster they
    come from the secrets and ConfigMap).
    """
    environment = dict(environment or {})
    steps: Components = build_components(cfg.pipeline.image)

    def apply(task: PipelineTask, policy: StepPolicy, display_name: str,
              image: str = cfg.pipeline.image) -> PipelineTask:
        lineage = {tracking.IMAGE_ENV: image, tracking.PIPELINE_NAME_ENV: PIPELINE_NAME}
        return apply_policy(task, policy, display_name, {**lineage, **environment}, retry=retries)

    train_policy = training_policy(cfg)
    train_image = cfg.pipeline.image_cuda if train_policy.gpus else cfg.pipeline.image
    champion_ref = f"models:/{cfg.mlflow.model_name}@{CHAMPION}"
    semi_variants = semi_supervised_variants(cfg)

    @dsl.pipeline(name=PIPELINE_NAME, description="SemiVDN: curate, train the ablation variants, evaluate, "
                  "report, register and promote; retrains from the champion when new real footage arrives.")
    def semivdn_pipeline(raw_uri: str,
                         footage_uri: str,
                         truth_uri: str,
                         profile: str = cfg.profile,
                         params_file: str = IMAGE_PARAMS_FILE,
                         mlflow_tracking_uri: str = "",
                         checkpoint_root: str = CHECKPOINT_MOUNT,
                         candidate: str = CANDIDATE) -> None:
        config = {"params_file": params_file, "profile": profile}
        tracked = {**config, "mlflow_tracking_uri": mlflow_tracking_uri}
        sensor = apply(steps.footage_sensor(footage_uri=footage_uri, **tracked), SENSOR, "check for new footage")
        action = sensor.output

        with dsl.If(action != "skip", name="new-footage"):
            content = apply(steps.fingerprint_data(raw_uri=raw_uri, footage_uri=footage_uri, **config), LIGHT,
                            "fingerprint the data (cache key)")
            ingest = apply(steps.ingest_footage(raw_uri=raw_uri, footage_uri=footage_uri,
                                                data_fingerprint=content.output, **config),
                           DATA, "ingest footage into the raw data")
            curate = apply(steps.curate_data(raw=ingest.outputs["raw"], **config), CURATE,
                           "curate: validate and quarantine clips")
            data = {"raw": ingest.outputs["raw"], "curated": curate.outputs["curated"], **tracked}

            def train(variant: Any, label: str, **start: Any) -> PipelineTask:
                task = apply(steps.train_variant(variant=variant, checkpoint_root=checkpoint_root,
                                                 run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                                 processes=max(train_policy.gpus, 1), **data, **start),
                             train_policy, label, train_image)
                task.set_container_image(train_image)
                kubernetes.mount_pvc(task, pvc_name=cfg.pipeline.checkpoint_pvc, mount_path=CHECKPOINT_MOUNT)
                return task

            def evaluate(name: Any, label: str, **what: Any) -> PipelineTask:
                return apply(steps.evaluate_model(name=name, truth_uri=truth_uri, **data, **what), EVALUATE, label)

            def train_and_evaluate(variants: list[str], origin: str, **start: Any) -> tuple[PipelineTask, PipelineTask]:
                with dsl.ParallelFor(variants) as variant:
                    trained = train(variant, f"train {either(variants)} from {origin}{per_iteration(variants)}",
                                    **start)
                    evaluated = evaluate(variant, f"evaluate {either(variants)}{per_iteration(variants)}",
                                         model=trained.outputs["model"])
                return trained, evaluated

            def register_and_promote(trained: PipelineTask, evaluated: PipelineTask) -> PipelineTask:
                register = apply(steps.register_candidate(
                    models=dsl.Collected(trained.outputs["model"]),
                    evaluations=dsl.Collected(evaluated.outputs["evaluation"]), candidate=candidate,
                    footage_fingerprint=ingest.outputs["Output"], **tracked), LIGHT, "register the candidate")
                apply(steps.promote_candidate(version=register.output, truth_uri=truth_uri, **data), LIGHT,
                      "promotion gate: candidate vs champion")
                return register

            with dsl.If(action == "sweep", name="ablation-sweep"):
                with dsl.ParallelFor(BASELINES) as baseline:
                    baseline_eval = evaluate(baseline, f"evaluate the {either(BASELINES)} baseline"
                                             f"{per_iteration(BASELINES)}", baseline=baseline)
                m1 = train(SUPERVISED_BASELINE, f"train {SUPERVISED_BASELINE} (supervised baseline)")
                m1_eval = evaluate(SUPERVISED_BASELINE, f"evaluate {SUPERVISED_BASELINE}", model=m1.outputs["model"])
                m2 = train(WARM_UP, f"train {WARM_UP} (supervised warm-up)")
                m2_eval = evaluate(WARM_UP, f"evaluate {WARM_UP}", model=m2.outputs["model"])
                trained, evaluated = train_and_evaluate(semi_variants, WARM_UP, init=m2.outputs["model"])
                report = apply(steps.ablation_report(
                    baselines=dsl.Collected(baseline_eval.outputs["evaluation"]),
                    m1=m1_eval.outputs["evaluation"], m2=m2_eval.outputs["evaluation"],
                    semi_supervised=dsl.Collected(evaluated.outputs["evaluation"]), **config),
                    REPORT, "ablation report (paper Table 2)")
                register_and_promote(trained, evaluated).after(report)

            with dsl.Else(name="retrain-from-champion"):
                register_and_promote(*train_and_evaluate(RETRAIN_VARIANTS, "the champion", init_ref=champion_ref))

    return semivdn_pipeline
