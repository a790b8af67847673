"""The snow gate: bright-over-dark temporal outliers decide how much of the network's change a frame gets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from semivdn import cli
from semivdn.config import Config, ConfigError, Inference, Model, RealSnowParams, SnowGate, SnowParams, load_config
from semivdn.data.realsnow import film_snow
from semivdn.data.scenes import render_clean_clip
from semivdn.data.synth import synthesize_snow
from semivdn.data.video import FrameReader, FrameWriter
from semivdn.inference import desnow_clip, desnow_frames, desnow_video
from semivdn.models import create_model, save_checkpoint
from semivdn.snow_gate import apply_gate, clip_gates, clip_outliers, gates, global_shift, outliers, stream_outliers

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
GATE = SnowGate()
TINY = Model(dim=16, heads=2, decoder_channels=8, sr_ratio=2)


def _clean(scene: str = "coffee", frames: int = 8, size: int = 64, seed: int = 0) -> np.ndarray:
    return render_clean_clip(scene, frames, size, size, np.random.default_rng(seed))


def _tensor(clip: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) float or uint8 -> (T, 3, H, W) float in [0, 1]."""
    clip = clip.astype(np.float32) / 255.0 if clip.dtype == np.uint8 else clip
    return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).contiguous()


def _panning_texture(frames: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Random grey texture sliding two pixels a frame: outliers of both signs, no snow."""
    texture = torch.rand(1, size, size + 2 * frames, generator=torch.Generator().manual_seed(seed))
    return torch.stack([texture[:, :, 2 * t:2 * t + size].expand(3, -1, -1) for t in range(frames)])


def test_outliers_of_a_uniformly_brighter_frame_are_its_excess_over_the_threshold() -> None:
    background = torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(0)) * 0.5
    bright, dark = outliers(background, background + 0.3, background, threshold=0.02)[0].tolist()
    assert bright == pytest.approx(0.28, abs=1e-5) and dark == 0.0
    bright, dark = outliers(background, background - 0.1, background, threshold=0.02)[0].tolist()
    assert bright == 0.0 and dark == pytest.approx(0.08, abs=1e-5)


def test_global_shift_finds_a_known_camera_move() -> None:
    scene = torch.rand(40, 50, generator=torch.Generator().manual_seed(1))
    assert global_shift(scene, torch.roll(scene, (3, -5), (0, 1))) == (-3, 5)
    assert global_shift(scene, scene) == (0, 0)


def test_streamed_outliers_equal_the_whole_clip_ones() -> None:
    clip = _tensor(synthesize_snow(_clean(), SnowParams(), 3).snowy)
    streamed = torch.stack(list(stream_outliers(iter(clip), GATE.threshold)))
    torch.testing.assert_close(streamed, clip_outliers(clip, GATE.threshold))


@pytest.mark.parametrize("snow", ["paired", "proxy-real"])
def test_snowy_clips_open_the_gate(snow: str) -> None:
    clean = _clean()
    snowy = (synthesize_snow(clean, SnowParams(), 1).snowy if snow == "paired"
             else film_snow(clean, RealSnowParams(), 10.0, 1).snowy)
    assert clip_gates(_tensor(snowy), GATE).min() == 1.0


def test_snow_free_camera_motion_closes_the_gate() -> None:
    assert clip_gates(_panning_texture(), GATE).max() == 0.0  # texture moving with the camera: both signs
    for scene in ("gravel", "chelsea"):  # photographs under the data's camera path (pan, zoom, roll, shake)
        assert clip_gates(_tensor(_clean(scene)), GATE).max() == 0.0


def test_a_frame_pools_only_its_window() -> None:
    """Snow in the first half only: with a short window the second half's frames see none of it."""
    clean = _clean("chelsea", frames=16)
    snowy = synthesize_snow(clean, SnowParams(), 2).snowy
    clip = _tensor(np.concatenate([snowy[:8], clean[8:]]))
    short = clip_gates(clip, SnowGate(window=1))
    assert short[:6].min() == 1.0 and short[11:].max() == 0.0
    whole = clip_gates(clip, SnowGate(window=16))  # every frame pools the whole clip: one gate
    assert torch.all(whole == whole[0])


def test_gates_of_short_clips_stay_open_and_say_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="semivdn.snow_gate"):
        assert clip_gates(torch.rand(2, 3, 16, 16), GATE).tolist() == [1.0, 1.0]
    assert "no temporal evidence" in caplog.text
    with pytest.raises(ValueError, match=r"outliers of 3 inner frames"):
        gates(torch.zeros(2, 2), 5, GATE)


def test_apply_gate_interpolates_per_frame() -> None:
    inputs, restored = torch.zeros(3, 3, 4, 4), torch.ones(3, 3, 4, 4)
    out = apply_gate(inputs, restored, torch.tensor([0.0, 0.5, 1.0]))
    assert out[0].max() == 0.0 and torch.all(out[1] == 0.5) and out[2].min() == 1.0
    noise = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(apply_gate(noise, noise.flip(0), 0.0), noise)  # exact at both ends: no rounding
    assert torch.equal(apply_gate(noise, noise.flip(0), 1.0), noise.flip(0))


def test_desnow_clip_leaves_snow_free_motion_alone_and_desnows_snow() -> None:
    torch.manual_seed(0)
    model = create_model(TINY).eval()
    texture = _panning_texture()
    assert torch.equal(desnow_clip(model, texture, 3, GATE), texture)  # the gate keeps the input
    assert not torch.equal(desnow_clip(model, texture, 3), texture)  # the random network alone changes it
    snowy = _tensor(synthesize_snow(_clean(), SnowParams(), 1).snowy)
    torch.testing.assert_close(desnow_clip(model, snowy, 3, GATE), desnow_clip(model, snowy, 3))
    assert torch.equal(desnow_clip(model, texture, 3, SnowGate(enabled=False)), desnow_clip(model, texture, 3))


def test_desnow_video_keeps_snow_free_frames_and_reports_the_gate(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", create_model(TINY), TINY, {"variant": "M2"})
    frames = [np.ascontiguousarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
              for f in _panning_texture(frames=6, size=48)]
    with FrameWriter(tmp_path / "in", fps=5) as writer:  # PNG frames: lossless, so "unchanged" is exact
        for frame in frames:
            writer.write(frame)
    with caplog.at_level(logging.WARNING, logger="semivdn.inference"):
        summary = desnow_video(Config(model=TINY), str(tmp_path / "in"), str(tmp_path / "out"),
                               model_ref=str(checkpoint))
    assert summary["snow_gate_mean"] == 0.0 and "--no-snow-gate" in caplog.text  # says how to override
    with FrameReader(tmp_path / "out") as reader:
        assert all(np.array_equal(a, b) for a, b in zip(reader, frames, strict=True))
    ungated = Config(model=TINY, inference=Inference(snow_gate=SnowGate(enabled=False)))
    summary = desnow_video(ungated, str(tmp_path / "in"), str(tmp_path / "raw"), model_ref=str(checkpoint))
    assert summary["snow_gate_mean"] is None
    with FrameReader(tmp_path / "raw") as reader:
        assert not all(np.array_equal(a, b) for a, b in zip(reader, frames, strict=True))


@pytest.mark.parametrize("override", ["window=0", "balance=[0.3, 0.1]", "threshold=0.0", "strength=1"])
def test_bad_gate_params_name_their_key(override: str) -> None:
    key = "inference.snow_gate." + override.partition("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[f"{key}={override.partition('=')[2]}"])


def test_the_desnow_command_switches_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", create_model(TINY), TINY, {"variant": "M2"})
    with FrameWriter(tmp_path / "in", fps=5) as writer:
        for frame in _panning_texture(frames=4, size=48):
            writer.write(np.ascontiguousarray((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)))
    for flag, expected in (("--snow-gate", 0.0), ("--no-snow-gate", None)):
        code = cli.main(["desnow", str(tmp_path / "in"), "-o", str(tmp_path / flag), "--model", str(checkpoint),
                         "--params", str(PARAMS), "--profile", "smoke", flag])
        assert code == 0 and json.loads(capsys.readouterr().out)["snow_gate_mean"] == expected


def test_desnow_frames_blends_each_frame_by_its_gate() -> None:
    torch.manual_seed(0)
    model = create_model(TINY).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(5)]
    network = list(desnow_frames(model, frames, n_frames=3))
    gated = list(desnow_frames(model, frames, n_frames=3, frame_gates=torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5])))
    assert np.array_equal(gated[0], frames[0]) and np.array_equal(gated[2], frames[2])
    assert np.array_equal(gated[1], network[1]) and np.array_equal(gated[3], network[3])
    halfway = (frames[4].astype(np.float64) + network[4]) / 2
    assert np.abs(gated[4] - halfway).max() <= 0.75  # rounding of the blend, and of the network output it used
    with pytest.raises(ValueError, match="2 gates for a stream of more frames"):
        list(desnow_frames(model, frames, n_frames=3, frame_gates=torch.ones(2)))
