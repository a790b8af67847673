"""S3 round trips against a real loopback S3 server (moto's server mode), not a mock object."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from kfp.dsl import Dataset
from moto.server import ThreadedMotoServer

from components.footage import ingest_footage
from semivdn import storage
from semivdn.config import load_config
from semivdn.footage import fingerprint
from semivdn.versioning import configure_remote, version_data

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
BUCKET = "semivdn-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; credentials and endpoint come from the environment, as in a pipeline pod."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", storage.ENDPOINT_ENV: s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    if any(b["Name"] == BUCKET for b in client.list_buckets()["Buckets"]):
        for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    else:
        client.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}"


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


FOOTAGE = {"site_a.mp4": b"\x00video-a" * 1000, "site_b/00000.png": b"png0", "site_b/00001.png": b"png1" * 300_000}


def test_upload_list_download_round_trip_keeps_names_sizes_and_bytes(s3: str, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", FOOTAGE)
    written = storage.upload_dir(src, f"{s3}/incoming/")
    assert sorted(written) == sorted(f"{s3}/incoming/{name}" for name in FOOTAGE)
    listed = storage.list_files(f"{s3}/incoming")
    assert [(f.name, f.size) for f in listed] == sorted((n, len(c)) for n, c in FOOTAGE.items())
    paths = storage.download_prefix(f"{s3}/incoming", tmp_path / "dest")
    assert sorted(paths) == sorted(tmp_path / "dest" / n for n in FOOTAGE)
    assert _digests(tmp_path / "dest") == _digests(src)


def test_streamed_s3_fingerprint_equals_the_local_one(s3: str, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", FOOTAGE)
    storage.upload_dir(src, f"{s3}/incoming")
    assert fingerprint(f"{s3}/incoming") == fingerprint(src)
    storage.upload_dir(_tree(tmp_path / "more", {"site_c.mov": b"new"}), f"{s3}/incoming")
    assert fingerprint(f"{s3}/incoming") != fingerprint(src)


def test_prefix_listing_does_not_leak_sibling_prefixes(s3: str, tmp_path: Path) -> None:
    storage.upload_dir(_tree(tmp_path / "a", {"x.mp4": b"1"}), f"{s3}/incoming")
    storage.upload_dir(_tree(tmp_path / "b", {"y.mp4": b"2"}), f"{s3}/incoming-old")
    assert [f.name for f in storage.list_files(f"{s3}/incoming")] == ["x.mp4"]


def test_missing_bucket_and_bad_uris_are_named_errors(s3: str, tmp_path: Path) -> None:
    with pytest.raises(storage.StorageError, match="no-such-bucket"):
        storage.list_files("s3://no-such-bucket/x")
    with pytest.raises(storage.StorageError, match="no bucket"):
        storage.split_s3("s3:///key")
    with pytest.raises(storage.StorageError, match="folder not found"):
        storage.list_files(tmp_path / "absent")


def test_ingest_component_stages_raw_data_and_footage_from_s3_and_changes_neither(s3: str, tmp_path: Path) -> None:
    raw = _tree(tmp_path / "raw", {"paired/train/snowy/c/00000.png": b"s", "real/train/clip_000.mp4": b"r"})
    storage.upload_dir(raw, f"{s3}/raw")
    storage.upload_dir(_tree(tmp_path / "incoming", FOOTAGE), f"{s3}/incoming")
    artifact = Dataset(name="raw", uri=str(tmp_path / "artifact"))

    returned = ingest_footage(raw_uri=f"{s3}/raw", footage_uri=f"{s3}/incoming", data_fingerprint="cache-key",
                              params_file=str(PARAMS), profile="smoke", raw=artifact)

    assert returned == fingerprint(f"{s3}/incoming") == artifact.metadata["footage_fingerprint"]
    assert artifact.metadata["data_fingerprint"] == "cache-key"
    got = _digests(tmp_path / "artifact")
    assert got["real/train/clip_000.mp4"] == hashlib.sha256(b"r").hexdigest()
    assert got["real/train/footage-site_b/00001.png"] == hashlib.sha256(FOOTAGE["site_b/00001.png"]).hexdigest()
    assert {f.name for f in storage.list_files(f"{s3}/raw")} == {  # the raw data stays as it was
        "paired/train/snowy/c/00000.png", "real/train/clip_000.mp4"}
    assert {f.name for f in storage.list_files(f"{s3}/incoming")} == set(FOOTAGE)  # the footage stays


@pytest.mark.parametrize("key", ["footage//{victim}", "footage/../../../../{escape}"])
def test_issue13_2_a_key_that_leaves_the_destination_is_refused(s3: str, tmp_path: Path, key: str) -> None:
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    escape = tmp_path / "escaped.png"
    dest = tmp_path / "a" / "b" / "c" / "dest"
    hostile = key.format(victim=str(victim).lstrip("/"), escape=escape.name)
    client = storage.s3_client()
    client.put_object(Bucket=BUCKET, Key="footage/ok.png", Body=b"fine")
    client.put_object(Bucket=BUCKET, Key=hostile, Body=b"overwritten")
    with pytest.raises(storage.StorageError, match="unsafe file name"):
        storage.download_prefix(f"{s3}/footage", dest)
    assert victim.read_bytes() == b"precious" and not escape.exists()
    assert not dest.exists()  # every name is checked before the first write


@pytest.mark.parametrize("name", ["/etc/passwd", "a/../../b", "..", "a//b", "./a", "a\\..\\b", ""])
def test_issue13_2_safe_join_refuses_names_that_are_not_plain_relative_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(storage.StorageError):
        storage.safe_join(tmp_path, name)


def test_issue13_2_safe_join_refuses_a_symlink_out_and_keeps_plain_names(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(storage.StorageError, match="resolves outside"):
        storage.safe_join(tmp_path / "root", "link/x.png")
    assert storage.safe_join(tmp_path / "root", "a/b.png") == tmp_path / "root" / "a" / "b.png"


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stderr or done.stdout}"
    return done.stdout


def test_dvc_push_and_pull_round_trip_footage_and_models_through_the_s3_remote(
        s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The remote comes from params/env like the pipeline's; footage (dvc add) and a stage's model both travel."""
    monkeypatch.setenv(storage.BUCKET_ENV, BUCKET)
    repo = tmp_path / "repo"
    repo.mkdir()
    _dvc(repo, "init", "--no-scm", "-q")
    cfg = load_config(PARAMS, "smoke")
    remote = configure_remote(cfg, repo)
    assert remote["url"] == f"s3://{BUCKET}/{cfg.s3.prefix}/dvc"
    assert f"endpointurl = {os.environ[storage.ENDPOINT_ENV]}" in (repo / ".dvc" / "config").read_text()

    (repo / "dvc.yaml").write_text("stages:\n  train:\n    cmd: mkdir -p models && echo weights > models/m.bin\n"
                                   "    outs: [models]\n")
    _dvc(repo, "repro", "-q")
    footage = _tree(repo / "data" / "footage", FOOTAGE)
    assert version_data(footage) == ["dvc add data/footage", "dvc push data/footage"]  # pushed on ingestion
    _dvc(repo, "push")
    before = {name: _digests(repo / name) for name in ("data/footage", "models")}
    assert {f.name.split("/")[-1] for f in storage.list_files(f"{s3}/{cfg.s3.prefix}/dvc")}  # objects landed

    for name in ("data/footage", "models", ".dvc/cache"):
        shutil.rmtree(repo / name)
    _dvc(repo, "pull")
    assert {name: _digests(repo / name) for name in before} == before


def test_the_truth_of_a_step_is_the_test_split_downloaded_from_s3(s3: str, tmp_path: Path) -> None:
    """Evaluation and the gate read the held-back frames of the test split only, in a folder gone afterwards."""
    from components.step import local_truth

    truth = _tree(tmp_path / "truth", {"test/clip_000/000.png": b"t0", "test/clip_000/001.png": b"t1",
                                       "val/clip_001/000.png": b"v0"})
    uri = storage.join(s3, "semivdn", "real_truth")
    storage.upload_dir(truth, uri)
    with local_truth(uri, str(PARAMS), "smoke") as folder:
        assert _digests(Path(folder)) == {k: v for k, v in _digests(truth).items() if k.startswith("test/")}
    assert not Path(folder).exists()
    empty = storage.join(s3, "semivdn", "nothing")
    with pytest.raises(storage.StorageError, match="no held-back frames"), local_truth(empty, str(PARAMS), "smoke"):
        pass
