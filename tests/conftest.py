"""Shared fixtures: the smoke config and a tiny curated dataset written by hand.

The dataset is built without the synthesizer or curation so that training,
inference and evaluation tests exercise their own code only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from semivdn.config import Config, load_config
from semivdn.data.video import FrameWriter

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(autouse=True)
def _seeded_torch() -> None:
    """Every test starts from the same global torch RNG, so a random input cannot make a run flaky."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smoke_cfg() -> Config:
    return load_config(PARAMS, "smoke")


def _clip(rng: np.random.Generator, frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A panning gradient scene and a snowy version with haze and moving white dots."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase = rng.uniform(0, 6)
    clean = np.stack([np.stack([0.5 + 0.4 * np.sin(6 * x + phase + 0.2 * t), y, 0.5 * (x + y)], -1)
                      for t in range(frames)])
    snowy = clean * 0.8 + 0.2 * 0.9
    for _ in range(12):
        r, c, v = rng.integers(0, size), rng.integers(0, size), rng.integers(1, 3)
        for t in range(frames):
            snowy[t, (r + v * t) % size, c] = 1.0
    return (clean * 255).astype(np.uint8), (np.clip(snowy, 0, 1) * 255).astype(np.uint8)


def write_tiny_dataset(root: Path, size: int = 48, frames: int = 6, seed: int = 0) -> tuple[Path, Path]:
    """Raw paired/real clips plus a curated manifest.parquet; returns (raw, curated).

    The real test clip's clean frames are kept aside in ``root/truth`` (fixture ``tiny_truth``), as
    ``semivdn data make`` does for the proxy-real set.
    """
    rng = np.random.default_rng(seed)
    raw, curated = root / "raw", root / "curated"
    rows = []
    for source, split, count in (("paired", "train", 2), ("paired", "val", 1), ("paired", "test", 1),
                                 ("real", "train", 2), ("real", "test", 1)):
        for index in range(count):
            clean, snowy = _clip(rng, frames, size)
            name = f"clip_{index:03d}"
            if source == "paired":
                snowy_rel, clean_rel = f"paired/{split}/snowy/{name}", f"paired/{split}/clean/{name}"
                pairs = ((snowy_rel, snowy), (clean_rel, clean))
            else:
                snowy_rel, clean_rel = f"real/{split}/{name}", None
                pairs = ((snowy_rel, snowy),)
                if split != "train":
                    pairs += ((f"../truth/{split}/{name}", clean),)
            for rel, array in pairs:
                with FrameWriter(raw / rel) as writer:
                    for frame in array:
                        writer.write(frame)
            rows.append({"clip_id": f"{source}/{split}/{name}", "source": source, "split": split, "clip": name,
                         "snowy_path": snowy_rel, "clean_path": clean_rel, "frames": frames, "height": size,
                         "width": size, "fps": 25.0, "content_hash": f"{source}{split}{index}", "brightness": 0.5,
                         "snow_fraction": 0.01, "input_psnr": float("nan"), "notes": ""})
    curated.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(curated / "manifest.parquet")
    return raw, curated


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_truth(tiny_data: tuple[Path, Path]) -> Path:
    """Where :func:`write_tiny_dataset` keeps the real clips' clean frames: beside, not inside, the raw folder."""
    return tiny_data[0].parent / "truth"
