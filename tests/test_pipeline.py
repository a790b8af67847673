"""The Kubeflow pipeline: compiled IR (DAG edges, resources, parameters), golden file, kfp.Client calls, kfp.local run.

Regenerate the golden file after an intended change to the DAG or a component:

    .venv/bin/semivdn-pipeline compile --profile demo --output tests/golden/semivdn_pipeline.yaml

(with ``SEMIVDN_S3_BUCKET`` unset; review the diff like code).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from pipelines.cli import RECURRING_RUN_SPEC, RecurringRunSpec, main, schedule, submit
from pipelines.semivdn_pipeline import default_data_uri
from semivdn import storage
from semivdn.config import Config, ConfigError, config_from_dict, load_config
from semivdn.data.make import make_dataset
from semivdn.footage import FINGERPRINT_TAG, fingerprint

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
GOLDEN = ROOT / "tests" / "golden" / "semivdn_pipeline.yaml"
STEPS = {"footage-sensor", "ingest-footage", "curate-data", "train-variant", "evaluate-model", "ablation-report",
         "register-candidate", "promote-candidate"}
PARAMETERS = {"profile", "params_file", "raw_uri", "footage_uri", "mlflow_tracking_uri", "variants",
              "retrain_variants", "candidate", "baselines"}


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
    iterator: str
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
                     task.get("parameterIterator", {}).get("items", {}).get("inputParameter", ""),
                     _tasks(spec, child))
        tasks[entry.display] = entry
    return tasks


def _loop(tasks: dict[str, Task], parameter: str) -> Task:
    found = [t for t in tasks.values() if t.iterator == f"pipelinechannel--{parameter}"]
    assert len(found) == 1, f"expected one ParallelFor over {parameter}: {[t.key for t in tasks.values()]}"
    return found[0]


def _assert_evaluates_what_it_trains(loop: Task) -> None:
    steps = {t.component.rstrip("-0123456789"): t for t in loop.children.values()}
    assert set(steps) == {"comp-train-variant", "comp-evaluate-model"}
    assert steps["comp-evaluate-model"].depends_on == [steps["comp-train-variant"].display]


def test_every_step_is_a_component_on_the_project_image(compiled: tuple[dict[str, Any], dict[str, Any]],
                                                        demo_cfg: Config) -> None:
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert {name.removeprefix("exec-").rstrip("-0123456789") for name in executors} == STEPS
    assert {e["container"]["image"] for e in executors.values()} == {demo_cfg.pipeline.image}
    assert all("pip install" not in " ".join(e["container"]["command"]) for e in executors.values())


def test_dag_edges_follow_the_sensor_curate_train_evaluate_report_register_promote_order(
        compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    root = _tasks(spec, spec["root"])
    new_footage = root["new-footage"]
    assert new_footage.depends_on == ["footage sensor"]
    assert new_footage.condition == "inputs.parameter_values['pipelinechannel--footage-sensor-Output'] != 'skip'"
    inner = new_footage.children
    assert inner["curate"].depends_on == ["ingest footage"]
    branches = next(t for t in inner.values() if t.children and not t.condition)
    assert branches.depends_on == ["curate", "ingest footage"]

    sweep_condition = "inputs.parameter_values['pipelinechannel--footage-sensor-Output'] == 'sweep'"
    assert branches.children["ablation-sweep"].condition == sweep_condition
    assert branches.children["retrain-from-champion"].condition == f"!({sweep_condition})"
    sweep = branches.children["ablation-sweep"].children
    assert sweep["evaluate M1"].depends_on == ["M1 baseline"]
    assert sweep["evaluate M2"].depends_on == ["M2 warm-up"]
    semi = _loop(sweep, "variants")
    assert semi.depends_on == ["M2 warm-up"]  # M3 and full start from the warm-up
    _assert_evaluates_what_it_trains(semi)
    baselines = _loop(sweep, "baselines")
    assert sweep["ablation report"].depends_on == sorted(["evaluate M1", "evaluate M2", baselines.display,
                                                          semi.display])
    assert sweep["register candidate"].depends_on == sorted(["ablation report", semi.display])
    assert sweep["promotion gate"].depends_on == ["register candidate"]

    retrain = branches.children["retrain-from-champion"].children
    loop = _loop(retrain, "retrain_variants")
    _assert_evaluates_what_it_trains(loop)
    assert retrain["register candidate"].depends_on == [loop.display]
    assert retrain["promotion gate"].depends_on == ["register candidate"]


def test_training_steps_request_a_gpu_and_every_step_has_resources_retries_and_cluster_env(
        compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    training = [e for name, e in executors.items() if name.startswith("exec-train-variant")]
    assert len(training) == 4  # M1, M2, the variants loop, the retrain loop
    for executor in training:
        resources = executor["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert resources["accelerator"]["resourceCount"] == "1"
        assert resources["resourceMemoryRequest"] == "32Gi"
    for name, executor in executors.items():
        assert {"resourceCpuRequest", "resourceMemoryRequest"} <= set(executor["container"]["resources"]), name
        if not name.startswith("exec-train-variant"):
            assert "accelerator" not in executor["container"]["resources"], name
        env = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][name]
        assert env["secretAsEnv"][0]["secretName"] == "semivdn-s3"
        assert {k["envVar"] for k in env["configMapAsEnv"][0]["keyToEnv"]} == {"MLFLOW_TRACKING_URI",
                                                                              "SEMIVDN_S3_ENDPOINT"}


def _all_tasks(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for component in [spec["root"], *spec["components"].values()]:
        yield from component.get("dag", {}).get("tasks", {}).values()


def test_caching_only_for_steps_keyed_on_their_inputs_and_retries_everywhere(
        compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    steps = [t for t in _all_tasks(spec) if t["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789")
             in STEPS]
    for task in steps:
        component = task["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789")
        cached = task.get("cachingOptions", {}).get("enableCache", False)
        external_state = component in {"footage-sensor", "ingest-footage", "register-candidate", "promote-candidate"}
        assert cached is not external_state, component
        assert task["retryPolicy"]["maxRetryCount"] >= 1, component


def test_parameters_are_exposed_with_defaults_from_params(compiled: tuple[dict[str, Any], dict[str, Any]],
                                                          demo_cfg: Config) -> None:
    spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == PARAMETERS
    assert parameters["variants"]["defaultValue"] == ["M3", "full"]
    assert parameters["baselines"]["defaultValue"] == ["input", "median3"]
    assert parameters["profile"]["defaultValue"] == "demo"
    assert parameters["footage_uri"]["defaultValue"] == demo_cfg.pipeline.footage_uri
    assert set(RecurringRunSpec.load(RECURRING_RUN_SPEC).parameters) <= PARAMETERS


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


class FakeKfpClient:
    """Stands in for kfp.Client: records each call and checks the package exists while it is called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

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
        return _RecurringRun("rr-3")


def test_submit_creates_one_run_from_the_compiled_package(demo_cfg: Config) -> None:
    client = FakeKfpClient()
    result = submit(demo_cfg, "http://kfp.example", client=client)
    assert result["run_id"] == "run-1"
    [(kind, call)] = client.calls
    assert kind == "run"
    assert call["pipeline"] == "semivdn"
    assert call["experiment_name"] == demo_cfg.mlflow.experiment
    assert call["service_account"] == demo_cfg.pipeline.service_account
    assert call["run_name"].startswith("semivdn-demo-")


def test_schedule_creates_the_recurring_run_from_the_spec_file(demo_cfg: Config) -> None:
    client = FakeKfpClient()
    result = schedule(demo_cfg, "http://kfp.example", "0 30 2 * * *", client=client)
    spec = RecurringRunSpec.load(RECURRING_RUN_SPEC)
    assert [kind for kind, _ in client.calls] == ["experiment", "recurring"]
    assert client.calls[0][1] == {"name": spec.experiment, "namespace": spec.namespace}
    call = client.calls[1][1]
    assert call["experiment_id"] == "exp-7"
    assert call["pipeline"] == "semivdn"
    assert (call["job_name"], call["cron_expression"], call["params"]) == (spec.name, "0 30 2 * * *",
                                                                            spec.parameters)
    assert (call["max_concurrency"], call["no_catchup"]) == (1, True)
    assert call["service_account"] == demo_cfg.pipeline.service_account
    assert result["recurring_run_id"] == "rr-3"


def test_schedule_rejects_five_field_cron_and_bad_spec_files(demo_cfg: Config, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="six fields"):
        schedule(demo_cfg, "http://kfp.example", "0 3 * * *", client=FakeKfpClient())
    bad = tmp_path / "spec.yaml"
    bad.write_text("name: x\nexperiment: e\ncron: '0 0 3 * * *'\n")
    with pytest.raises(ConfigError, match="unknown key 'cron'"):
        RecurringRunSpec.load(bad)
    bad.write_text("experiment: e\n")
    with pytest.raises(ConfigError, match="name"):
        RecurringRunSpec.load(bad)


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
    assert (Path(cfg.paths.raw) / "real" / "train" / "footage-broken.mp4").is_file()
