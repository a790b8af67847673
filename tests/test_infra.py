"""Infrastructure lint: hadolint on the Dockerfile, kubernetes-validate on every manifest, names that must agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipelines.semivdn_pipeline import ENV_CONFIG_KEYS, ENV_CONFIG_MAP, S3_SECRET, S3_SECRET_KEYS
from semivdn.config import load_config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to run on
BIN = Path(sys.executable).parent


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _resources() -> list[dict[str, Any]]:
    return [doc for path in _manifests() for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_dockerfile_passes_hadolint() -> None:
    command = [str(BIN / "hadolint"), "--failure-threshold", "info", str(ROOT / "infra" / "docker" / "Dockerfile")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_on_a_pinned_base_with_cpu_and_cuda_builds() -> None:
    text = (ROOT / "infra/docker/Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11." in text and ":latest" not in text
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    assert text.rstrip().splitlines()[-3].startswith("USER 10001")
    assert text.index("COPY pyproject.toml") < text.index("COPY semivdn"), "dependency layer must come first"


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


def test_secrets_are_referenced_never_inlined_and_match_the_pipeline() -> None:
    resources = _resources()
    assert not [r for r in resources if r["kind"] == "Secret"], "secrets are created out of band (infra/README.md)"
    refs = set(_secret_refs(resources))
    assert {(S3_SECRET, key) for key in S3_SECRET_KEYS} <= refs
    assert {name for name, _ in refs} == {S3_SECRET, "semivdn-postgres"}
    readme = (ROOT / "infra" / "README.md").read_text()
    for name in {name for name, _ in refs}:
        assert f"create secret generic {name}" in readme


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
        for container in pod["containers"]:
            assert {"requests", "limits"} <= set(container["resources"]), container["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, container["name"]
            assert not container["image"].endswith(":latest") and ":" in container["image"], container["image"]
