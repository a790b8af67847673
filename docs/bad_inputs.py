"""Run each class of bad input through the real ``semivdn`` CLI and write the table of what the user sees.

    python docs/bad_inputs.py            # rewrites docs/bad-inputs.md

Every row is produced by running the command in a fresh interpreter in a scratch folder
(``$TMP`` in the table), so the table states today's behaviour, not an intention: the
exit code, the one ``semivdn:`` line on stderr, and whether an output was left behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from safetensors.torch import save_file

from semivdn.config import Model
from semivdn.models import create_model, save_checkpoint
from semivdn.models.checkpoint import FORMAT, FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "bad-inputs.md"
TINY = Model(dim=16, heads=2, decoder_channels=8, sr_ratio=2)
PARAMS = ("--params", str(ROOT / "params.yaml"), "--profile", "smoke")


@dataclass(frozen=True)
class Case:
    """One input class: ``setup`` prepares the scratch folder and returns the CLI arguments."""

    name: str
    setup: Callable[[Path], list[str]]
    output: str | None = None  # the output path (relative to the scratch folder) that must not be left behind
    interrupt: bool = False  # send SIGINT once the partial output exists


def _video(path: Path, count: int = 6, size: int = 32, faststart: bool = False) -> Path:
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"} if faststart else {}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(count):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(folder / "model.safetensors", create_model(TINY), TINY, {"variant": "M2"})


def _desnow(folder: Path, source: Path | str, output: str, *extra: str, model: Path | str | None = None) -> list[str]:
    return ["desnow", str(source), "-o", str(folder / output), "--model", str(model or _checkpoint(folder)),
            *PARAMS, *extra]


def _params(folder: Path, text: str) -> list[str]:
    (folder / "params.yaml").write_text(text)
    return ["desnow", str(_video(folder / "in.mp4")), "-o", str(folder / "out.mp4"), "--model",
            str(_checkpoint(folder)), "--params", str(folder / "params.yaml")]


def _with_base(extra: str) -> str:
    return (ROOT / "params.yaml").read_text() + extra


def _crafted(folder: Path) -> Path:
    huge = dataclasses.asdict(dataclasses.replace(TINY, dim=4096, decoder_channels=4096))
    path = folder / "crafted.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                                          "model_config": json.dumps(huge), "meta": "{}"})
    return path


def _hard_link(folder: Path) -> list[str]:
    source = _video(folder / "in.mp4")
    os.link(source, folder / "out.mp4")
    return _desnow(folder, source, "out.mp4", "--overwrite")


def _stale_folder(folder: Path) -> list[str]:
    (folder / "out").mkdir()
    (folder / "out" / "00000.png").write_bytes(b"an old frame")
    return _desnow(folder, _video(folder / "in.mp4"), "out")


def _parent_is_file(folder: Path) -> list[str]:
    (folder / "file").write_text("a file")
    return _desnow(folder, _video(folder / "in.mp4"), "file/out.mp4")


def _truncated(folder: Path) -> list[str]:
    whole = _video(folder / "whole.mp4", count=40, faststart=True)
    (folder / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return _desnow(folder, folder / "cut.mp4", "out.mp4")


def _garbage_state(folder: Path) -> list[str]:
    (folder / "run").mkdir()
    (folder / "run" / "last.ckpt").write_bytes(b"garbage" * 100)
    return ["train", "--variant", "M2", "--out", str(folder / "run"), "--resume", "--raw", str(folder / "raw"),
            "--curated", str(folder / "curated"), *PARAMS]


def _foreign_eval(folder: Path) -> list[str]:
    (folder / "eval").mkdir()
    (folder / "eval" / "summary.json").write_text(json.dumps({"psnr": 40.0, "checkpoint_sha256": "0" * 64}))
    return ["register", "--model", str(_checkpoint(folder)), "--variant", "M2", "--eval", str(folder / "eval"),
            *PARAMS]


def _not_a_video(folder: Path) -> list[str]:
    (folder / "notes.txt").write_text("hi")
    return _desnow(folder, folder / "notes.txt", "out.mp4")


def _zero_bytes(folder: Path) -> list[str]:
    (folder / "empty.mp4").touch()
    return _desnow(folder, folder / "empty.mp4", "out.mp4")


def _garbage_checkpoint(folder: Path) -> list[str]:
    (folder / "bad.safetensors").write_bytes(b"\x00" * 64)
    return _desnow(folder, _video(folder / "in.mp4"), "out.mp4", model=folder / "bad.safetensors")


def _long_video(folder: Path) -> list[str]:
    return _desnow(folder, _video(folder / "in.mp4", count=400, size=64), "out.mp4")


CASES = [
    Case("params file missing", lambda f: ["desnow", "x.mp4", "-o", "y.mp4", "--params", str(f / "absent.yaml")]),
    Case("params: YAML syntax error", lambda f: _params(f, "train:\n  lr: [1,\n")),
    Case("params: a section repeated", lambda f: _params(f, _with_base("\ntrain:\n  iters: 5\n"))),
    Case("params: empty file", lambda f: _params(f, "")),
    Case("params: non-finite number (`lr: .inf`)", lambda f: _params(f, _with_base("").replace(
        "lr: 4.0e-4", "lr: .inf", 1))),
    Case("params: unknown key", lambda f: _params(f, _with_base("").replace("\ntrain:", "\ntrain:\n  lrr: 1.0", 1))),
    Case("input missing", lambda f: _desnow(f, f / "absent.mp4", "out.mp4"), "out.mp4"),
    Case("input not a video", _not_a_video, "out.mp4"),
    Case("input zero-byte video", _zero_bytes, "out.mp4"),
    Case("input truncated (faststart mp4 cut in half)", _truncated, "out.mp4"),
    Case("output with an unsupported suffix", lambda f: _desnow(f, _video(f / "in.mp4"), "out.txt"), "out.txt"),
    Case("output's parent is a file", _parent_is_file),
    Case("output folder not empty, no --overwrite", _stale_folder),
    Case("output is a hard link to the input", _hard_link),
    Case("`--tile -1`", lambda f: _desnow(f, _video(f / "in.mp4"), "out", "--tile", "-1"), "out"),
    Case("checkpoint missing", lambda f: _desnow(f, _video(f / "in.mp4"), "out.mp4", model=f / "absent.safetensors"),
         "out.mp4"),
    Case("checkpoint is garbage", _garbage_checkpoint, "out.mp4"),
    Case("checkpoint header names a huge model (a file of a few hundred bytes)", lambda f: _desnow(
        f, _video(f / "in.mp4"), "out.mp4", model=_crafted(f)), "out.mp4"),
    Case("`models:/` alias that does not exist", lambda f: _desnow(
        f, _video(f / "in.mp4"), "out.mp4", model="models:/semivdn@nope"), "out.mp4"),
    Case("`train --resume` on a garbage `last.ckpt`", _garbage_state),
    Case("`register --eval` of another checkpoint's evaluation", _foreign_eval),
    Case("Ctrl-C while desnowing", _long_video, "out.mp4", interrupt=True),
]


def _run(case: Case, folder: Path) -> tuple[int, str]:
    argv = case.setup(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlruns.db'}"}
    command = [sys.executable, "-m", "semivdn.cli", *argv]
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    if case.interrupt:
        deadline = time.monotonic() + 300
        while not list(folder.glob(".*.partial-*")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    lines = [line for line in err.splitlines() if line.startswith("semivdn:")]
    shown = lines[-1] if lines else ("(a traceback)" if "Traceback" in err else err.strip().splitlines()[-1])
    return process.returncode, shown.replace(str(folder), "$TMP")


def main() -> int:
    rows = ["| Input class | Exit code | What the user sees (stderr) | Output left behind |", "|---|---|---|---|"]
    for case in CASES:
        with tempfile.TemporaryDirectory(prefix="bad-input-") as tmp:
            folder = Path(tmp)
            code, shown = _run(case, folder)
            leftovers = sorted(p.name for p in folder.glob(".*.partial-*"))
            if case.output and (folder / case.output).exists():
                leftovers.append(case.output)
        left = ", ".join(leftovers) or "none"
        rows.append(f"| {case.name} | {code} | `{shown.replace('|', '/')}` | {left} |")
        print(rows[-1], flush=True)
    TABLE.write_text("# What `semivdn` does with bad input\n\n"
                     "Generated by `python docs/bad_inputs.py`, which runs every row through the real CLI; do not "
                     "edit by hand.\nExit codes: 1 failed, 2 invalid params or arguments, 130 interrupted. "
                     "Outputs are written beside the target and renamed into place only when complete.\n\n"
                     + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
