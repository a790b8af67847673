"""Streaming video IO: video files through PyAV and folders of image frames.

Frames are RGB ``uint8`` arrays of shape (H, W, 3) on the way in and out;
:func:`to_tensor` / :func:`to_uint8` convert to float tensors in [0, 1].
Readers yield one frame at a time so memory does not grow with video length.
Grayscale, RGBA and 16-bit frames are converted to 8-bit RGB and rotated video is turned
upright; a reader records what it converted in :attr:`FrameReader.conversions` so curation
can note it.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
DEFAULT_FOLDER_FPS = 25.0
PREFERRED_CODEC = "libx264"
FALLBACK_CODEC = "mpeg4"

log = logging.getLogger(__name__)


class VideoError(RuntimeError):
    """A video or frame folder that cannot be read or written, with the reason."""


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    height: int
    width: int
    fps: float


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural (name) order."""
    if not folder.is_dir():
        raise VideoError(f"{folder}: not a folder of frames")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def to_rgb8(array: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Convert grayscale / RGBA / 16-bit / float pixels to RGB uint8; say what was converted."""
    notes = []
    if array.dtype == np.uint16:
        array = (array.astype(np.uint32) * 255 + 32767) // 65535
        notes.append("16-bit")
    elif array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = np.clip(array, 0.0, 1.0) * 255.0 + 0.5
        notes.append(f"dtype {array.dtype}")
    array = array.astype(np.uint8, copy=False)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
        notes.append("grayscale")
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
        notes.append("RGBA")
    elif array.ndim == 3 and array.shape[2] == 2:
        array = np.repeat(array[:, :, :1], 3, axis=2)
        notes.append("grayscale+alpha")
    elif array.ndim != 3 or array.shape[2] != 3:
        raise VideoError(f"unsupported frame shape {array.shape}")
    return np.ascontiguousarray(array), ("+".join(notes) if notes else None)


def read_image(path: Path) -> tuple[np.ndarray, str | None]:
    """One image file as RGB uint8 plus a note of any conversion."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.array(image).astype(np.uint16)
            elif image.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                array = np.array(image.convert("RGB"))
            else:
                array = np.array(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise VideoError(f"{path}: unreadable image ({exc})") from exc
    return to_rgb8(array)


class FrameReader:
    """Iterate the frames of a video file or frame folder, one at a time.

    Use as a context manager (``with FrameReader(path) as reader: for f in reader``)
    so the container is closed even on error.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conversions: set[str] = set()
        self._container: av.container.InputContainer | None = None
        if self.path.is_dir():
            self._files = list_frame_files(self.path)
            self.fps = DEFAULT_FOLDER_FPS
        elif is_video_file(self.path):
            if self.path.stat().st_size == 0:
                raise VideoError(f"{self.path}: zero-byte video file")
            try:
                self._container = av.open(str(self.path))
                stream = self._container.streams.video[0]
            except (av.error.FFmpegError, IndexError) as exc:
                self.close()
                raise VideoError(f"{self.path}: cannot open video ({exc})") from exc
            self.fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FOLDER_FPS)
        elif self.path.exists():
            raise VideoError(f"{self.path}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or a frame folder")
        else:
            raise VideoError(f"{self.path}: no such file or folder")

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._container is None:
            for file in self._files:
                frame, note = read_image(file)
                if note:
                    self.conversions.add(note)
                yield frame
            return
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        declared, decoded = stream.frames, 0
        try:
            for frame in self._container.decode(stream):
                decoded += 1
                yield self._upright(frame)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: truncated or corrupt video ({exc})") from exc
        if declared and decoded < declared:  # e.g. a faststart mp4 cut short: its index outlives the data
            raise VideoError(f"{self.path}: truncated video: decoded {decoded} of the {declared} frames its "
                             "container declares")

    def _upright(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as players show it: phones store sensor-landscape pixels and a rotation in the container.

        ``frame.rotation`` is the display matrix's counter-clockwise angle; turning the pixels by it
        gives the network snow that falls down, and an output that plays the way the input did
        (it is written upright, without a rotation of its own).
        """
        pixels = frame.to_ndarray(format="rgb24")
        turns = round(frame.rotation / 90) % 4
        if not turns:
            return pixels
        self.conversions.add(f"rotated {90 * turns}° counter-clockwise to display orientation")
        return np.ascontiguousarray(np.rot90(pixels, turns))


def probe(path: str | Path) -> VideoInfo:
    """Frame count, size and fps, decoding frame by frame (container counts can lie)."""
    count, height, width = 0, 0, 0
    with FrameReader(path) as reader:
        for frame in reader:
            if count == 0:
                height, width = frame.shape[:2]
            count += 1
        fps = reader.fps
    if count == 0:
        raise VideoError(f"{path}: no frames")
    return VideoInfo(frames=count, height=height, width=width, fps=fps)


def count_frames(path: str | Path) -> int:
    """Number of decodable frames; streams, so memory stays flat for any length."""
    if Path(path).is_dir():
        return len(list_frame_files(Path(path)))
    count = 0
    with FrameReader(path) as reader:
        for _ in reader:
            count += 1
    return count


class FrameWriter:
    """Write RGB uint8 frames to a video file (by suffix) or a frame folder (no suffix).

    Video uses H.264 (``libx264``) when available, else MPEG-4 part 2 with a warning; the
    codec used is in :attr:`codec` and in the file's ``comment`` tag. Chroma is 4:2:0, the format
    every player takes, unless a side is odd: 4:2:0 cannot hold that, so H.264 goes 4:4:4 (with a
    warning) rather than crop or pad the user's frames. Frame folders get
    zero-padded PNG names. Frame size is taken from the first frame.
    """

    def __init__(self, path: str | Path, fps: float = DEFAULT_FOLDER_FPS, quality: int = 18) -> None:
        self.path = Path(path)
        self.fps = fps
        self.quality = quality
        self.count = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self.is_video = self.path.suffix.lower() in VIDEO_SUFFIXES
        self.codec = (PREFERRED_CODEC if PREFERRED_CODEC in av.codecs_available else FALLBACK_CODEC) \
            if self.is_video else "png"
        if self.path.suffix and not self.is_video and self.path.suffix.lower() not in IMAGE_SUFFIXES:
            raise VideoError(f"{self.path}: unsupported output type; use {sorted(VIDEO_SUFFIXES)} or a folder")
        if self.is_video:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self.path.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_stream(self, height: int, width: int) -> None:
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(self.fps).limit_denominator(1001)
        codec = self.codec
        if codec != PREFERRED_CODEC:  # announced, and recorded in the file, never silent
            log.warning("%s: %s is not available in this FFmpeg build; encoding with %s (lower quality per bit)",
                        self.path, PREFERRED_CODEC, codec)
        self._container.metadata["comment"] = f"semivdn encoder: {codec}"
        stream = self._container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
        if stream.pix_fmt == "yuv444p":
            log.warning("frames of %dx%d have an odd side, which 4:2:0 video cannot hold; encoding H.264 4:4:4 to "
                        "keep every pixel (some players, web browsers among them, do not play it: write a frame "
                        "folder instead, or crop to even sides first)", height, width)
        if codec == PREFERRED_CODEC:
            # mbtree off: this libx264's macroblock-tree rate control gives different bytes (and decoded
            # frames) from run to run for the same input, even single-threaded; without it encoding is repeatable
            stream.options = {"crf": str(self.quality), "preset": "veryfast", "x264-params": "mbtree=0"}
        else:
            stream.bit_rate = max(1_000_000, width * height * 8)
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        frame, _ = to_rgb8(np.asarray(frame))
        if not self.is_video:
            Image.fromarray(frame).save(self.path / f"{self.count:05d}.png")
            self.count += 1
            return
        height, width = frame.shape[:2]
        if self._stream is None:
            if (height % 2 or width % 2) and self.codec != PREFERRED_CODEC:
                raise VideoError(f"{self.path}: {self.codec} video needs even height and width, got {height}x{width}; "
                                 "write a frame folder instead, or crop to even sides first")
            self._open_stream(height, width)
        assert self._container is not None and self._stream is not None
        if (height, width) != (self._stream.height, self._stream.width):
            raise VideoError(f"{self.path}: frame {self.count} is {height}x{width}, "
                             f"expected {self._stream.height}x{self._stream.width}")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self._container is not None:
            assert self._stream is not None
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None


def psnr_db(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of 8-bit frames (T, H, W, 3) against a reference, all channels, peak 255.

    The data-side PSNR (curation's pair check, the generator's difficulty record);
    identical frames give inf. Evaluation scores with pyiqa's (semivdn.eval.metrics).
    """
    if frames.shape != reference.shape:
        raise ValueError(f"PSNR of frames {frames.shape} against a reference of shape {reference.shape}")
    error = (frames.astype(np.float64) - reference.astype(np.float64)) ** 2
    mse = error.reshape(len(frames), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


def to_tensor(frame: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Float (3, H, W) in [0, 1] -> RGB uint8 (H, W, 3), rounding."""
    return tensor.detach().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()


def _describe(stream: av.audio.stream.AudioStream) -> str:
    context = stream.codec_context
    return f"{context.name} {context.sample_rate} Hz {context.layout.name}"


def audio_streams(path: Path) -> list[str]:
    """The audio streams of a video file, described (``aac 44100 Hz stereo``); none for a frame folder."""
    if not is_video_file(path):
        return []
    with av.open(str(path)) as container:
        return [_describe(stream) for stream in container.streams.audio]


def copy_audio(source: Path, video: Path) -> list[str]:
    """Mux every audio stream of ``source`` into ``video`` (rewritten in place), its packets copied as they are.

    Desnowing touches only the pictures, so the soundtrack is the input's own, bit for bit. Audio and
    video packets are merged in timestamp order, so memory stays flat for any length. Returns the
    streams kept (described as by :func:`audio_streams`); if the output's container cannot hold them,
    ``video`` stays as it was, without audio, and a warning says why (never silently).
    """
    if not is_video_file(source):
        return []
    merged = video.with_name(f"{video.stem}.audio{video.suffix}")
    kept: list[str] = []
    try:
        with av.open(str(source)) as src:
            audio = list(src.streams.audio)
            kept = [_describe(stream) for stream in audio]
            if not audio:
                return []
            with av.open(str(video)) as pictures, av.open(str(merged), "w") as out:
                out.metadata.update(pictures.metadata)
                video_in = pictures.streams.video[0]
                targets = {(0, video_in.index): out.add_stream_from_template(video_in)}
                targets.update({(1, stream.index): out.add_stream_from_template(stream) for stream in audio})

                def packets(container: av.container.InputContainer, side: int,
                            streams: list[av.stream.Stream]) -> Iterator[av.Packet]:
                    for packet in container.demux(*streams):
                        if packet.dts is not None:  # demux ends each stream with an empty flush packet
                            packet.stream = targets[(side, packet.stream.index)]
                            yield packet

                for packet in heapq.merge(packets(pictures, 0, [video_in]), packets(src, 1, audio),
                                          key=lambda packet: float(packet.dts * packet.time_base)):
                    out.mux(packet)
    except (av.error.FFmpegError, ValueError) as exc:
        merged.unlink(missing_ok=True)
        log.warning("%s: its audio (%s) could not be copied into a %s file (%s); the output has no sound",
                    source, ", ".join(kept), video.suffix, exc)
        return []
    os.replace(merged, video)
    return kept
