"""Paired and unpaired clip datasets over the curated manifest.

Training samples are random N_f-frame windows with a random crop and flip. All
randomness is a pure function of ``(seed, iteration)``: the batch sampler draws
the clips/windows and an augmentation seed per sample from that pair, so a run
resumed at iteration ``i`` sees exactly the batches an uninterrupted run would,
with any number of workers, and DDP ranks take disjoint slices of one global
batch (the same samples as one process with the whole batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from semivdn.data.video import FrameReader, list_frame_files, read_image, to_tensor

MANIFEST = "manifest.parquet"


@dataclass(frozen=True)
class ClipRef:
    """One curated clip: its id, snowy source, optional clean source and length."""

    clip_id: str
    snowy: Path
    clean: Path | None
    frames: int


def load_manifest(curated: Path) -> pd.DataFrame:
    path = Path(curated) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no curated manifest; run `semivdn data curate` first")
    return pd.read_parquet(path)


def clip_refs(manifest: pd.DataFrame, raw_root: Path, source: str, split: str) -> list[ClipRef]:
    """The manifest's clips of one source (paired/real) and split, sorted by id."""
    rows = manifest[(manifest["source"] == source) & (manifest["split"] == split)].sort_values("clip_id")
    return [
        ClipRef(
            clip_id=row.clip_id,
            snowy=Path(raw_root) / row.snowy_path,
            clean=Path(raw_root) / row.clean_path if isinstance(row.clean_path, str) and row.clean_path else None,
            frames=int(row.frames),
        )
        for row in rows.itertuples()
    ]


def read_frames(source: Path, start: int, count: int) -> torch.Tensor:
    """Frames ``start .. start+count-1`` of a frame folder or video as (count, 3, H, W) in [0, 1]."""
    if source.is_dir():
        files = list_frame_files(source)[start:start + count]
        frames = [read_image(f)[0] for f in files]
    else:
        frames = []
        with FrameReader(source) as reader:
            for index, frame in enumerate(reader):
                if index >= start:
                    frames.append(frame)
                if len(frames) == count:
                    break
    if len(frames) != count:
        raise ValueError(f"{source}: expected frames {start}..{start + count - 1}, found {len(frames)}")
    return torch.stack([to_tensor(f) for f in frames])


def read_clip(source: Path) -> torch.Tensor:
    """A whole clip as (T, 3, H, W); for evaluation of short clips."""
    with FrameReader(source) as reader:
        return torch.stack([to_tensor(f) for f in reader])


def _crop_and_flip(tensors: Sequence[torch.Tensor], crop: int, flip: bool, rng: np.random.Generator,
                   permute_colors: bool = False) -> list[torch.Tensor]:
    height, width = tensors[0].shape[-2:]
    if height < crop or width < crop:
        raise ValueError(f"frames of {height}x{width} are smaller than the crop {crop}; lower data.crop")
    top = int(rng.integers(0, height - crop + 1))
    left = int(rng.integers(0, width - crop + 1))
    mirror = flip and bool(rng.integers(0, 2))
    channels = torch.from_numpy(rng.permutation(3)) if permute_colors else None
    out = []
    for tensor in tensors:
        patch = tensor[..., top:top + crop, left:left + crop]
        if mirror:
            patch = patch.flip(-1)
        out.append(patch[..., channels, :, :] if channels is not None else patch)
    return out


class WindowDataset(Dataset):
    """N_f-frame windows of clips; an item key is ``(window index, augmentation seed)``.

    With ``paired=True`` items are ``{"snowy", "clean"}``, else ``{"snowy"}``,
    each (N_f, 3, crop, crop). ``crop=None`` returns full frames (evaluation).
    ``identity_fraction`` of paired items show the clean window as their input too, so the
    network learns that snow-free footage must come out unchanged (do no harm).
    """

    def __init__(self, clips: Sequence[ClipRef], n_frames: int, crop: int | None, flip: bool, paired: bool,
                 permute_colors: bool = False, identity_fraction: float = 0.0) -> None:
        if not clips:
            raise ValueError("no clips: the curated manifest has none for this source and split")
        self.clips = list(clips)
        self.n_frames = n_frames
        self.crop = crop
        self.flip = flip
        self.permute_colors = permute_colors
        self.paired = paired
        self.identity_fraction = identity_fraction
        for clip in self.clips:
            if clip.frames < n_frames:
                raise ValueError(f"{clip.clip_id}: {clip.frames} frames, fewer than N_f = {n_frames}")
            if paired and clip.clean is None:
                raise ValueError(f"{clip.clip_id}: paired clip without clean frames")
        self.windows = [(c, s) for c, clip in enumerate(self.clips) for s in range(clip.frames - n_frames + 1)]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, aug_seed = key
        clip_index, start = self.windows[index]
        clip = self.clips[clip_index]
        rng = np.random.default_rng(aug_seed)
        identity = self.paired and self.identity_fraction > 0 and rng.random() < self.identity_fraction
        if self.paired:
            assert clip.clean is not None
            clean = read_frames(clip.clean, start, self.n_frames)
            tensors = [clean, clean] if identity else [read_frames(clip.snowy, start, self.n_frames), clean]
        else:
            tensors = [read_frames(clip.snowy, start, self.n_frames)]
        if self.crop is not None:
            tensors = _crop_and_flip(tensors, self.crop, self.flip, rng, self.permute_colors)
        item = {"snowy": tensors[0]}
        if self.paired:
            item["clean"] = tensors[1]
        return item


class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches as a pure function of ``(seed, iteration)``, from ``start`` to ``stop``.

    Rank ``r`` of ``world`` takes the r-th slice of a global batch of
    ``batch_size * world`` samples. With ``every`` = k only the iterations that are
    multiples of k get a batch (the mean teacher's unlabelled clips when each
    pseudo-label serves k steps, ``train.teacher_reuse``).
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world: int = 1, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"IterationBatchSampler: every must be >= 1, got {every}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.stop, self.rank, self.world, self.every = start, stop, rank, world, every

    def iterations(self) -> range:
        """The iterations that get a batch, in order."""
        return range(-(-self.start // self.every) * self.every, self.stop, self.every)

    def __len__(self) -> int:
        return len(self.iterations())

    def global_batch(self, iteration: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, iteration])
        total = self.batch_size * self.world
        indices = rng.integers(0, self.size, size=total)
        aug_seeds = rng.integers(0, 2**31 - 1, size=total)
        return [(int(i), int(s)) for i, s in zip(indices, aug_seeds, strict=True)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        lo = self.rank * self.batch_size
        for iteration in self.iterations():
            yield self.global_batch(iteration)[lo:lo + self.batch_size]


def window_loader(dataset: WindowDataset, batch_size: int, seed: int, start: int, stop: int,
                  workers: int = 0, rank: int = 0, world: int = 1, every: int = 1) -> DataLoader:
    """A DataLoader yielding one batch per iteration in ``[start, stop)`` that is a multiple of ``every``."""
    sampler = IterationBatchSampler(len(dataset), batch_size, seed, start, stop, rank, world, every)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=False,
                      pin_memory=torch.cuda.is_available())
