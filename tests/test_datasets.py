"""Window datasets: shapes, pairing, determinism under (seed, iteration), DDP slicing, errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from semivdn.data.datasets import (
    IterationBatchSampler,
    WindowDataset,
    clip_refs,
    load_manifest,
    read_frames,
    window_loader,
)
from semivdn.data.video import FrameWriter


def _write_clip(folder: Path, frames: int, offset: int) -> None:
    with FrameWriter(folder) as writer:
        for t in range(frames):
            writer.write(np.full((40, 36, 3), (offset + t) % 256, np.uint8))


@pytest.fixture()
def raw(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    rows = []
    for c, frames in enumerate((5, 7)):
        for kind, offset in (("snowy", 100), ("clean", 0)):
            _write_clip(tmp_path / "paired" / "train" / kind / f"clip_{c}", frames, offset + 10 * c)
        rows.append({"clip_id": f"paired/train/clip_{c}", "source": "paired", "split": "train",
                     "snowy_path": f"paired/train/snowy/clip_{c}", "clean_path": f"paired/train/clean/clip_{c}",
                     "frames": frames, "content_hash": str(c)})
    _write_clip(tmp_path / "real" / "train" / "r0", 4, 50)
    rows.append({"clip_id": "real/train/r0", "source": "real", "split": "train", "snowy_path": "real/train/r0",
                 "clean_path": None, "frames": 4, "content_hash": "r"})
    return tmp_path, pd.DataFrame(rows)


def test_windows_cover_every_start_and_pair_frames(raw: tuple[Path, pd.DataFrame]) -> None:
    root, manifest = raw
    clips = clip_refs(manifest, root, "paired", "train")
    dataset = WindowDataset(clips, n_frames=3, crop=16, flip=True, paired=True)
    assert len(dataset) == (5 - 2) + (7 - 2)
    item = dataset[(4, 123)]  # clip_1, start 1
    assert item["snowy"].shape == item["clean"].shape == (3, 3, 16, 16)
    # the same crop on both: snowy is clean + 100 levels everywhere in these clips
    assert torch.allclose(item["snowy"] - item["clean"], torch.full_like(item["snowy"], 100 / 255), atol=1e-6)
    # consecutive frames of the window
    assert torch.allclose(item["clean"][:, 0, 0, 0] * 255, torch.tensor([11.0, 12.0, 13.0]))


def test_same_seed_same_samples_and_resume_offsets(raw: tuple[Path, pd.DataFrame]) -> None:
    root, manifest = raw
    dataset = WindowDataset(clip_refs(manifest, root, "paired", "train"), 3, 16, True, paired=True)
    full = [b["snowy"] for b in window_loader(dataset, 2, seed=3, start=0, stop=6)]
    resumed = [b["snowy"] for b in window_loader(dataset, 2, seed=3, start=4, stop=6)]
    assert all(torch.equal(a, b) for a, b in zip(full[4:], resumed, strict=True))
    other = [b["snowy"] for b in window_loader(dataset, 2, seed=4, start=0, stop=6)]
    assert not all(torch.equal(a, b) for a, b in zip(full, other, strict=True))


def test_every_kth_iteration_gets_the_batch_it_would_get_alone() -> None:
    every_step = list(IterationBatchSampler(100, 2, seed=0, start=3, stop=9))
    every_second = list(IterationBatchSampler(100, 2, seed=0, start=3, stop=9, every=2))
    assert every_second == [every_step[i - 3] for i in (4, 6, 8)]
    assert len(IterationBatchSampler(100, 2, seed=0, start=4, stop=9, every=2)) == 3
    with pytest.raises(ValueError, match="every"):
        IterationBatchSampler(100, 2, seed=0, start=0, stop=9, every=0)


def test_ranks_split_one_global_batch() -> None:
    single = IterationBatchSampler(100, 4, seed=0, start=0, stop=3)
    ranks = [IterationBatchSampler(100, 2, seed=0, start=0, stop=3, rank=r, world=2) for r in range(2)]
    for whole, first, second in zip(single, *ranks, strict=True):
        assert whole == first + second


def test_unpaired_and_manifest_errors(raw: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, manifest = raw
    real = WindowDataset(clip_refs(manifest, root, "real", "train"), 3, 16, False, paired=False)
    assert set(real[(0, 0)]) == {"snowy"} and len(real) == 2
    with pytest.raises(ValueError, match="fewer than N_f"):
        WindowDataset(clip_refs(manifest, root, "real", "train"), 5, 16, False, paired=False)
    with pytest.raises(ValueError, match="no clips"):
        WindowDataset(clip_refs(manifest, root, "paired", "test"), 3, 16, False, paired=True)
    with pytest.raises(ValueError, match="smaller than the crop"):
        WindowDataset(clip_refs(manifest, root, "real", "train"), 3, 64, False, paired=False)[(0, 0)]
    with pytest.raises(FileNotFoundError, match="semivdn data curate"):
        load_manifest(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="expected frames"):
        read_frames(root / "real" / "train" / "r0", 3, 3)
