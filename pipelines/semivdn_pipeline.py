"""The SemiVDN Kubeflow pipeline: footage sensor -> curate -> train -> evaluate -> report -> register -> promote.

```
footage-sensor ──(action != skip)──> ingest-footage -> curate-data
  action == sweep (no champion yet): the ablation, paper Table 2
    baselines (ParallelFor: input, median3) ─────────────┐
    M1 -> evaluate ──────────────────────────────────────┤
    M2 warm-up -> evaluate ──────────────────────────────┤
      └─> ParallelFor variants (M3, full) from M2:       │
            train -> evaluate ──────────(Collected)──────┴─> ablation-report
                           └──(Collected)──> register-candidate -> promote-candidate
  else (retrain: the footage changed since the champion):
    ParallelFor retrain_variants (full) from models:/NAME@champion:
      train -> evaluate ──(Collected)──> register-candidate -> promote-candidate
```

Resources, retries and caching are set per step kind. Cluster settings that
``kfp.local`` ignores (GPU limits, the S3 secret and the environment ConfigMap
of infra/k8s) live in the same spec, so one definition serves both.

Kubeflow reads parameter types and defaults from the pipeline function's signature,
so this module does not use ``from __future__ import annotations``.
"""

from dataclasses import dataclass
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import PipelineTask

from components.build import Components, build_components
from semivdn import storage
from semivdn.config import Config
from semivdn.registry import CHAMPION

PIPELINE_NAME = "semivdn"
IMAGE_PARAMS_FILE = "params.yaml"  # in the image's working directory (infra/docker/Dockerfile)
S3_SECRET = "semivdn-s3"  # created out of band, see infra/README.md
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
ENV_CONFIG_MAP = "semivdn-pipeline-env"  # infra/k8s/pipeline-env.yaml
ENV_CONFIG_KEYS = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI", "SEMIVDN_S3_ENDPOINT": "SEMIVDN_S3_ENDPOINT"}
SUPERVISED_BASELINE = "M1"
WARM_UP = "M2"
CANDIDATE = "full"
RETRAIN_VARIANTS = [CANDIDATE]  # retrained from the champion when new footage arrives
BASELINES = ["input", "median3"]
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class StepPolicy:
    """Kubernetes requests, retries on transient failure, and whether a cached result may be reused.

    Steps that read mutable external state (the footage location, the registry)
    never use the cache: their inputs are URIs whose content changes.
    """

    cpu: str
    memory: str
    cache: bool
    retries: int
    gpus: int = 0


LIGHT = StepPolicy(cpu="500m", memory="2Gi", cache=False, retries=3)
DATA = StepPolicy(cpu="2", memory="8Gi", cache=False, retries=3)
CURATE = StepPolicy(cpu="2", memory="8Gi", cache=True, retries=1)
EVALUATE = StepPolicy(cpu="4", memory="16Gi", cache=True, retries=1)
REPORT = StepPolicy(cpu="1", memory="4Gi", cache=True, retries=1)


def training_policy(cfg: Config) -> StepPolicy:
    return StepPolicy(cpu="8", memory="32Gi", cache=True, retries=1, gpus=cfg.pipeline.train_gpus)


def apply_policy(task: PipelineTask, policy: StepPolicy, display_name: str | None = None,
                 retry: bool = True) -> PipelineTask:
    """Set requests/limits, retry, caching and the cluster environment (S3 secret, ConfigMap) on a task."""
    task.set_cpu_request(policy.cpu).set_memory_request(policy.memory).set_memory_limit(policy.memory)
    if policy.gpus:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(policy.gpus)
    if retry:
        task.set_retry(num_retries=policy.retries, backoff_duration="30s", backoff_factor=2.0)
    task.set_caching_options(enable_caching=policy.cache)
    if display_name:
        task.set_display_name(display_name)
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=S3_SECRET_KEYS)
    kubernetes.use_config_map_as_env(task, config_map_name=ENV_CONFIG_MAP, config_map_key_to_env=ENV_CONFIG_KEYS)
    return task


def default_data_uri(cfg: Config, local_path: str, name: str) -> str:
    """``s3://<bucket>/<prefix>/<name>`` when a bucket is configured, else the local path from params."""
    bucket = storage.bucket(cfg)
    return f"s3://{bucket}/{cfg.s3.prefix}/{name}" if bucket else local_path


def semi_supervised_variants(cfg: Config) -> list[str]:
    """The variants that start from the warm-up (M3 and full in params.yaml)."""
    return [name for name, variant in cfg.variants.items() if variant.init == WARM_UP]


def build_pipeline(cfg: Config, retries: bool = True) -> Any:
    """The pipeline function for ``cfg``: its image, resources and parameter defaults come from params.

    ``retries=False`` (``kfp.local`` runs, which honour retry policies) fails at the
    first error instead of retrying with back-off what on one machine is not transient.
    """
    steps: Components = build_components(cfg.pipeline.image)

    def apply(task: PipelineTask, policy: StepPolicy, display_name: str | None = None) -> PipelineTask:
        return apply_policy(task, policy, display_name, retry=retries)

    train_policy = training_policy(cfg)
    champion_ref = f"models:/{cfg.mlflow.model_name}@{CHAMPION}"
    semi_variants = semi_supervised_variants(cfg)

    @dsl.pipeline(name=PIPELINE_NAME, description="SemiVDN: curate, train the ablation variants, evaluate, "
                  "report, register and promote; retrains from the champion when new real footage arrives.")
    def semivdn_pipeline(profile: str = cfg.profile,
                         params_file: str = IMAGE_PARAMS_FILE,
                         raw_uri: str = default_data_uri(cfg, cfg.paths.raw, "raw"),
                         footage_uri: str = cfg.pipeline.footage_uri,
                         mlflow_tracking_uri: str = "",
                         variants: list[str] = semi_variants,
                         retrain_variants: list[str] = RETRAIN_VARIANTS,
                         candidate: str = CANDIDATE,
                         baselines: list[str] = BASELINES) -> None:
        config = {"params_file": params_file, "profile": profile}
        tracked = {**config, "mlflow_tracking_uri": mlflow_tracking_uri}
        sensor = apply(steps.footage_sensor(footage_uri=footage_uri, **tracked), LIGHT, "footage sensor")

        with dsl.If(sensor.output != "skip", name="new-footage"):
            ingest = apply(steps.ingest_footage(raw_uri=raw_uri, footage_uri=footage_uri, **config), DATA,
                           "ingest footage")
            curate = apply(steps.curate_data(raw=ingest.outputs["raw"], **config), CURATE, "curate")
            data = {"raw": ingest.outputs["raw"], "curated": curate.outputs["curated"], **tracked}

            def train(variant: Any, label: str | None = None, **start: Any) -> PipelineTask:
                return apply(steps.train_variant(variant=variant, **data, **start), train_policy, label)

            def evaluate(name: Any, label: str | None = None, **what: Any) -> PipelineTask:
                return apply(steps.evaluate_model(name=name, **data, **what), EVALUATE, label)

            def train_and_evaluate(items: Any, **start: Any) -> tuple[PipelineTask, PipelineTask]:
                with dsl.ParallelFor(items) as variant:
                    trained = train(variant, **start)
                    evaluated = evaluate(variant, model=trained.outputs["model"])
                return trained, evaluated

            def register_and_promote(trained: PipelineTask, evaluated: PipelineTask) -> PipelineTask:
                register = apply(steps.register_candidate(
                    models=dsl.Collected(trained.outputs["model"]),
                    evaluations=dsl.Collected(evaluated.outputs["evaluation"]), candidate=candidate,
                    footage_fingerprint=ingest.outputs["Output"], **tracked), LIGHT, "register candidate")
                apply(steps.promote_candidate(version=register.output, **tracked), LIGHT, "promotion gate")
                return register

            with dsl.If(sensor.output == "sweep", name="ablation-sweep"):
                with dsl.ParallelFor(baselines) as baseline:
                    baseline_eval = evaluate(baseline, baseline=baseline)
                m1 = train(SUPERVISED_BASELINE, "M1 baseline")
                m1_eval = evaluate(SUPERVISED_BASELINE, "evaluate M1", model=m1.outputs["model"])
                m2 = train(WARM_UP, "M2 warm-up")
                m2_eval = evaluate(WARM_UP, "evaluate M2", model=m2.outputs["model"])
                trained, evaluated = train_and_evaluate(variants, init=m2.outputs["model"])
                report = apply(steps.ablation_report(
                    baselines=dsl.Collected(baseline_eval.outputs["evaluation"]),
                    m1=m1_eval.outputs["evaluation"], m2=m2_eval.outputs["evaluation"],
                    semi_supervised=dsl.Collected(evaluated.outputs["evaluation"]), **config),
                    REPORT, "ablation report")
                register_and_promote(trained, evaluated).after(report)

            with dsl.Else(name="retrain-from-champion"):
                register_and_promote(*train_and_evaluate(retrain_variants, init_ref=champion_ref))

    return semivdn_pipeline
