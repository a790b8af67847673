"""Training loops: EMA and schedule formulas, tracking, exact resume after SIGKILL, DDP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from safetensors.torch import load_file
from threadpoolctl import threadpool_info
from torch import nn

from semivdn.config import load_config
from semivdn.train import run_training
from semivdn.train.distributed import DistContext
from semivdn.train.ema import TeacherAverager, poly_decay
from semivdn.train.loop import Batch, Trainer, numpy_blas_single_threaded
from semivdn.train.state import STATE_FILE, load_state

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write_params(path: Path, **sections: dict) -> Path:
    """params.yaml with the smoke profile active and some smoke overrides replaced."""
    raw = yaml.safe_load(PARAMS.read_text())
    raw["profile"] = "smoke"
    for name, values in sections.items():
        raw["profiles"]["smoke"].setdefault(name, {}).update(values)
    raw["profiles"]["smoke"]["variants"] = {}  # every variant trains for train.iters here
    path.write_text(yaml.safe_dump(raw))
    return path


def test_ema_matches_eq7() -> None:
    teacher, student = nn.Linear(2, 2), nn.Linear(2, 2)
    nn.init.zeros_(teacher.weight)
    nn.init.ones_(student.weight)
    averager = TeacherAverager(teacher, student)  # one averager, two steps: as the training loop uses it
    averager.update(0.99)
    assert torch.allclose(teacher.weight, torch.full((2, 2), 0.01))
    averager.update(0.99)
    assert torch.allclose(teacher.weight, torch.full((2, 2), 0.01 * 0.99 + 0.01))
    with pytest.raises(ValueError, match="parameters"):
        TeacherAverager(teacher, nn.Sequential(student, nn.Linear(2, 2)))


def test_teacher_labels_every_kth_step_and_each_label_serves_k_steps(tmp_path: Path) -> None:
    cfg = load_config(write_params(tmp_path / "params.yaml", train={"teacher_reuse": 2}))
    trainer = Trainer(cfg, "full", torch.device("cpu"), DistContext())
    trainer.start_teacher()
    assert trainer.teacher is not None
    calls: list[torch.Tensor] = []
    trainer.teacher.register_forward_hook(lambda _module, inputs, _output: calls.append(inputs[0]))
    generator = torch.Generator().manual_seed(0)
    shape = (1, cfg.data.frames_per_clip, 3, cfg.data.crop, cfg.data.crop)
    snowy, clean = torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)
    real = [torch.rand(shape, generator=generator) for _ in range(2)]
    assert [trainer.labels_at(i) for i in range(4)] == [True, False, True, False]
    with pytest.raises(ValueError, match="labels unlabelled clips at this step"):
        trainer.step(Batch(snowy, clean, None), 0)
    with numpy_blas_single_threaded():
        for iteration, unlabelled in enumerate([real[0], None, real[1], None]):
            parts = trainer.step(Batch(snowy, clean, unlabelled), iteration)
            assert "unsup" in parts  # the steps between labels train on the kept pseudo-labels
    assert len(calls) == 2 and torch.equal(calls[0], real[0]) and torch.equal(calls[1], real[1])
    assert trainer.pseudo is not None and torch.equal(trainer.pseudo.real, real[1])
    supervised = Trainer(cfg, "M2", torch.device("cpu"), DistContext())
    assert not supervised.labels_at(0)  # no teacher, nothing to label


def test_snow_stream_loss_is_part_of_the_supervised_step(tmp_path: Path) -> None:
    """loss.snow_stream > 0: the step asks the network for the snow-only frames and logs the term."""
    cfg = load_config(write_params(tmp_path / "params.yaml", loss={"snow_stream": 1.0}))
    trainer = Trainer(cfg, "M2", torch.device("cpu"), DistContext())
    generator = torch.Generator().manual_seed(0)
    shape = (2, cfg.data.frames_per_clip, 3, cfg.data.crop, cfg.data.crop)
    snowy, clean = torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)
    with numpy_blas_single_threaded():
        parts = trainer.step(Batch(snowy, clean, None), 0)
    expected = parts["sup_pixel"] + 10.0 * parts["sup_frequency"] + parts["sup_snow_stream"]  # smoke: no VGG
    assert parts["sup_snow_stream"] > 0 and parts["sup"] == pytest.approx(expected, rel=1e-5)
    plain = Trainer(load_config(write_params(tmp_path / "plain.yaml")), "M2", torch.device("cpu"), DistContext())
    with numpy_blas_single_threaded():
        assert "sup_snow_stream" not in plain.step(Batch(snowy, clean, None), 0)


def test_numpy_blas_is_single_threaded_during_training_only() -> None:
    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before = blas_threads()
    with numpy_blas_single_threaded():
        assert blas_threads() <= {1}
    assert blas_threads() == before


def test_poly_decay() -> None:
    assert poly_decay(0, 100, 0.9) == 1.0
    assert poly_decay(50, 100, 1.0) == pytest.approx(0.5)
    assert poly_decay(100, 100, 0.9) == 0.0 and poly_decay(150, 100, 0.9) == 0.0


def test_m2_then_full_track_to_mlflow(tiny_data: tuple[Path, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    raw, curated = tiny_data
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(PARAMS, "smoke")
    m2 = run_training(cfg, "M2", raw, curated, tmp_path / "models" / "M2", metrics_path=str(tmp_path / "m2.json"))
    assert (tmp_path / "models" / "M2" / "model.safetensors").is_file()
    assert m2["iterations"] == cfg.train.iters and 0 < m2["val_psnr"] < 60
    recorded = json.loads((tmp_path / "m2.json").read_text())["recipe"]  # what a release card reports per stage
    assert recorded["init"] is None and recorded["lr"] == cfg.train.lr and recorded["crop"] == cfg.data.crop
    assert recorded["batch_size"] == cfg.train.batch_size and recorded["device"].startswith("cpu (")
    assert recorded["snow_stream"] == cfg.loss.snow_stream
    full = run_training(cfg, "full", raw, curated, tmp_path / "models" / "full",
                        init=str(tmp_path / "models" / "M2" / "model.safetensors"))
    client = mlflow.MlflowClient()
    run = client.get_run(full["mlflow_run_id"])
    assert run.data.tags["variant"] == "full" and run.data.tags["init"].endswith("M2/model.safetensors")
    assert full["recipe"]["init"] == run.data.tags["init"] and full["recipe"]["lr"] == cfg.variants["full"].lr
    assert (recorded["teacher_reuse"], full["recipe"]["teacher_reuse"]) == (0, cfg.train.teacher_reuse)
    assert {"train_loss", "train_unsup", "train_dcr", "val_psnr", "val_ssim"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "images" in artifacts
    curve = (tmp_path / "models" / "full" / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,loss") and len(curve) > 2


def _train_cmd(params: Path, out: Path, raw: Path, curated: Path, *extra: str, variant: str = "full") -> list[str]:
    return [sys.executable, "-m", "semivdn.cli", "train", "--params", str(params), "--variant", variant,
            "--raw", str(raw), "--curated", str(curated), "--out", str(out), *extra]


def test_resume_after_sigkill_is_bitwise_identical(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    raw, curated = tiny_data
    # checkpoints at odd steps: the resumed run must carry on with the pseudo-labels of the step before
    params = write_params(tmp_path / "params.yaml",
                          train={"iters": 16, "checkpoint_every": 3, "teacher_reuse": 2, "val_every": 100,
                                 "image_every": 100})
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}"}
    # full (mean teacher + DCR) from scratch: exercises teacher, bank and RNG state
    (tmp_path / "models" / "M2").mkdir(parents=True)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_train_cmd(params, straight, raw, curated, "--init", "none"), env=env, check=True,
                   cwd=tmp_path, capture_output=True)

    process = subprocess.Popen(_train_cmd(params, killed, raw, curated, "--init", "none"), env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / STATE_FILE).exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training finished before it could be killed"
    saved = load_state(killed / STATE_FILE)
    at = saved["iteration"]
    assert 0 < at < 16 and saved["pseudo"]["real"].ndim == 5
    # a kill while the next checkpoint was being written leaves a torn temporary file
    (killed / (STATE_FILE + ".tmp")).write_bytes((killed / STATE_FILE).read_bytes()[:1000])
    subprocess.run(_train_cmd(params, killed, raw, curated, "--init", "none", "--resume"), env=env, check=True,
                   cwd=tmp_path, capture_output=True)
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_torn_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(RuntimeError, match="cannot resume"):
        load_state(tmp_path / STATE_FILE)


def _ddp_cmd(params: Path, out: Path, raw: Path, curated: Path, variant: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
            "semivdn.cli", "train", "--params", str(params), "--variant", variant, "--raw", str(raw),
            "--curated", str(curated), "--out", str(out), "--init", "none", *extra]


def test_ddp_gloo_two_processes_equal_one_with_double_batch(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    raw, curated = tiny_data
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}", "OMP_NUM_THREADS": "1"}
    train = {"iters": 3, "val_every": 100, "image_every": 100, "checkpoint_every": 100}
    single = write_params(tmp_path / "single.yaml", train={**train, "batch_size": 4})
    double = write_params(tmp_path / "ddp.yaml", train={**train, "batch_size": 2})
    subprocess.run(_train_cmd(single, tmp_path / "one", raw, curated, "--init", "none", variant="M2"), env=env,
                   check=True, cwd=tmp_path, capture_output=True)
    subprocess.run(_ddp_cmd(double, tmp_path / "two", raw, curated, "M2"), env=env, check=True, cwd=tmp_path,
                   capture_output=True)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once.

    torchrun starts every rank in a session of its own, so killing the launcher's process group
    leaves the ranks training and checkpointing into the folder the resumed run then writes.
    """
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # the process ended while we read
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, pending = [], [pid]
    while pending:
        tree.append(pending.pop())
        pending += children.get(tree[-1], [])
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


@pytest.mark.slow
def test_ddp_resume_after_sigkill_equals_uninterrupted_ddp_run(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    """Rank 0's checkpoint holds every rank's state (one global DCR bank, every rank's pseudo-labels), so a DDP
    resume is exact, even between two labelling steps (checkpoint at step 3, the teacher labels at 0, 2, 4)."""
    raw, curated = tiny_data
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}", "OMP_NUM_THREADS": "1"}
    params = write_params(tmp_path / "params.yaml", train={"iters": 5, "batch_size": 1, "checkpoint_every": 3,
                                                           "teacher_reuse": 2, "val_every": 100, "image_every": 100})
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_ddp_cmd(params, straight, raw, curated, "full"), env=env, check=True, cwd=tmp_path,
                   capture_output=True)
    process = subprocess.Popen(_ddp_cmd(params, killed, raw, curated, "full"), env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (killed / STATE_FILE).exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.002)
    _kill_tree(process.pid)  # the launcher and both ranks
    process.wait()
    saved = load_state(killed / STATE_FILE)
    assert saved["iteration"] == 3, "training finished before it could be killed"
    assert saved["pseudo"]["real"].shape[0] == 2  # both ranks' unlabelled clip
    subprocess.run(_ddp_cmd(params, killed, raw, curated, "full", "--resume"), env=env, check=True, cwd=tmp_path,
                   capture_output=True)
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
