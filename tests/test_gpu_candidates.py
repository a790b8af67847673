"""infra/training/gpu_candidates.py builds `semivdn train` commands that the CLI accepts as they are."""

import argparse
import json
import tarfile
from pathlib import Path

from scripts import ROOT, load_script

from semivdn.cli import build_parser
from semivdn.config import load_config

gpu_candidates = load_script("infra/training/gpu_candidates.py")


def test_a_candidate_command_parses_and_its_overrides_reach_the_config(tmp_path: Path) -> None:
    args = argparse.Namespace(profile="release", raw="data/release/raw", curated="data/release/curated",
                              init="models/release/stage3/model.safetensors",
                              set=["train.batch_size=16", "data.crop=128"])
    command = gpu_candidates.train_command(args, ["data.identity_fraction=0.4"], tmp_path / "a", iters=900, checks=4)
    assert command[1:3] == ["-m", "semivdn.cli"]
    parsed = build_parser().parse_args(command[3:])
    assert (parsed.variant, parsed.init, parsed.out) == ("M2+ft", args.init, str(tmp_path / "a"))
    cfg = load_config(ROOT / "params.yaml", parsed.profile, parsed.overrides)
    train = cfg.train_for(gpu_candidates.VARIANT)
    assert (train.iters, train.batch_size, cfg.data.crop, cfg.data.identity_fraction) == (900, 16, 128, 0.4)
    assert train.val_every == train.checkpoint_every == 225  # four checks in the run
    assert cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'a' / 'mlruns.db'}"  # one store per process


def test_a_candidate_may_start_from_scratch_or_its_own_weights_with_its_own_architecture(tmp_path: Path) -> None:
    args = argparse.Namespace(profile="release", raw="r", curated="c", init="shared.safetensors", set=[])
    scratch = gpu_candidates.train_command(args, ["init=none", "model.dim=96", "model.num_ptb=2"], tmp_path / "b",
                                           iters=100, checks=1)
    own = gpu_candidates.train_command(args, ["init=own.safetensors"], tmp_path / "c", iters=100, checks=1)
    shared = gpu_candidates.train_command(args, [], tmp_path / "d", iters=100, checks=1)
    parsed = [build_parser().parse_args(command[3:]) for command in (scratch, own, shared)]
    assert [p.init for p in parsed] == ["none", "own.safetensors", "shared.safetensors"]
    assert not any(setting.startswith("init=") for p in parsed for setting in p.overrides)  # not a param
    cfg = load_config(ROOT / "params.yaml", parsed[0].profile, parsed[0].overrides)
    assert (cfg.model.dim, cfg.model.num_ptb) == (96, 2)


def test_pack_returns_one_archive_per_candidate_with_its_model_or_last_checkpoint(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name, weights in (("done", "model.safetensors"), ("stopped", gpu_candidates.STATE_FILE)):
        (runs / name).mkdir(parents=True)
        (runs / name / weights).write_bytes(b"w")
        (runs / name / "metrics.json").write_text("{}")
    out = tmp_path / "out" / "new"  # created on demand
    gpu_candidates.pack(runs, out, ["done", "stopped"], {"iters": {"done": 100}})
    assert json.loads((out / "calibration.json").read_text()) == {"iters": {"done": 100}}
    with tarfile.open(out / "done.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["done/metrics.json", "done/model.safetensors"]
    with tarfile.open(out / "stopped.tar.gz") as tar:  # the deadline stopped it: its last checkpoint comes back
        assert sorted(tar.getnames()) == ["stopped/last.ckpt", "stopped/metrics.json"]
