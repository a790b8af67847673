"""Streaming desnowing of arbitrarily long videos with a trained VDN.

Every output frame is the centre frame of an N_f-frame window; windows at the ends of the
video are completed by reflection (frame -1 is frame 1, frame T is frame T-2; a one-frame
video repeats its frame). Each frame is encoded once and its features are reused by the
N_f windows it belongs to; only the frames those windows still need are kept, so memory
stays constant whatever the video's length. Large frames can be split into overlapping
tiles whose outputs are blended with linear ramps across the overlaps.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from semivdn.config import Config, Inference, SnowGate
from semivdn.data.video import (
    VIDEO_SUFFIXES,
    FrameReader,
    FrameWriter,
    audio_streams,
    copy_audio,
    list_frame_files,
    to_tensor,
    to_uint8,
)
from semivdn.devices import resolve_device
from semivdn.models.vdn import VDN
from semivdn.registry import load_model_ref
from semivdn.snow_gate import apply_gate, clip_gates, stream_gates
from semivdn.storage import atomic_output

log = logging.getLogger(__name__)

MIN_TILE = 32  # as inference.tile in params
LOW_GATE = 0.5  # a video whose mean snow gate is below this is mostly kept as it was: say so, and how to override
DEFAULT_MAX_PIXELS = Inference.max_batch_pixels


def reflect_index(index: int, length: int) -> int:
    """Index into a sequence of ``length`` frames, mirrored at both ends without repeating the edge."""
    if length == 1:
        return 0
    period = 2 * (length - 1)
    index %= period
    return index if index < length else period - index


@dataclass(frozen=True)
class Tile:
    """A region of the frame and its blending weight (1, height, width)."""

    top: int
    left: int
    height: int
    width: int
    weight: torch.Tensor

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        return images[..., self.top : self.top + self.height, self.left : self.left + self.width]


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    return [*range(0, size - tile, tile - overlap), size - tile]


def _ramp(length: int, start: int, size: int, overlap: int) -> torch.Tensor:
    """1 inside, rising over ``overlap`` pixels where the tile meets a neighbour."""
    weight = torch.ones(length)
    ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
    if start > 0:
        weight[:overlap] = ramp
    if start + length < size:
        weight[length - overlap :] = torch.minimum(weight[length - overlap :], ramp.flip(0))
    return weight


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Overlapping tiles of at most ``tile`` pixels covering the frame (``tile`` 0: the whole frame)."""
    if tile == 0 or (tile >= height and tile >= width):
        return [Tile(0, 0, height, width, torch.ones(1, height, width))]
    if not 0 <= overlap < tile // 2:
        raise ValueError(f"tile overlap {overlap} must lie in [0, tile/2) for tile size {tile}")
    tiles = []
    for top in _tile_starts(height, tile, overlap):
        for left in _tile_starts(width, tile, overlap):
            tile_h, tile_w = min(tile, height), min(tile, width)
            weight = torch.outer(_ramp(tile_h, top, height, overlap), _ramp(tile_w, left, width, overlap))
            tiles.append(Tile(top, left, tile_h, tile_w, weight.unsqueeze(0)))
    return tiles


@dataclass
class _Encoded:
    frame: torch.Tensor  # (3, H, W) on the device
    features: list[torch.Tensor]  # per tile, (C, h, w)


@torch.inference_mode()
def _encode(model: VDN, frames: list[torch.Tensor], tiles: list[Tile], device: torch.device) -> list[_Encoded]:
    batch = torch.stack(frames).to(device)
    per_tile = [model.encode(tile.crop(batch)) for tile in tiles]
    return [_Encoded(batch[i], [features[i] for features in per_tile]) for i in range(len(frames))]


@torch.inference_mode()
def _restore(model: VDN, cache: dict[int, _Encoded], windows: list[list[int]], tiles: list[Tile]) -> torch.Tensor:
    """Centre frames (B, 3, H, W) of the given windows of frame indices."""
    centre = len(windows[0]) // 2
    frames = torch.stack([cache[window[centre]].frame for window in windows])
    # restore(frame_index=centre) reads only the centre frame of the clip, so a broadcast view suffices
    clip = frames.unsqueeze(1).expand(-1, len(windows[0]), -1, -1, -1)
    output = torch.zeros_like(frames)
    weight_sum = torch.zeros_like(frames[0, :1])
    for t, tile in enumerate(tiles):
        features = torch.stack([torch.stack([cache[i].features[t] for i in window]) for window in windows])
        restored = model.restore(features, tile.crop(clip), frame_index=centre).frames[:, 0]
        weight = tile.weight.to(frames.device)
        tile.crop(output).add_(restored * weight)
        tile.crop(weight_sum).add_(weight)
    return (output / weight_sum).clamp_(0.0, 1.0)


def bounded_plan(height: int, width: int, tile: int, tile_overlap: int, batch_frames: int,
                 max_pixels: int) -> tuple[list[Tile], int]:
    """Tiles and frames per model call such that one call sees at most ``max_pixels`` pixels.

    Activation memory grows with the pixels of one call (frames x tile area), so this bounds it
    at any resolution: the batch shrinks first; a whole frame larger than the budget is tiled
    (announced with a warning, since tiles blend across their overlaps).
    """
    if tile == 0 and height * width > max_pixels:
        tile = max(MIN_TILE, math.isqrt(max_pixels) // MIN_TILE * MIN_TILE)
        log.warning("a %dx%d frame exceeds inference.max_batch_pixels=%d: desnowing in %d-pixel tiles",
                    width, height, max_pixels, tile)
    tiles = plan_tiles(height, width, tile, tile_overlap)
    area = max(t.height * t.width for t in tiles)
    batch = max(1, min(batch_frames, max_pixels // area))
    if batch < batch_frames:
        log.info("%dx%d frames: %d frame(s) per model call (inference.max_batch_pixels=%d)", width, height, batch,
                 max_pixels)
    return tiles, batch


def _stream(model: VDN, frames: Iterable[torch.Tensor], n_frames: int, device: torch.device, tile: int,
            tile_overlap: int, batch_frames: int, max_pixels: int) -> Iterator[torch.Tensor]:
    """The streaming core on float frames (3, H, W) in [0, 1]; yields restored frames in order."""
    if n_frames < 1 or n_frames % 2 == 0:
        raise ValueError(f"n_frames must be a positive odd number (the window's centre frame), got {n_frames}")
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
    radius = n_frames // 2
    cache: dict[int, _Encoded] = {}
    pending: list[torch.Tensor] = []
    tiles: list[Tile] = []
    total, next_centre = 0, 0

    def restore_until(limit: int) -> Iterator[torch.Tensor]:
        nonlocal next_centre
        while next_centre < limit:
            centres = range(next_centre, min(limit, next_centre + batch_frames))
            windows = [[reflect_index(c + offset, total) for offset in range(-radius, radius + 1)] for c in centres]
            yield from _restore(model, cache, windows, tiles)
            next_centre = centres[-1] + 1
            for index in [i for i in cache if i < next_centre - radius]:
                del cache[index]

    def encode_pending() -> None:
        nonlocal total
        for offset, encoded in enumerate(_encode(model, pending, tiles, device)):
            cache[total + offset] = encoded
        total += len(pending)
        pending.clear()

    first_shape: torch.Size | None = None
    for frame in frames:
        if first_shape is None:
            first_shape = frame.shape
            tiles, batch_frames = bounded_plan(frame.shape[-2], frame.shape[-1], tile, tile_overlap, batch_frames,
                                               max_pixels)
        elif frame.shape != first_shape:
            raise ValueError(f"frame {total + len(pending)} has shape {tuple(frame.shape)}, "
                             f"expected {tuple(first_shape)} like the first frame")
        pending.append(frame)
        if len(pending) == batch_frames:
            encode_pending()
            yield from restore_until(total - radius)  # windows that need no frame beyond the last one read
    if pending:
        encode_pending()
    yield from restore_until(total)  # the rest, reflected at the now known end


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _in_eval_mode(model: VDN, stream: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Run ``stream`` with the model in eval mode, restoring its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield from stream
    finally:
        model.train(was_training)


def desnow_frames(model: VDN, frames: Iterable[np.ndarray], *, n_frames: int, device: str = "cpu", tile: int = 0,
                  tile_overlap: int = 16, batch_frames: int = 8, max_pixels: int = DEFAULT_MAX_PIXELS,
                  frame_gates: torch.Tensor | None = None) -> Iterator[np.ndarray]:
    """Desnow a stream of RGB uint8 frames (H, W, 3); yields as many restored frames, in order.

    Up to ``batch_frames`` frames are encoded, and as many windows restored, per model call,
    within ``max_pixels`` pixels per call (:func:`bounded_plan`). ``frame_gates`` (one per frame, from
    :func:`semivdn.snow_gate.gates`) give each frame that share of the network's change; the
    inputs a restored frame still needs are held until it is out.
    """
    target = resolve_device(device)
    model.to(target)
    held: deque[np.ndarray] = deque()

    def tensors() -> Iterator[torch.Tensor]:
        for frame in frames:
            frame = np.asarray(frame)
            if frame_gates is not None:
                held.append(frame)
            yield to_tensor(frame)

    stream = _stream(model, tensors(), n_frames, target, tile, tile_overlap, batch_frames, max_pixels)
    for index, restored in enumerate(_in_eval_mode(model, stream)):
        if frame_gates is None:
            yield to_uint8(restored)
            continue
        if index >= len(frame_gates):
            raise ValueError(f"desnow_frames: {len(frame_gates)} gates for a stream of more frames")
        restored_rgb = restored.detach().clamp(0, 1).mul(255.0).permute(1, 2, 0).cpu()
        blended = apply_gate(torch.from_numpy(held.popleft()).float(), restored_rgb, float(frame_gates[index]))
        yield blended.round().clamp(0, 255).byte().numpy()


def desnow_clip(model: VDN, clip: torch.Tensor, n_frames: int, snow_gate: SnowGate | None = None) -> torch.Tensor:
    """Desnow a whole clip (T, 3, H, W) in [0, 1] on the model's device; the result is clamped to [0, 1].

    With an enabled ``snow_gate`` each frame gets only the share of the network's change that
    the clip's snow supports (:mod:`semivdn.snow_gate`); without, the network's output as is.
    """
    if clip.ndim != 4 or clip.shape[1] != 3:
        raise ValueError(f"desnow_clip expects a clip of shape (T, 3, H, W), got {tuple(clip.shape)}")
    device = _model_device(model)
    stream = _stream(model, iter(clip), n_frames, device, tile=0, tile_overlap=0, batch_frames=8,
                     max_pixels=DEFAULT_MAX_PIXELS)
    restored = torch.stack(list(_in_eval_mode(model, stream))).to(clip.device)
    if snow_gate is None or not snow_gate.enabled:
        return restored
    return apply_gate(clip, restored, clip_gates(clip, snow_gate))


def _check_args(source: Path, target: Path, tile: int, tile_overlap: int, overwrite: bool) -> None:
    """Every argument check, before the model loads or anything is written."""
    if not source.exists():
        raise FileNotFoundError(f"input {source}: no such video file or frame folder")
    if target.suffix and target.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"output {target}: unsupported suffix {target.suffix!r}; use a video file "
                         f"({', '.join(sorted(VIDEO_SUFFIXES))}) or a folder path without a suffix")
    if target.exists() and (target.resolve() == source.resolve() or source.samefile(target)):
        raise ValueError(f"output {target} is the input (same file or a link to it); choose another output path")
    if tile != 0 and tile < MIN_TILE:
        raise ValueError(f"--tile {tile}: must be 0 (whole frames) or at least {MIN_TILE} pixels")
    if tile and not 0 <= tile_overlap < tile // 2:
        raise ValueError(f"inference.tile_overlap {tile_overlap} must lie in [0, tile/2) for --tile {tile}")
    if target.exists() and not overwrite and not (target.is_dir() and not any(target.iterdir())):
        raise FileExistsError(f"output {target} already exists; choose a new path or pass --overwrite")


def desnow_video(cfg: Config, input: str, output: str, model_ref: str, device: str = "cpu", tile: int = 0,
                 compare: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Desnow a video file or frame folder into a video file or frame folder at the same fps.

    ``compare`` writes input | output side by side. The output is written beside the target and
    renamed into place only when every frame is written (and the input decoded to its declared
    end), so a failure leaves no output. A video output keeps the input's soundtrack as it was.
    Returns a summary (frames, fps, seconds, codec, audio streams kept, output).
    """
    source, target = Path(input), Path(output)
    _check_args(source, target, tile, cfg.inference.tile_overlap, overwrite)
    resolve_device(device)
    model, meta = load_model_ref(model_ref, cfg)
    members = f", an ensemble of {len(meta['members'])} networks" if meta.get("members") else ""
    log.info("desnowing %s with %s (%s%s, checkpoint %s) on %s", source, model_ref,
             meta.get("variant", "unknown variant"), members, meta["checkpoint_sha256"][:12], device)
    known_total = len(list_frame_files(source)) if source.is_dir() else None
    frame_gates = _video_gates(source, cfg.inference.snow_gate, known_total)
    held_inputs: deque[np.ndarray] = deque()

    def remember(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            if compare:
                held_inputs.append(frame)
            yield frame

    count, start = 0, time.perf_counter()
    with atomic_output(target, overwrite) as partial:
        with FrameReader(source) as reader, FrameWriter(partial, fps=reader.fps) as writer, \
                tqdm(total=known_total, unit="frame", desc=f"desnow {source.name}") as progress:
            restored_frames = desnow_frames(model, remember(reader), n_frames=cfg.data.frames_per_clip,
                                            device=device, tile=tile, tile_overlap=cfg.inference.tile_overlap,
                                            batch_frames=cfg.inference.batch_frames,
                                            max_pixels=cfg.inference.max_batch_pixels, frame_gates=frame_gates)
            for restored in restored_frames:
                writer.write(np.concatenate([held_inputs.popleft(), restored], axis=1) if compare else restored)
                count += 1
                progress.update()
            fps, codec = reader.fps, writer.codec
        if count == 0:
            raise ValueError(f"input {source}: no frames to desnow")
        audio = _keep_audio(source, Path(partial))
    seconds = time.perf_counter() - start
    return {"input": str(source), "output": str(target), "frames": count, "fps": fps, "seconds": round(seconds, 3),
            "frames_per_second": round(count / seconds, 3), "model": model_ref,
            "checkpoint_sha256": meta["checkpoint_sha256"], "device": device, "tile": tile, "codec": codec,
            "compare": compare, "audio": audio,
            "snow_gate_mean": None if frame_gates is None else round(float(frame_gates.mean()), 3)}


def _keep_audio(source: Path, partial: Path) -> list[str]:
    """The input's soundtrack in the output video (a frame folder cannot hold one: a warning says it is left out)."""
    if partial.is_dir():
        if dropped := audio_streams(source):
            log.warning("%s: a frame folder holds no sound; its audio (%s) is not kept (write a video file to keep "
                        "it)", source, ", ".join(dropped))
        return []
    return copy_audio(source, partial)


def _video_gates(source: Path, params: SnowGate, known_total: int | None) -> torch.Tensor | None:
    """A first pass over the video: the snow gate of every frame (None when the gate is off)."""
    if not params.enabled:
        return None
    with FrameReader(source) as reader:
        frames = (to_tensor(frame) for frame in tqdm(reader, total=known_total, unit="frame",
                                                     desc=f"snow evidence {source.name}"))
        frame_gates = stream_gates(frames, params)
    if len(frame_gates) == 0:
        raise ValueError(f"input {source}: no frames to desnow")
    mean = float(frame_gates.mean())
    log.info("snow gate: mean %.2f over %d frames (0: the input kept, 1: the network's output)", mean,
             len(frame_gates))
    if mean < LOW_GATE:
        log.warning("snow gate: %s shows little falling snow brighter than what is behind it, so most of it is kept "
                    "as it was (mean gate %.2f); if it is snowy (grey flakes against a bright sky read as no snow), "
                    "desnow it with --no-snow-gate", source, mean)
    return frame_gates
