"""Issue 13: hostile but realistic input and faults; one test (or more) per numbered defect.

Each test names its defect (``issue13_N``) and fails on the code before the fix: silent
half-results, tracebacks, partial outputs, relabelled or non-finite models, unbounded headers.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
from pathlib import Path

import av
import mlflow
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from semivdn import cli
from semivdn.config import Config, ConfigError, Model, config_from_dict, load_config
from semivdn.data.video import FrameReader, FrameWriter, VideoError, list_frame_files
from semivdn.inference import bounded_plan, desnow_video
from semivdn.models import CheckpointError, create_model, load_checkpoint, save_checkpoint
from semivdn.tracking import configure_mlflow
from semivdn.train import run_training
from semivdn.train.loop import TrainingDiverged
from semivdn.train.state import STATE_FILE, load_state

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
TINY = Model(dim=16, heads=2, decoder_channels=8, sr_ratio=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return save_checkpoint(path, create_model(TINY), TINY, {"variant": "M2"})


def _video(path: Path, count: int = 6, size: int = 32, options: dict[str, str] | None = None) -> Path:
    """An mpeg4 video of ``count`` random frames (``options``: muxer options such as faststart)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(count):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _desnow(capsys: pytest.CaptureFixture[str], checkpoint: Path, *args: str) -> tuple[int, str]:
    """``semivdn desnow`` through the real CLI entry point; (exit code, stderr)."""
    code = cli.main(["desnow", *args, "--model", str(checkpoint), "--params", str(PARAMS), "--profile", "smoke"])
    return code, capsys.readouterr().err


def _one_error_line(err: str) -> bool:
    """stderr (besides progress bars and logs) is exactly one ``semivdn:`` line and no traceback."""
    return "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("semivdn:")]) == 1


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


# 4: the artifact location of a moved or copied project
def test_issue13_4_a_store_whose_artifacts_live_elsewhere_is_refused(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    original = Config(mlflow=dataclasses.replace(Config().mlflow, tracking_uri=store,
                                                 artifact_location=str(tmp_path / "original" / "mlartifacts")))
    configure_mlflow(original)
    moved = dataclasses.replace(original, mlflow=dataclasses.replace(
        original.mlflow, artifact_location=str(tmp_path / "moved" / "mlartifacts")))
    with pytest.raises(RuntimeError, match=r"stores artifacts in .*original.*moved or copied"):
        configure_mlflow(moved)
    assert configure_mlflow(original)  # the matching location still works
    mlflow.set_tracking_uri(None)


# 5: no NaN guard
def test_issue13_5_infinite_or_nan_numbers_are_rejected_by_validation() -> None:
    raw = yaml.safe_load(PARAMS.read_text())
    for value in (float("inf"), float("nan")):
        raw["train"]["lr"] = value
        with pytest.raises(ConfigError, match=r"train\.lr: must be a finite number"):
            config_from_dict(raw, "smoke")


@pytest.mark.slow  # trains the smoke profile until it diverges
def test_issue13_5_divergence_stops_training_and_checkpoints_nothing(tiny_data: tuple[Path, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    raw, curated = tiny_data
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(PARAMS, "smoke")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=1e12, iters=6, checkpoint_every=1))
    with pytest.raises(TrainingDiverged, match=r"diverged at iteration \d+: non-finite loss \(.*loss="):
        run_training(cfg, "M2", raw, curated, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
    if (tmp_path / "out" / STATE_FILE).exists():  # only states from before the divergence
        state = load_state(tmp_path / "out" / STATE_FILE)
        assert all(t.isfinite().all() for t in state["student"].values() if t.is_floating_point())


def test_issue13_5_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    model = create_model(TINY)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite weights"):
        save_checkpoint(tmp_path / "model.safetensors", model, TINY)
    assert not list(tmp_path.iterdir())


# 6: truncated video accepted
def test_issue13_6_a_truncated_faststart_mp4_is_an_error_not_a_shorter_video(tmp_path: Path, checkpoint: Path) -> None:
    whole = _video(tmp_path / "whole.mp4", count=40, options={"movflags": "+faststart"})
    with FrameReader(whole) as reader:
        assert sum(1 for _ in reader) == 40  # the intact file is not flagged
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VideoError, match=r"truncated video: decoded \d+ of the 40 frames"), FrameReader(cut) as reader:
        list(reader)
    with pytest.raises(VideoError, match="truncated"):
        desnow_video(Config(model=TINY), str(cut), str(tmp_path / "out.mp4"), model_ref=str(checkpoint))
    assert not (tmp_path / "out.mp4").exists() and _leftovers(tmp_path) == []


# 7: tracebacks and partial files
@pytest.mark.parametrize(("fault", "code", "message"), [
    (KeyboardInterrupt(), 130, "interrupted"),
    (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device"),
])
def test_issue13_7_a_failure_mid_write_is_one_line_and_leaves_no_output(
        tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        fault: BaseException, code: int, message: str) -> None:
    source = _video(tmp_path / "in.mp4", count=6)
    written = 0
    original = FrameWriter.write

    def write(self: FrameWriter, frame: np.ndarray) -> None:
        nonlocal written
        written += 1
        if written == 3:
            raise fault
        original(self, frame)

    monkeypatch.setattr(FrameWriter, "write", write)
    for output in ("out.mp4", "frames"):
        written = 0
        exit_code, err = _desnow(capsys, checkpoint, str(source), "-o", str(tmp_path / output))
        assert exit_code == code and message in err and _one_error_line(err)
        assert not (tmp_path / output).exists() and _leftovers(tmp_path) == []


def test_issue13_7_bad_output_paths_and_yaml_are_one_line_errors(tmp_path: Path, checkpoint: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = _video(tmp_path / "in.mp4")
    (tmp_path / "file").write_text("a file")
    code, err = _desnow(capsys, checkpoint, str(source), "-o", str(tmp_path / "file" / "out.mp4"))
    assert code == 1 and "is a file, not a folder" in err and _one_error_line(err)
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "folder.mp4" / "x").write_text("keep")
    code, err = _desnow(capsys, checkpoint, str(source), "-o", str(tmp_path / "folder.mp4"))
    assert code == 1 and "already exists" in err and (tmp_path / "folder.mp4" / "x").read_text() == "keep"
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  lr: [1,\n")
    assert cli.main(["desnow", str(source), "-o", str(tmp_path / "o.mp4"), "--params", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "invalid YAML" in err and "broken.yaml" in err and _one_error_line(err)


# 8: a repeated YAML section, an empty params file
def test_issue13_8_a_repeated_section_is_rejected_with_both_lines(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.read_text() + "\ntrain:\n  iters: 5\n")
    with pytest.raises(ConfigError, match=r"train: repeated key on line \d+ \(first on line \d+\)"):
        load_config(params)
    params.write_text("")
    with pytest.raises(ConfigError, match="the params file is empty"):
        load_config(params)


# 9: resume with fewer iterations than the checkpoint
@pytest.mark.slow  # trains the smoke profile for three iterations
def test_issue13_9_resume_below_the_checkpoints_iteration_is_refused(tiny_data: tuple[Path, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    raw, curated = tiny_data
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(PARAMS, "smoke")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iters=3))  # M2: no override, no init
    out = tmp_path / "M2"
    result = run_training(cfg, "M2", raw, curated, out)
    json.dumps(result, allow_nan=False)  # valid JSON
    before = (out / STATE_FILE).read_bytes(), (out / "model.safetensors").read_bytes()
    fewer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iters=2))
    with pytest.raises(ValueError, match=r"at iteration 3, beyond train\.iters=2"):
        run_training(fewer, "M2", raw, curated, out, resume=True)
    assert ((out / STATE_FILE).read_bytes(), (out / "model.safetensors").read_bytes()) == before
    again = run_training(cfg, "M2", raw, curated, out, resume=True)  # nothing left to do: still valid JSON
    assert again["final_loss"] is None
    json.dumps(again, allow_nan=False)


# 11: stale frames in a reused folder; a hard-linked output
def test_issue13_11_a_reused_folder_needs_overwrite_and_then_holds_only_new_frames(
        tmp_path: Path, checkpoint: Path) -> None:
    source = _video(tmp_path / "in.mp4", count=4)
    out = tmp_path / "out"
    out.mkdir()
    for index in range(6):
        (out / f"{index:05d}.png").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        desnow_video(Config(model=TINY), str(source), str(out), model_ref=str(checkpoint))
    assert len(list_frame_files(out)) == 6
    desnow_video(Config(model=TINY), str(source), str(out), model_ref=str(checkpoint), overwrite=True)
    frames = list_frame_files(out)
    assert len(frames) == 4 and all(p.read_bytes() != b"old" for p in frames)


def test_issue13_11_a_hard_link_to_the_input_is_never_written_into(tmp_path: Path, checkpoint: Path) -> None:
    source = _video(tmp_path / "in.mp4", count=4)
    original = source.read_bytes()
    os.link(source, tmp_path / "out.mp4")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="is the input"):
            desnow_video(Config(model=TINY), str(source), str(tmp_path / "out.mp4"), model_ref=str(checkpoint),
                         overwrite=overwrite)
    assert source.read_bytes() == original


# 12: unbounded checkpoint headers
def test_issue13_12_a_crafted_header_fails_before_the_model_is_allocated(tmp_path: Path, checkpoint: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import semivdn.models.checkpoint as module

    header = module.read_checkpoint_header(checkpoint)
    huge = dataclasses.asdict(dataclasses.replace(header.model_config, dim=4096, heads=2, decoder_channels=4096))
    crafted = tmp_path / "crafted.safetensors"
    save_file({"x": torch.zeros(1)}, str(crafted), metadata={
        "format": module.FORMAT, "format_version": str(module.FORMAT_VERSION),
        "model_config": json.dumps(huge), "meta": "{}"})
    assert crafted.stat().st_size < 1024
    devices: list[str] = []
    build = module.create_model

    def spy(model_cfg: Model) -> torch.nn.Module:
        devices.append(torch.empty(0).device.type)  # the default device the model is built on
        return build(model_cfg)

    monkeypatch.setattr(module, "create_model", spy)
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load_checkpoint(crafted)
    assert devices == ["meta"]  # compared on the meta device; no real allocation happened


# 14: the minor ones
def test_issue13_14_tile_errors_name_the_tile_and_create_nothing(tmp_path: Path, checkpoint: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = _video(tmp_path / "in.mp4")
    code, err = _desnow(capsys, checkpoint, str(source), "-o", str(tmp_path / "out"), "--tile", "-1")
    assert code == 1 and "--tile -1" in err and "overlap" not in err
    assert not (tmp_path / "out").exists()


def test_issue13_14_a_garbage_state_file_never_suggests_unsafe_loading(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"garbage" * 100)
    with pytest.raises(RuntimeError, match="cannot resume") as caught:
        load_state(tmp_path / STATE_FILE)
    assert "weights_only" not in str(caught.value)


def test_issue13_14_a_new_checkpoint_gets_the_mode_of_any_new_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "model.safetensors", create_model(TINY), TINY)
    plain = tmp_path / "plain"
    plain.touch()
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_issue13_14_memory_is_bounded_by_pixels_per_model_call() -> None:
    tiles, batch = bounded_plan(1080, 1920, tile=0, tile_overlap=16, batch_frames=8, max_pixels=2_100_000)
    assert len(tiles) == 1 and batch == 1  # 8 whole 1080p frames per call would need 4x the memory
    tiles, batch = bounded_plan(128, 128, tile=0, tile_overlap=16, batch_frames=8, max_pixels=2_100_000)
    assert batch == 8  # small frames keep the configured batch
    tiles, batch = bounded_plan(2160, 3840, tile=0, tile_overlap=16, batch_frames=8, max_pixels=2_100_000)
    assert batch == 1 and max(t.height * t.width for t in tiles) <= 2_100_000  # 4K is tiled, announced


# (c) numeric overrides honour 0 or reject it
@pytest.mark.parametrize(("key", "value"), [("iters", 0), ("lr", 0.0)])
def test_issue13_c_a_zero_variant_override_is_rejected_not_ignored(key: str, value: float) -> None:
    raw = yaml.safe_load(PARAMS.read_text())
    raw["variants"]["M2"][key] = value
    with pytest.raises(ConfigError, match=rf"variants\.M2\.{key}: must be"):  # names the variant
        config_from_dict(raw, "demo")


# (d) the codec fallback is announced and recorded
def test_issue13_d_the_codec_fallback_is_logged_and_recorded_in_the_file(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    with caplog.at_level(logging.WARNING), FrameWriter(tmp_path / "out.mp4") as writer:
        writer.write(np.zeros((32, 32, 3), np.uint8))
    assert writer.codec == "mpeg4" and "libx264 is not available" in caplog.text
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.metadata.get("comment") == "semivdn encoder: mpeg4"
