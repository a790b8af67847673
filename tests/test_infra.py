"""Infrastructure lint: hadolint on the Dockerfile, kubernetes-validate on every manifest, names that must agree."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipelines.semivdn_pipeline import (
    ENV_CONFIG_KEYS,
    ENV_CONFIG_MAP,
    MLFLOW_SECRET,
    MLFLOW_SECRET_KEYS,
    S3_SECRET,
    S3_SECRET_KEYS,
)
from semivdn.config import load_config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "k8s"
DOCKER = ROOT / "infra" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to run on
BIN = Path(sys.executable).parent


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _resources() -> list[dict[str, Any]]:
    return [doc for path in _manifests() for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_dockerfile_passes_hadolint() -> None:
    command = [str(BIN / "hadolint"), "--failure-threshold", "info", str(DOCKERFILE)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_from_locked_dependencies_with_lineage_labels() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in text and ":latest" not in text
    assert "--require-hashes --no-deps" in text and "requirements-${VARIANT}.lock" in text
    assert text.rstrip().splitlines()[-2].startswith("USER 10001")
    for label in ("revision", "version", "created", "source", "title"):
        assert f"org.opencontainers.image.{label}=" in text
    assert "SEMIVDN_GIT_SHA=${GIT_SHA}" in text  # every MLflow run records the image's commit
    assert text.index("requirements-${VARIANT}.lock") < text.index("COPY semivdn"), "dependency layer first"


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_lock_file_pins_every_dependency_with_a_hash_and_satisfies_pyproject(variant: str) -> None:
    """`make image-lock` output: each project requirement is pinned to a version its specifier allows."""
    lock = DOCKER / f"requirements-{variant}.lock"
    if not lock.is_file():
        pytest.skip(f"{lock.name} not generated: `make image-lock` needs the indexes of {variant}.in")
    lines = [line for line in lock.read_text().splitlines() if line and not line.startswith(("#", "--"))]
    pins = {}
    for line in lines:
        requirement, _, digest = line.partition(" --hash=sha256:")
        name, _, version = requirement.partition("==")
        assert len(digest) == 64 and version, line
        pins[canonicalize_name(name)] = Version(version)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    extra = [line.split("#")[0].strip() for line in (DOCKER / f"{variant}.in").read_text().splitlines()]
    for spec in [*project, *filter(None, extra)]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not locked: run `make image-lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name} {pins[name]}: `make image-lock`"
    assert ("+cpu" in str(pins["torch"])) is (variant == "cpu")


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_manifest_validates_strictly_against_the_kubernetes_schema(path: Path) -> None:
    for resource in yaml.safe_load_all(path.read_text()):
        if resource:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_sets_the_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _manifests())
    assert kustomization["namespace"] == "semivdn"
    assert all("namespace" not in r["metadata"] for r in _resources()), "kustomize sets the namespace"


def _secret_refs(node: Any) -> list[tuple[str, str]]:
    if isinstance(node, dict):
        found = [(node["secretKeyRef"]["name"], node["secretKeyRef"]["key"])] if "secretKeyRef" in node else []
        return found + [ref for value in node.values() for ref in _secret_refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _secret_refs(item)]
    return []


def test_secrets_are_referenced_never_inlined_and_each_client_has_its_own() -> None:
    resources = _resources()
    assert not [r for r in resources if r["kind"] == "Secret"], "secrets are created out of band (infra/README.md)"
    refs = set(_secret_refs(resources))
    assert {(S3_SECRET, key) for key in S3_SECRET_KEYS} <= refs
    assert {(MLFLOW_SECRET, key) for key in MLFLOW_SECRET_KEYS} <= refs
    assert {name for name, _ in refs} == {S3_SECRET, MLFLOW_SECRET, "semivdn-s3-root", "semivdn-s3-mlflow",
                                          "semivdn-mlflow-auth", "semivdn-postgres"}
    by_name = {r["metadata"]["name"]: r for r in resources if r["kind"] in {"Deployment", "StatefulSet", "Job"}}
    # the root keys reach MinIO and the bootstrap only; MLflow has its own scoped keys
    assert {name for name, r in by_name.items() if ("semivdn-s3-root", "AWS_ACCESS_KEY_ID") in
            set(_secret_refs(r))} == {"minio", "semivdn-bootstrap"}
    assert ("semivdn-s3-mlflow", "AWS_SECRET_ACCESS_KEY") in set(_secret_refs(by_name["mlflow"]))
    for workload in by_name.values():  # no password in any container's command line
        for container in workload["spec"]["template"]["spec"].get("initContainers", []) + \
                workload["spec"]["template"]["spec"]["containers"]:
            words = " ".join(container.get("command", []) + container.get("args", []))
            assert "PASSWORD)" not in words and "SECRET)" not in words, container["name"]
    readme = (ROOT / "infra" / "README.md").read_text()
    for name in {name for name, _ in refs}:
        assert f"create secret generic {name}" in readme


def test_s3_policies_confine_each_client_to_its_prefix() -> None:
    policies = next(r for r in _resources() if r["metadata"]["name"] == "semivdn-s3-policies")["data"]
    for client, prefix in (("pipeline", "semivdn"), ("mlflow", "mlflow")):
        statements = json.loads(policies[f"{client}.json"])["Statement"]
        objects = [s for s in statements if "s3:GetObject" in s["Action"]]
        assert [s["Resource"] for s in objects] == [[f"arn:aws:s3:::semivdn/{prefix}/*"]]


def test_mlflow_requires_authentication_and_services_are_addressed_in_any_namespace() -> None:
    by_kind = {(r["kind"], r["metadata"]["name"]): r for r in _resources()}
    server = by_kind[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in server["args"]
    env = {e["name"]: e for e in server["env"]}
    assert "MLFLOW_AUTH_CONFIG_PATH" in env and "MLFLOW_FLASK_SERVER_SECRET_KEY" in env
    urls = by_kind[("ConfigMap", ENV_CONFIG_MAP)]["data"]
    assert urls["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and urls["SEMIVDN_S3_ENDPOINT"] == "http://minio:9000"
    assert "semivdn.svc" not in yaml.safe_dump(_resources()), "a namespace-qualified URL breaks in another namespace"


def test_network_policies_deny_by_default_and_open_only_the_services() -> None:
    policies = {r["metadata"]["name"]: r["spec"] for r in _resources() if r["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    postgres = policies["postgres-from-mlflow"]["ingress"][0]["from"]
    assert postgres == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}]
    served = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in policies.values() if p["podSelector"]}
    assert served == {"mlflow", "minio", "postgres"}


def test_checkpoint_volume_is_shared_by_parallel_training_pods() -> None:
    claim = next(r for r in _resources() if r["kind"] == "PersistentVolumeClaim"
                 and r["metadata"]["name"] == load_config(ROOT / "params.yaml").pipeline.checkpoint_pvc)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_pipeline_environment_and_service_account_exist_in_the_manifests() -> None:
    by_kind = {(r["kind"], r["metadata"]["name"]): r for r in _resources()}
    config_map = by_kind[("ConfigMap", ENV_CONFIG_MAP)]
    assert set(ENV_CONFIG_KEYS) <= set(config_map["data"])
    account = load_config(ROOT / "params.yaml").pipeline.service_account
    assert ("ServiceAccount", account) in by_kind
    binding = by_kind[("RoleBinding", account)]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]


def test_every_container_has_resources_and_no_privilege_escalation() -> None:
    workloads = [r for r in _resources() if r["kind"] in {"Deployment", "StatefulSet", "Job"}]
    assert {r["metadata"]["name"] for r in workloads} == {"mlflow", "postgres", "minio", "semivdn-bootstrap"}
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert {"requests", "limits"} <= set(container["resources"]), container["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, container["name"]
            assert not container["image"].endswith(":latest") and ":" in container["image"], container["image"]


# The training operator's v1 PyTorchJob fields this project uses (kubeflow.org_pytorchjobs CRD, v1):
# the job's own schema; its pod templates are Kubernetes PodTemplateSpecs, validated as Pods below.
_REPLICA = {"type": "object", "additionalProperties": False, "required": ["replicas", "template"],
            "properties": {"replicas": {"type": "integer", "minimum": 0},
                           "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
                           "template": {"type": "object"}}}
PYTORCHJOB_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"}, "kind": {"const": "PyTorchJob"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "additionalProperties": False, "required": ["pytorchReplicaSpecs"], "properties": {
            "nprocPerNode": {"type": "string"},
            "elasticPolicy": {"type": "object"},
            "runPolicy": {"type": "object", "additionalProperties": False, "properties": {
                "activeDeadlineSeconds": {"type": "integer"}, "backoffLimit": {"type": "integer"},
                "cleanPodPolicy": {"enum": ["All", "Running", "None"]}, "managedBy": {"type": "string"},
                "schedulingPolicy": {"type": "object"}, "suspend": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer"}}},
            "pytorchReplicaSpecs": {"type": "object", "additionalProperties": False, "required": ["Master"],
                                    "properties": {"Master": _REPLICA, "Worker": _REPLICA}}}}}}


def test_pytorchjob_validates_and_trains_with_torchrun_on_the_cuda_image_resuming_from_the_claim() -> None:
    job = yaml.safe_load((ROOT / "infra" / "training" / "pytorchjob.yaml").read_text())
    jsonschema.validate(job, PYTORCHJOB_SCHEMA)
    params = load_config(ROOT / "params.yaml").pipeline
    for role, replica in job["spec"]["pytorchReplicaSpecs"].items():
        template = replica["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"semivdn-{role.lower()}",
                                                                 **template["metadata"]}, "spec": template["spec"]}
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
        [container] = template["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator's required container name
        assert container["image"].split("@")[0].rsplit(":", 1)[0] == params.image_cuda.rsplit(":", 1)[0]
        assert "exec torchrun -m semivdn.cli train" in container["args"][0] and "--resume" in container["args"][0]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        assert claims == {params.checkpoint_pvc}
