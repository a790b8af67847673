"""The VDN network (paper §3.1-3.2, Eq. 2-6), its encoder weights policy, registry and checkpoints."""

from __future__ import annotations

import dataclasses
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from semivdn.config import Model
from semivdn.models import CheckpointError, create_model, load_checkpoint, register_model, save_checkpoint
from semivdn.models.checkpoint import FORMAT_VERSION, read_checkpoint_header
from semivdn.models.encoder import ConvNeXtEncoder
from semivdn.models.ptb import maps_to_tokens, tokens_to_maps
from semivdn.models.recovery import TRANSMISSION_FLOOR, prior_guided_recovery
from semivdn.models.vdn import VDN
from semivdn.weights import CorruptWeightsError, MissingWeightsError

TINY = Model(dim=16, heads=2, decoder_channels=8, sr_ratio=2)


@pytest.fixture(scope="module")
def model() -> VDN:
    torch.manual_seed(0)
    return create_model(TINY).eval()


@pytest.fixture(scope="module")
def odd_clip() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 3, 3, 37, 53)


def test_output_shapes_for_odd_frame_sizes(model: VDN, odd_clip: torch.Tensor) -> None:
    with torch.no_grad():
        out = model(odd_clip)
    assert out.frames.shape == odd_clip.shape
    # padded to 48x64 (multiple 16), features at a quarter of that
    for feature in (out.background, out.snow, out.transmission):
        assert feature.shape == (6, TINY.decoder_channels, 12, 16)
    assert out.airlight.shape == (6, 1, 12, 16)
    tokens = 3 * 6 * 8  # N_f · m with the patch embedding's stride 2
    assert out.router_q is not None and out.router_q.shape == (2, tokens, TINY.experts)
    assert out.router_d is not None and out.router_d.shape == (2, tokens, TINY.experts)


def test_router_weights_are_softmaxes_over_tokens_and_experts(model: VDN, odd_clip: torch.Tensor) -> None:
    with torch.no_grad():
        out = model(odd_clip)
    assert out.router_q is not None and out.router_d is not None
    torch.testing.assert_close(out.router_q.sum(dim=1), torch.ones(2, TINY.experts))  # Eq. 2
    torch.testing.assert_close(out.router_d.sum(dim=2), torch.ones(2, out.router_d.shape[1]))  # Eq. 5


def test_physics_features_lie_in_their_ranges(model: VDN, odd_clip: torch.Tensor) -> None:
    with torch.no_grad():
        out = model(odd_clip)
    assert out.transmission.min() > TRANSMISSION_FLOOR and out.transmission.max() < 1.0
    assert out.airlight.min() > 0.0 and out.airlight.max() < 1.0
    per_frame = out.airlight.flatten(1)
    torch.testing.assert_close(per_frame, per_frame[:, :1].expand_as(per_frame))  # one global value per frame


def test_restore_of_one_frame_matches_the_full_restore(model: VDN, odd_clip: torch.Tensor) -> None:
    with torch.no_grad():
        features = model.encode(odd_clip.flatten(0, 1))
        features = features.reshape(2, 3, *features.shape[1:])
        full = model.restore(features, odd_clip)
        centre = model.restore(features, odd_clip, frame_index=1)
    torch.testing.assert_close(centre.frames[:, 0], full.frames[:, 1])
    torch.testing.assert_close(centre.snow, full.snow.reshape(2, 3, *full.snow.shape[1:])[:, 1])


def test_snow_only_frames_are_the_output_when_the_haze_terms_are_neutral(odd_clip: torch.Tensor) -> None:
    """VDNOutput.snow_only is Eq. 6 with F_T' = 1 and F_A' = 0; asking for it leaves ``frames`` alone."""
    torch.manual_seed(0)
    model = create_model(TINY).eval()
    with torch.no_grad():
        plain = model(odd_clip)
        both = model(odd_clip, snow_only=True)
        assert plain.snow_only is None and both.snow_only is not None
        torch.testing.assert_close(both.frames, plain.frames, rtol=0, atol=0)
        assert both.snow_only.shape == plain.frames.shape
        assert (both.snow_only - both.frames).abs().max() > 1e-4  # haze terms active: the two differ
        for decoder, bias in ((model.transmission_decoder, 60.0), (model.airlight_decoder, -60.0)):
            decoder.conv3.weight.zero_()
            decoder.conv3.bias.fill_(bias)  # sigmoid saturates: F_T' = 1, F_A' ≈ 0
        neutral = model(odd_clip, snow_only=True)
    assert torch.all(neutral.transmission == 1.0)
    assert neutral.snow_only is not None
    torch.testing.assert_close(neutral.snow_only, neutral.frames, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_expert_the_router_and_all_component_decoders(odd_clip: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = create_model(TINY)
    out = net(odd_clip[:1])
    loss = (out.frames - torch.rand_like(out.frames)).square().mean()
    loss.backward()
    tde = net.blocks[-1].mixer
    parts = {"router": [tde.router], "f_S": list(tde.experts[0].parameters()),
             "f_T": list(tde.experts[1].parameters()), "f_A": list(tde.experts[2].parameters()),
             "snow decoder": list(net.snow_decoder.parameters()),
             "transmission decoder": list(net.transmission_decoder.parameters()),
             "airlight decoder": list(net.airlight_decoder.parameters())}
    for name, params in parts.items():
        for param in params:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_m1_has_no_router_or_experts(odd_clip: torch.Tensor) -> None:
    m1 = create_model(dataclasses.replace(TINY, tde=False)).eval()
    names = [name for name, _ in m1.named_parameters()]
    assert not [name for name in names if "router" in name or "experts" in name]
    with torch.no_grad():
        out = m1(odd_clip[:1])
    assert out.router_q is None and out.router_d is None
    assert out.frames.shape == odd_clip[:1].shape
    m2 = create_model(TINY)
    assert sum(p.numel() for p in m2.parameters()) > sum(p.numel() for p in m1.parameters())


def test_prior_guided_recovery_matches_a_hand_computation() -> None:
    f_i = torch.tensor([[[[0.9]], [[0.5]]]])  # (1, 2, 1, 1)
    f_s = torch.tensor([[[[0.2]], [[0.1]]]])
    f_t = torch.tensor([[[[0.5]], [[0.8]]]])
    f_a = torch.tensor([[[[0.8]]]])  # one channel, broadcast over c
    beta = 1e-8
    expected = torch.tensor([[[[(0.9 - 0.2 - 0.5 * 0.8) / (0.5 + beta)]], [[(0.5 - 0.1 - 0.2 * 0.8) / (0.8 + beta)]]]])
    torch.testing.assert_close(prior_guided_recovery(f_i, f_s, f_t, f_a, beta), expected)
    torch.testing.assert_close(expected.flatten(), torch.tensor([0.6, 0.3]))


def test_prior_guided_recovery_inverts_the_snow_model() -> None:
    torch.manual_seed(0)
    f_b, f_s = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    f_t = torch.rand(2, 4, 5, 6) * 0.8 + 0.1
    f_a = torch.rand(2, 1, 5, 6)
    f_i = f_b * f_t + f_s + (1 - f_t) * f_a  # Eq. 1 in feature space
    torch.testing.assert_close(prior_guided_recovery(f_i, f_s, f_t, f_a, 0.0), f_b)


def test_tokens_are_frame_major_and_round_trip() -> None:
    maps = torch.arange(2 * 3 * 4 * 2 * 5, dtype=torch.float32).reshape(6, 4, 2, 5)  # (B·N_f, C, h, w)
    tokens = maps_to_tokens(maps, frames=3)
    assert tokens.shape == (2, 3 * 2 * 5, 4)
    torch.testing.assert_close(tokens[1, 10], maps[4, :, 0, 0])  # clip 1, frame 1, first pixel
    torch.testing.assert_close(tokens_to_maps(tokens, (3, 2, 5)), maps)


def test_too_small_frames_and_bad_shapes_are_refused(model: VDN) -> None:
    with pytest.raises(ValueError, match="too small"):
        model(torch.rand(1, 3, 3, 8, 40))
    with pytest.raises(ValueError, match=r"\(B, N_f, 3, H, W\)"):
        model(torch.rand(3, 3, 40, 40))


def test_registry_refuses_duplicates_and_unknown_types() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("vdn")(VDN)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model(dataclasses.replace(TINY, type="nope"))


# --- encoder weights policy -------------------------------------------------------------------


def _atto_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model("convnext_atto", pretrained=False).state_dict().items()}


def test_imagenet_weights_missing_from_an_empty_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors.*models--timm--convnext_atto\.d2_in1k"):
        ConvNeXtEncoder("convnext_atto", 1, 16, weights="imagenet")


def test_imagenet_weights_load_from_the_hf_cache_layout(tmp_path, monkeypatch) -> None:
    snapshot = tmp_path / "hub" / "models--timm--convnext_atto.d2_in1k" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    state = _atto_state(seed=3)
    save_file(state, str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    encoder = ConvNeXtEncoder("convnext_atto", 2, 16, weights="imagenet")
    loaded = encoder.backbone.state_dict()
    torch.testing.assert_close(loaded["stem_0.weight"], state["stem.0.weight"])
    torch.testing.assert_close(loaded["stages_1.blocks.1.mlp.fc2.weight"], state["stages.1.blocks.1.mlp.fc2.weight"])
    assert not any(key.startswith("stages_2") for key in loaded)  # excluded stages stay out


def test_encoder_weights_load_from_a_path_and_refuse_incomplete_files(tmp_path) -> None:
    state = _atto_state(seed=4)
    path = tmp_path / "atto.safetensors"
    save_file(state, str(path))
    encoder = ConvNeXtEncoder("convnext_atto", 1, 16, weights=str(path))
    torch.testing.assert_close(encoder.backbone.state_dict()["stages_0.blocks.0.conv_dw.weight"],
                               state["stages.0.blocks.0.conv_dw.weight"])
    incomplete = tmp_path / "incomplete.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("stages.0.blocks.1")}, str(incomplete))
    with pytest.raises(CorruptWeightsError, match=r"missing stages_0\.blocks\.1"):
        ConvNeXtEncoder("convnext_atto", 1, 16, weights=str(incomplete))


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_outputs(model: VDN, odd_clip: torch.Tensor, tmp_path) -> None:
    path = save_checkpoint(tmp_path / "m" / "model.safetensors", model, TINY, {"variant": "M2", "iteration": 7})
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing behind
    loaded, meta = load_checkpoint(path)
    assert meta == {"variant": "M2", "iteration": 7}
    header = read_checkpoint_header(path)
    assert header.format_version == FORMAT_VERSION and header.model_config == TINY
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(odd_clip).frames, model(odd_clip).frames, rtol=0, atol=0)


def test_checkpoint_of_imagenet_encoder_loads_without_the_imagenet_file(model: VDN, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    path = save_checkpoint(tmp_path / "m.safetensors", model, dataclasses.replace(TINY, encoder_weights="imagenet"))
    loaded, _ = load_checkpoint(path)
    torch.testing.assert_close(loaded.state_dict()["encoder.backbone.stem_0.weight"],
                               model.state_dict()["encoder.backbone.stem_0.weight"])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupted_checkpoints_raise_checkpoint_error(model: VDN, tmp_path, damage: str) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", model, TINY)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x13\x00" * 500, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=r"m\.safetensors"):
        load_checkpoint(path)


def test_checkpoint_for_another_architecture_raises_checkpoint_error(model: VDN, tmp_path) -> None:
    path = save_checkpoint(tmp_path / "wrong.safetensors", model, dataclasses.replace(TINY, dim=32, heads=2))
    with pytest.raises(CheckpointError, match=r"do not match the architecture.*dim=32.*wrong shape"):
        load_checkpoint(path)
    m1_path = save_checkpoint(tmp_path / "m1.safetensors", model, dataclasses.replace(TINY, tde=False))
    with pytest.raises(CheckpointError, match=r"unexpected blocks\.0\.mixer\.experts"):
        load_checkpoint(m1_path)


def test_checkpoint_format_version_and_missing_file_are_checked(model: VDN, tmp_path) -> None:
    path = tmp_path / "future.safetensors"
    header = {"format": "semivdn-checkpoint", "format_version": "99", "model_config": json.dumps({}), "meta": "{}"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=header)
    with pytest.raises(CheckpointError, match="format version '99' is not supported"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.safetensors")
