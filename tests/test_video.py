"""Streaming video IO: round trips, conversions, clear errors, flat memory."""

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from semivdn.data.video import (
    FALLBACK_CODEC,
    FrameReader,
    FrameWriter,
    VideoError,
    audio_streams,
    copy_audio,
    count_frames,
    probe,
    psnr_db,
    to_tensor,
    to_uint8,
)


def _frames(count: int, height: int = 32, width: int = 48) -> list[np.ndarray]:
    # smooth content: codecs subsample chroma, so noise would not survive a round trip
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (height + width)], axis=-1)
    return [np.roll(base, shift=i, axis=1).astype(np.uint8) for i in range(count)]


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".avi"])
def test_video_round_trip_keeps_count_fps_and_size(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"clip{suffix}"
    with FrameWriter(path, fps=12) as writer:
        for frame in _frames(7):
            writer.write(frame)
    info = probe(path)
    assert (info.frames, info.height, info.width) == (7, 32, 48)
    assert info.fps == pytest.approx(12, rel=1e-3)
    with FrameReader(path) as reader:
        first = next(iter(reader))
    assert first.dtype == np.uint8 and first.shape == (32, 48, 3)
    # lossy but close
    assert np.abs(first.astype(int) - _frames(1)[0].astype(int)).mean() < 6


def test_frame_folder_round_trip_is_lossless(tmp_path: Path) -> None:
    frames = _frames(4)
    with FrameWriter(tmp_path / "out") as writer:
        for frame in frames:
            writer.write(frame)
    with FrameReader(tmp_path / "out") as reader:
        back = list(reader)
    assert len(back) == 4 and all(np.array_equal(a, b) for a, b in zip(frames, back, strict=True))
    assert count_frames(tmp_path / "out") == 4


@pytest.mark.parametrize(
    ("array", "mode", "note"),
    [
        (np.full((8, 8), 200, np.uint8), "L", "grayscale"),
        (np.full((8, 8, 4), 200, np.uint8), "RGBA", "RGBA"),
        (np.full((8, 8), 65535, np.uint16), "I;16", "16-bit"),
    ],
)
def test_odd_pixel_formats_are_converted_and_noted(tmp_path: Path, array: np.ndarray, mode: str, note: str) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    image = Image.fromarray(array)
    assert image.mode == mode
    image.save(folder / "00000.png")
    with FrameReader(folder) as reader:
        frame = next(iter(reader))
        assert frame.shape == (8, 8, 3) and frame.dtype == np.uint8
        assert note in " ".join(reader.conversions)
    assert frame.max() in (200, 255)


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(VideoError, match="zero-byte"):
        FrameReader(empty)
    with pytest.raises(VideoError, match="no such file"):
        FrameReader(tmp_path / "missing.mp4")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(VideoError, match="not a video"):
        FrameReader(tmp_path / "notes.txt")
    garbage = tmp_path / "bad"
    garbage.mkdir()
    (garbage / "00000.png").write_bytes(b"not an image")
    with pytest.raises(VideoError, match="unreadable image"), FrameReader(garbage) as reader:
        list(reader)


def test_odd_sized_frames_keep_every_pixel_in_h264_444(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = _frames(3, height=31, width=45)
    with caplog.at_level("WARNING"), FrameWriter(tmp_path / "odd.mp4") as writer:
        for frame in frames:
            writer.write(frame)
    assert "odd side" in caplog.text and "4:4:4" in caplog.text
    with FrameReader(tmp_path / "odd.mp4") as reader:
        decoded = list(reader)
    assert len(decoded) == 3 and decoded[0].shape == (31, 45, 3)
    assert np.abs(decoded[1].astype(int) - frames[1]).mean() < 2


@pytest.mark.parametrize(("rotation", "white"), [(-90, (slice(None), slice(-10, None))),
                                                 (90, (slice(None), slice(0, 10))),
                                                 (180, (slice(-10, None), slice(None)))])
def test_a_phone_video_is_read_the_way_players_show_it(tmp_path: Path, rotation: int, white: tuple) -> None:
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:10] = 255  # a white band along the top of the stored pixels
    path = tmp_path / "phone.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(rotation)  # what a phone held upright writes
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        container.mux(stream.encode(None))
    with FrameReader(path) as reader:
        frames = list(reader)
        assert any("rotated" in note for note in reader.conversions)
    expected_shape = (48, 64, 3) if rotation == 180 else (64, 48, 3)
    assert all(frame.shape == expected_shape for frame in frames)
    assert frames[0][white].min() > 200 and frames[0].mean() < 0.4 * 255  # the band moved, nothing else is white
    assert probe(path).height == expected_shape[0]


def test_the_mpeg4_fallback_refuses_odd_sides_with_a_way_out(tmp_path: Path) -> None:
    writer = FrameWriter(tmp_path / "odd.mp4")
    writer.codec = FALLBACK_CODEC
    with pytest.raises(VideoError, match=r"even height and width.*frame folder"):
        writer.write(np.zeros((31, 32, 3), np.uint8))


def test_tensor_conversion_round_trip() -> None:
    frame = _frames(1)[0]
    tensor = to_tensor(frame)
    assert tensor.shape == (3, 32, 48) and float(tensor.max()) <= 1.0
    assert np.array_equal(to_uint8(tensor), frame)


_PEAK_RSS = """
import resource, sys
from semivdn.data.video import count_frames
n = count_frames(sys.argv[1])
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _count_in_subprocess(path: Path) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path)], capture_output=True, text=True, check=True)
    frames, rss_kb = out.stdout.split()
    return int(frames), int(rss_kb)


def test_counting_a_10000_frame_video_keeps_memory_flat(tmp_path: Path) -> None:
    lengths = {1_000: tmp_path / "short.mp4", 10_000: tmp_path / "long.mp4"}
    frame = np.zeros((64, 64, 3), np.uint8)
    for length, path in lengths.items():
        with FrameWriter(path, fps=25) as writer:
            for i in range(length):
                frame[:] = i % 251
                writer.write(frame)
    (short_n, short_rss), (long_n, long_rss) = (_count_in_subprocess(p) for p in lengths.values())
    assert (short_n, long_n) == (1_000, 10_000)
    # ten times the frames, (almost) the same peak: streaming, not accumulating
    assert long_rss < short_rss * 1.1, (short_rss, long_rss)


def test_psnr_db_known_values_identity_and_shape_check() -> None:
    reference = np.zeros((2, 4, 4, 3), np.uint8)
    frames = reference.copy()
    frames[0] = 16  # mse 256: 10 log10(255² / 256) dB
    scores = psnr_db(frames, reference)
    assert scores[0] == pytest.approx(10 * np.log10(255.0**2 / 256), abs=1e-9)
    assert scores[1] == np.inf
    with pytest.raises(ValueError, match="shape"):
        psnr_db(frames[:, :2], reference)


def test_writing_the_same_real_clip_twice_gives_the_same_video(tmp_path: Path) -> None:
    """`data make` must be repeatable: libx264's mbtree rate control gave different bytes (and frames) for the
    same input from one encode to the next, most often on busy clips such as this filmed-snow one."""
    from semivdn.config import RealSnowParams
    from semivdn.data.realsnow import film_snow
    from semivdn.data.scenes import render_clean_clip

    clean = render_clean_clip("motorcycle", 10, 160, 160, np.random.default_rng(0))
    snowy = film_snow(clean, RealSnowParams(), fps=12, seed=0).snowy
    encoded = set()
    for i in range(8):
        with FrameWriter(tmp_path / f"clip_{i}.mp4", fps=12) as writer:
            for frame in snowy:
                writer.write(frame)
        encoded.add((tmp_path / f"clip_{i}.mp4").read_bytes())
    assert len(encoded) == 1, f"{len(encoded)} different encodings of one clip"


def test_audio_a_container_cannot_hold_leaves_the_video_silent_and_says_so(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "in.mkv"
    with av.open(str(source), mode="w") as container:  # Opus sound, which AVI cannot carry
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("libopus", rate=48000)
        audio.layout = "mono"
        for frame in _frames(3, 32, 32):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        for start in range(0, 9600, 960):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, start
            container.mux(audio.encode(chunk))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    assert audio_streams(source) == ["opus 48000 Hz mono"]
    with FrameWriter(tmp_path / "out.avi", fps=10) as writer:
        for frame in _frames(3, 32, 32):
            writer.write(frame)
    with caplog.at_level("WARNING"):
        assert copy_audio(source, tmp_path / "out.avi") == []
    assert "opus 48000 Hz mono" in caplog.text and "no sound" in caplog.text
    assert probe(tmp_path / "out.avi").frames == 3 and audio_streams(tmp_path / "out.avi") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.avi"]  # no half-written merge left

