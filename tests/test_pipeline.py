"""The Kubeflow pipeline: compiled IR (DAG edges, resources, parameters), golden file, kfp.Client calls, kfp.local run.

Regenerate the golden file after an intended change to the DAG or a component:

    .venv/bin/semivdn-pipeline compile --profile demo --output tests/golden/semivdn_pipeline.yaml

(with ``SEMIVDN_S3_BUCKET`` unset; review the diff like code).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from kfp.dsl import Dataset, Metrics, Model
from mlflow import MlflowClient
from safetensors.torch import load_file

from components.training import train_variant
from pipelines.cli import (
    RECURRING_RUN_SPEC,
    TOKEN_ENV,
    Connection,
    RecurringRunSpec,
    local_arguments,
    main,
    run_arguments,
    schedule,
    submit,
)
from pipelines.semivdn_pipeline import default_data_uri
from semivdn import storage
from semivdn.config import Config, ConfigError, config_from_dict, load_config
from semivdn.data.make import make_dataset
from semivdn.footage import FINGERPRINT_TAG, fingerprint

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
GOLDEN = ROOT / "tests" / "golden" / "semivdn_pipeline.yaml"
STEPS = {"footage-sensor", "fingerprint-data", "ingest-footage", "curate-data", "train-variant", "evaluate-model",
         "ablation-report", "register-candidate", "promote-candidate"}
PARAMETERS = {"profile", "params_file", "raw_uri", "footage_uri", "truth_uri", "mlflow_tracking_uri", "checkpoint_root",
              "candidate"}
DATA_INPUTS = {"raw_uri", "footage_uri", "truth_uri"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """``semivdn-pipeline compile`` output: the pipeline spec and the Kubernetes platform spec."""
    output = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(storage.BUCKET_ENV, raising=False)
        assert main(["compile", "--params", str(PARAMS), "--profile", "demo", "--output", str(output)]) == 0
    spec, platform = yaml.safe_load_all(output.read_text())
    return spec, platform


@pytest.fixture(scope="module")
def demo_cfg() -> Config:
    return load_config(PARAMS, "demo")


@dataclass(frozen=True)
class Task:
    key: str
    display: str
    component: str
    depends_on: list[str]
    condition: str
    items: list[str]
    children: dict[str, Task]


def _tasks(spec: dict[str, Any], component: dict[str, Any]) -> dict[str, Task]:
    """The DAG as a tree of tasks keyed by display name (loops and branches keyed by their task key)."""
    tasks = {}
    for key, task in component.get("dag", {}).get("tasks", {}).items():
        child = spec["components"][task["componentRef"]["name"]]
        names = {k: t["taskInfo"]["name"] for k, t in component["dag"]["tasks"].items()}
        entry = Task(key, task["taskInfo"]["name"], task["componentRef"]["name"],
                     sorted(names[d] for d in task.get("dependentTasks", [])),
                     task.get("triggerPolicy", {}).get("condition", ""),
                     json.loads(task.get("parameterIterator", {}).get("items", {}).get("raw", "[]")),
                     _tasks(spec, child))
        tasks[entry.display] = entry
    return tasks


def _loop(tasks: dict[str, Task], items: list[str]) -> Task:
    found = [t for t in tasks.values() if t.items == items]
    assert len(found) == 1, f"expected one ParallelFor over {items}: {[t.key for t in tasks.values()]}"
    return found[0]


def _walk(tasks: dict[str, Task]) -> Iterator[Task]:
    for task in tasks.values():
        yield task
        yield from _walk(task.children)


def _assert_evaluates_what_it_trains(loop: Task) -> None:
    steps = {t.component.rstrip("-0123456789"): t for t in loop.children.values()}
    assert set(steps) == {"comp-train-variant", "comp-evaluate-model"}
    assert steps["comp-evaluate-model"].depends_on == [steps["comp-train-variant"].display]


def test_every_step_is_a_component_on_the_project_image_and_training_on_its_cuda_variant(
        compiled: tuple[dict[str, Any], dict[str, Any]], demo_cfg: Config) -> None:
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert {name.removeprefix("exec-").rstrip("-0123456789") for name in executors} == STEPS
    for name, executor in executors.items():
        training = name.startswith("exec-train-variant")
        image = demo_cfg.pipeline.image_cuda if training else demo_cfg.pipeline.image
        assert executor["container"]["image"] == image, name
        env = {e["name"]: e["value"] for e in executor["container"]["env"]}
        assert env == {"SEMIVDN_IMAGE": image, "SEMIVDN_PIPELINE_NAME": "semivdn"}, name  # MLflow lineage
    assert all("pip install" not in " ".join(e["container"]["command"]) for e in executors.values())


def test_dag_edges_follow_the_sensor_curate_train_evaluate_report_register_promote_order(
        compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    root = _tasks(spec, spec["root"])
    new_footage = root["new-footage"]
    assert new_footage.depends_on == ["check for new footage"]
    assert new_footage.condition == "inputs.parameter_values['pipelinechannel--footage-sensor-Output'] != 'skip'"
    inner = new_footage.children
    curate, ingest = "curate: validate and quarantine clips", "ingest footage into the raw data"
    assert inner[curate].depends_on == [ingest]
    assert inner[ingest].depends_on == ["fingerprint the data (cache key)"]
    branches = next(t for t in inner.values() if t.children and not t.condition)
    assert branches.depends_on == sorted([curate, ingest])

    sweep_condition = "inputs.parameter_values['pipelinechannel--footage-sensor-Output'] == 'sweep'"
    assert branches.children["ablation-sweep"].condition == sweep_condition
    assert branches.children["retrain-from-champion"].condition == f"!({sweep_condition})"
    sweep = branches.children["ablation-sweep"].children
    assert sweep["evaluate M1"].depends_on == ["train M1 (supervised baseline)"]
    assert sweep["evaluate M2"].depends_on == ["train M2 (supervised warm-up)"]
    semi = _loop(sweep, ["M2+ft", "M3", "full"])
    assert semi.depends_on == ["train M2 (supervised warm-up)"]  # M3 and full start from the warm-up
    _assert_evaluates_what_it_trains(semi)
    baselines = _loop(sweep, ["input", "median3"])
    report, register, gate = ("ablation report (paper Table 2)", "register the candidate",
                              "promotion gate: candidate vs champion")
    assert sweep[report].depends_on == sorted(["evaluate M1", "evaluate M2", baselines.display, semi.display])
    assert sweep[register].depends_on == sorted([report, semi.display])
    assert sweep[gate].depends_on == [register]

    retrain = branches.children["retrain-from-champion"].children
    loop = _loop(retrain, ["full"])
    _assert_evaluates_what_it_trains(loop)
    assert retrain[register].depends_on == [loop.display]
    assert retrain[gate].depends_on == [register]


def test_every_task_says_what_it_does_and_loop_tasks_name_their_variants(
        compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    root = _tasks(spec, spec["root"])
    inner = root["new-footage"].children
    branches = next(t for t in inner.values() if t.children and not t.condition).children
    loops = {tuple(t.items): {c.display for c in t.children.values()} for t in _walk(root) if t.items}
    assert loops == {
        ("input", "median3"): {"evaluate the input or median3 baseline (one per iteration)"},
        ("M2+ft", "M3", "full"): {"train M2+ft, M3 or full from M2 (one per iteration)",
                                  "evaluate M2+ft, M3 or full (one per iteration)"},
        ("full",): {"train full from the champion", "evaluate full"}}
    assert {"train M1 (supervised baseline)", "evaluate M1", "train M2 (supervised warm-up)",
            "evaluate M2"} <= set(branches["ablation-sweep"].children)
    # a loop keeps its task key as its name: a custom name breaks dsl.Collected on the backend (kfp#13239)
    assert all(t.display == t.key for t in _walk(root) if t.items)
    # every other task the UI shows is a sentence, or a branch named for its condition
    groups = {"new-footage", "ablation-sweep", "retrain-from-champion"}
    names = [t.display for t in _walk(root) if not t.items and not t.display.startswith("condition-branches-")]
    assert all(" " in n or n in groups for n in names), names
    assert groups <= set(names)


def test_training_steps_request_gpus_resume_from_a_pvc_and_every_step_has_a_deadline_and_cluster_env(
        compiled: tuple[dict[str, Any], dict[str, Any]], demo_cfg: Config) -> None:
    spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    cluster = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    training = [name for name in executors if name.startswith("exec-train-variant")]
    assert len(training) == 4  # M1, M2, the variants loop, the retrain loop
    for name in training:
        resources = executors[name]["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert resources["accelerator"]["resourceCount"] == "1"
        assert resources["resourceMemoryRequest"] == "32Gi"
        [pvc] = cluster[name]["pvcMount"]  # checkpoints outlive the pod: a retry resumes there
        assert (pvc["constant"], pvc["mountPath"]) == (demo_cfg.pipeline.checkpoint_pvc, "/checkpoints")
        assert int(cluster[name]["activeDeadlineSeconds"]) == demo_cfg.pipeline.train_timeout_hours * 3600
    for name, executor in executors.items():
        assert {"resourceCpuRequest", "resourceMemoryRequest"} <= set(executor["container"]["resources"]), name
        if name not in training:
            assert "accelerator" not in executor["container"]["resources"], name
        env = cluster[name]
        assert 0 < int(env["activeDeadlineSeconds"]) <= 72 * 3600, name
        assert {s["secretName"] for s in env["secretAsEnv"]} == {"semivdn-s3", "semivdn-mlflow-client"}
        assert {k["envVar"] for k in env["configMapAsEnv"][0]["keyToEnv"]} == {
            "MLFLOW_TRACKING_URI", "SEMIVDN_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL"}
        assert env["fieldPathAsEnv"] == [{"name": "SEMIVDN_KFP_RUN_ID",
                                          "fieldPath": "metadata.labels['pipeline/runid']"}]
        shm = [m for m in env.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        data_loading = name in training or name.startswith("exec-evaluate-model")
        assert [m.get("medium") for m in shm] == (["Memory"] if data_loading else []), name
    args = [a for e in executors.values() for a in e["container"].get("args", []) + e["container"]["command"]]
    assert not any("AWS_SECRET" in a or "PASSWORD" in a for a in args), "credentials only from secrets"


def _all_tasks(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for component in [spec["root"], *spec["components"].values()]:
        yield from component.get("dag", {}).get("tasks", {}).values()


def test_caching_only_for_steps_keyed_on_their_inputs_and_retries_except_the_sensor(
        compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    # ingestion's cache key includes the content fingerprint of the data, computed fresh each run
    [ingest] = [t for t in _all_tasks(spec) if t["componentRef"]["name"] == "comp-ingest-footage"]
    assert ingest["inputs"]["parameters"]["data_fingerprint"] == {
        "taskOutputParameter": {"producerTask": "fingerprint-data", "outputParameterKey": "Output"}}
    steps = [t for t in _all_tasks(spec) if t["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789")
             in STEPS]
    for task in steps:
        component = task["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789")
        cached = task.get("cachingOptions", {}).get("enableCache", False)
        external_state = component in {"footage-sensor", "fingerprint-data", "register-candidate",
                                       "promote-candidate"}
        assert cached is not external_state, component
        retries = task.get("retryPolicy", {}).get("maxRetryCount", 0)
        # a missing footage location fails once, clearly; everything else retries transient failures
        assert (retries == 0) if component == "footage-sensor" else (retries >= 1), component


def test_data_locations_are_required_inputs_and_the_rest_default_from_params(
        compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == PARAMETERS
    required = {name for name, p in parameters.items() if "defaultValue" not in p and not p.get("isOptional")}
    assert required == DATA_INPUTS  # no local path can reach a pod as a default
    assert parameters["candidate"]["defaultValue"] == "full"
    assert parameters["profile"]["defaultValue"] == "demo"
    assert parameters["checkpoint_root"]["defaultValue"] == "/checkpoints"
    spec_parameters = RecurringRunSpec.load(RECURRING_RUN_SPEC).parameters
    assert required <= set(spec_parameters) <= PARAMETERS
    assert all(spec_parameters[name].startswith("s3://") for name in required)


def test_the_truth_reaches_evaluation_and_the_gate_and_nothing_else(
        compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Every evaluate and promote task reads the pipeline's truth_uri; training never sees the held-back frames."""
    spec, _ = compiled
    readers = {}
    for task in _all_tasks(spec):
        component = task["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789")
        truth = task.get("inputs", {}).get("parameters", {}).get("truth_uri")
        if component in STEPS:
            readers.setdefault(component, []).append(truth)
    assert sorted(c for c, values in readers.items() if any(values)) == ["evaluate-model", "promote-candidate"]
    # baselines, M1, M2, the variants loop, the retrain loop; the gate in the sweep and in the retrain branch
    assert len(readers["evaluate-model"]) == 5 and len(readers["promote-candidate"]) == 2
    for truth in readers["evaluate-model"] + readers["promote-candidate"]:
        assert truth == {"componentInputParameter": "pipelinechannel--truth_uri"}
    for name in ("comp-evaluate-model", "comp-promote-candidate"):
        assert spec["components"][name]["inputDefinitions"]["parameters"]["truth_uri"]["parameterType"] == "STRING"


def _normalised(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "sdkVersion"}


def test_compiled_pipeline_matches_the_golden_file(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, platform = compiled
    golden_spec, golden_platform = yaml.safe_load_all(GOLDEN.read_text())
    assert _normalised(spec) == _normalised(golden_spec), f"pipeline changed: regenerate {GOLDEN} (module docstring)"
    assert platform == golden_platform


def test_a_configured_bucket_moves_the_default_raw_data_to_s3(demo_cfg: Config,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.BUCKET_ENV, raising=False)
    assert default_data_uri(demo_cfg, "data/raw", "raw") == "data/raw"
    monkeypatch.setenv(storage.BUCKET_ENV, "lake")
    assert default_data_uri(demo_cfg, "data/raw", "raw") == "s3://lake/semivdn/raw"


@dataclass
class _Experiment:
    experiment_id: str


@dataclass
class _Run:
    run_id: str


@dataclass
class _RecurringRun:
    recurring_run_id: str
    display_name: str


@dataclass
class _Page:
    recurring_runs: list[_RecurringRun]
    next_page_token: str


class FakeKfpClient:
    """Stands in for kfp.Client: records each call, keeps recurring runs, checks the package while it is called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.recurring: dict[str, _RecurringRun] = {}

    def _package(self, path: str) -> str:
        spec = next(yaml.safe_load_all(Path(path).read_text()))
        return spec["pipelineInfo"]["name"]

    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> _Run:
        self.calls.append(("run", {"pipeline": self._package(pipeline_file), **kwargs}))
        return _Run("run-1")

    def create_experiment(self, name: str, namespace: str | None = None) -> _Experiment:
        self.calls.append(("experiment", {"name": name, "namespace": namespace}))
        return _Experiment("exp-7")

    def create_recurring_run(self, pipeline_package_path: str, **kwargs: Any) -> _RecurringRun:
        self.calls.append(("recurring", {"pipeline": self._package(pipeline_package_path), **kwargs}))
        run = _RecurringRun(f"rr-{len(self.calls)}", kwargs["job_name"])
        self.recurring[run.recurring_run_id] = run
        return run

    def list_recurring_runs(self, page_token: str = "", page_size: int = 10, experiment_id: str | None = None,
                            namespace: str | None = None, filter: str | None = None) -> _Page:
        """One run per page, so the caller must follow page tokens."""
        runs = sorted(self.recurring.values(), key=lambda r: r.recurring_run_id)
        index = int(page_token or 0)
        return _Page(runs[index:index + 1], str(index + 1) if index + 1 < len(runs) else "")

    def delete_recurring_run(self, recurring_run_id: str) -> dict[str, Any]:
        self.calls.append(("delete", {"recurring_run_id": recurring_run_id}))
        del self.recurring[recurring_run_id]
        return {}


KFP = Connection("http://kfp.example", namespace="team-snow")


def test_submit_creates_one_run_in_the_namespace_with_s3_data_inputs(demo_cfg: Config,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(storage.BUCKET_ENV, "lake")
    client = FakeKfpClient()
    result = submit(demo_cfg, KFP, run_arguments(demo_cfg), client=client)
    assert result["run_id"] == "run-1"
    [(kind, call)] = client.calls
    assert kind == "run"
    assert call["pipeline"] == "semivdn"
    assert call["arguments"] == {"raw_uri": "s3://lake/semivdn/raw", "footage_uri": "s3://lake/semivdn/incoming",
                                 "truth_uri": "s3://lake/semivdn/real_truth"}
    assert (call["experiment_name"], call["namespace"]) == (demo_cfg.mlflow.experiment, "team-snow")
    assert call["service_account"] == demo_cfg.pipeline.service_account
    assert call["run_name"].startswith("semivdn-demo-")


def test_a_cluster_run_refuses_local_data_paths(demo_cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.BUCKET_ENV, raising=False)
    with pytest.raises(ConfigError, match="no data location"):
        run_arguments(demo_cfg)
    with pytest.raises(ConfigError, match="no data location"):  # all three or a bucket
        run_arguments(demo_cfg, "s3://a/raw", "s3://a/in")
    with pytest.raises(ConfigError, match="s3://"):
        run_arguments(demo_cfg, raw_uri="data/raw", footage_uri="s3://lake/incoming", truth_uri="s3://lake/t")
    with pytest.raises(ConfigError, match="--truth-uri"):
        run_arguments(demo_cfg, "s3://a/raw", "s3://a/in", "data/real_truth")
    assert run_arguments(demo_cfg, "s3://a/raw", "s3://a/in", "s3://a/t") == {
        "raw_uri": "s3://a/raw", "footage_uri": "s3://a/in", "truth_uri": "s3://a/t"}


def test_a_local_run_gets_the_local_truth_folder_or_the_buckets_prefix(demo_cfg: Config,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.BUCKET_ENV, raising=False)
    arguments = local_arguments(demo_cfg, PARAMS)
    assert arguments["truth_uri"] == str(Path(demo_cfg.paths.real_truth).resolve())
    assert set(arguments) >= DATA_INPUTS
    monkeypatch.setenv(storage.BUCKET_ENV, "lake")
    assert local_arguments(demo_cfg, PARAMS)["truth_uri"] == "s3://lake/semivdn/real_truth"


def test_schedule_twice_leaves_one_recurring_run_and_replace_recreates_it(demo_cfg: Config) -> None:
    client = FakeKfpClient()
    first = schedule(demo_cfg, KFP, "0 30 2 * * *", client=client)
    spec = RecurringRunSpec.load(RECURRING_RUN_SPEC)
    call = client.calls[1][1]
    assert client.calls[0] == ("experiment", {"name": spec.experiment, "namespace": "team-snow"})
    assert call["experiment_id"] == "exp-7"
    assert call["pipeline"] == "semivdn"
    assert (call["job_name"], call["cron_expression"], call["params"]) == (spec.name, "0 30 2 * * *",
                                                                            spec.parameters)
    assert (call["max_concurrency"], call["no_catchup"]) == (1, True)
    assert call["service_account"] == demo_cfg.pipeline.service_account
    assert first["created"] is True

    client.recurring["rr-other"] = _RecurringRun("rr-other", "someone-else")  # another team's schedule
    again = schedule(demo_cfg, KFP, "0 30 2 * * *", client=client)
    assert (again["created"], again["recurring_run_id"]) == (False, first["recurring_run_id"])
    assert sorted(r.display_name for r in client.recurring.values()) == sorted([spec.name, "someone-else"])

    replaced = schedule(demo_cfg, KFP, "0 0 4 * * *", replace=True, client=client)
    assert replaced["replaced"] == [first["recurring_run_id"]]
    assert [r.recurring_run_id for r in client.recurring.values() if r.display_name == spec.name] == [
        replaced["recurring_run_id"]]


def test_schedule_rejects_five_field_cron_and_bad_spec_files(demo_cfg: Config, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="six fields"):
        schedule(demo_cfg, KFP, "0 3 * * *", client=FakeKfpClient())
    bad = tmp_path / "spec.yaml"
    bad.write_text("name: x\nexperiment: e\ncron: '0 0 3 * * *'\n")
    with pytest.raises(ConfigError, match="unknown key 'cron'"):
        RecurringRunSpec.load(bad)
    bad.write_text("experiment: e\n")
    with pytest.raises(ConfigError, match="name"):
        RecurringRunSpec.load(bad)


def test_the_client_authenticates_with_a_token_file_or_a_bearer_token(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    made: list[dict[str, Any]] = []
    monkeypatch.setattr(kfp, "Client", lambda **kwargs: made.append(kwargs))
    monkeypatch.setenv(TOKEN_ENV, "bearer-123")
    token = tmp_path / "token"
    token.write_text("sa-token")
    Connection("https://kfp.example", "team-snow", str(token)).client()
    Connection("https://kfp.example", "team-snow").client()
    monkeypatch.delenv(TOKEN_ENV)
    Connection("https://kfp.example").client()
    assert isinstance(made[0].pop("credentials"), ServiceAccountTokenVolumeCredentials)
    assert made == [{"host": "https://kfp.example", "namespace": "team-snow"},
                    {"host": "https://kfp.example", "namespace": "team-snow", "existing_token": "bearer-123"},
                    {"host": "https://kfp.example"}]
    with pytest.raises(FileNotFoundError, match="token-file"):
        Connection("https://kfp.example", token_file=str(tmp_path / "missing")).client()


def test_a_retried_training_task_resumes_from_its_checkpoint(tiny_data: tuple[Path, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The component trains in CHECKPOINTS/RUN/VARIANT: a second attempt of the same run continues there."""
    raw, curated = tiny_data
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"

    def attempt(name: str, run_id: str) -> Model:
        model = Model(uri=str(tmp_path / name / "model"))
        train_variant("M2", Dataset(uri=str(raw)), Dataset(uri=str(curated)), str(PARAMS), "smoke", tracking,
                      str(tmp_path / "checkpoints"), run_id, 1, model, Metrics(uri=str(tmp_path / name / "metrics")))
        return model

    first = attempt("attempt-1", "run-42")
    state = tmp_path / "checkpoints" / "run-42" / "M2" / "last.ckpt"
    assert first.metadata["checkpoints"] == str(state.parent)
    retry = attempt("attempt-2", "run-42")
    a, b = (load_file(Path(m.path) / "model.safetensors") for m in (first, retry))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name(load_config(PARAMS, "smoke").mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], "tags.variant = 'M2'")
    assert len(runs) == 1  # the retry continued the first attempt's MLflow run
    attempt("other-run", "run-43")  # another pipeline run starts its own checkpoints
    assert (tmp_path / "checkpoints" / "run-43" / "M2" / "last.ckpt").is_file()


def test_training_component_launches_ddp_with_torchrun_two_cpu_processes(tiny_data: tuple[Path, Path],
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """processes=2 (one per GPU on a node): two gloo workers of batch B equal one process of batch 2B."""
    raw, curated = tiny_data
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = yaml.safe_load(PARAMS.read_text())
    smoke = settings["profiles"]["smoke"]["train"]
    smoke.update(iters=3, val_every=100, image_every=100, checkpoint_every=100)
    double = tmp_path / "double.yaml"
    double.write_text(yaml.safe_dump({**settings, "profiles": {"smoke": {
        **settings["profiles"]["smoke"], "train": {**smoke, "batch_size": 2 * smoke["batch_size"]}}}}))
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump(settings))

    def train(params: Path, processes: int) -> dict[str, torch.Tensor]:
        model = Model(uri=str(tmp_path / f"model-{processes}"))
        train_variant("M2", Dataset(uri=str(raw)), Dataset(uri=str(curated)), str(params), "smoke",
                      f"sqlite:///{tmp_path / 'mlruns.db'}", str(tmp_path / "checkpoints"), f"run-{processes}",
                      processes, model, Metrics(uri=str(tmp_path / f"metrics-{processes}")))
        return load_file(Path(model.path) / "model.safetensors")

    one, two = train(double, 1), train(single, 2)
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key


# --- the whole DAG on this machine ------------------------------------------------------------------------------


def _latest_run(workdir: Path) -> Path:
    return sorted(workdir.glob("semivdn-*"))[-1]


def _versions(cfg: Config) -> list[Any]:
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri, registry_uri=cfg.mlflow.tracking_uri)
    return sorted(client.search_model_versions(f"name='{cfg.mlflow.model_name}'"), key=lambda v: int(v.version))


@pytest.mark.slow
def test_run_local_trains_then_skips_then_retrains_on_new_footage(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.local, smoke profile: the sweep leaves a champion; known footage skips; new footage retrains."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", storage.BUCKET_ENV, "SEMIVDN_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    raw_params = yaml.safe_load(PARAMS.read_text())
    raw_params["paths"] = {k: str(tmp_path / k) for k in raw_params["paths"]}
    raw_params["pipeline"]["footage_uri"] = str(tmp_path / "incoming")
    raw_params["mlflow"].update(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
                                artifact_location=str(tmp_path / "mlartifacts"))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw_params))
    cfg = load_config(params, "smoke")
    make_dataset(cfg, Path(cfg.paths.raw), Path(cfg.paths.real_truth))
    (tmp_path / "incoming").mkdir()
    run_local = ["run-local", "--params", str(params), "--profile", "smoke", "--workdir", "kfp"]

    assert main(run_local) == 0  # no champion yet: the ablation sweep
    [first] = _versions(cfg)
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri, registry_uri=cfg.mlflow.tracking_uri)
    assert client.get_model_version_by_alias(cfg.mlflow.model_name, "champion").version == first.version
    assert first.tags[FINGERPRINT_TAG] == fingerprint(tmp_path / "incoming")
    sweep = _latest_run(tmp_path / "kfp")
    assert (sweep / "ablation-report" / "report_md").is_file()

    assert main(run_local) == 0  # nothing new: the run ends after the sensor
    assert len(_versions(cfg)) == 1
    assert sorted(p.name for p in _latest_run(tmp_path / "kfp").iterdir()) == ["footage-sensor"]

    other = config_from_dict({**raw_params, "seed": 1}, "smoke")
    make_dataset(other, tmp_path / "other", tmp_path / "other_truth")
    shutil.copy(tmp_path / "other" / "real" / "train" / "clip_000.mp4", tmp_path / "incoming" / "site_a.mp4")
    (tmp_path / "incoming" / "broken.mp4").write_bytes(b"\x00 not a video " * 100)
    footage = {p.name: p.read_bytes() for p in (tmp_path / "incoming").iterdir()}

    assert main(run_local) == 0  # new footage: retrain from the champion
    versions = _versions(cfg)
    assert len(versions) == 2
    assert versions[-1].tags[FINGERPRINT_TAG] == fingerprint(tmp_path / "incoming")
    retrain = _latest_run(tmp_path / "kfp")
    quarantine = pd.read_csv(retrain / "curate-data" / "curated" / "quarantine.csv")
    assert quarantine["path"].tolist() == ["real/train/footage-broken.mp4"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "incoming").iterdir()} == footage  # nothing lost
    assert not (Path(cfg.paths.raw) / "real" / "train" / "footage-broken.mp4").exists()  # staging changes no data
