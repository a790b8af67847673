"""The built image end to end: the pipeline DAG in its containers (kfp.local DockerRunner, smoke profile).

Opt-in and slow (minutes): ``make image-test`` builds the image and runs this file
with ``SEMIVDN_TEST_IMAGE`` set. Around the containers, on this machine: S3
(moto's server, holding the raw data, the proxy-real truth and the footage prefix) and an MLflow
tracking server; the containers share the host network, as pods share a cluster's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml
from mlflow import MlflowClient
from moto.server import ThreadedMotoServer

from pipelines.cli import main
from semivdn import storage
from semivdn.config import load_config
from semivdn.data.make import make_dataset

IMAGE = os.environ.get("SEMIVDN_TEST_IMAGE", "")
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "semivdn"
pytestmark = [pytest.mark.slow, pytest.mark.image,
              pytest.mark.skipif(not IMAGE, reason="opt-in: `make image-test` sets SEMIVDN_TEST_IMAGE")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "--artifacts-destination", str(tmp_path / "mlflow-artifacts")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the MLflow server did not start") from None
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "semivdn-test", "AWS_SECRET_ACCESS_KEY": "semivdn-test",
                        "AWS_DEFAULT_REGION": "us-east-1", storage.ENDPOINT_ENV: endpoint,
                        storage.BUCKET_ENV: BUCKET}.items():
        monkeypatch.setenv(name, value)
    storage.s3_client(endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def test_dag_runs_in_containers_of_the_image_to_a_promoted_champion(
        tmp_path: Path, mlflow_server: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["pipeline"]["footage_uri"] = f"s3://{BUCKET}/semivdn/incoming"
    raw["mlflow"]["tracking_uri"] = mlflow_server
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    cfg = load_config(params, "smoke")
    make_dataset(cfg, tmp_path / "raw", tmp_path / "real_truth")
    storage.upload_dir(tmp_path / "raw", f"s3://{BUCKET}/semivdn/raw", s3_endpoint)
    storage.upload_dir(tmp_path / "real_truth", f"s3://{BUCKET}/semivdn/real_truth", s3_endpoint)
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    experiment_id = client.create_experiment(cfg.mlflow.experiment)  # as infra/k8s's bootstrap Job does

    assert main(["run-local", "--runner", "docker", "--image", IMAGE, "--params", str(params), "--profile", "smoke",
                 "--workdir", str(tmp_path / "kfp")]) == 0

    champion = client.get_model_version_by_alias(cfg.mlflow.model_name, "champion")
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "kfp").rglob("summary.json")
                 if p.parent.name == "evaluation"]
    assert len(summaries) >= 6  # input, median3, M1, M2 and the semi-supervised variants
    assert all(s["real_clips_with_truth"] == s["clips"]["real"] > 0 for s in summaries)  # the truth from S3
    assert champion.tags["variant"] == "full"
    docker_client = docker.from_env()
    image = docker_client.images.get(IMAGE)
    docker_client.close()
    revision = image.labels["org.opencontainers.image.revision"]
    assert revision not in ("", "unknown")
    runs = client.search_runs([experiment_id])
    assert {r.data.tags.get("variant") for r in runs} >= {"M1", "M2", "M3", "full"}
    for run in runs:  # every run of every step knows the code and image it came from
        tags = run.data.tags
        assert (tags["git_commit"], tags["image"], tags["image_digest"], tags["pipeline_name"]) == (
            revision, IMAGE, image.id, "semivdn"), run.info.run_name
