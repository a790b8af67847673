"""Streaming inference: sliding windows with reflected edges, feature reuse, tiling, and desnow_video."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from semivdn import cli
from semivdn.config import Config, Model
from semivdn.data.video import FrameWriter, count_frames, list_frame_files, probe, to_tensor, to_uint8
from semivdn.inference import desnow_clip, desnow_frames, desnow_video, plan_tiles, reflect_index
from semivdn.models import VDNOutput, create_model, save_checkpoint
from semivdn.models.vdn import VDN
from semivdn.registry import load_model_ref
from semivdn.weights import sha256_file

TINY = Model(dim=16, heads=2, decoder_channels=8, sr_ratio=2)


@pytest.fixture(scope="module")
def model() -> VDN:
    torch.manual_seed(0)
    return create_model(TINY).eval()


def _frames(count: int, height: int = 40, width: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _reference(model: VDN, clip: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Non-streaming output: model.forward on each explicitly reflected window, centre frame."""
    radius, length = n_frames // 2, clip.shape[0]
    with torch.no_grad():
        return torch.stack([
            model(clip[[reflect_index(c + o, length) for o in range(-radius, radius + 1)]][None]).frames[0, radius]
            for c in range(length)]).clamp(0, 1)


def test_reflect_index_mirrors_without_repeating_the_edge() -> None:
    assert [reflect_index(i, 5) for i in range(-2, 7)] == [2, 1, 0, 1, 2, 3, 4, 3, 2]
    assert [reflect_index(i, 2) for i in range(-2, 4)] == [0, 1, 0, 1, 0, 1]
    assert [reflect_index(i, 1) for i in (-3, 0, 2)] == [0, 0, 0]


@pytest.mark.parametrize(("length", "n_frames"), [(6, 3), (2, 5), (1, 3)])
def test_streaming_equals_forward_on_reflected_windows(model: VDN, length: int, n_frames: int) -> None:
    clip = torch.stack([to_tensor(f) for f in _frames(length)])
    expected = _reference(model, clip, n_frames)
    torch.testing.assert_close(desnow_clip(model, clip, n_frames), expected, rtol=0, atol=1e-5)
    streamed = list(desnow_frames(model, _frames(length), n_frames=n_frames, batch_frames=2))
    assert len(streamed) == length
    for got, want in zip(streamed, expected, strict=True):
        assert np.abs(got.astype(int) - to_uint8(want).astype(int)).max() <= 1


def test_each_frame_is_encoded_once_and_the_stream_is_lazy(model: VDN, monkeypatch) -> None:
    encoded: list[int] = []
    original = VDN.encode

    def counting_encode(self: VDN, frames: torch.Tensor) -> torch.Tensor:
        encoded.append(frames.shape[0])
        return original(self, frames)

    monkeypatch.setattr(VDN, "encode", counting_encode)
    endless = itertools.cycle(_frames(3))  # never ends: only a streaming implementation returns
    first = list(itertools.islice(desnow_frames(model, endless, n_frames=3, batch_frames=2), 7))
    assert len(first) == 7
    assert sum(encoded) <= 7 + 1 + 2  # the frames output so far, one look-ahead frame, one batch


def test_desnow_frames_restores_the_training_mode_and_refuses_bad_input(model: VDN) -> None:
    model.train()
    list(desnow_frames(model, _frames(2), n_frames=3))
    assert model.training
    model.eval()
    with pytest.raises(ValueError, match="positive odd"):
        list(desnow_frames(model, _frames(2), n_frames=2))
    with pytest.raises(ValueError, match=r"frame 1 has shape"):
        list(desnow_frames(model, [*_frames(1), *_frames(1, height=48)], n_frames=3))


def test_tiles_cover_the_frame_and_blend_to_the_identity(model: VDN) -> None:
    tiles = plan_tiles(70, 90, tile=48, overlap=8)
    coverage = torch.zeros(1, 70, 90)
    for tile in tiles:
        assert tile.height <= 48 and tile.width <= 48
        tile.crop(coverage).add_(tile.weight)
    assert coverage.min() > 0

    class IdentityVDN(VDN):  # restore returns its input, so any blending error shows
        def restore(self, features: torch.Tensor, clip: torch.Tensor, frame_index: int | None = None) -> VDNOutput:
            frames = clip[:, frame_index : frame_index + 1]
            return VDNOutput(frames, features, features, features, features, None, None)

    identity = IdentityVDN(dim=16, heads=2, decoder_channels=8).eval()
    frames = _frames(2, height=70, width=90)
    out = list(desnow_frames(identity, frames, n_frames=3, tile=48, tile_overlap=8))
    for got, want in zip(out, frames, strict=True):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    tiled = list(desnow_frames(model, frames, n_frames=3, tile=48, tile_overlap=8))
    assert [t.shape for t in tiled] == [f.shape for f in frames]


@pytest.fixture(scope="module")
def checkpoint(model: VDN, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return str(save_checkpoint(path, model, TINY, {"variant": "M2"}))


def _write_video(path, frames: list[np.ndarray], fps: float) -> None:
    with FrameWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)


def test_desnow_video_keeps_frame_count_and_fps(checkpoint: str, tmp_path) -> None:
    source = tmp_path / "in.mp4"
    _write_video(source, _frames(7, height=40, width=48), fps=10)
    summary = desnow_video(Config(model=TINY), str(source), str(tmp_path / "out.mp4"), model_ref=checkpoint)
    info = probe(tmp_path / "out.mp4")
    assert (summary["frames"], info.frames, info.height, info.width) == (7, 7, 40, 48)
    assert info.fps == pytest.approx(10.0) and summary["fps"] == pytest.approx(10.0)
    compare = desnow_video(Config(model=TINY), str(source), str(tmp_path / "side.mp4"), model_ref=checkpoint,
                           compare=True)
    assert compare["frames"] == 7 and probe(tmp_path / "side.mp4").width == 96


def _write_video_with_sound(path: Path, frames: list[np.ndarray], fps: int, seconds: float) -> None:
    """A video with a 440 Hz AAC soundtrack of ``seconds``, as a camera or phone writes one."""
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(16000 * seconds)) / 16000)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, start
            container.mux(audio.encode(chunk))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(container.streams.audio[0]) if packet.size]


def test_desnow_video_keeps_the_soundtrack_bit_for_bit(checkpoint: str, tmp_path: Path) -> None:
    source = tmp_path / "holiday.mp4"
    _write_video_with_sound(source, _frames(10, height=40, width=48), fps=10, seconds=1.0)
    summary = desnow_video(Config(model=TINY), str(source), str(tmp_path / "out.mp4"), model_ref=checkpoint)
    assert summary["audio"] == ["aac 16000 Hz mono"] and probe(tmp_path / "out.mp4").frames == 10
    assert _audio_packets(tmp_path / "out.mp4") == _audio_packets(source)
    with av.open(str(tmp_path / "out.mp4")) as container:  # and still in step with the pictures
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(float(video.duration * video.time_base),
                                                                          abs=0.1)


def test_a_frame_folder_output_says_the_sound_is_left_out(checkpoint: str, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "holiday.mp4"
    _write_video_with_sound(source, _frames(4, height=40, width=48), fps=10, seconds=0.4)
    with caplog.at_level("WARNING"):
        summary = desnow_video(Config(model=TINY), str(source), str(tmp_path / "frames"), model_ref=checkpoint)
    assert summary["audio"] == [] and "holds no sound" in caplog.text and "aac 16000 Hz mono" in caplog.text


def test_desnow_video_folder_to_folder(checkpoint: str, tmp_path) -> None:
    source = tmp_path / "frames"
    _write_video(source, _frames(4, height=37, width=53), fps=25)  # odd sizes are fine for PNG folders
    summary = desnow_video(Config(model=TINY), str(source), str(tmp_path / "out"), model_ref=checkpoint)
    assert summary["frames"] == 4 == count_frames(tmp_path / "out")
    assert len(list_frame_files(tmp_path / "out")) == 4


def test_desnow_video_errors_are_clear(checkpoint: str, tmp_path) -> None:
    cfg = Config(model=TINY)
    with pytest.raises(FileNotFoundError, match=r"absent\.mp4"):
        desnow_video(cfg, str(tmp_path / "absent.mp4"), str(tmp_path / "o.mp4"), model_ref=checkpoint)
    source = tmp_path / "in.mp4"
    _write_video(source, _frames(2), fps=5)
    with pytest.raises(ValueError, match=r"unsupported suffix '\.txt'"):
        desnow_video(cfg, str(source), str(tmp_path / "o.txt"), model_ref=checkpoint)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            desnow_video(cfg, str(source), str(tmp_path / "o.mp4"), model_ref=checkpoint, device="cuda")


def test_load_model_ref_resolves_files_and_folders_and_names_the_hash(checkpoint: str, tmp_path) -> None:
    _, by_file = load_model_ref(checkpoint, Config())
    _, by_folder = load_model_ref(str(Path(checkpoint).parent), Config())  # a folder holding one checkpoint
    assert by_file == by_folder
    assert by_file["variant"] == "M2" and by_file["checkpoint_sha256"] == sha256_file(Path(checkpoint))
    with pytest.raises(RuntimeError, match="no such checkpoint"):
        load_model_ref(str(tmp_path / "absent.safetensors"), Config())


def test_desnow_runs_where_there_is_no_params_file_and_training_does_not(checkpoint: str, tmp_path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """A user desnows their video from its own folder; project commands still need the project's params."""
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    _write_video(tmp_path / "snowy", _frames(4), fps=5)
    assert cli.main(["desnow", "snowy", "-o", "clean", "--model", checkpoint]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 4 == count_frames(tmp_path / "clean")
    assert not (tmp_path / "mlruns.db").exists()  # looking for a registry creates none
    assert cli.main(["train", "--variant", "M2"]) == 2
    assert "params file not found" in capsys.readouterr().err
