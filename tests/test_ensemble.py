"""Output ensembles: the mean of their members, through the checkpoint, the streaming path and the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from semivdn.cli import main
from semivdn.config import ConfigError, Model
from semivdn.inference import desnow_clip
from semivdn.models import CheckpointError, create_model, load_checkpoint, save_checkpoint
from semivdn.models.checkpoint import assemble_ensemble
from semivdn.models.ensemble import OutputEnsemble
from semivdn.train.distributed import DistContext
from semivdn.train.loop import Trainer
from semivdn.weights import sha256_file

TINY = Model(dim=16, heads=2, decoder_channels=8, sr_ratio=2)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Two differently initialised tiny VDN checkpoints (the second with a residual far from zero)."""
    folder = tmp_path_factory.mktemp("members")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        network = create_model(TINY).eval()
        with torch.no_grad():
            for param in network.rgb_decoder.parameters():
                param.add_(0.01 * torch.randn_like(param))  # a VDN starts near the identity: make them differ
        paths.append(save_checkpoint(folder / f"m{seed}.safetensors", network, TINY,
                                     {"variant": "M2+ft", "profile": "smoke", "mlflow_run_id": f"run{seed}"}))
    return paths


def test_the_ensemble_restores_the_mean_of_its_members(members, tmp_path) -> None:
    path = assemble_ensemble(members, tmp_path / "ens.safetensors")
    ensemble, meta = load_checkpoint(path)
    networks = [load_checkpoint(p)[0] for p in members]
    assert isinstance(ensemble, OutputEnsemble) and len(ensemble.members) == 2
    clip = torch.rand(2, 3, 3, 37, 53, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = [network(clip) for network in networks]
        combined = ensemble(clip)
    assert not torch.allclose(outputs[0].frames, outputs[1].frames, atol=1e-3)  # the members really differ
    for name in ("frames", "snow", "transmission", "airlight", "router_q"):
        torch.testing.assert_close(getattr(combined, name), (getattr(outputs[0], name) + getattr(outputs[1], name)) / 2)
    # the streaming path (features encoded once, reused by every window) gives the same mean; mid-grey
    # frames keep every member's output inside [0, 1], where desnow_clip's clamp is the identity
    video = 0.3 + 0.4 * torch.rand(7, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    alone = [desnow_clip(network, video, 3) for network in networks]
    assert all(out.min() > 0 and out.max() < 1 for out in alone)
    torch.testing.assert_close(desnow_clip(ensemble, video, 3), (alone[0] + alone[1]) / 2, atol=2e-6, rtol=0)
    assert meta["variant"] == "M2+ft" and meta["profile"] == "smoke" and "mlflow_run_id" not in meta
    assert [m["sha256"] for m in meta["members"]] == [sha256_file(p) for p in members]
    assert [m["mlflow_run_id"] for m in meta["members"]] == ["run0", "run1"]


def test_members_of_another_architecture_or_too_few_are_refused(members, tmp_path) -> None:
    other = save_checkpoint(tmp_path / "wide.safetensors", create_model(dataclasses.replace(TINY, dim=32)),
                            dataclasses.replace(TINY, dim=32))
    with pytest.raises(CheckpointError, match="one architecture"):
        assemble_ensemble([members[0], other], tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="at least two"):
        assemble_ensemble(members[:1], tmp_path / "one.safetensors")
    nested = assemble_ensemble(members, tmp_path / "ens.safetensors")
    with pytest.raises(CheckpointError, match="single networks"):
        assemble_ensemble([nested, members[0]], tmp_path / "nested.safetensors")
    assert not (tmp_path / "bad.safetensors").exists() and not (tmp_path / "nested.safetensors").exists()
    with pytest.raises(ConfigError, match=r"model\.members"):
        Model(members=0)


def test_an_ensemble_is_not_trained(smoke_cfg) -> None:
    cfg = dataclasses.replace(smoke_cfg, model=dataclasses.replace(smoke_cfg.model, members=2))
    with pytest.raises(ConfigError, match="assembled from trained checkpoints"):
        Trainer(cfg, "M2", torch.device("cpu"), DistContext())


def test_cli_ensemble_writes_a_loadable_checkpoint(members, tmp_path, capsys) -> None:
    out = tmp_path / "cli" / "ens.safetensors"
    assert main(["ensemble", "--members", *map(str, members), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == str(out)
    assert load_checkpoint(out)[0].members[1].encoder.backbone.stem_0.weight.equal(
        load_checkpoint(members[1])[0].encoder.backbone.stem_0.weight)
